"""Load a run directory, or a pytest-benchmark JSON file (the suite in ``benchmarks/``), into the schema's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..rundir import RunDir
from ..schema import COLUMNS, KEY_DEFAULTS, SCHEMA_VERSION

_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "str": "string"}


def coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Give ``frame`` every schema column (missing ones as NA, missing key columns as what they meant before they
    existed, :data:`onnxbench.schema.KEY_DEFAULTS`) in schema order with nullable dtypes; extra columns are kept
    after them."""
    frame = frame.copy()
    for name, (kind, _) in COLUMNS.items():
        if name not in frame:
            frame[name] = pd.NA
        if name in KEY_DEFAULTS and len(frame):  # rows recorded before the key column existed
            frame[name] = frame[name].astype("object").where(frame[name].notna(), KEY_DEFAULTS[name])
        frame[name] = frame[name].astype(_DTYPES[kind]) if kind != "float" else pd.to_numeric(
            frame[name], errors="coerce")
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]


def load_header(run_dir: str | Path) -> dict:
    """The run's ``header.json`` ({} if absent, e.g. a results file copied on its own); for a pytest-benchmark
    JSON file, a header built from its machine and commit info."""
    if is_pytest_benchmark_json(run_dir):
        return pytest_benchmark_header(run_dir)
    return RunDir(run_dir).read_header()


def load(run_dir: str | Path) -> pd.DataFrame:
    """Rows of a run directory as a DataFrame with the schema's columns.

    Reads ``results.jsonl`` (the file written during the run), else ``results.parquet``, else ``results.csv``
    (both written at the end of a run; either alone is enough to regenerate the reports). A pytest-benchmark
    ``--benchmark-json`` file instead of a directory is read by :func:`load_pytest_benchmark`.

    Raises:
        FileNotFoundError: if the directory has none of these files.
        ValueError: if the rows come from a newer schema than this version of onnxbench reads.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist; pass a run directory written by `onnxbench run`")
    if is_pytest_benchmark_json(run_dir):
        return load_pytest_benchmark(run_dir)
    frame = RunDir(run_dir).read_frame()
    if len(frame) and "schema_version" in frame and frame["schema_version"].max() > SCHEMA_VERSION:
        raise ValueError(
            f"{run_dir} uses result schema {frame['schema_version'].max()}, newer than {SCHEMA_VERSION}; "
            "upgrade onnxbench"
        )
    return coerce(frame)


def is_pytest_benchmark_json(path: str | Path) -> bool:
    """Whether ``path`` is a file written by ``pytest --benchmark-json`` (rather than a run directory)."""
    path = Path(path)
    return path.is_file() and path.suffix == ".json" and "benchmarks" in _read_json(path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def load_pytest_benchmark(path: str | Path) -> pd.DataFrame:
    """Rows of a pytest-benchmark ``--benchmark-json`` file (the suite in ``benchmarks/``) as the schema's
    DataFrame, so that they can be reported and compared with ``onnxbench run`` results.

    Key columns, provenance and agreement come from each benchmark's ``extra_info`` (benchmarks without
    onnxbench's ``extra_info`` keep only their name in ``model``); pytest-benchmark's statistics, in seconds,
    become ms columns: mean, median (p50), min, stddev, and from the raw ``data`` p90, p99, the distribution-free
    95% CI of the median (as in ``onnxbench.benchmarks.measure.timing``) and the coefficient of variation.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not pytest-benchmark JSON.
    """
    import numpy as np

    from ..benchmarks.measure.timing import median_ci95

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    data = _read_json(path)
    if "benchmarks" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    run_id = f"pytest-benchmark-{data.get('datetime', '')}"
    rows = []
    for bench in data["benchmarks"]:
        info, stats = dict(bench.get("extra_info") or {}), bench["stats"]
        info.pop("onnxbench_cell", None)
        row = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "model": bench.get("name"),
               "status": "ok", "reason": "", "timestamp": data.get("datetime"), **info}
        mean_ms, p50_ms = stats["mean"] * 1e3, stats["median"] * 1e3
        row.update({"iters": stats["rounds"] * stats.get("iterations", 1), "latency_ms_mean": mean_ms,
                    "latency_ms_p50": p50_ms, "latency_ms_min": stats["min"] * 1e3,
                    "latency_ms_std": stats["stddev"] * 1e3, "cov": stats["stddev"] / stats["mean"]})
        samples = np.asarray(stats.get("data") or [], dtype=np.float64) * 1e3
        if len(samples):
            row["latency_ms_p90"], row["latency_ms_p99"] = (float(v) for v in np.percentile(samples, [90, 99]))
            row["ci95_p50_lo_ms"], row["ci95_p50_hi_ms"] = median_ci95(samples)
        if row.get("batch") and row.get("seq_len") and p50_ms > 0:
            row["throughput_seq_s"] = row["batch"] * 1e3 / p50_ms
            row["throughput_tok_s"] = row["batch"] * row["seq_len"] * 1e3 / p50_ms
        rows.append(row)
    return coerce(pd.DataFrame(rows))


def pytest_benchmark_header(path: str | Path) -> dict:
    """A run header (as in ``header.json``) from a pytest-benchmark JSON file's machine and commit info, under the
    same field names as :func:`onnxbench.env.collect` (``env.python``, not a "python" library version), so that
    :func:`onnxbench.reports.compare.env_differences` compares like with like."""
    data = _read_json(Path(path))
    machine, commit = data.get("machine_info", {}), data.get("commit_info", {})
    overheads = [b.get("extra_info", {}).get("harness_overhead_ms") for b in data.get("benchmarks", [])]
    overheads = [v for v in overheads if v is not None]
    return {
        "run_id": f"pytest-benchmark-{data.get('datetime', '')}", "started": data.get("datetime"),
        "source": "pytest-benchmark " + str(data.get("version", "")),
        "env": {"host": machine.get("node"), "python": machine.get("python_version"),
                "cpu": (machine.get("cpu") or {}).get("brand_raw"),
                "cpu_count_logical": (machine.get("cpu") or {}).get("count"),
                "versions": {"pytest-benchmark": data.get("version")},
                "git_sha": commit.get("id")},
        "harness_overhead_ms": overheads[0] if overheads else float("nan"),
    }
