"""The matrix runner: build the matrix, export once per artifact, hand the (artifact, runtime) groups to an
executor (:mod:`onnxbench.benchmarks.run.executors`), and append one row per cell to the run directory
(:mod:`onnxbench.rundir`) as soon as its measurement arrives; optionally tune each group afterwards
(:mod:`onnxbench.benchmarks.measure.tune`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ... import env, runtimes
from ...export import ExportArtifact, default_cache_dir
from ...rundir import ResultWriter, RunDir, check_writable, claim
from ...runtimes import RuntimeOptions
from ...tolerance import tf32_allowed
from ..cells import Cell
from ..measure import tune as tuning
from ..measure.ceilings import measure_ceilings, reprobe
from ..measure.footprint import host_available, memory_reason
from ..measure.timing import harness_overhead_ms
from ..measure.workmodel import above_peak_reason, achieved, row_fractions
from ..plan.matrix import Matrix, MatrixSpec
from ..plan.sources import ModelSource
from ..rows import CellKey, Measurement, ModelInfo, RunStamp, WorkColumns, assemble, now
from . import resume as resuming
from .executors import Executor, InProcessExecutor, ProcessPerGroupExecutor
from .messages import CellFinished, CellStarted, Group, Message, SessionOpened, WorkerStarted
from .worker import session_ranges


def check_cache_writable(cache_dir: Path) -> None:
    """The export cache must take files before any work: a run whose every cell fails on a read-only cache
    would have measured nothing.

    Raises:
        PermissionError: naming the folder and the fix (``--cache-dir``, ``$ONNXBENCH_CACHE``).
    """
    try:
        check_writable(cache_dir)
    except PermissionError as exc:
        raise PermissionError(f"the export cache {cache_dir} is not writable ({exc.__cause__ or exc}); choose "
                              "another with --cache-dir or $ONNXBENCH_CACHE") from None


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@dataclass
class RunSummary:
    """What a finished run produced and where the wall time went (seconds). ``exports`` counts the artifacts
    the run asked the exporter for (ONNX files given by the user are read, not exported), ``exports_cached``
    those served from the export cache; ``set_aside`` is where an earlier run in the directory was moved
    (``overwrite``)."""

    run_dir: Path
    rows: list[dict] = field(default_factory=list)
    set_aside: Path | None = None
    export_s: float = 0.0
    exports: int = 0
    exports_cached: int = 0
    session_s: float = 0.0
    timing_s: float = 0.0
    reference_s: float = 0.0
    worker_start_s: float = 0.0


def run_matrix(
    spec: MatrixSpec | Matrix,
    run_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    on_cell: Callable[[Cell, dict], None] | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    isolate: bool = True,
    ceilings: bool | dict = False,
    tune: bool | list[str] = False,
    executor: Executor | None = None,
    overwrite: bool = False,
    on_start: Callable[[Matrix, list[Cell], Path | None], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run every cell of ``spec`` and write the run directory.

    The cells sharing an (artifact, runtime) are one group, measured by ``executor`` (by default each group in
    its own worker process) which streams measurements back; every row is appended to ``results.jsonl`` and
    flushed as it arrives. Cells that cannot run (runtime unavailable, fallback, a shape beyond the model's
    limits) become ``skipped`` rows with the reason; an exception in a cell, a worker killed by a signal (e.g. the
    out-of-memory killer) or silent for ``spec.cell_timeout_s`` makes that cell a ``failed`` row with the reason,
    and the group's remaining cells go on in a fresh worker. On ``KeyboardInterrupt`` the worker is ended, the
    header is marked ``interrupted``, ``results.csv``/``results.parquet`` are written from the rows so far, and
    the interrupt is re-raised.

    Args:
        spec: the matrix (validated and built here), or one already built (:meth:`MatrixSpec.build`).
        run_dir: output directory (created; must be writable).
        cache_dir: export cache (default ``onnxbench.export.default_cache_dir()``).
        on_cell: called after each row is written (progress display).
        resume: continue the run in ``run_dir``: keep its run id and skip every cell that already has a row.
        retry_failed: with ``resume``, drop the ``failed`` rows first so that those cells run again.
        isolate: without ``executor``: measure groups in worker processes (default, :class:`ProcessPerGroupExecutor`);
            ``False`` measures them in this process (:class:`InProcessExecutor`, debugging).
        ceilings: measure the machine's ceilings first (:mod:`onnxbench.benchmarks.measure.ceilings`, a few seconds)
            into ``header["ceilings"]``, or take them as given (a dict from ``measure_ceilings``); the
            ``frac_peak_*`` columns are empty without them.
        tune: after the matrix, search the grid (:mod:`onnxbench.benchmarks.measure.tune`) of each (artifact, runtime)
            group that had an ok cell and run the group again with the best configuration as
            ``config_id = "tuned"`` cells; the search is recorded in ``header["tuning"]``. A list tunes only the
            runtimes named in it.
        executor: measures the groups (overrides ``isolate``).
        overwrite: if ``run_dir`` holds a run, move it aside first (:func:`onnxbench.rundir.set_aside`; the
            summary's ``set_aside`` says where).
        on_start: called once the run directory and the export cache are checked, before any work, with the
            matrix, the cells left to run and where an earlier run was set aside (the CLI prints the plan).
        on_progress: called with a phrase saying what the run does now (exporting an artifact, measuring a cell
            (its reference outputs first), tuning a group), for a progress display.

    Ceilings the run measured are probed again when it ends (also after a resume) and the higher kept
    (:func:`onnxbench.benchmarks.measure.ceilings.reprobe`); every row's ``frac_peak_*`` is then recomputed against
    them, and a row still above a ceiling carries a warning in its ``reason``
    (:func:`onnxbench.benchmarks.measure.workmodel.above_peak_reason`).

    Raises:
        ValueError: for an invalid matrix, or an empty ``run_dir`` (before anything runs).
        PermissionError: if ``run_dir`` or the export cache is not writable (before anything runs).
        FileNotFoundError: if ``resume`` and ``run_dir`` has no ``header.json``.
        FileExistsError: if not ``resume`` and ``run_dir`` already holds a run (``overwrite`` moves it aside).
    """
    matrix = spec if isinstance(spec, Matrix) else spec.build()
    spec = matrix.spec
    set_aside = claim(run_dir, resume, overwrite)  # every precondition of the run directory, in one place
    run_dir = Path(run_dir)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    check_cache_writable(cache_dir)
    directory = RunDir(run_dir)
    if resume:
        header, done = resuming.reopen(run_dir, retry_failed)
        header.setdefault("n_cells", len(matrix.cells))  # runs recorded before the count was
    else:
        header = {"run_id": new_run_id(), "started": now(), "env": env.collect(), "matrix": spec.to_dict(),
                  "harness_overhead_ms": harness_overhead_ms(),
                  # Other processes on the CPUs distort every timing (torch's OpenMP threads worst of all);
                  # recorded so that the report and the CLI can say so.
                  "cpu_busy_pct_at_start": env.cpu_busy_pct(0.5),
                  "ceilings": (ceilings if isinstance(ceilings, dict) else measure_ceilings()) if ceilings else None,
                  "n_cells": len(matrix.cells)}  # so that a report can tell how many cells never ran
        done = set()
    header["interrupted"] = True  # until the run ends normally: a killed parent leaves it marked
    header.pop("finished", None)
    directory.write_header(header)
    todo = [c for c in matrix.cells if c.cell_id not in done]
    if on_start:
        on_start(matrix, todo, set_aside)
    executor = executor or (ProcessPerGroupExecutor() if isolate else InProcessExecutor())
    interrupted = False
    with directory.writer() as writer:
        run = _Run(matrix, header, writer, RunSummary(run_dir, set_aside=set_aside), cache_dir, on_cell,
                   on_progress or (lambda what: None))
        try:
            run.execute(executor, run.groups(todo))
            if tune:
                run.execute(executor, run.tuned_groups(tune))
            writer.close()
            _reprobe_ceilings(directory, header, run.summary)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            header["interrupted"] = interrupted
            if not interrupted:
                header["finished"] = now()
            # the highest load of other processes while cells were measured (a resumed run keeps its earlier
            # high): the busy rule reads it beside the load at start (onnxbench.noise.busy_pct)
            loads = [r["cpu_busy_pct"] for r in run.summary.rows if r.get("cpu_busy_pct") is not None]
            if header.get("cpu_busy_pct_during") is not None:
                loads.append(header["cpu_busy_pct_during"])
            header["cpu_busy_pct_during"] = max(loads, default=None)
            directory.write_header(header)
            directory.write_tables()
    return run.summary


