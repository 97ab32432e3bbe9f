"""The worker's group loop: open one session of a :class:`~onnxbench.benchmarks.run.messages.Group` (one artifact on
one runtime), measure each of its cells with the cell's scenario (:mod:`onnxbench.benchmarks.scenarios`), and emit
the typed messages of :mod:`onnxbench.benchmarks.run.messages`, in whatever process an executor runs it
(:mod:`onnxbench.benchmarks.run.executors`; worker processes start in :mod:`onnxbench.benchmarks.run.forkserver`).

A cell's exception becomes a ``failed`` row and the loop goes on; a runtime that cannot run here makes every cell
``skipped``; the reference outputs are computed here, per shape (cheaper than shipping logits between processes;
float64 results are also cached on disk, :mod:`onnxbench.benchmarks.verify.reference`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from ... import runtimes
from ...runtimes import RuntimeOptions, RuntimeUnavailable, Session
from ...runtimes.trt_profiles import profile_ranges
from ..cells import Cell
from ..measure.footprint import memory_reason
from ..measure.memory import device_memory_free, device_memory_used
from ..plan.sources import ModelSource
from ..rows import Measurement, Placement, SessionInfo
from ..scenarios import CellContext
from ..verify.reference import Reference
from .faults import inject_fault
from .messages import CellFinished, CellStarted, Group, GroupFinished, Message, SessionOpened, WorkerStarted
from .reference_process import ReferenceProcess


def session_ranges(cells: list[Cell] | tuple[Cell, ...], source: ModelSource | None = None
                   ) -> dict[str, tuple[int, int, int]]:
    """The (min, opt, max) of every dynamic axis one session of ``cells`` will see, for runtimes that build for
    a shape range (TensorRT optimization profiles, :func:`onnxbench.runtimes.trt_profiles.profile_ranges`): the
    cells' batch sizes and sequence lengths, their generations' cache axes, and the axes the source binds
    itself (``--dim``)."""
    return profile_ranges([(c.batch, c.seq_len) for c in cells],
                          [(c.seq_len, c.new_tokens) for c in cells if c.new_tokens],
                          source.dim_ranges() if source is not None else {})


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


def measure_group(group: Group, reference_fds: tuple[int, ...] | None = None) -> Iterator[Message]:
    """Open one session of ``group.artifact`` on the group's runtime and measure every cell, yielding the
    messages of :mod:`onnxbench.benchmarks.run.messages` (from :class:`SessionOpened` to :class:`GroupFinished`). A
    cell's exception becomes a ``failed`` measurement; the runtime being unavailable or falling back makes every
    cell ``skipped``. ``group.options`` (e.g. a tuned configuration) are passed to the runtime; ``group.label``
    is merged into the ``options`` column. Every cell's measurement names this host (and GPU) in its
    :class:`Placement`.

    ``reference_fds`` not None: the reference runs in a child process forked before the session opens, which
    closes these descriptors (the worker's message pipe), so that ``peak_rss_mb`` covers the session and not the
    reference (:mod:`onnxbench.benchmarks.run.reference_process`); only a process that has run no torch operator
    may ask for it (a worker, :func:`measure_into`). None (the default, the in-process executor): the reference
    runs in this process."""
    runtime = runtimes.get(group.runtime)
    ok, why = runtime.availability()
    device_id = int((group.options or RuntimeOptions()).extra.get("device_id", 0))
    # a runtime that cannot run here names no GPU: the row is about this host
    here = Placement.here(runtime.device if ok else "cpu", device_id)
    for message in _measure_group(group, runtime, ok, why, device_id, reference_fds):
        if isinstance(message, CellFinished):
            message = dataclasses.replace(message, measurement=message.measurement.placed(here))
        yield message


def _measure_group(group: Group, runtime, ok: bool, why: str, device_id: int,
                   reference_fds: tuple[int, ...] | None) -> Iterator[Message]:
    if not ok:
        yield from _all(group.cells, unavailable(group.runtime, why))
        return
    reference = _reference(group, reference_fds)
    try:
        yield from _measure_cells(group, runtime, device_id, reference)
    finally:
        reference.close()


def _reference(group: Group, reference_fds: tuple[int, ...] | None) -> Reference:
    """The group's reference: in a child process (:mod:`onnxbench.benchmarks.run.reference_process`) that closes
    ``reference_fds``, or in this process where ``reference_fds`` is None."""
    local = group.source.reference(group.artifact, group.cache_dir)
    if reference_fds is None:
        return local
    return ReferenceProcess(local, lambda: group.source.reference(group.artifact, group.cache_dir), reference_fds)


def _measure_cells(group: Group, runtime, device_id: int, reference: Reference) -> Iterator[Message]:
    cells = group.cells
    mem_baseline = device_memory_used(f"cuda:{device_id}") if runtime.device == "cuda" else None
    if runtime.device == "cuda":  # cells that cannot fit the GPU are refused before the session opens
        free = device_memory_free(f"cuda:{device_id}")
        fits = []
        for cell in cells:
            why = memory_reason(group.source.footprint(cell), runtime.device, None, free)
            if why:
                yield CellFinished(cell.cell_id, Measurement.skipped(why))
            else:
                fits.append(cell)
        if not fits:
            yield GroupFinished()
            return
        cells = tuple(fits)
    t0 = time.perf_counter()
    options = dataclasses.replace(group.options or RuntimeOptions(),
                                  profile_ranges=session_ranges(cells, group.source))
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
    spec = group.spec
    context = CellContext(group.source, reference, group.artifact, options, spec.timing, spec.noise_limit,
                          spec.locate_divergence, group.cache_dir, mem_baseline)
    with session:
        info = SessionInfo.of(session, attention_provider, group.label)
        for cell in cells:
            yield CellStarted(cell.cell_id)
            reference_s, context.harness_s = context.reference.seconds, 0.0
            try:
                inject_fault(cell)
                measured = group.scenarios[cell.scenario].measure(cell, session, context)
                # after the first run: build_s then includes a per-shape compile
                measured = dataclasses.replace(measured, session=dataclasses.replace(info,
                                                                                     build_s=session.build_s))
            except Exception as exc:
                measured = Measurement.failed(f"{type(exc).__name__}: {exc} @ {_last_frame(exc)}", info)
            yield CellFinished(cell.cell_id, measured, context.harness_s, context.reference.seconds - reference_s)
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
    measure_into(pickle.loads(sys.stdin.buffer.read()), fd)


def measure_into(group: Group, fd: int) -> None:
    """Measure ``group`` in this process, sending :class:`WorkerStarted` and then every message of
    :func:`measure_group` through the pipe ``fd``."""
    from multiprocessing.connection import Connection

    conn = Connection(fd, readable=False)
    conn.send(WorkerStarted(os.getpid()))
    try:
        for message in measure_group(group, reference_fds=(fd,)):
            conn.send(message)
    finally:
        conn.close()
