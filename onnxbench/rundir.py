"""The run directory: the one reader and writer of its files.

Layout (README "What `make demo` produces")::

    RUN_DIR/header.json      run id, environment, matrix spec, ceilings, tuning (written atomically)
    RUN_DIR/results.jsonl    one JSON row per cell (schema: :mod:`onnxbench.schema`), appended and fsynced per row
    RUN_DIR/results.csv      the same rows, written at the end of a run
    RUN_DIR/results.parquet  the same rows, written at the end of a run

It sits beside :mod:`onnxbench.schema` below every other layer: the benchmark runner writes run directories and
the reports read them, and neither needs the other for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .schema import COLUMNS

HEADER = "header.json"
RESULTS = "results.jsonl"
CSV = "results.csv"
PARQUET = "results.parquet"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` that also writes numpy scalars and paths (as the run directory's files hold them)."""
    return json.dumps(value, default=_json_default, **kwargs)


def check_writable(directory: str | Path) -> None:
    """Create ``directory`` if needed and make sure files can be written in it.

    Raises:
        PermissionError: naming the directory and the fix.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"output directory {directory} is not writable ({exc.strerror or exc}); choose another with --out"
        ) from exc


#: Files whose presence means a directory holds a run (a second run must not be appended to it silently).
RUN_FILES = (HEADER, RESULTS, CSV, PARQUET)


def holds_run(directory: str | Path) -> bool:
    """Whether ``directory`` already holds a run (its header or results)."""
    return any((Path(directory) / name).is_file() for name in RUN_FILES)


def _run_id_of(directory: Path) -> str:
    try:
        return str(RunDir(directory).read_header().get("run_id") or "unknown")
    except (OSError, ValueError):
        return "unknown"


def refuse_existing_run(directory: str | Path) -> None:
    """Raise unless ``directory`` is free for a new run: appending a second run's rows to a first's and rewriting
    its header would report both under one run id and matrix (docs/measurement.md, "One run per directory").

    Raises:
        FileExistsError: naming the run it holds and the ways on (``--resume``, ``--overwrite``, another ``--out``).
    """
    if holds_run(directory):
        raise FileExistsError(
            f"{directory} already holds run {_run_id_of(Path(directory))}; continue it with `onnxbench run "
            f"--resume {directory}`, or pass --overwrite to move it aside and start a new run there, or choose "
            "another --out")


def set_aside(directory: str | Path) -> Path | None:
    """Move the run in ``directory`` (the whole directory) to a sibling ``<name>.replaced-<run id>`` (with a
    numeric suffix if that exists) so that a new run can start there without losing the old one.

    Returns:
        where the old run now is, or None if ``directory`` held no run.

    Raises:
        PermissionError: if the directory cannot be moved.
    """
    directory = Path(directory)
    if not holds_run(directory):
        return None
    stem = f"{directory.name}.replaced-{_run_id_of(directory)}"
    target, n = directory.with_name(stem), 1
    while target.exists():
        n += 1
        target = directory.with_name(f"{stem}-{n}")
    try:
        directory.rename(target)
    except OSError as exc:
        raise PermissionError(f"cannot move the run in {directory} aside to {target} ({exc.strerror or exc}); "
                              "move or delete it yourself, or choose another --out") from exc
    return target


def claim(directory: str | Path, resume: bool = False, overwrite: bool = False) -> Path | None:
    """Make ``directory`` ready for a run: the one place where a run directory's preconditions are checked
    (docs/measurement.md, "One run per directory").

    A new run needs a directory that holds no run (``overwrite`` first moves one aside with :func:`set_aside`);
    a resumed run needs the run's ``header.json``; both need the directory writable (it is created).

    Returns:
        where a run that was in ``directory`` was moved to (``overwrite``), else None.

    Raises:
        ValueError: for an empty path (it would be the current folder), or ``resume`` with ``overwrite``.
        FileNotFoundError: if ``resume`` and ``directory`` holds no run.
        FileExistsError: if not ``resume`` and ``directory`` holds a run (names the ways on).
        PermissionError: if the directory cannot be created or written, or a run cannot be moved aside.
    """
    if not str(directory).strip():
        raise ValueError("the run directory is an empty path (it would be the current folder); give one with --out")
    if resume and overwrite:
        raise ValueError("--overwrite starts a new run and --resume continues one; give one of them")
    directory, moved = Path(directory), None
    if resume:
        if not (directory / HEADER).is_file():
            raise FileNotFoundError(f"{directory} holds no run to resume ({HEADER} missing); start one with "
                                    f"`onnxbench run --out {directory}`")
    elif overwrite:
        moved = set_aside(directory)
    else:
        refuse_existing_run(directory)
    check_writable(directory)
    return moved


class ResultWriter:
    """Appends rows to ``results.jsonl``, flushed and fsynced per row so that a crash loses nothing.
    Use as a context manager (or call :meth:`close`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RESULTS
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, row: dict) -> None:
        self._fh.write(dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunDir:
    """A run directory on disk (it need not exist yet for writing; see :func:`check_writable`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def header_path(self) -> Path:
        return self.path / HEADER

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def has_header(self) -> bool:
        return self.header_path.is_file()

    def read_header(self) -> dict:
        """``header.json`` as a dict ({} if absent, e.g. a results file copied on its own).

        Raises:
            ValueError: if the file is not valid JSON.
        """
        return json.loads(self.header_path.read_text()) if self.has_header() else {}

    def write_header(self, header: dict) -> None:
        """Replace ``header.json`` atomically (a temporary file renamed over it), so that a kill mid-write
        leaves the previous header intact."""
        tmp = self.path / (HEADER + ".tmp")
        tmp.write_text(dumps(header, indent=2))
        os.replace(tmp, self.header_path)

    def read_rows(self) -> list[dict]:
        """Rows of ``results.jsonl`` in file order (a torn last line from a killed writer is ignored; [] when
        the file is absent)."""
        if not self.results_path.exists():
            return []
        rows = []
        for line in self.results_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def rewrite_rows(self, rows: list[dict]) -> None:
        """Replace ``results.jsonl`` with ``rows``, atomically."""
        tmp = self.path / (RESULTS + ".tmp")
        tmp.write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.results_path)

    def writer(self) -> ResultWriter:
        """An appender of rows to ``results.jsonl``."""
        return ResultWriter(self.path)

    def write_tables(self) -> None:
        """Write ``results.csv`` and ``results.parquet`` from ``results.jsonl`` (columns in schema order). A
        Parquet failure (pyarrow missing, a column of mixed types) is recorded in ``results.parquet.error``;
        CSV and JSONL still stand."""
        import pandas as pd

        frame = pd.DataFrame(self.read_rows(), columns=list(COLUMNS))
        frame.to_csv(self.path / CSV, index=False)
        try:
            frame.to_parquet(self.path / PARQUET, index=False)
        except Exception as exc:
            (self.path / (PARQUET + ".error")).write_text(f"{type(exc).__name__}: {exc}\n")

    def read_frame(self):
        """The rows as a ``pandas.DataFrame`` as stored (no dtype coercion): from ``results.jsonl`` (written
        during the run), else ``results.parquet``, else ``results.csv`` (either alone is enough).

        Raises:
            FileNotFoundError: if the directory has none of these files.
        """
        import pandas as pd

        if self.results_path.is_file():
            return pd.DataFrame(self.read_rows())
        if (self.path / PARQUET).is_file():
            return pd.read_parquet(self.path / PARQUET)
        if (self.path / CSV).is_file():
            return pd.read_csv(self.path / CSV)
        raise FileNotFoundError(f"{self.path} has no results.jsonl or results.csv (or results.parquet); is it a "
                                "run directory?")


def read_rows(run_dir: str | Path) -> list[dict]:
    """Rows of ``RUN_DIR/results.jsonl`` (see :meth:`RunDir.read_rows`)."""
    return RunDir(run_dir).read_rows()


def write_tables(run_dir: str | Path) -> None:
    """``results.csv`` and ``results.parquet`` from ``results.jsonl`` (see :meth:`RunDir.write_tables`)."""
    RunDir(run_dir).write_tables()
