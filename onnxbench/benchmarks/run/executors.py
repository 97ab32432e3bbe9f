"""Executors: where and how the groups of a matrix are measured.

An :class:`Executor` takes groups of cells (:class:`~onnxbench.benchmarks.run.messages.Group`: one artifact on one
runtime) and yields ``(group, message)`` pairs as measuring proceeds. Its contract, whatever it runs on:

- every cell of every group it is given gets exactly one :class:`CellFinished` message;
- a cell whose measurement crashes the measuring process (a signal such as the out-of-memory killer's, an exit)
  or produces no message for ``spec.cell_timeout_s`` seconds gets a ``failed`` measurement naming the cause,
  and the group's remaining cells are measured afresh; a process that dies before measuring any cell (imports,
  session creation) fails every remaining cell of its group;
- it may pull groups from the iterable lazily (the runner exports artifacts as groups are pulled) and may
  measure several groups at once; messages of one group keep their order;
- closing the iterator it returns (``KeyboardInterrupt``, ``generator.close()``) ends any process it started.

Three executors ship: :class:`InProcessExecutor` (this process, no isolation: debugging, or runtimes patched in
tests), :class:`ProcessPerGroupExecutor` (one worker process per group, forked from a warm fork server, the
default) and :class:`onnxbench.benchmarks.run.ray_executor.RayExecutor` (each group a Ray task on a cluster, running
a :class:`ProcessPerGroupExecutor` there; docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping

from ... import runtimes
from ...runtimes import RuntimeOptions
from ..rows import Measurement, Placement
from .forkserver import ForkServer, start_fresh_worker
from .messages import CellFinished, CellStarted, Group, GroupFinished, Message, SessionOpened, WorkerStarted
from .worker import measure_group


class Executor(ABC):
    """Measures groups of cells; see the module docstring for the contract."""

    @abstractmethod
    def run(self, groups: Iterable[Group]) -> Iterator[tuple[Group, Message]]:
        """Measure every group of ``groups``, yielding each message with the group it belongs to."""


class InProcessExecutor(Executor):
    """Measures the groups one after another in this process: no crash or timeout isolation (a crash ends the
    run, a hang hangs it), but patched runtimes and debuggers see the measurement."""

    def run(self, groups: Iterable[Group]) -> Iterator[tuple[Group, Message]]:
        for group in groups:
            for message in measure_group(group):
                yield group, message


#: A worker gets this long (s) to import torch and the runtimes before its first message, however small
#: ``cell_timeout_s`` is: start-up is not a cell.
STARTUP_TIMEOUT_S = 120.0


class ProcessPerGroupExecutor(Executor):
    """Measures each group in its own worker process, one group at a time, and supervises it: a worker that dies
    or goes silent costs the cell it was measuring, and a fresh worker takes the group's remaining cells.

    Args:
        warm: fork each worker from a fork server that imported torch, onnxruntime and the measuring code once per
            :meth:`run` (:func:`onnxbench.benchmarks.run.forkserver.serve`), so that start-up (~4-7 s of imports)
            is paid once rather than per group; ``False`` starts every worker as a fresh interpreter
            (``python -c ...worker.main``). Where ``os.fork`` does not exist, workers are always fresh.
        env: environment variables to set (a value of None: to remove) in the workers, over this process's own
            (e.g. what a distributed executor forwards from its driver).

    Not a ``multiprocessing`` start method: spawn would re-import the caller's ``__main__`` (breaking scripts
    without a ``__main__`` guard), fork would copy the caller's state (torch's thread pools, patched runtimes),
    and multiprocessing's forkserver, besides the same ``__main__`` import, is one per process with the
    environment of its first use, while a run's workers need that run's (``$ONNXBENCH_FAULT``, plug-in paths;
    docs/design.md "Isolation").
    """

    def __init__(self, warm: bool = True, env: Mapping[str, str | None] | None = None) -> None:
        self.warm = warm and hasattr(os, "fork")
        self.env = dict(env or {})

    def run(self, groups: Iterable[Group]) -> Iterator[tuple[Group, Message]]:
        server = ForkServer(self.env) if self.warm else None
        try:
            for group in groups:
                with contextlib.closing(self.supervise(group, server)) as messages:
                    for message in messages:
                        yield group, message
        finally:
            if server is not None:
                server.close()

    def supervise(self, group: Group, server: ForkServer | None = None) -> Iterator[Message]:
        """The messages of ``group``, measured in worker processes (forked by ``server``, else fresh
        interpreters), with a ``failed`` :class:`CellFinished` synthesised for a cell whose worker died or timed
        out (see the module docstring); those rows name this host, the worker's."""
        here = None  # asked only for a row the worker did not place (the driver API call is not free)
        for message in self._supervise(group, server):
            if isinstance(message, CellFinished) and message.measurement.placement is None:
                here = here or _placement(group)
                message = dataclasses.replace(message, measurement=message.measurement.placed(here))
            yield message

    def _supervise(self, group: Group, server: ForkServer | None) -> Iterator[Message]:
        timeout_s = group.spec.cell_timeout_s
        pending = list(group.cells)
        while pending:
            started = time.perf_counter()
            subset = dataclasses.replace(group, cells=tuple(pending))
            proc, receiver = server.start_worker(subset) if server is not None else start_fresh_worker(subset, self.env)
            current, session_open, reason = None, False, None
            try:
                wait = max(STARTUP_TIMEOUT_S, timeout_s)
                while True:
                    if not receiver.poll(wait):
                        reason = f"timed out after {wait:g} s (cell_timeout_s); worker killed"
                        break
                    wait = timeout_s
                    try:
                        message = receiver.recv()
                    except EOFError:
                        try:
                            proc.wait(10)
                        except subprocess.TimeoutExpired:
                            pass
                        reason = _exit_reason(proc.returncode)
                        break
                    if isinstance(message, WorkerStarted):
                        message = dataclasses.replace(message, startup_s=time.perf_counter() - started)
                    elif isinstance(message, SessionOpened):
                        session_open = True
                    elif isinstance(message, CellStarted):
                        current = message.cell_id
                    elif isinstance(message, CellFinished):
                        pending = [c for c in pending if c.cell_id != message.cell_id]
                        current = None
                    elif isinstance(message, GroupFinished):
                        break
                    yield message
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                receiver.close()
            if not pending or reason is None:
                for cell in pending:  # finished without a row for some cells: never drop them silently
                    yield CellFinished(cell.cell_id, Measurement.failed("worker sent no row"))
                break
            if current is None or not session_open:
                # died before measuring any cell (imports, session creation): every remaining cell shares the fate
                for cell in pending:
                    yield CellFinished(cell.cell_id, Measurement.failed(
                        f"{reason} before measuring (start-up or session creation)"))
                break
            yield CellFinished(current, Measurement.failed(f"{reason} while measuring this cell"))
            pending = [c for c in pending if c.cell_id != current]
        yield GroupFinished()


def _placement(group: Group) -> Placement:
    """This host, and the GPU the group's worker was to use (its ``device_id`` option, as the worker reads it)."""
    device_id = int((group.options or RuntimeOptions()).extra.get("device_id", 0))
    return Placement.here(runtimes.runtime_class(group.runtime).device, device_id)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = ", e.g. by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"worker killed by signal {-exitcode} ({name}{hint})"
    return f"worker exited with status {exitcode}"