class _Run:
    """One run's state: turns groups' messages into rows (the only place rows are written) and keeps the
    summary's accounting."""

    def __init__(self, matrix: Matrix, header: dict, writer: ResultWriter, summary: RunSummary,
                 cache_dir: Path | None, on_cell: Callable[[Cell, dict], None] | None,
                 progress: Callable[[str], None]) -> None:
        self.matrix, self.header, self.writer, self.summary = matrix, header, writer, summary
        self.cache_dir, self.on_cell, self.progress = cache_dir, on_cell, progress
        self.stamp = RunStamp(header["run_id"], header["harness_overhead_ms"])
        self.ok_groups: dict[Group, None] = {}  # groups with at least one ok cell, in order, for tuning
        self.defaults: dict[str, Measurement] = {}  # ok measurements of default cells, by cell_id, for tuning

    def emit(self, cell: Cell, source: ModelSource, artifact: ExportArtifact | None,
             measurement: Measurement) -> None:
        """Assemble ``cell``'s row from its parts, append it to ``results.jsonl`` and report it."""
        # A cached or read (not exported) artifact has no export time: empty, not 0.0 s.
        exported = artifact is not None and source.exported and not artifact.cached
        model = ModelInfo(source.n_params if artifact else None, source.reference_runtime,
                          artifact.sha256 if artifact else None, artifact.export_s if exported else None,
                          source.decoder_layout(cell))
        key = CellKey.of(cell)
        if artifact is not None:  # the opset of the file that ran, never the axis value asked for
            key = dataclasses.replace(key, opset=artifact.opset)
        try:
            work = self._work(cell, source, artifact, measurement)
            gap = source.work_gap(cell, artifact) if measurement.ok and work is None else ""
        except ValueError as exc:  # a graph whose shapes the counter cannot bind costs its work columns, not the run
            work, gap = None, f"the graph counter could not bind the graph's shapes: {exc}"
        row = assemble(dataclasses.replace(self.stamp, timestamp=now()), key, model,
                       *measurement.parts(), work)
        if measurement.ok and work is None and gap:
            # empty work columns are never silent (docs/work_model.md)
            row["reason"] = "; ".join(filter(None, (row["reason"], f"note: work not counted ({gap})")))
        row["reason"] = above_peak_reason(row)
        self.writer.write(row)
        self.summary.rows.append(row)
        if self.on_cell:
            self.on_cell(cell, row)

    def _work(self, cell: Cell, source: ModelSource, artifact: ExportArtifact | None,
              measurement: Measurement) -> WorkColumns | None:
        if not measurement.ok:
            return None
        work = source.work(cell, artifact)
        if work is None:
            return None
        device = (measurement.session.device if measurement.session else None) or "cpu"
        options = json.loads(measurement.session.options or "{}") if measurement.session else {}
        tf32 = tf32_allowed(options)  # an fp32 cell with TF32 is read against the TF32 peak
        return WorkColumns(**achieved(work, measurement.timing.latency_ms_p50, self.header.get("ceilings"),
                                      device, cell.precision, tf32))

    def groups(self, cells: list[Cell]) -> Iterator[Group]:
        """The (artifact, runtime) groups of ``cells``, exporting each artifact when its groups are pulled; cells
        that cannot run, cells whose estimated memory exceeds the host's available memory
        (:mod:`onnxbench.benchmarks.measure.footprint`) and cells whose export fails get their rows here."""
        spec = self.matrix.spec
        for artifact_cells in _group(cells, key=lambda c: c.artifact_key):
            source = self.matrix.source(artifact_cells[0])
            runnable = []
            host_free = host_available()  # before this artifact's export: nothing allocated for its cells yet
            for cell in artifact_cells:
                why = self.matrix.unrunnable_reason(cell) or memory_reason(
                    source.footprint(cell), runtimes.runtime_class(cell.runtime).device, host_free)
                if why:
                    self.emit(cell, source, None, Measurement.skipped(why))
                else:
                    runnable.append(cell)
            if not runnable:
                continue
            try:
                first = runnable[0]
                via = f" via {first.export_path}" if first.export_path != "onnxbench" else ""
                self.progress(f"exporting {source.name} {first.part} {first.attention} {first.precision} opset "
                              f"{first.opset}{via}" if source.exported else f"reading {source.name}")
                t0 = time.perf_counter()
                artifact = source.artifact(first, self.cache_dir)
                self.summary.export_s += time.perf_counter() - t0
                if source.exported:
                    self.summary.exports += 1
                    self.summary.exports_cached += artifact.cached
            except Exception as exc:
                for cell in runnable:
                    self.emit(cell, source, None, Measurement.failed(f"export failed: {type(exc).__name__}: {exc}"))
                continue
            for runtime_cells in _group(runnable, key=lambda c: (c.runtime, c.threads)):
                threads = runtime_cells[0].threads
                options = RuntimeOptions(intra_op_threads=threads) if threads else None
                yield Group(source, artifact, tuple(runtime_cells), spec, options=options, cache_dir=self.cache_dir)

    def tuned_groups(self, tune: bool | list[str]) -> Iterator[Group]:
        """For each group at the runtime's default thread count (the search picks its own)
        that had an ok cell and whose runtime is tuned: search the runtime's grid on the group's
        shapes (recorded in ``header["tuning"]``) and choose a configuration per shape
        (:func:`onnxbench.benchmarks.measure.tune.choose`); then the group's cells again as ``tuned`` cells, one
        group per chosen configuration. A shape that kept the default gets the default row's measurement as its
        tuned row (written here, not measured again; its ``reason`` says so)."""
        for group in list(self.ok_groups):
            name = group.runtime
            if group.cells[0].threads:  # the search picks its own thread count: tune the default-thread cells
                continue
            if not (tune is True or name in tune) or not tuning.grid(name) \
                    or not runtimes.get(name).availability()[0]:
                continue
            cells = group.cells
            shapes = list(dict.fromkeys((c.batch, c.seq_len) for c in cells))
            self.progress(f"tuning {name} on {group.source.name} {cells[0].attention} {cells[0].precision}")
            t0 = time.perf_counter()
            result = tuning.search(name, group.artifact, shapes, feeds=group.source.feeds,
                                   profile_ranges=session_ranges(cells, group.source))
            self.summary.timing_s += time.perf_counter() - t0
            first = cells[0]
            self.header.setdefault("tuning", []).append(
                {"runtime": name, "model": first.model, "attention": first.attention, "precision": first.precision,
                 "opset": first.opset, **result.as_dict()})
            by_config: dict[str, list[Cell]] = {}
            for cell in cells:
                key = tuning.shape_key(cell.batch, cell.seq_len)
                chosen, tuned = result.best.get(key), dataclasses.replace(cell, config_id="tuned")
                default = self.defaults.get(cell.cell_id)
                if chosen == tuning.DEFAULT and default is not None:
                    self.emit(tuned, group.source, group.artifact, _as_default(default, result.why[key]))
                elif chosen is not None:
                    by_config.setdefault(chosen, []).append(tuned)
            for chosen, tuned_cells in by_config.items():
                options = None if chosen == tuning.DEFAULT else result.options(chosen)
                yield dataclasses.replace(group, cells=tuple(tuned_cells), options=options,
                                          label={"tune_config": chosen})

    def execute(self, executor: Executor, groups: Iterable[Group]) -> None:
        """Run ``groups`` through ``executor``, writing a row per finished cell and accounting the time."""
        cells: dict[Group, dict[str, Cell]] = {}  # groups hash by identity
        with contextlib.closing(executor.run(groups)) as messages:
            for group, message in messages:
                self._account(message)
                if isinstance(message, CellStarted):
                    cell = cells.setdefault(group, {c.cell_id: c for c in group.cells})[message.cell_id]
                    self.progress(f"measuring {_label(cell)} (reference first)")
                if isinstance(message, CellFinished):
                    by_id = cells.setdefault(group, {c.cell_id: c for c in group.cells})
                    cell, measurement = by_id[message.cell_id], message.measurement
                    if cell.config_id == "default" and measurement.ok:
                        self.defaults[cell.cell_id] = measurement
                    elif cell.config_id == "tuned":
                        measurement = self._no_slower_than_default(cell, measurement)
                    self.emit(cell, group.source, group.artifact, measurement)
                    if measurement.ok and cell.config_id == "default":
                        self.ok_groups.setdefault(group)

    def _no_slower_than_default(self, cell: Cell, tuned: Measurement) -> Measurement:
        default = self.defaults.get(dataclasses.replace(cell, config_id="default").cell_id)
        return tuned if default is None else no_slower_than_default(tuned, default)

    def _account(self, message: Message) -> None:
        if isinstance(message, WorkerStarted):
            self.summary.worker_start_s += message.startup_s
        elif isinstance(message, SessionOpened):
            self.summary.session_s += message.session_s
        elif isinstance(message, CellFinished):
            self.summary.timing_s += message.timing_s
            self.summary.reference_s += message.reference_s


