"""Merging run directories: the shards of one matrix run as a batch-scheduler array job (``onnxbench run --shard
K/N``), or parts of a matrix measured on different machines, joined into one run directory that reports,
``compare`` and ``--resume`` read like any other (docs/scaling.md).

A cell is identified by its ``cell_id`` (the hash of its key columns). A cell that has rows in several sources is
an *overlap*: measured on the same hardware (host and GPU name), the ``ok`` row is kept over a ``failed`` or
``skipped`` one, else the first source's; measured on different hardware, the figures are not interchangeable and
the merge is refused unless ``prefer`` names the source whose rows win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import OnnxbenchError
from ...rundir import RunDir, check_writable, holds_run, refuse_existing_run
from ..rows import now


class MergeError(OnnxbenchError, ValueError):
    """Run directories that cannot be merged as asked (overlapping cells measured on different hardware, a
    source that holds no run, an output that already does); the message names the fix."""


@dataclass
class MergeSummary:
    """What :func:`merge_runs` wrote: the merged directory, its row count, and the overlapping cells resolved
    (same hardware: duplicates dropped; ``prefer``: rows of the preferred source kept)."""

    out: Path
    rows: int = 0
    duplicates_dropped: int = 0
    preferred: int = 0
    sources: list[dict] = field(default_factory=list)


def hardware(row: dict) -> tuple:
    """What a row's figures depend on beyond its cell key: ``(host, gpu_name)`` (None where not recorded)."""
    return (row.get("host"), row.get("gpu_name"))


def _matrix_without_shard(header: dict) -> dict | None:
    matrix = header.get("matrix")
    return None if matrix is None else {k: v for k, v in matrix.items() if k != "shard"}


def merge_runs(runs: list[str | Path], out: str | Path, prefer: str | Path | None = None) -> MergeSummary:
    """Join the run directories ``runs`` into a new run directory ``out``.

    ``out`` gets every cell's row once (rows keep their ``run_id``, so each names the run that measured it),
    ``results.csv``/``results.parquet``, and a header with a new run id, the first source's environment and
    ceilings, the sources' common matrix without its ``shard`` (so that ``onnxbench run --resume OUT`` runs the
    cells no shard delivered), the matrix's cell count, and ``merged_from``: each source's path, run id, shard,
    host, GPUs and rows kept.

    Args:
        runs: two or more run directories (``results.jsonl`` and ``header.json``).
        out: the merged run directory; must not hold a run.
        prefer: one of ``runs``: its row wins every overlap, also one measured on other hardware.

    Raises:
        MergeError: fewer than two runs, a source without rows, ``prefer`` not among ``runs``, ``out`` among
            ``runs``, or overlapping cells measured on different hardware without ``prefer`` (naming a few).
        FileExistsError: if ``out`` already holds a run.
        PermissionError: if ``out`` is not writable.
    """
    paths = [Path(r) for r in runs]
    out = Path(out)
    if len(paths) < 2:
        raise MergeError("merge needs two or more run directories")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise MergeError("a run directory is given twice")
    if out.resolve() in resolved:
        raise MergeError(f"--out {out} is one of the runs to merge; write the merged run to a new directory")
    for path in paths:
        if not holds_run(path) or not RunDir(path).results_path.is_file():
            raise MergeError(f"{path} holds no run (no results.jsonl)")
    preferred = None
    if prefer is not None:
        if Path(prefer).resolve() not in resolved:
            raise MergeError(f"--prefer {prefer} is not one of the runs being merged")
        preferred = resolved.index(Path(prefer).resolve())
    refuse_existing_run(out)

    sources = [(RunDir(p).read_header(), RunDir(p).read_rows()) for p in paths]
    kept: dict[str, tuple[int, dict]] = {}  # cell_id -> (source index, row), in first-seen order
    conflicts = []
    summary = MergeSummary(out)
    wins = {row.get("cell_id") for row in sources[preferred][1]} if preferred is not None else set()
    for index, (_, rows) in enumerate(sources):
        for row in rows:
            cell = row.get("cell_id")
            if cell in wins and index != preferred:
                summary.preferred += 1  # the preferred source's row stands for this cell
                continue
            if cell not in kept or cell in wins:
                kept[cell] = (index, row)
                continue
            first_index, first = kept[cell]
            if hardware(row) == hardware(first):
                if first.get("status") != "ok" and row.get("status") == "ok":
                    kept[cell] = (index, row)
                summary.duplicates_dropped += 1
            else:
                conflicts.append((row, paths[first_index], first, paths[index]))
    if conflicts:
        examples = "; ".join(
            f"{r['model']} {r['runtime']} b{r['batch']} t{r['seq_len']}: {a} on {_describe(first)}, {b} on "
            f"{_describe(r)}" for r, a, first, b in conflicts[:3])
        raise MergeError(f"{len(conflicts)} cell(s) were measured in more than one run on different hardware "
                         f"({examples}); their figures are not interchangeable: pass --prefer RUN to keep that "
                         "run's rows, or merge without one of the runs")

    check_writable(out)
    directory = RunDir(out)
    header = _merged_header(paths, sources, kept)
    summary.sources = header["merged_from"]
    directory.write_header(header)
    rows = [row for _, row in kept.values()]
    directory.rewrite_rows(rows)
    directory.write_tables()
    summary.rows = len(rows)
    return summary


