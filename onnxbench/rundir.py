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
import sys
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


def _tell(message: str) -> None:
    """Print a warning about a run directory's files on stderr, once per process (the same file is read several
    times by one command)."""
    if message not in _TOLD:
        _TOLD.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


_TOLD: set[str] = set()


def _parse_row(line: bytes) -> dict | None:
    """The row a line of ``results.jsonl`` holds, or None when it is not one JSON object."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def _joined_row(line: bytes) -> tuple[int, dict] | None:
    """A whole row appended onto the fragment of a torn one (what a resume did before the tail was repaired):
    (bytes of the fragment, the row) for the only suffix of ``line`` that starts a JSON object and parses whole;
    a suffix starting inside the fragment or inside the row leaves unparsed bytes and fails. None if none."""
    start = line.find(b"{", 1)
    while start > 0:
        row = _parse_row(line[start:])
        if row is not None and "cell_id" in row:
            return start, row
        start = line.find(b"{", start + 1)
    return None


def repair_tail(path: str | Path) -> int:
    """Make ``path`` (a ``results.jsonl``) end with a complete line before rows are appended to it.

    A writer killed mid-row leaves a last line without its newline. When that line parses as a whole row (the
    kill fell between the row and its newline) the newline is added, as the reader already counts the row;
    otherwise the fragment is truncated away (and fsynced), so that the next row is not appended onto it and
    lost with it: the cell it belonged to has no row and a resumed run measures it again.

    Returns:
        the number of bytes dropped (0 when the file is absent, empty or ends with a newline).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # read back from the end until the last newline: the torn part is at most one row
        end, chunk, tail = size, 1 << 16, b""
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            tail = fh.read(end - start) + tail
            end = start
            if b"\n" in tail:
                break
        cut = tail.rfind(b"\n") + 1  # 0 when the file holds no newline at all
        fragment = tail[cut:]
        if not fragment:
            return 0
        if _parse_row(fragment) is not None:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            dropped = 0
        else:
            fh.truncate(size - len(fragment))
            dropped = len(fragment)
        fh.flush()
        os.fsync(fh.fileno())
    return dropped


class ResultWriter:
    """Appends rows to ``results.jsonl``, flushed and fsynced per row so that a crash loses nothing.
    Use as a context manager (or call :meth:`close`).

    Opening an existing file (``--resume``) first repairs a torn last line left by a writer killed mid-row
    (:func:`repair_tail`); ``dropped_bytes`` says how many bytes that dropped, and a warning on stderr says so.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RESULTS
        self.dropped_bytes = repair_tail(self.path)
        if self.dropped_bytes:
            _tell(f"{self.path} ended in a row cut off mid-line (a writer killed while writing it): dropped its "
                  f"torn last line ({self.dropped_bytes} bytes) before appending; that cell has no row and runs "
                  "again")
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
        """Rows of ``results.jsonl`` in file order ([] when the file is absent); what :meth:`scan_rows` found
        wrong is printed on stderr (once per process and problem)."""
        rows, problems = self.scan_rows()
        for problem in problems:
            _tell(problem)
        return rows

    def scan_rows(self) -> tuple[list[dict], list[str]]:
        """Rows of ``results.jsonl`` in file order, and one sentence per line that is not a whole row.

        A torn last line (a writer killed mid-row) is left out: the row was never complete. A line in the middle
        that is not a JSON object is left out and named (line number and size), never dropped in silence; where
        it is a torn row with a whole row appended to it (a resume before tails were repaired,
        :func:`repair_tail`) the appended row is read and the fragment named. Lines are read as bytes, so that a
        tear inside a multi-byte character is a torn line like any other.
        """
        if not self.results_path.exists():
            return [], []
        data = self.results_path.read_bytes()
        lines = data.split(b"\n")
        last = len(lines) - 1  # lines[last] is what follows the final newline: b"" in a whole file
        rows, problems = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = _parse_row(line)
            if row is not None:
                rows.append(row)
                continue
            where = f"{self.results_path}: line {number}"
            joined = _joined_row(line)
            if joined is not None:
                fragment, row = joined
                rows.append(row)
                problems.append(f"{where} holds a torn row ({fragment} bytes, left out: its cell has no row and "
                                "`onnxbench run --resume` measures it again) with the next row appended to it "
                                "(read)")
            elif number - 1 == last:
                problems.append(f"{where} is a torn row ({len(line)} bytes, no newline: a writer killed while "
                                "writing it), left out; its cell has no row and `onnxbench run --resume` measures "
                                "it again")
            else:
                problems.append(f"{where} is not a JSON row ({len(line)} bytes), left out; the cell it held has no "
                                "row (check the file: another program may have written to it)")
        return rows, problems

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
        during the run), else ``results.parquet``, else ``results.csv`` (either alone is enough). The lines of
        ``results.jsonl`` left out (:meth:`scan_rows`) are in ``frame.attrs["read_problems"]``.

        Raises:
            FileNotFoundError: if the directory has none of these files.
        """
        import pandas as pd

        if self.results_path.is_file():
            rows, problems = self.scan_rows()
            for problem in problems:
                _tell(problem)
            frame = pd.DataFrame(rows)
            frame.attrs["read_problems"] = problems  # for the report's warnings: what the reader left out
            return frame
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