def no_slower_than_default(tuned: Measurement, default: Measurement) -> Measurement:
    """A tuned cell's measurement, or its ``default`` cell's (as :func:`_as_default` labels it) where the tuned
    configuration, timed with the matrix's settings, is distinguishably slower: its p50's 95% CI lies wholly above
    the default's (the rule of docs/measurement.md). Failed tuned cells and ok ones within the CI stay as they are."""
    if not (tuned.ok and default.ok) or tuned.timing.ci95_p50_lo_ms <= default.timing.ci95_p50_hi_ms:
        return tuned
    name = json.loads(tuned.session.options or "{}").get("tune_config")
    t, d = tuned.timing, default.timing
    return _as_default(default, f"{name} measured slower than the default with the matrix's timing (p50 "
                                f"{t.latency_ms_p50:.4g} ms, CI95 [{t.ci95_p50_lo_ms:.4g}, {t.ci95_p50_hi_ms:.4g}] "
                                f"above [{d.ci95_p50_lo_ms:.4g}, {d.ci95_p50_hi_ms:.4g}])")


def _as_default(default: Measurement, why: str) -> Measurement:
    """The default cell's ``default`` measurement as its tuned row: ``tune_config`` = default in the options, and
    a note in the reason saying why the default was kept."""
    options = {**json.loads(default.session.options or "{}"), "tune_config": tuning.DEFAULT}
    note = f"note: tuned = the default configuration's measurement ({why})"
    return dataclasses.replace(
        default, outcome=dataclasses.replace(default.outcome, reason="; ".join(filter(None, [
            default.outcome.reason, note]))),
        session=dataclasses.replace(default.session, options=json.dumps(options, sort_keys=True, default=str)))


def _reprobe_ceilings(directory: RunDir, header: dict, summary: RunSummary) -> None:
    """Probe the ceilings again (keeping the higher) and recompute every row's fractions of them; rows of
    earlier parts of a resumed run included, so that all rows are read against the same ceilings."""
    before = header.get("ceilings")
    after = reprobe(before)
    if after is before:
        return
    header["ceilings"] = after
    rows = directory.read_rows()
    for row in rows:
        if row.get("status") == "ok" and (row.get("achieved_gflops") or row.get("achieved_gbs")):
            row.update(row_fractions(row, after))
            row["reason"] = above_peak_reason(row)
    directory.rewrite_rows(rows)
    by_id = {r.get("cell_id"): r for r in rows}
    for row in summary.rows:
        row.update(by_id.get(row.get("cell_id"), {}))


def _label(cell: Cell) -> str:
    """A cell as the progress line names it: model, runtime (threads), shape, scenario."""
    threads = f" {cell.threads}t" if cell.threads else ""
    generate = f" +{cell.new_tokens} tokens" if cell.new_tokens else ""
    return f"{cell.model} {cell.runtime}{threads} b{cell.batch} t{cell.seq_len}{generate}"


def _group(items: Iterable, key) -> list[list]:
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())
