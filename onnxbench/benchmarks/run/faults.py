"""Fault injection into the real worker, for tests and for checking a deployment's isolation (docs/usage.md,
"Isolation").

Set ``ONNXBENCH_FAULT=ACTION:FIELD=VALUE[,FIELD=VALUE...]`` in the environment of ``onnxbench run``, where ACTION
is ``kill`` (the worker sends itself SIGKILL, as the out-of-memory killer would), ``hang`` (it sleeps forever,
so the runner's ``cell_timeout_s`` fires), ``exit`` (``os._exit(3)``), ``raise`` (a ``RuntimeError`` in the
cell) or ``kill-supervisor`` (after 2 s, so that the supervisor has passed the cell's start on, SIGKILL to the
worker's parent and then to itself: under ``--executor ray`` the Ray task's worker dies, as when a node is lost;
under the local process executor the parent is its fork server, or the run itself with fresh interpreters), and
the FIELD=VALUE pairs select cells by :class:`~onnxbench.benchmarks.cells.Cell` fields, e.g.
``ONNXBENCH_FAULT=kill:runtime=ort-cpu,seq_len=16``. The hook acts just before the selected cell is measured,
in the real worker running the real runtime; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import time

from ..cells import Cell

FAULT_ENV = "ONNXBENCH_FAULT"


def inject_fault(cell: Cell) -> None:
    """The fault-injection hook (see the module docstring): act on ``cell`` if ``$ONNXBENCH_FAULT`` selects it.

    Raises:
        RuntimeError: for the ``raise`` action.
        ValueError: for a malformed ``$ONNXBENCH_FAULT``.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, _, selector = spec.partition(":")
    try:
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected ACTION:FIELD=VALUE[,FIELD=VALUE...]") from None
    fields = {k: str(v) for k, v in vars(cell).items()} | {"cell_id": cell.cell_id}
    if any(fields.get(k) != v for k, v in wanted.items()):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        while True:
            time.sleep(3600)
    elif action == "exit":
        os._exit(3)
    elif action == "raise":
        raise RuntimeError(f"fault injected by {FAULT_ENV}")
    elif action == "kill-supervisor":
        time.sleep(2.0)
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r}; use kill, hang, exit, raise or kill-supervisor")
