"""The reference computed in a child process of the worker, so that the worker's ``peak_rss_mb`` measures the
runtime's session and not the reference's modules (docs/schema.md, ``peak_rss_mb``; docs/design.md, "Isolation").

A torch reference holds the model twice besides the session: in float64 and at the cell's precision (the noise
floor), 12 bytes per parameter for an fp32 cell, and a process's peak reset (``VmHWM``) cannot go below what is
still resident: in the worker, gpt2-large's ort-cpu rows read about 12 GiB while ONNX Runtime's session alone
peaks at 3.3 GB. Freeing the modules after each cell would cost their rebuild for the next one (seconds to
minutes of random initialisation on large models), so they live in a child forked by the worker before its
session opens, for the group's lifetime: the child builds and runs the reference, the worker sends it the feeds
and gets back the :class:`~onnxbench.benchmarks.verify.reference.Expected` outputs (those, as the cell's inputs,
stay in the worker and count in its peak).

The fork happens before the worker has run any torch operator or opened any session (a worker starts from the
fork server or a fresh interpreter: docs/design.md, "Isolation"), so no thread pool, arena or CUDA context is
inherited. :class:`~onnxbench.benchmarks.run.executors.InProcessExecutor` measures in the caller's process, which
may have run torch already (OpenMP's thread pool does not survive a fork), so it keeps the reference in process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe

import numpy as np

from ..verify.reference import Expected, Reference


class ReferenceProcessError(RuntimeError):
    """The reference's child process died or could not answer (the cell becomes a ``failed`` row)."""


class ReferenceProcess(Reference):
    """A :class:`Reference` whose expected outputs are computed by ``make()`` in a forked child process.

    What the reference *is* (:attr:`label`, :attr:`runtime`, :attr:`config`, :meth:`is_self`, :meth:`is_floor`,
    :attr:`n_layers`, :attr:`vocab_size`) is read from ``local``, an instance of the same reference that is never
    asked for outputs (references build their modules or sessions lazily, on the first outputs asked for, so ``local``
    holds none). :meth:`expected` keeps the latest feeds' outputs in this process as :class:`Reference` does;
    ``seconds`` counts the wall time of the calls, the transfer of the outputs included.

    Args:
        local: the reference's description in this process.
        make: builds the reference in the child (called there once, after the fork).
        close_fds: descriptors the child closes (the worker's message pipe: the executor reads a dead worker's
            EOF only once no process holds it).

    Raises:
        ReferenceProcessError: (from :meth:`expected` / :meth:`generation_expected`) when the child died, naming
            its exit status; the reference's own exceptions are raised again here with their type and message.
    """

    def __init__(self, local: Reference, make: Callable[[], Reference], close_fds: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.local = local
        self.runtime, self.config = local.runtime, local.config
        self.n_layers, self.vocab_size = local.n_layers, local.vocab_size
        self._conn, theirs = Pipe()
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                self._conn.close()
                for fd in close_fds:
                    os.close(fd)
                die_with_parent()
                if os.getppid() != parent:  # the worker died before the request to die with it
                    os._exit(1)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's process handles Ctrl-C
                _serve(make(), theirs)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        self._status: int | None = None

    @property
    def label(self) -> str:
        return self.local.label

    def is_self(self, runtime: str, options: dict) -> bool:
        return self.local.is_self(runtime, options)

    def is_floor(self, runtime: str, options: dict) -> bool:
        return self.local.is_floor(runtime, options)

    def _expected(self, feeds: dict[str, np.ndarray], precision: str) -> Expected:
        return self._call("expected", feeds, precision)

    def generation_expected(self, input_ids: np.ndarray, attention_mask: np.ndarray, tokens: np.ndarray,
                            precision: str) -> Expected:
        t0 = time.perf_counter()
        try:
            return self._call("generation_expected", input_ids, attention_mask, tokens, precision)
        finally:
            self.seconds += time.perf_counter() - t0

    def _call(self, method: str, *args):
        try:
            self._conn.send((method, args))
            kind, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise ReferenceProcessError(f"the reference's process died ({_describe(self._reap())})") from exc
        if kind == "error":
            raise value
        return value

    def _reap(self, timeout_s: float = 10.0) -> int | None:
        """The child's exit status (``subprocess.Popen.returncode``'s convention), waiting up to ``timeout_s``
        seconds, then killing it."""
        if self._status is None and self.pid:
            deadline = time.monotonic() + timeout_s
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self._status = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    self._status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
                    break
                time.sleep(0.01)
        return self._status

    def close(self) -> None:
        """End the child (EOF on its pipe; killed if it has not exited within 10 s) and forget the outputs."""
        super().close()
        self._conn.close()
        self._reap()


def _serve(reference: Reference, conn: Connection) -> None:
    """The child's loop: ``(method, args)`` in, ``("ok", result)`` or ``("error", exception)`` out, until EOF."""
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:
                return
            try:
                answer = ("ok", getattr(reference, method)(*args))
            except Exception as exc:  # the reference's own error: the worker raises it for the cell
                answer = ("error", exc)
            try:
                conn.send(answer)
            except Exception as exc:  # an exception that does not pickle: its type and message
                conn.send(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]} ({exc})")))
    finally:
        reference.close()


def _describe(status: int | None) -> str:
    if status is None:
        return "exit status unknown"
    if status < 0:
        name = signal.Signals(-status).name
        hint = ", e.g. by the out-of-memory killer" if -status == signal.SIGKILL else ""
        return f"killed by signal {-status} ({name}{hint})"
    return f"exit status {status}"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl(2) ``PR_SET_PDEATHSIG``), so that a killed
    executor leaves no fork server or worker behind, and a worker killed on a timeout no reference; elsewhere a
    no-op."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass
