"""The matrix runner: export once per artifact, open one session per (artifact, runtime), measure every
shape, append one row per cell to ``results.jsonl`` as soon as it is known.

Run directory layout::

    RUN_DIR/header.json     run id, environment, matrix spec
    RUN_DIR/results.jsonl   one JSON row per cell (schema: onnxbench.schema), flushed per row
    RUN_DIR/results.csv     the same rows, written at the end
    RUN_DIR/results.parquet the same rows, written at the end
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

from .. import env, runtimes
from ..export import ExportArtifact, to_onnx
from ..models import PRESETS, get_preset
from ..models.gpt2 import checkpoint_config
from ..runtimes import RuntimeOptions, RuntimeUnavailable
from ..schema import make_row
from . import foreign
from . import tune as tuning
from .agreement import compare_outputs, tolerance_for, worst
from .ceilings import measure_ceilings
from .matrix import ATTENTION_VARIANTS, Cell, MatrixSpec
from .timing import harness_overhead_ms, measure, measure_stages, throughput
from .workmodel import cell_work_columns

REFERENCE_RUNTIME = "torch"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and make sure files can be written in it.

    Raises:
        PermissionError: naming the directory and the fix.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"output directory {directory} is not writable ({exc.strerror or exc}); choose another with --out"
        ) from exc


class ResultWriter:
    """Appends rows to ``results.jsonl``, flushed and fsynced per row so that a crash loses nothing."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "results.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row, default=_json_default) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def read_rows(run_dir: Path) -> list[dict]:
    """Rows of ``results.jsonl`` (a torn last line from a killed writer is ignored)."""
    path = Path(run_dir) / "results.jsonl"
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass
class RunSummary:
    """What a finished run produced and where the wall time went (seconds)."""

    run_dir: Path
    rows: list[dict] = field(default_factory=list)
    export_s: float = 0.0
    session_s: float = 0.0
    timing_s: float = 0.0
    reference_s: float = 0.0


def _export(cell: Cell, spec: MatrixSpec, cache_dir: Path | None) -> ExportArtifact:
    if foreign.is_foreign(cell):
        return foreign.foreign_artifact(foreign.find_path(spec.onnx_models, cell.model))
    checkpoint = foreign.find_path(spec.checkpoints, cell.model)
    if checkpoint is not None:
        config = checkpoint_config(checkpoint, attention=ATTENTION_VARIANTS[cell.attention])
    else:
        config = get_preset(cell.model, attention=ATTENTION_VARIANTS[cell.attention])
    return to_onnx(config, seed=spec.seed, precision=cell.precision, opset=cell.opset,
                   exporter=spec.exporter, cache_dir=cache_dir, model_name=cell.model, checkpoint=checkpoint,
                   variant=cell.attention, part=cell.part)


