"""Executors: where and how the groups of a matrix are measured.

An :class:`Executor` takes groups of cells (:class:`~onnxbench.benchmarks.messages.Group`: one artifact on one
runtime) and yields ``(group, message)`` pairs as measuring proceeds. Its contract, whatever it runs on:

- every cell of every group it is given gets exactly one :class:`CellFinished` message;
- a cell whose measurement crashes the measuring process (a signal such as the out-of-memory killer's, an exit)
  or produces no message for ``spec.cell_timeout_s`` seconds gets a ``failed`` measurement naming the cause,
  and the group's remaining cells are measured afresh; a process that dies before measuring any cell (imports,
  session creation) fails every remaining cell of its group;
- it may pull groups from the iterable lazily (the runner exports artifacts as groups are pulled) and may
  measure several groups at once; messages of one group keep their order;
- closing the iterator it returns (``KeyboardInterrupt``, ``generator.close()``) ends any process it started.

Two executors ship: :class:`InProcessExecutor` (this process, no isolation: debugging, or runtimes patched in
tests) and :class:`ProcessPerGroupExecutor` (one fresh worker process per group, the default). A distributed
executor implements the same :meth:`Executor.run`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from .. import runtimes
from .messages import CellFinished, CellStarted, Group, GroupFinished, Message, SessionOpened, WorkerStarted
from .rows import Measurement
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
    """Measures each group in a fresh worker process (``python -c ...worker.main``), one group at a time, and
    supervises it: a worker that dies or goes silent costs the cell it was measuring, and a fresh worker takes
    the group's remaining cells.

    A fresh interpreter rather than a ``multiprocessing`` child: spawn would re-import the caller's ``__main__``
    (breaking scripts without a ``__main__`` guard) and fork would inherit torch's thread pools.
    """

    def run(self, groups: Iterable[Group]) -> Iterator[tuple[Group, Message]]:
        for group in groups:
            for message in self.supervise(group):
                yield group, message

    def supervise(self, group: Group) -> Iterator[Message]:
        """The messages of ``group``, measured in worker processes, with a ``failed`` :class:`CellFinished`
        synthesised for a cell whose worker died or timed out (see the module docstring)."""
        timeout_s = group.spec.cell_timeout_s
        pending = list(group.cells)
        while pending:
            started = time.perf_counter()
            proc, receiver = _start_worker(dataclasses.replace(group, cells=tuple(pending)))
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


def _start_worker(group: Group) -> tuple[subprocess.Popen, Connection]:
    """Start ``python -c worker.main()`` with ``group`` pickled on its stdin and a one-way pipe for messages."""
    read_fd, write_fd = os.pipe()
    package_root = str(Path(__file__).resolve().parents[2])
    env_vars = runtimes.plugin_environment({**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [package_root, os.environ.get("PYTHONPATH")]))})
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from onnxbench.benchmarks.worker import main; main({write_fd})"],
            stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env_vars)
    finally:
        os.close(write_fd)  # only the child writes; its exit then reads as EOF here
    receiver = Connection(read_fd, writable=False)
    try:
        proc.stdin.write(pickle.dumps(group))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once: its exit code tells why
    return proc, receiver


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = ", e.g. by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"worker killed by signal {-exitcode} ({name}{hint})"
    return f"worker exited with status {exitcode}"
