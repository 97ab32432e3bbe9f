"""The matrix runner: export once per artifact, run each (artifact, runtime) group in a worker process that
opens one session and measures every shape, append one row per cell to ``results.jsonl`` as soon as it arrives.

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
import pickle
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import psutil

from .. import env, runtimes
from ..export import ExportArtifact, to_onnx
from ..models import PRESETS, get_preset
from ..models.gpt2 import checkpoint_config
from ..runtimes import RuntimeOptions
from ..schema import make_row
from . import foreign, worker
from . import tune as tuning
from .ceilings import measure_ceilings
from .matrix import ATTENTION_VARIANTS, Cell, MatrixSpec
from .timing import harness_overhead_ms
from .worker import REFERENCE_RUNTIME, ReferenceOutputs  # noqa: F401 - re-exported for callers of the runner
from .worker import axis_ranges as _axis_ranges
from .workmodel import cell_work_columns


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
    worker_start_s: float = 0.0


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
    resume: bool = False,
    retry_failed: bool = False,
    isolate: bool = True,
    ceilings: bool | dict = False,
    tune: bool | list[str] = False,
) -> RunSummary:
    """Run every cell of ``spec`` and write the run directory.

    Each (artifact, runtime) group runs in its own worker process (:mod:`onnxbench.benchmarks.worker`) that
    streams rows back; every row is appended to ``results.jsonl`` and flushed as it arrives. Cells that cannot
    run (runtime unavailable, fallback, a shape beyond the model's limits) become ``skipped`` rows with the
    reason; an exception in a cell, a worker killed by a signal (e.g. the out-of-memory killer) or silent for
    ``spec.cell_timeout_s`` makes that cell a ``failed`` row with the reason, and the group's remaining cells go
    on in a fresh worker. On ``KeyboardInterrupt`` the worker is ended, the header is marked ``interrupted``,
    ``results.csv``/``results.parquet`` are written from the rows so far, and the interrupt is re-raised.

    Args:
        spec: the matrix (validated here).
        run_dir: output directory (created; must be writable).
        cache_dir: export cache (default ``onnxbench.export.default_cache_dir()``).
        on_cell: called after each row is written (progress display).
        resume: continue the run in ``run_dir``: keep its run id and skip every cell that already has a row.
        retry_failed: with ``resume``, drop the ``failed`` rows first so that those cells run again.
        isolate: run groups in worker processes (default); ``False`` runs them in this process (debugging).
        ceilings: measure the machine's ceilings first (:mod:`onnxbench.benchmarks.ceilings`, a few seconds)
            into ``header["ceilings"]``, or take them as given (a dict from ``measure_ceilings``); the
            ``frac_peak_*`` columns are empty without them.
        tune: after each (artifact, runtime) group, search its grid (:mod:`onnxbench.benchmarks.tune`) and run
            the group again with the best configuration as ``config_id = "tuned"`` cells; the search is recorded
            in ``header["tuning"]``. A list tunes only the runtimes named in it.

    Raises:
        ValueError: for an invalid matrix (before anything runs).
        PermissionError: if ``run_dir`` is not writable.
        FileNotFoundError: if ``resume`` and ``run_dir`` has no ``header.json``.
    """
    spec.validate()
    run_dir = Path(run_dir)
    check_writable(run_dir)
    cache = Path(cache_dir) if cache_dir else None
    if resume:
        header = _resume_header(run_dir, retry_failed)
        done = {row["cell_id"] for row in read_rows(run_dir)}
    else:
        header = {"run_id": new_run_id(), "started": _now(), "env": env.collect(), "matrix": spec.to_dict(),
                  "harness_overhead_ms": harness_overhead_ms(),
                  # Other processes on the CPUs distort every timing (torch's OpenMP threads worst of all);
                  # recorded so that the report and the CLI can say so.
                  "cpu_busy_pct_at_start": psutil.cpu_percent(interval=0.5),
                  "ceilings": (ceilings if isinstance(ceilings, dict) else measure_ceilings()) if ceilings else None}
        done = set()
    run_id = header["run_id"]
    header["interrupted"] = True  # until the run ends normally: a killed parent leaves it marked
    header.pop("finished", None)
    _write_header(run_dir, header)
    writer = ResultWriter(run_dir)
    summary = RunSummary(run_dir)
    overhead = header["harness_overhead_ms"]
    interrupted = False

    def emit(row: dict, cell: Cell) -> None:
        row = make_row(**row, harness_overhead_ms=overhead, timestamp=_now())
        row.update(_work_columns(cell, row, header.get("ceilings"), spec))
        writer.write(row)
        summary.rows.append(row)
        if on_cell:
            on_cell(cell, row)

    try:
        for artifact_cells in _group([c for c in spec.expand() if c.cell_id not in done],
                                     key=lambda c: c.artifact_key):
            runnable = []
            for cell in artifact_cells:
                why = spec.unrunnable_reason(cell)
                if why:
                    emit({**_base_row(cell, run_id, None, None), "status": "skipped", "reason": why}, cell)
                else:
                    runnable.append(cell)
            if not runnable:
                continue
            try:
                t0 = time.perf_counter()
                artifact = _export(runnable[0], spec, cache)
                summary.export_s += time.perf_counter() - t0
            except Exception as exc:
                for cell in runnable:
                    emit({**_base_row(cell, run_id, None, None), "status": "failed",
                          "reason": f"export failed: {type(exc).__name__}: {exc}"}, cell)
                continue
            n_params = foreign.n_params(artifact)
            for runtime_cells in _group(runnable, key=lambda c: c.runtime):
                by_id = {c.cell_id: c for c in runtime_cells}

                def emit_values(values: dict, by_id=by_id, artifact=artifact, n_params=n_params) -> None:
                    cell = by_id[values["cell_id"]]
                    emit({**_base_row(cell, run_id, artifact, n_params), **values}, cell)

                run_group = _run_group_in_worker if isolate else _run_group_here
                run_group(runtime_cells, artifact, spec, emit_values, summary)
                if tune is True or (tune and runtime_cells[0].runtime in tune):
                    _run_tuned(runtime_cells, artifact, spec, run_id, n_params, emit, summary, header, run_group)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        writer.close()
        header["interrupted"] = interrupted
        if not interrupted:
            header["finished"] = _now()
        _write_header(run_dir, header)
        write_tables(run_dir)
    return summary


def _write_header(run_dir: Path, header: dict) -> None:
    tmp = run_dir / "header.json.tmp"
    tmp.write_text(json.dumps(header, indent=2, default=_json_default))
    os.replace(tmp, run_dir / "header.json")


def _resume_header(run_dir: Path, retry_failed: bool) -> dict:
    path = run_dir / "header.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no header.json: not a run directory to resume")
    header = json.loads(path.read_text())
    header.setdefault("resumed", []).append(_now())
    if retry_failed:
        kept = [row for row in read_rows(run_dir) if row.get("status") != "failed"]
        tmp = run_dir / "results.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, run_dir / "results.jsonl")
    return header


def resume_spec(run_dir: str | Path) -> MatrixSpec:
    """The matrix recorded in ``RUN_DIR/header.json`` (what ``onnxbench run --resume`` continues).

    Raises:
        FileNotFoundError: if there is no header.
        ValueError: if the header holds no matrix.
    """
    path = Path(run_dir) / "header.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no header.json: not a run directory to resume")
    matrix = json.loads(path.read_text()).get("matrix")
    if not matrix:
        raise ValueError(f"{path} records no matrix; cannot resume it")
    return MatrixSpec.from_dict(matrix)


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
               emit, summary: RunSummary, header: dict, run_group) -> None:
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
    tuned = {c.cell_id: c for c in (dataclasses.replace(c, config_id="tuned") for c in cells)}

    def emit_values(values: dict) -> None:
        cell = tuned[values["cell_id"]]
        emit({**_base_row(cell, run_id, artifact, n_params), **values}, cell)

    run_group(list(tuned.values()), artifact, spec, emit_values, summary, options=result.options,
              label={"tune_config": result.best})


def _run_group_here(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, emit_values,
                    summary: RunSummary, options: RuntimeOptions | None = None, label: dict | None = None) -> None:
    def send(kind: str, payload, extra=None) -> None:
        _account(kind, payload, extra or {}, summary)
        if kind == "row":
            emit_values(payload)

    worker.run_group(cells, artifact, spec, send, options, label)


def _account(kind: str, payload, extra: dict, summary: RunSummary) -> None:
    if kind == "session":
        summary.session_s += payload["session_s"]
    elif kind == "row":
        summary.timing_s += extra.get("timing_s", 0.0)
        summary.reference_s += extra.get("reference_s", 0.0)


#: A worker gets this long (s) to import torch and the runtimes before its first message, however small
#: ``cell_timeout_s`` is: start-up is not a cell.
STARTUP_TIMEOUT_S = 120.0


def _start_worker(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, options: RuntimeOptions | None,
                  label: dict | None) -> tuple[subprocess.Popen, Connection]:
    """Start ``python -c worker.main()`` with the group pickled on its stdin and a one-way pipe for messages.

    A fresh interpreter rather than a ``multiprocessing`` child: spawn would re-import the caller's ``__main__``
    (breaking scripts without a ``__main__`` guard) and fork would inherit torch's thread pools.
    """
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
        proc.stdin.write(pickle.dumps((cells, artifact, spec, options, label)))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once: its exit code tells why
    return proc, receiver


def _run_group_in_worker(cells: list[Cell], artifact: ExportArtifact, spec: MatrixSpec, emit_values,
                         summary: RunSummary, options: RuntimeOptions | None = None,
                         label: dict | None = None) -> None:
    """Run one (artifact, runtime) group in worker processes; a worker that dies or goes silent costs the cell
    it was measuring (a ``failed`` row with the reason) and a fresh worker takes the rest."""
    pending = list(cells)
    while pending:
        started = time.perf_counter()
        proc, receiver = _start_worker(pending, artifact, spec, options, label)
        current, session_open, reason = None, False, None
        try:
            wait = max(STARTUP_TIMEOUT_S, spec.cell_timeout_s)
            while True:
                if not receiver.poll(wait):
                    reason = f"timed out after {wait:g} s (cell_timeout_s); worker killed"
                    break
                wait = spec.cell_timeout_s
                try:
                    kind, payload, extra = receiver.recv()
                except EOFError:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
                    reason = _exit_reason(proc.returncode)
                    break
                _account(kind, payload, extra, summary)
                if kind == "started":
                    summary.worker_start_s += time.perf_counter() - started
                elif kind == "session":
                    session_open = True
                elif kind == "begin":
                    current = payload
                elif kind == "row":
                    emit_values(payload)
                    pending = [c for c in pending if c.cell_id != payload["cell_id"]]
                    current = None
                elif kind == "done":
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            receiver.close()
        if not pending or reason is None:
            for cell in pending:  # "done" without a row for some cells: never drop them silently
                emit_values({"cell_id": cell.cell_id, "status": "failed", "reason": "worker sent no row"})
            return
        if current is None or not session_open:
            # died before measuring any cell (imports, session creation): every remaining cell shares the fate
            for cell in pending:
                emit_values({"cell_id": cell.cell_id, "status": "failed",
                             "reason": f"{reason} before measuring (start-up or session creation)"})
            return
        emit_values({"cell_id": current, "status": "failed", "reason": f"{reason} while measuring this cell"})
        pending = [c for c in pending if c.cell_id != current]


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = ", e.g. by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"worker killed by signal {-exitcode} ({name}{hint})"
    return f"worker exited with status {exitcode}"


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
