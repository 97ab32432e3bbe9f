"""The cell worker: measures the cells of one (artifact, runtime) group, in its own process.

The runner (``onnxbench.benchmarks.runner``) starts one worker process (a fresh interpreter) per (artifact,
runtime) group, so that a crash, a hang or an out-of-memory kill inside a runtime costs one cell and
never the run. The worker opens one session, computes the fp32 torch eager reference per shape itself (cheaper
than shipping logits between processes), measures each cell with :func:`measure_cell` and sends one message per
event through a one-way pipe (``multiprocessing.connection.Connection`` framing):

    ("started", pid)                       imports done
    ("session", {"session_s": s})          session opened (or the group's skipped/failed rows follow)
    ("begin", cell_id)                     about to measure this cell
    ("row", {column: value}, {"timing_s": s, "reference_s": s})
    ("done", None)

Fault injection (for tests and for checking a deployment's isolation; documented in README "Isolation"):
set ``ONNXBENCH_FAULT=ACTION:FIELD=VALUE[,FIELD=VALUE...]`` in the environment of ``onnxbench run``, where ACTION
is ``kill`` (the worker sends itself SIGKILL, as the out-of-memory killer would), ``hang`` (it sleeps forever,
so the runner's ``cell_timeout_s`` fires), ``exit`` (``os._exit(3)``) or ``raise`` (a ``RuntimeError`` in the
cell), and the FIELD=VALUE pairs select cells by :class:`~onnxbench.benchmarks.matrix.Cell` fields, e.g.
``ONNXBENCH_FAULT=kill:runtime=ort-cpu,seq_len=16``. The hook acts just before the selected cell is measured,
in the real worker running the real runtime; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import runtimes
from ..export import ExportArtifact
from ..runtimes import RuntimeOptions, RuntimeUnavailable, Session
from ..runtimes import trt_profiles as _trt_profiles
from . import foreign
from .agreement import compare_outputs, worst
from .matrix import Cell, MatrixSpec
from .timing import measure, measure_stages, throughput

REFERENCE_RUNTIME = "torch"
FAULT_ENV = "ONNXBENCH_FAULT"

Send = Callable[..., None]


class ReferenceOutputs:
    """fp32 torch eager outputs of one artifact's model, computed once per shape and shared by the group's cells.

    The reference of an fp16/bf16 artifact is the fp32 module of the same (config, seed) or checkpoint; the
    reference of a foreign ONNX model is ORT CPU running the file itself (``foreign.FOREIGN_REFERENCE``).
    """

    def __init__(self, artifact: ExportArtifact) -> None:
        self.runtime = foreign.reference_runtime(artifact, REFERENCE_RUNTIME)
        self.artifact = dataclasses.replace(artifact, precision="fp32") if artifact.config else artifact
        self._session = None
        self._outputs: dict[tuple, dict[str, np.ndarray]] = {}
        self.seconds = 0.0

    def get(self, key: tuple, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if key not in self._outputs:
            t0 = time.perf_counter()
            if self._session is None:
                self._session = runtimes.get(self.runtime).open(self.artifact)
            self._outputs[key] = self._session.run(feeds)
            self.seconds += time.perf_counter() - t0
        return self._outputs[key]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._outputs.clear()


def reset_peak_rss() -> None:
    """Reset this process's peak resident set size (Linux >= 4.0: writing 5 to ``/proc/self/clear_refs`` resets
    ``VmHWM``; proc(5)). Elsewhere a no-op, and :func:`peak_rss_mb` then reports the process-lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
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


def device_mem_mb(session: Session) -> float | None:
    """Device memory (MiB) this process holds on the session's GPU after a cell, from NVML's per-process
    accounting (nvidia-ml-py, ``nvmlDeviceGetComputeRunningProcesses``); runtimes' memory pools keep their peak
    reservation, so this is the peak they reserved. ``None`` on the CPU or without NVML."""
    if not session.device.startswith("cuda"):
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = int(session.device.split(":")[1]) if ":" in session.device else 0
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return proc.usedGpuMemory / 2**20
    except Exception:  # NVML absent or not permitted: the column stays empty rather than wrong
        return None
    return None


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
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r}; use kill, hang, exit or raise")


def measure_cell(cell: Cell, session: Session, spec: MatrixSpec, references: ReferenceOutputs,
                 artifact: ExportArtifact) -> tuple[dict, float]:
    """Measure one cell on an open session: agreement with the reference, latency, throughput, memory.

    This is the one place that turns a (cell, session) into result columns; extend it for new columns.

    Args:
        cell: the cell; its (batch, seq_len) give the ``input_ids`` shape (B, T), int64 in [0, vocab_size)
            (foreign models: inputs from their specs, ``spec.dims`` and ``spec.int_ranges``).
        session: an open session of the cell's artifact on the cell's runtime.
        spec: the matrix (seed, timing settings, ``cov_warn``).
        references: reference outputs, cached per shape.
        artifact: the artifact the session runs.

    Returns:
        (row columns, seconds spent in the timing harness).

    Raises:
        Exception: whatever the runtime raises; the caller turns it into a ``failed`` row.
    """
    feeds = foreign.cell_feeds(session.inputs(), cell, artifact, spec.seed, spec.dims, spec.int_ranges)
    reference = references.get((cell.batch, cell.seq_len), feeds)
    reset_peak_rss()
    outputs = session.run(feeds)
    tol = runtimes.runtime_class(cell.runtime).tolerance(cell.precision, bool(session.options.get("tf32", False)))
    agreement = worst(compare_outputs(outputs, reference, tol))
    t0 = time.perf_counter()
    timing, _ = measure(session.prepare(feeds), session.synchronize, spec.timing)
    split = split_timing(session, feeds, spec)
    timing_s = time.perf_counter() - t0
    seq_s, tok_s = throughput(cell.batch, cell.seq_len, timing.latency_ms_p50)
    reason = ""
    if timing.cov > spec.cov_warn:
        reason = (f"warning: noisy timing, cov {timing.cov:.2f} > cov_warn {spec.cov_warn:g} "
                  "(a contended machine? rerun on a quiet one)")
    row = {**agreement.as_row(), **timing.as_row(), **split, "status": "ok", "reason": reason,
           "build_s": session.build_s,  # after the first run: includes a per-shape compile
           "throughput_seq_s": seq_s, "throughput_tok_s": tok_s,
           "peak_rss_mb": peak_rss_mb(), "device_mem_mb": device_mem_mb(session)}
    return row, timing_s


def axis_ranges(cells: list[Cell]) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of the batch sizes and sequence lengths one session will run (its optimization
    profile, for runtimes that build for a shape range)."""
    return _trt_profiles.axis_ranges([c.batch for c in cells], [c.seq_len for c in cells])


def split_timing(session: Session, feeds: dict[str, np.ndarray], spec: MatrixSpec) -> dict[str, float]:
    """``h2d_ms`` / ``compute_ms`` / ``d2h_ms`` for sessions that offer the stages (GPU runtimes), else {}."""
    stages = session.prepare_stages(feeds)
    if not stages:
        return {}
    medians = measure_stages(stages, session.synchronize, spec.timing)
    return {f"{name}_ms": ms for name, ms in medians.items()}


def _attention_provider(session: Session, artifact: ExportArtifact, cell: Cell, spec: MatrixSpec) -> str | None:
    """Where the attention cores ran (:meth:`Session.attention_placement`), or None for a runtime without
    the notion."""
    try:
        feeds = foreign.cell_feeds(session.inputs(), cell, artifact, spec.seed, spec.dims, spec.int_ranges)
        return session.attention_placement(feeds)
    except Exception as exc:  # the measurement itself must not be lost to a profiling problem
        return f"unknown ({type(exc).__name__}: {exc})"


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def run_group(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, send: Send,
              options: RuntimeOptions | None = None, label: dict | None = None) -> None:
    """Open one session of ``artifact`` on the cells' runtime and measure every cell, reporting through
    ``send(kind, payload[, extra])`` (the messages of the module docstring). A cell's exception becomes a
    ``failed`` row; the runtime being unavailable or falling back makes every cell ``skipped``. ``options``
    (e.g. a tuned configuration) are passed to the runtime; ``label`` is merged into the ``options`` column."""
    name = cells[0].runtime
    runtime = runtimes.get(name)
    ok, why = runtime.availability()
    if not ok:
        for cell in cells:
            send("row", {"cell_id": cell.cell_id, "status": "skipped", "reason": why}, {})
        return
    t0 = time.perf_counter()
    try:
        session = runtime.open(artifact, dataclasses.replace(options or RuntimeOptions(),
                                                             axis_ranges=axis_ranges(cells)))
    except RuntimeUnavailable as exc:
        for cell in cells:
            send("row", {"cell_id": cell.cell_id, "status": "skipped", "reason": str(exc)}, {})
        return
    except Exception as exc:
        for cell in cells:
            send("row", {"cell_id": cell.cell_id, "status": "failed",
                         "reason": f"session creation failed: {type(exc).__name__}: {exc}"}, {})
        return
    send("session", {"session_s": time.perf_counter() - t0})
    attention_provider = _attention_provider(session, artifact, cells[0], spec)
    references = ReferenceOutputs(artifact)
    try:
        with session:
            provenance = {"provider_requested": session.provider_requested,
                          "provider_actual": session.provider_actual, "device": session.device,
                          "attention_provider": attention_provider,
                          "options": json.dumps({**session.options, **(label or {})}, sort_keys=True, default=str),
                          "build_s": session.build_s}
            for cell in cells:
                send("begin", cell.cell_id)
                ref_before = references.seconds
                try:
                    inject_fault(cell)
                    values, timing_s = measure_cell(cell, session, spec, references, artifact)
                except Exception as exc:
                    values, timing_s = {"status": "failed",
                                        "reason": f"{type(exc).__name__}: {exc} @ {_last_frame(exc)}"}, 0.0
                send("row", {**provenance, **values, "cell_id": cell.cell_id},
                     {"timing_s": timing_s, "reference_s": references.seconds - ref_before})
    finally:
        references.close()


def main(fd: int) -> None:
    """Entry point of the worker process (``python -c "...worker import main; main(FD)"``): read the pickled
    ``(cells, artifact, spec)`` from stdin, ignore SIGINT (the parent handles Ctrl-C and ends the worker), run
    the group, and send every message through the pipe ``fd``."""
    import pickle
    import sys
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd, readable=False)

    def send(kind: str, payload, extra=None) -> None:
        conn.send((kind, payload, extra or {}))

    cells, artifact, spec, options, label = pickle.loads(sys.stdin.buffer.read())
    send("started", os.getpid())
    try:
        run_group(cells, artifact, spec, send, options, label)
        send("done", None)
    finally:
        conn.close()