def _base_row(cell: Cell, run_id: str, artifact: ExportArtifact | None, n_params: int | None) -> dict:
    return {
        "run_id": run_id, "cell_id": cell.cell_id, "model": cell.model, "part": cell.part,
        "attention": cell.attention, "precision": cell.precision, "opset": cell.opset,
        "runtime": cell.runtime, "config_id": cell.config_id, "batch": cell.batch, "seq_len": cell.seq_len,
        "n_params": n_params, "reference_runtime": foreign.reference_runtime(cell, REFERENCE_RUNTIME),
        "onnx_sha256": artifact.sha256 if artifact else None,
        "export_s": artifact.export_s if artifact else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_matrix(
    spec: MatrixSpec,
    run_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    on_cell: Callable[[Cell, dict], None] | None = None,
    ceilings: bool | dict = False,
    tune: bool | list[str] = False,
) -> RunSummary:
    """Run every cell of ``spec`` and write the run directory.

    Cells that cannot run (runtime unavailable, fallback, unsupported option) become ``skipped`` rows with the
    reason; errors inside a cell become ``failed`` rows with the exception; neither stops the matrix.

    Args:
        spec: the matrix (validated here).
        run_dir: output directory (created; must be writable).
        cache_dir: export cache (default ``onnxbench.export.default_cache_dir()``).
        on_cell: called after each row is written (progress display).
        ceilings: measure the machine's ceilings first (:mod:`onnxbench.benchmarks.ceilings`, a few seconds)
            into ``header["ceilings"]``, or take them as given (a dict from ``measure_ceilings``); the
            ``frac_peak_*`` columns are empty without them.
        tune: after each (artifact, runtime) group, search its grid (:mod:`onnxbench.benchmarks.tune`) and run
            the group again with the best configuration as ``config_id = "tuned"`` cells; the search is recorded
            in ``header["tuning"]``. A list tunes only the runtimes named in it.

    Raises:
        ValueError: for an invalid matrix (before anything runs).
        PermissionError: if ``run_dir`` is not writable.
    """
    spec.validate()
    run_dir = Path(run_dir)
    check_writable(run_dir)
    run_id = new_run_id()
    cache = Path(cache_dir) if cache_dir else None
    header = {"run_id": run_id, "started": _now(), "env": env.collect(), "matrix": spec.to_dict(),
              "harness_overhead_ms": harness_overhead_ms(),
              "ceilings": (ceilings if isinstance(ceilings, dict) else measure_ceilings()) if ceilings else None}
    (run_dir / "header.json").write_text(json.dumps(header, indent=2, default=_json_default))
    writer = ResultWriter(run_dir)
    summary = RunSummary(run_dir)
    overhead = header["harness_overhead_ms"]

    def emit(row: dict, cell: Cell) -> None:
        row = make_row(**row, harness_overhead_ms=overhead, timestamp=_now())
        row.update(_work_columns(cell, row, header["ceilings"], spec))
        writer.write(row)
        summary.rows.append(row)
        if on_cell:
            on_cell(cell, row)

    try:
        for artifact_cells in _group(spec.expand(), key=lambda c: c.artifact_key):
            first = artifact_cells[0]
            try:
                t0 = time.perf_counter()
                artifact = _export(first, spec, cache)
                summary.export_s += time.perf_counter() - t0
            except Exception as exc:
                for cell in artifact_cells:
                    emit({**_base_row(cell, run_id, None, None), "status": "failed",
                          "reason": f"export failed: {type(exc).__name__}: {exc}"}, cell)
                continue
            n_params = foreign.n_params(artifact)
            references = ReferenceOutputs(artifact)
            try:
                for runtime_cells in _group(artifact_cells, key=lambda c: c.runtime):
                    _run_runtime(runtime_cells, artifact, spec, run_id, n_params, references, emit, summary)
                    if tune is True or (tune and runtime_cells[0].runtime in tune):
                        _run_tuned(runtime_cells, artifact, spec, run_id, n_params, references, emit, summary,
                                   header)
            finally:
                summary.reference_s += references.seconds
                references.close()
    finally:
        writer.close()
        header["finished"] = _now()
        (run_dir / "header.json").write_text(json.dumps(header, indent=2, default=_json_default))
        write_tables(run_dir)
    return summary


class ReferenceOutputs:
    """fp32 torch eager outputs of one artifact's model, computed once per shape and shared by every runtime.

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


def _work_columns(cell: Cell, row: dict, ceilings: dict | None, spec: MatrixSpec) -> dict:
    """Work-model columns (flops, bytes_moved, achieved_*, frac_peak_*) of an ok row of a preset or checkpoint
    model; a foreign ONNX model has no analytic work model and gets none."""
    if row.get("status") != "ok" or foreign.is_foreign(cell):
        return {}
    checkpoint = foreign.find_path(spec.checkpoints, cell.model)
    if checkpoint is not None:
        config = checkpoint_config(checkpoint, attention=ATTENTION_VARIANTS[cell.attention])
    elif cell.model in PRESETS:
        config = get_preset(cell.model, attention=ATTENTION_VARIANTS[cell.attention])
    else:
        return {}
    return cell_work_columns(config, cell.part, cell.batch, cell.seq_len, cell.precision,
                             row["latency_ms_p50"], ceilings, row.get("device") or "cpu")


def _run_tuned(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, run_id: str, n_params: int | None,
               references: ReferenceOutputs, emit, summary: RunSummary, header: dict) -> None:
    """Search the runtime's grid on this group's shapes, then run the group with the winner as "tuned" cells."""
    name = cells[0].runtime
    if not tuning.grid(name) or foreign.is_foreign(cells[0]) or not runtimes.get(name).availability()[0]:
        return
    shapes = list(dict.fromkeys((c.batch, c.seq_len) for c in cells))
    t0 = time.perf_counter()
    result = tuning.search(name, artifact, shapes, seed=spec.seed, axis_ranges=_axis_ranges(cells))
    summary.timing_s += time.perf_counter() - t0
    header.setdefault("tuning", []).append(
        {"runtime": name, "model": cells[0].model, "attention": cells[0].attention,
         "precision": cells[0].precision, "opset": cells[0].opset, **result.as_dict()})
    if result.best is None:
        return
    tuned = [dataclasses.replace(c, config_id="tuned") for c in cells]
    _run_runtime(tuned, artifact, spec, run_id, n_params, references, emit, summary, options=result.options,
                 label={"tune_config": result.best})


def _run_runtime(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, run_id: str,
                 n_params: int | None, references: ReferenceOutputs, emit, summary: RunSummary,
                 options: RuntimeOptions | None = None, label: dict | None = None) -> None:
    name = cells[0].runtime
    runtime = runtimes.get(name)
    ok, why = runtime.availability()
    if not ok:
        for cell in cells:
            emit({**_base_row(cell, run_id, artifact, n_params), "status": "skipped", "reason": why}, cell)
        return
    t0 = time.perf_counter()
    try:
        session = runtime.open(artifact, dataclasses.replace(options or RuntimeOptions(),
                                                             axis_ranges=_axis_ranges(cells)))
    except RuntimeUnavailable as exc:
        for cell in cells:
            emit({**_base_row(cell, run_id, artifact, n_params), "status": "skipped", "reason": str(exc)}, cell)
        return
    except Exception as exc:
        for cell in cells:
            emit({**_base_row(cell, run_id, artifact, n_params), "status": "failed",
                  "reason": f"session creation failed: {type(exc).__name__}: {exc}"}, cell)
        return
    summary.session_s += time.perf_counter() - t0
    attention_provider = _attention_provider(session, artifact, cells[0], spec)
    with session:
        for cell in cells:
            base = {**_base_row(cell, run_id, artifact, n_params),
                    "provider_requested": session.provider_requested,
                    "provider_actual": session.provider_actual, "device": session.device,
                    "attention_provider": attention_provider,
                    "options": json.dumps({**session.options, **(label or {})}, sort_keys=True, default=str),
                    "build_s": session.build_s}
            try:
                feeds = foreign.cell_feeds(session.inputs(), cell, artifact, spec.seed, spec.dims, spec.int_ranges)
                reference = references.get((cell.batch, cell.seq_len), feeds)
                outputs = session.run(feeds)
                tol = tolerance_for(cell.precision, name, bool(session.options.get("tf32", False)))
                agreement = worst(compare_outputs(outputs, reference, tol))
                t1 = time.perf_counter()
                timing, _ = measure(session.prepare(feeds), session.synchronize, spec.timing)
                split = _split_timing(session, feeds, spec)
                summary.timing_s += time.perf_counter() - t1
                seq_s, tok_s = throughput(cell.batch, cell.seq_len, timing.latency_ms_p50)
                emit({**base, **agreement.as_row(), **timing.as_row(), **split, "status": "ok", "reason": "",
                      "throughput_seq_s": seq_s, "throughput_tok_s": tok_s,
                      "build_s": session.build_s,  # after the first run: includes a per-shape compile
                      "peak_rss_mb": psutil.Process().memory_info().rss / 2**20}, cell)
            except Exception as exc:
                emit({**base, "status": "failed",
                      "reason": f"{type(exc).__name__}: {exc} @ {_last_frame(exc)}"}, cell)


def _axis_ranges(cells: list[Cell]) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of the batch sizes and sequence lengths one session will run (its optimization
    profile, for runtimes that build for a shape range)."""
    from ..runtimes.profile import axis_ranges

    return axis_ranges([c.batch for c in cells], [c.seq_len for c in cells])


def _split_timing(session, feeds: dict[str, np.ndarray], spec: MatrixSpec) -> dict[str, float]:
    """``h2d_ms`` / ``compute_ms`` / ``d2h_ms`` for sessions that offer the stages (GPU runtimes), else {}."""
    stages = session.prepare_stages(feeds)
    if not stages:
        return {}
    medians = measure_stages(stages, session.synchronize, spec.timing)
    return {f"{name}_ms": ms for name, ms in medians.items()}

def _attention_provider(session, artifact: ExportArtifact, cell: Cell, spec: MatrixSpec) -> str | None:
    """The EP(s) that ran the attention cores, from one profiled inference (ONNX Runtime sessions only)."""
    from ..runtimes.ort import OrtSession
    from ..runtimes.ort_profile import profile_attention

    if not isinstance(session, OrtSession):
        return None
    try:
        feeds = foreign.cell_feeds(session.inputs(), cell, artifact, spec.seed, spec.dims, spec.int_ranges)
        return profile_attention(artifact.path, session.session, feeds).summary
    except Exception as exc:  # the measurement itself must not be lost to a profiling problem
        return f"unknown ({type(exc).__name__}: {exc})"


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def _group(items: Iterable, key) -> list[list]:
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def write_tables(run_dir: Path) -> None:
    """Write ``results.csv`` and ``results.parquet`` from ``results.jsonl`` (columns in schema order)."""
    import pandas as pd

    from ..schema import COLUMNS

    rows = read_rows(run_dir)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.to_csv(run_dir / "results.csv", index=False)
    try:
        frame.to_parquet(run_dir / "results.parquet", index=False)
    except Exception as exc:  # pyarrow missing or a column of mixed types: CSV and JSONL still stand
        (run_dir / "results.parquet.error").write_text(f"{type(exc).__name__}: {exc}\n")
