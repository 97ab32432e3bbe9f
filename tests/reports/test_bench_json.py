"""The pytest-benchmark suite (bench/) writes JSON that ``onnxbench report`` and ``compare`` read into the
same schema as ``onnxbench run`` results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.reports import load, load_header
from onnxbench.schema import COLUMNS, KEY_COLUMNS
from tests.cli_run import run_cli

ROOT = Path(__file__).parents[2]


def test_benchmark_json_loads_into_the_run_schema_and_compares_with_a_run(tmp_path, cache_dir):
    matrix = tmp_path / "m.toml"
    matrix.write_text('models = ["tiny"]\nruntimes = ["ort-cpu"]\nbatches = [1]\nseq_lens = [8, 16]\n')
    bench = tmp_path / "bench.json"
    # An xdist worker's variables would make the inner pytest-benchmark disable itself and write no JSON.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "bench"),
         "--benchmark-enable", f"--benchmark-json={bench}", "--benchmark-max-time=0.05",
         "--benchmark-min-rounds=20"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**env, "ONNXBENCH_BENCH_MATRIX": str(matrix), "ONNXBENCH_CACHE": str(cache_dir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = {b["extra_info"]["cell_id"]: b for b in json.loads(bench.read_text())["benchmarks"]}
    df = load(bench)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS) and len(df) == len(raw) == 2
    for _, row in df.iterrows():
        b = raw[row["cell_id"]]
        assert row["status"] == "ok" and row["runtime"] == "ort-cpu" and row["agree"]
        assert row["latency_ms_p50"] == b["stats"]["median"] * 1e3 and row["iters"] == b["stats"]["rounds"]
        assert row["ci95_p50_lo_ms"] <= row["latency_ms_p50"] <= row["ci95_p50_hi_ms"] <= row["latency_ms_p99"]
        assert row["throughput_tok_s"] == row["batch"] * row["seq_len"] * 1e3 / row["latency_ms_p50"]
    assert load_header(bench)["env"]["cpu"] and load_header(bench)["harness_overhead_ms"] > 0

    # the same cells measured by `onnxbench run` share the key columns, so one frame holds both
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8, 16],
                      timing=TimingConfig(min_iters=5, min_time_s=0.02))
    run_matrix(spec, tmp_path / "run", cache_dir=cache_dir)
    both = pd.concat([load(tmp_path / "run"), df])
    assert both.groupby(list(KEY_COLUMNS)).size().tolist() == [2, 2]
    compared = run_cli("compare", str(tmp_path / "run"), str(bench), "--threshold", "1000%")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "2 unchanged" in compared.stderr
    reported = run_cli("report", str(bench))
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert "ort-cpu" in (tmp_path / "report.md").read_text()
