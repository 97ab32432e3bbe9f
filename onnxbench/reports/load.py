"""Load a run directory into the schema's DataFrame."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..schema import COLUMNS, SCHEMA_VERSION

_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "str": "string"}


def coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Give ``frame`` every schema column (missing ones as NA) in schema order with nullable dtypes; extra
    columns are kept after them."""
    frame = frame.copy()
    for name, (kind, _) in COLUMNS.items():
        if name not in frame:
            frame[name] = pd.NA
        frame[name] = frame[name].astype(_DTYPES[kind]) if kind != "float" else pd.to_numeric(
            frame[name], errors="coerce")
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]


def load_header(run_dir: str | Path) -> dict:
    """The run's ``header.json`` ({} if absent, e.g. a results file copied on its own)."""
    path = Path(run_dir) / "header.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load(run_dir: str | Path) -> pd.DataFrame:
    """Rows of a run directory as a DataFrame with the schema's columns.

    Reads ``results.jsonl`` (the file written during the run), else ``results.parquet``, else ``results.csv``
    (both written at the end of a run; either alone is enough to regenerate the reports).

    Raises:
        FileNotFoundError: if the directory has none of these files.
        ValueError: if the rows come from a newer schema than this version of onnxbench reads.
    """
    run_dir = Path(run_dir)
    jsonl, parquet, csv = run_dir / "results.jsonl", run_dir / "results.parquet", run_dir / "results.csv"
    if jsonl.is_file():
        rows = []
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
        frame = pd.DataFrame(rows)
    elif parquet.is_file():
        frame = pd.read_parquet(parquet)
    elif csv.is_file():
        frame = pd.read_csv(csv)
    else:
        raise FileNotFoundError(f"{run_dir} has no results.jsonl or results.csv (or results.parquet); is it a "
                                "run directory?")
    if len(frame) and "schema_version" in frame and frame["schema_version"].max() > SCHEMA_VERSION:
        raise ValueError(
            f"{run_dir} uses result schema {frame['schema_version'].max()}, newer than {SCHEMA_VERSION}; "
            "upgrade onnxbench"
        )
    return coerce(frame)
