"""How worker processes start: forked from a warm fork server (the default), or as fresh interpreters.

The **fork server** is one interpreter per run that imports torch, onnxruntime, onnx and the measuring code once
(:data:`PRELOAD`) and forks one worker per group, so that a worker starts in milliseconds rather than seconds
(docs/design.md, "Isolation"). This module holds both ends: :func:`serve`, the server's entry point, and
:class:`ForkServer` / :class:`ForkedWorker`, the executor's handles on it. A worker itself runs
:func:`onnxbench.benchmarks.run.worker.measure_into`. :func:`start_fresh_worker` is the alternative, a fresh
interpreter per group (``ProcessPerGroupExecutor(warm=False)``, and where ``os.fork`` does not exist).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Mapping
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path

import onnxbench

from ... import runtimes
from .messages import Group
from .reference_process import die_with_parent
from .worker import measure_into

#: What the fork server imports before forking any worker: everything a worker needs before its first cell (about
#: 4-7 s on 2 cores, torch and onnxruntime above all), so that a worker starts in milliseconds. Imports only: no
#: torch operator runs and no session opens in the server, so no thread pool or CUDA context exists to be
#: inherited by a forked worker (docs/design.md "Isolation").
PRELOAD = ("numpy", "torch", "onnx", "onnxruntime", "onnxbench.benchmarks.verify.fp64",
           "onnxbench.benchmarks.run.worker")


def serve(control_fd: int) -> None:
    """Entry point of the fork server (``python -c "...forkserver import serve; serve(FD)"``, started by
    :class:`onnxbench.benchmarks.run.executors.ProcessPerGroupExecutor`): import :data:`PRELOAD` once, then fork one
    worker per request.

    Protocol on the Unix socket ``control_fd``, one request at a time: the executor sends the write end of a fresh
    pipe (``multiprocessing.reduction.sendfds``) and the pickled :class:`Group` (``Connection.send_bytes``); the
    server forks a worker that measures the group into that pipe
    (:func:`~onnxbench.benchmarks.run.worker.measure_into`) and answers ``("forked", pid)``, then, once the
    worker has exited, ``("exited", code)`` with ``code`` as ``subprocess.Popen.returncode`` reads
    (negative: killed by that signal). The server ends at EOF on the socket; it and its workers die with their
    parent (Linux ``PR_SET_PDEATHSIG``)."""
    import importlib
    import socket
    import sys
    from multiprocessing import reduction
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers: the parent handles Ctrl-C
    die_with_parent()
    for module in PRELOAD:
        importlib.import_module(module)
    runtimes.registry()  # plug-in runtimes ($ONNXBENCH_RUNTIMES, entry points) load once, here
    sock = socket.socket(fileno=control_fd)
    control = Connection(os.dup(control_fd))
    while True:
        try:
            (pipe_fd,) = reduction.recvfds(sock, 1)
            payload = control.recv_bytes()
        except (EOFError, OSError, RuntimeError):
            return  # the executor closed the socket (or died)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the server's loop
            code = 1
            try:
                os.close(control_fd)
                control.close()
                die_with_parent()
                measure_into(pickle.loads(payload), pipe_fd)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(pipe_fd)  # only the worker writes: its death reads as EOF in the executor
        control.send(("forked", pid))
        _, status = os.waitpid(pid, 0)
        control.send(("exited", os.waitstatus_to_exitcode(status)))


def worker_environment(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment for a worker (or fork server), with ``env`` set over it (None: removed): the
    package importable, the same runtimes."""
    package_root = str(Path(onnxbench.__file__).resolve().parents[1])  # the folder holding the package
    base = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return runtimes.plugin_environment({**base, "PYTHONPATH": os.pathsep.join(
        filter(None, [package_root, base.get("PYTHONPATH")]))})


def start_fresh_worker(group: Group, env: Mapping[str, str | None] | None = None
                       ) -> tuple[subprocess.Popen, Connection]:
    """Start ``python -c worker.main()`` with ``group`` pickled on its stdin and a one-way pipe for messages;
    ``env`` is set over this process's environment."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from onnxbench.benchmarks.run.worker import main; main({write_fd})"],
            stdin=subprocess.PIPE, pass_fds=(write_fd,), env=worker_environment(env))
    finally:
        os.close(write_fd)  # only the child writes; its exit then reads as EOF here
    receiver = Connection(read_fd, writable=False)
    try:
        proc.stdin.write(pickle.dumps(group))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once: its exit code tells why
    return proc, receiver


class ForkServer:
    """The executor's side of :func:`serve`: a warm interpreter, started on the first
    worker asked for (so its imports count as that worker's start-up) and again after it died, that forks the
    workers."""

    def __init__(self, env: Mapping[str, str | None] | None = None) -> None:
        self.proc: subprocess.Popen | None = None
        self.env = env

    def _ensure_started(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.close()
        self.sock, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c",
                 f"from onnxbench.benchmarks.run.forkserver import serve; serve({theirs.fileno()})"],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=worker_environment(self.env))
        finally:
            theirs.close()
        self.control = Connection(os.dup(self.sock.fileno()))

    def start_worker(self, group: Group) -> tuple[ForkedWorker, Connection]:
        """Fork a worker measuring ``group``: its handle (``subprocess.Popen``'s ``poll``/``wait``/``kill``) and
        the read end of its message pipe. A server that died on the way makes a handle of an already dead
        worker, whose pipe reads as EOF."""
        self._ensure_started()
        read_fd, write_fd = os.pipe()
        worker = ForkedWorker(self)
        try:
            reduction.sendfds(self.sock, [write_fd])
            self.control.send_bytes(pickle.dumps(group))
            worker.pid = self.control.recv()[1]
        except (OSError, EOFError):
            worker.returncode = self._died()
        finally:
            os.close(write_fd)
        return worker, Connection(read_fd, writable=False)

    def _died(self) -> int:
        """The exit status of a server that stopped answering (killed if it still runs)."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        """End the server: EOF on its socket, then a kill if it has not exited within 10 s."""
        if self.proc is None:
            return
        self.control.close()
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class ForkedWorker:
    """A worker forked by the fork server, with the part of ``subprocess.Popen``'s interface the supervisor
    uses; its exit status comes from the server, which is its parent."""

    def __init__(self, server: ForkServer) -> None:
        self.server, self.pid, self.returncode = server, None, None

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None else self._exit_status(0)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; waits ``timeout`` seconds (None: for ever).

        Raises:
            subprocess.TimeoutExpired: if the worker is still running after ``timeout`` seconds.
        """
        if self.returncode is None and self._exit_status(timeout) is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _exit_status(self, timeout: float | None) -> int | None:
        try:
            if not self.server.control.poll(timeout):
                return None
            self.returncode = self.server.control.recv()[1]
        except (OSError, EOFError):
            self.returncode = self.server._died()
        return self.returncode
