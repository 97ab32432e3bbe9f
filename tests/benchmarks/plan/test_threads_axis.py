"""Intra-op threads as a matrix axis: expanded for the runtimes that declare it, a key column of every row,
applied to the session, checked before anything runs, and drawn as a scaling plot."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

from onnxbench.benchmarks.cells import Cell
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec, load_matrix
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.env import cpu_counts
from onnxbench.errors import MatrixError
from onnxbench.reports import write_report
from onnxbench.reports.load import load
from onnxbench.runtimes import registry

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)


def test_threads_expand_only_the_runtimes_that_take_them():
    spec = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu", "ort-cuda"], threads=[1, 2], batches=[1],
                      seq_lens=[8])
    cells = spec.build().cells
    by_runtime = {r: sorted(c.threads for c in cells if c.runtime == r) for r in spec.runtimes}
    assert by_runtime == {"torch": [1, 2], "ort-cpu": [1, 2], "ort-cuda": [0]}
    assert {name for name, cls in registry().items() if cls.thread_axis} >= {"torch", "ort-cpu"}
    assert len({c.cell_id for c in cells}) == len(cells)


def test_default_thread_cells_keep_the_ids_they_had_before_the_axis():
    cell = Cell("tiny", "decomposed", "fp32", 18, "ort-cpu", 1, 8)
    # the key fields a prefill cell hashed before the threads axis (fields at their defaults are left out)
    before = {k: v for k, v in dataclasses.asdict(cell).items()
              if k not in ("threads", "scenario", "new_tokens", "padding", "export_path")}
    assert cell.cell_id == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    assert dataclasses.replace(cell, threads=2).cell_id != cell.cell_id


@pytest.mark.parametrize("threads, message", [([0], "out of range"), ([(cpu_counts()[0] or 2) + 1], "logical"),
                                              ([-1], "out of range")])
def test_bad_thread_counts_are_refused(threads, message):
    with pytest.raises(MatrixError, match=message):
        MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], threads=threads).validate()


def test_threads_without_a_runtime_that_takes_them_is_refused():
    with pytest.raises(MatrixError, match="none is among the runtimes asked for"):
        MatrixSpec(models=["tiny"], runtimes=["ort-cuda"], threads=[1]).validate()


def test_toml_threads_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('models = ["tiny"]\nruntimes = ["ort-cpu"]\nthreads = [1, 2]\n')
    assert load_matrix(path).threads == [1, 2]


def test_rows_carry_threads_and_the_session_uses_them(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu"], threads=[1, 2], batches=[1], seq_lens=[8, 16],
                      timing=FAST)
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir).rows  # worker processes, one per thread count
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), rows
    for r in rows:
        options = json.loads(r["options"])
        in_force = options["intra_op_threads"] if r["runtime"] == "ort-cpu" else options["threads"]
        assert in_force == r["threads"] in (1, 2)
    write_report(tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Thread scaling" in report and (tmp_path / "run" / "plot_threads.png").stat().st_size > 1000
    assert "ort-cpu ×2 threads" in report
    frame = load(tmp_path / "run")
    assert sorted(frame["threads"].unique()) == [1, 2]


def test_rows_written_before_the_axis_read_back_at_the_default(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"model": "tiny", "runtime": "ort-cpu", "status": "ok",
                                                        "batch": 1, "seq_len": 8}) + "\n")
    assert load(tmp_path)["threads"].tolist() == [0]


def test_cli_threads_flag(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "run", "--models", "tiny", "--runtimes", "ort-cpu",
                           "--threads", "0", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "out of range" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
