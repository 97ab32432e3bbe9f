"""Resuming a run: which matrix a run directory holds, which of its cells already have a row, and reopening it.

A cell is done when ``results.jsonl`` has a row with its ``cell_id`` (a hash of its key columns), so that a run
interrupted by Ctrl-C or a crash continues with exactly the cells it lacks, none twice.
"""

from __future__ import annotations

from pathlib import Path

from ...rundir import RunDir
from ..plan.matrix import MatrixSpec
from ..rows import now


def resume_spec(run_dir: str | Path) -> MatrixSpec:
    """The matrix recorded in ``RUN_DIR/header.json`` (what ``onnxbench run --resume`` continues).

    Raises:
        FileNotFoundError: if there is no header.
        ValueError: if the header holds no matrix.
    """
    header = _header(RunDir(run_dir))
    if not header.get("matrix"):
        raise ValueError(f"{RunDir(run_dir).header_path} records no matrix; cannot resume it")
    return MatrixSpec.from_dict(header["matrix"])


def done_cell_ids(run_dir: str | Path, retry_failed: bool = False) -> set[str]:
    """Ids of the cells that have a row in ``run_dir`` (with ``retry_failed``, not counting ``failed`` rows)."""
    return {row.get("cell_id") for row in RunDir(run_dir).read_rows()
            if not (retry_failed and row.get("status") == "failed")}


def reopen(run_dir: str | Path, retry_failed: bool = False) -> tuple[dict, set[str]]:
    """Reopen a run directory to continue it: its header with the resume time appended to ``resumed``, and the
    ids of its done cells. With ``retry_failed`` the ``failed`` rows are dropped from ``results.jsonl`` first,
    so that those cells run again.

    Raises:
        FileNotFoundError: if ``run_dir`` has no ``header.json``.
    """
    directory = RunDir(run_dir)
    header = _header(directory)
    header.setdefault("resumed", []).append(now())
    if retry_failed:
        directory.rewrite_rows([row for row in directory.read_rows() if row.get("status") != "failed"])
    return header, done_cell_ids(run_dir)


def _header(directory: RunDir) -> dict:
    if not directory.has_header():
        raise FileNotFoundError(f"{directory.path} has no header.json: not a run directory to resume")
    return directory.read_header()