def _describe(row: dict) -> str:
    host, gpu = hardware(row)
    return f"{host or 'unknown host'}" + (f" ({gpu})" if gpu else "")


def _merged_header(paths: list[Path], sources: list[tuple[dict, list[dict]]],
                   kept: dict[str, tuple[int, dict]]) -> dict:
    from .runner import new_run_id

    headers = [h for h, _ in sources]
    first = headers[0]
    matrices = [_matrix_without_shard(h) for h in headers]
    same_matrix = matrices[0] is not None and all(m == matrices[0] for m in matrices)
    n_cells = None
    if same_matrix and all(h.get("n_cells") is not None for h in headers):
        # one count per distinct shard (a shard run twice counts once); an unsharded source counts the whole
        per_shard: dict = {}
        for h in headers:
            shard = (h.get("matrix") or {}).get("shard")
            per_shard[shard] = max(per_shard.get(shard, 0), int(h["n_cells"]))
        n_cells = max(per_shard.pop(None, 0), sum(per_shard.values()))
    kept_per_source = [0] * len(sources)
    for index, _ in kept.values():
        kept_per_source[index] += 1
    started = [h["started"] for h in headers if h.get("started")]
    finished = [h.get("finished") for h in headers]
    merged = {
        "run_id": new_run_id() + "-merged",
        "started": min(started) if started else now(),
        "env": first.get("env", {}),
        "matrix": matrices[0] if same_matrix else None,
        "harness_overhead_ms": first.get("harness_overhead_ms"),
        "cpu_busy_pct_at_start": max((h["cpu_busy_pct_at_start"] for h in headers
                                      if h.get("cpu_busy_pct_at_start") is not None), default=None),
        "cpu_busy_pct_during": max((h["cpu_busy_pct_during"] for h in headers
                                    if h.get("cpu_busy_pct_during") is not None), default=None),
        "ceilings": first.get("ceilings"),
        "n_cells": n_cells if n_cells is not None else len(kept),
        "interrupted": any(h.get("interrupted") for h in headers),
        "merged_from": [
            {"path": str(p), "run_id": h.get("run_id"), "shard": (h.get("matrix") or {}).get("shard"),
             "host": (h.get("env") or {}).get("host"),
             "gpus": [g.get("name") for g in (h.get("env") or {}).get("gpus", [])],
             "rows": len(rows), "rows_kept": kept_per_source[i], "ceilings": h.get("ceilings")}
            for i, (p, (h, rows)) in enumerate(zip(paths, sources, strict=True))],
    }
    if all(finished):
        merged["finished"] = max(finished)
    return merged
