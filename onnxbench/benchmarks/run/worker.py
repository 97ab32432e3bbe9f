"""The cell worker: measures the cells of one :class:`~onnxbench.benchmarks.run.messages.Group` (one artifact on one
runtime), in whatever process an executor runs it (:mod:`onnxbench.benchmarks.run.executors`).

The process-per-group executor starts one worker process (a fresh interpreter, :func:`main`) per group, so that
a crash, a hang or an out-of-memory kill inside a runtime costs one cell and never the run. The worker opens one
session, computes the reference outputs per shape itself (cheaper than shipping logits between processes; float64
results are also cached on disk, :mod:`onnxbench.benchmarks.verify.reference`), measures each cell with
:func:`measure_cell` and emits the typed messages of
:mod:`onnxbench.benchmarks.run.messages` (:func:`measure_group`).

Fault injection (for tests and for checking a deployment's isolation; documented in README "Isolation"):
set ``ONNXBENCH_FAULT=ACTION:FIELD=VALUE[,FIELD=VALUE...]`` in the environment of ``onnxbench run``, where ACTION
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

import ctypes
import dataclasses
import os
import pickle
import resource
import signal
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ... import runtimes
from ...export import ExportArtifact
from ...noise import noise_reason
from ...runtimes import RuntimeOptions, RuntimeUnavailable, Session
from ...runtimes import trt_profiles as _trt_profiles
from ..cells import Cell
from ..measure.timing import measure, measure_stages
from ..plan.matrix import MatrixSpec
from ..plan.sources import ModelSource
from ..rows import GpuStages, Measurement, Outcome, Placement, Resources, SessionInfo, Throughput
from ..scenarios.generate import measure_generate
from ..verify.divergence import BoundaryNotFound
from ..verify.reference import Expected, Reference
from ..verify.verdict import QUANT_THRESHOLDS, Verdict, judge, judge_quantized, locate, runtime_block_states
from .messages import CellFinished, CellStarted, Group, GroupFinished, Message, SessionOpened, WorkerStarted

FAULT_ENV = "ONNXBENCH_FAULT"


def reset_peak_rss() -> None:
    """Reset this process's peak resident set size (Linux >= 4.0: writing 5 to ``/proc/self/clear_refs`` resets
    ``VmHWM``; proc(5)). Elsewhere a no-op, and :func:`peak_rss_mb` then reports the process-lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def trim_heap() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim(0)``, malloc_trim(3)), so that memory
    freed after earlier cells is not resident when the next cell's peak is reset. Elsewhere a no-op."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (``VmHWM`` of
    ``/proc/self/status``), else since the process started (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_memory_used(device: str) -> int | None:
    """Bytes in use on the whole CUDA device ``device`` (``"cuda:N"``) from the driver's ``cuMemGetInfo``
    (total - free), or None on the CPU or without a driver. Device-level rather than NVML's per-process
    accounting, whose PIDs are the host's and never match inside a container."""
    if not device.startswith("cuda"):
        return None
    from ...runtimes import cuda_driver

    try:
        return cuda_driver.memory_used(int(device.split(":")[1]) if ":" in device else 0)
    except Exception:  # no driver or not permitted: the column stays empty rather than wrong
        return None


def device_mem_mb(session: Session, baseline: int | None) -> float | None:
    """Device memory (MiB) the session added on its GPU: device-level used memory after the cell minus
    ``baseline``, the same measure taken before the session was opened (with the CUDA context already created,
    so the context itself is not counted). It covers weights, activations, workspaces, engines and what the
    runtimes' memory pools reserved (pools keep their peak, so this is close to the peak reservation); on a GPU
    shared with other processes their allocations in the interval count too. None on the CPU."""
    used = device_memory_used(session.device)
    if used is None or baseline is None:
        return None
    return (used - baseline) / 2**20


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


def measure_cell(cell: Cell, session: Session, source: ModelSource, spec: MatrixSpec, reference: Reference,
                 mem_baseline: int | None = None, artifact: ExportArtifact | None = None,
                 options: RuntimeOptions | None = None, cache_dir: Path | None = None) -> tuple[Measurement, float]:
    """Measure one cell on an open session: agreement with the reference, latency, throughput, memory.

    Args:
        cell: the cell; its (batch, seq_len) shape the inputs, which come from ``source.feeds`` (the reference
            transformer: ``input_ids`` int64 (B, T) in [0, vocab_size)).
        session: an open session of the cell's artifact on the cell's runtime.
        source: the cell's model.
        spec: the matrix (timing settings, ``noise_limit``, ``locate_divergence``).
        reference: the artifact's reference (``source.reference``), its expected outputs kept for the current
            shape.
        mem_baseline: device memory in use (bytes) before the session was opened (:func:`device_mem_mb`).
        artifact / options / cache_dir: what the session runs and was opened with, and the export cache: a
            failing cell is run again on the graph with its block boundaries as outputs (docs/agreement.md).

    Returns:
        (the ok measurement without its :class:`SessionInfo`, seconds spent in the timing harness).

    Raises:
        Exception: whatever the runtime raises; the caller turns it into a ``failed`` measurement.
    """
    feeds = source.feeds(session.inputs(), cell.batch, cell.seq_len)
    expected = reference.expected(feeds, cell.precision)
    # memory held for earlier cells' shapes goes back first, so the peak is this cell's alone (docs/schema.md)
    session.release_memory(feeds)
    trim_heap()
    reset_peak_rss()
    outputs = session.run(feeds)
    quantized = cell.precision in QUANT_THRESHOLDS
    tol = None if quantized else runtimes.runtime_class(cell.runtime).tolerance(
        cell.precision, bool(session.options.get("tf32", False)))
    t0 = time.perf_counter()
    timing, _ = measure(session.prepare(feeds), session.synchronize, spec.timing)
    stages = split_timing(session, feeds, spec)
    timing_s = time.perf_counter() - t0
    resources = Resources(peak_rss_mb(), device_mem_mb(session, mem_baseline))
    # The timed path (IOBinding, a replayed CUDA graph) must agree too, not only run().
    if quantized:  # judged on what quantization should preserve (docs/quantization.md), not the float bands
        verdict = judge_quantized(outputs, expected, cell.precision, reference, session.fetch_outputs())
    else:
        verdict = judge(outputs, expected, tol, reference, cell.runtime, session.options, session.fetch_outputs())
    notes = list(session.notes)  # e.g. compute nodes that left the requested EP
    noisy = noise_reason(timing.as_row(), spec.noise_limit)
    if noisy:
        notes.append(noisy)
    block = None
    if (verdict.failed or spec.locate_divergence) and verdict.verdict != "reference" and not quantized:
        # after the resources are read: the second session must not count in this cell's peak memory
        block, note = _first_divergent_block(cell, session, artifact, options, cache_dir, feeds, expected, tol,
                                             verdict, reference)
        notes += [note] if note else []
    if expected.note:
        notes.append(f"note: no noise floor ({expected.note[:300]})")
    if getattr(verdict.agreement, "ref_nonfinite", 0):
        notes.append(f"note: the reference output has {verdict.agreement.ref_nonfinite} NaN/Inf values; positions "
                     "where this output differs from them are not judged")
    agreement, check = verdict.parts(block)
    return Measurement(Outcome("ok", "; ".join(notes)), timing=timing,
                       throughput=Throughput.of(cell.batch, cell.seq_len, timing.latency_ms_p50),
                       agreement=agreement, reference_check=check, stages=stages, resources=resources), timing_s


#: How a cell of each scenario (``Cell.scenario``, :data:`onnxbench.benchmarks.plan.matrix.SCENARIOS`) is measured; all
#: take :func:`measure_cell`'s arguments and return what it returns.
MEASURES = {"prefill": measure_cell, "generate": measure_generate}


def _first_divergent_block(cell: Cell, session: Session, artifact: ExportArtifact | None,
                           options: RuntimeOptions | None, cache_dir: Path | None, feeds: dict[str, np.ndarray],
                           expected: Expected, tol, verdict: Verdict, reference: Reference) -> tuple[int | None, str]:
    """The first diverging block and an empty note, or None and the note saying why it is unknown."""
    if not expected.fp64_blocks or artifact is None:
        return None, "divergence not located: the reference has no block states (" + (
            expected.note or "not a block-structured reference transformer") + ")"
    try:
        states = runtime_block_states(session, artifact, cell.runtime, options or RuntimeOptions(), feeds,
                                      reference.n_layers, cache_dir)
        return locate(states, expected, tol, verdict.agreement), ""
    except (BoundaryNotFound, ValueError, RuntimeUnavailable) as exc:
        return None, f"divergence not located: {exc}"


def axis_ranges(cells: list[Cell], source: ModelSource | None = None) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of the batch sizes and sequence lengths one session will run, plus every axis the
    model's source binds itself (``--dim``), and for generate cells the cache axes of the decoder-with-past graph
    (:func:`onnxbench.runtimes.trt_profiles.generation_ranges`): its optimization profile, for runtimes that build
    for a shape range."""
    extra = source.axis_ranges() if source is not None else {}
    ranges = {**extra, **_trt_profiles.axis_ranges([c.batch for c in cells], [c.seq_len for c in cells])}
    generations = [(c.seq_len, c.new_tokens) for c in cells if c.new_tokens]
    if generations:  # a decoder-with-past graph: decode steps of one token over a growing cache
        ranges.update(_trt_profiles.generation_ranges(generations))
    return ranges


def split_timing(session: Session, feeds: dict[str, np.ndarray], spec: MatrixSpec) -> GpuStages | None:
    """``h2d_ms`` / ``compute_ms`` / ``d2h_ms`` for sessions that offer the stages (GPU runtimes), else None."""
    stages = session.prepare_stages(feeds)
    if not stages:
        return None
    medians = measure_stages(stages, session.synchronize, spec.timing, session.device_timer())
    return GpuStages(**{f"{name}_ms": ms for name, ms in medians.items()})


def _attention_provider(session: Session, cell: Cell, source: ModelSource) -> str | None:
    """Where the attention cores ran (:meth:`Session.attention_placement`), or None for a runtime without
    the notion."""
    try:
        return session.attention_placement(source.feeds(session.inputs(), cell.batch, cell.seq_len))
    except Exception as exc:  # the measurement itself must not be lost to a profiling problem
        return f"unknown ({type(exc).__name__}: {exc})"


def unavailable(runtime: str, reason: str) -> Measurement:
    """The measurement of a cell whose runtime cannot run here: ``skipped`` with ``reason``, or ``failed`` when
    ``$ONNXBENCH_REQUIRE_GPU`` requires this GPU runtime (a GPU check must not pass by skipping)."""
    from ...runtimes.probes import REQUIRE_GPU_ENV, required_gpu_runtimes

    gpu_names = [n for n, cls in runtimes.registry().items() if cls.device == "cuda"]
    if runtime in required_gpu_runtimes(gpu_names):
        return Measurement.failed(f"{REQUIRE_GPU_ENV} requires {runtime}, which would be skipped: {reason}")
    return Measurement.skipped(reason)


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def measure_group(group: Group) -> Iterator[Message]:
    """Open one session of ``group.artifact`` on the group's runtime and measure every cell, yielding the
    messages of :mod:`onnxbench.benchmarks.run.messages` (from :class:`SessionOpened` to :class:`GroupFinished`). A
    cell's exception becomes a ``failed`` measurement; the runtime being unavailable or falling back makes every
    cell ``skipped``. ``group.options`` (e.g. a tuned configuration) are passed to the runtime; ``group.label``
    is merged into the ``options`` column. Every cell's measurement names this host (and GPU) in its
    :class:`Placement`."""
    runtime = runtimes.get(group.runtime)
    ok, why = runtime.availability()
    device_id = int((group.options or RuntimeOptions()).extra.get("device_id", 0))
    # a runtime that cannot run here names no GPU: the row is about this host
    here = Placement.here(runtime.device if ok else "cpu", device_id)
    for message in _measure_group(group, runtime, ok, why, device_id):
        if isinstance(message, CellFinished):
            message = dataclasses.replace(message, measurement=message.measurement.placed(here))
        yield message


def _measure_group(group: Group, runtime, ok: bool, why: str, device_id: int) -> Iterator[Message]:
    cells = group.cells
    if not ok:
        yield from _all(cells, unavailable(group.runtime, why))
        return
    mem_baseline = device_memory_used(f"cuda:{device_id}") if runtime.device == "cuda" else None
    t0 = time.perf_counter()
    options = dataclasses.replace(group.options or RuntimeOptions(), axis_ranges=axis_ranges(cells, group.source))
    try:
        session = runtime.open(group.artifact, options)
    except RuntimeUnavailable as exc:
        yield from _all(cells, unavailable(group.runtime, str(exc)))
        return
    except Exception as exc:
        yield from _all(cells, Measurement.failed(f"session creation failed: {type(exc).__name__}: {exc}"))
        return
    yield SessionOpened(time.perf_counter() - t0)
    attention_provider = _attention_provider(session, cells[0], group.source)
    reference = group.source.reference(group.artifact, group.cache_dir)
    try:
        with session:
            info = SessionInfo.of(session, attention_provider, group.label)
            for cell in cells:
                yield CellStarted(cell.cell_id)
                ref_before = reference.seconds
                try:
                    inject_fault(cell)
                    measured, timing_s = MEASURES[cell.scenario](cell, session, group.source, group.spec, reference,
                                                                 mem_baseline, group.artifact, options, group.cache_dir)
                    # after the first run: build_s then includes a per-shape compile
                    measured = dataclasses.replace(measured, session=dataclasses.replace(info,
                                                                                         build_s=session.build_s))
                except Exception as exc:
                    measured, timing_s = Measurement.failed(f"{type(exc).__name__}: {exc} @ {_last_frame(exc)}",
                                                            info), 0.0
                yield CellFinished(cell.cell_id, measured, timing_s, reference.seconds - ref_before)
    finally:
        reference.close()
    yield GroupFinished()


def _all(cells: tuple[Cell, ...], measurement: Measurement) -> Iterator[Message]:
    for cell in cells:
        yield CellFinished(cell.cell_id, measurement)
    yield GroupFinished()


def main(fd: int) -> None:
    """Entry point of a fresh worker process (``python -c "...worker import main; main(FD)"``): read the pickled
    :class:`Group` from stdin, ignore SIGINT (the parent handles Ctrl-C and ends the worker), measure the group,
    and send every message through the pipe ``fd`` (``multiprocessing.connection.Connection`` framing)."""
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _measure_into(pickle.loads(sys.stdin.buffer.read()), fd)


def _measure_into(group: Group, fd: int) -> None:
    """Measure ``group`` in this process, sending :class:`WorkerStarted` and then every message of
    :func:`measure_group` through the pipe ``fd``."""
    from multiprocessing.connection import Connection

    conn = Connection(fd, readable=False)
    conn.send(WorkerStarted(os.getpid()))
    try:
        for message in measure_group(group):
            conn.send(message)
    finally:
        conn.close()


#: What the fork server imports before forking any worker: everything a worker needs before its first cell (about
#: 4-7 s on 2 cores, torch and onnxruntime above all), so that a worker starts in milliseconds. Imports only: no
#: torch operator runs and no session opens in the server, so no thread pool or CUDA context exists to be
#: inherited by a forked worker (docs/design.md "Isolation").
PRELOAD = ("numpy", "torch", "onnx", "onnxruntime", "onnxbench.benchmarks.verify.fp64",
"onnxbench.benchmarks.verify.reference",
           "onnxbench.benchmarks.verify.verdict", "onnxbench.benchmarks.plan.sources")


def serve(control_fd: int) -> None:
    """Entry point of the fork server (``python -c "...worker import serve; serve(FD)"``, started by
    :class:`onnxbench.benchmarks.run.executors.ProcessPerGroupExecutor`): import :data:`PRELOAD` once, then fork one
    worker per request.

    Protocol on the Unix socket ``control_fd``, one request at a time: the executor sends the write end of a fresh
    pipe (``multiprocessing.reduction.sendfds``) and the pickled :class:`Group` (``Connection.send_bytes``); the
    server forks a worker that measures the group into that pipe (:func:`_measure_into`) and answers
    ``("forked", pid)``, then, once the worker has exited, ``("exited", code)`` with ``code`` as
    ``subprocess.Popen.returncode`` reads (negative: killed by that signal). The server ends at EOF on the socket;
    it and its workers die with their parent (Linux ``PR_SET_PDEATHSIG``)."""
    import importlib
    import socket
    import sys
    from multiprocessing import reduction
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers: the parent handles Ctrl-C
    _die_with_parent()
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
                _die_with_parent()
                _measure_into(pickle.loads(payload), pipe_fd)
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


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl(2) ``PR_SET_PDEATHSIG``), so that an
    executor killed outright leaves no server or worker behind; elsewhere a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass
