"""No lost results: Ctrl-C leaves a valid run directory, and --resume finishes it without running a cell twice."""

import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from onnxbench.benchmarks import MatrixSpec, read_rows, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.run.faults import FAULT_ENV
from onnxbench.benchmarks.run.resume import resume_spec
from onnxbench.reports import load
from tests.cli_run import CLI, run_cli
from tests.conftest import DATA

ARGS = ["--models", "tiny", "--runtimes", "ort-cpu", "--batches", "1,2", "--seq-lens", "8,16,32",
        "--min-time", "0.5", "--min-iters", "3", "--no-report"]


def _wait_for_rows(path, n, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.1)
    raise AssertionError(f"no {n} rows in {timeout} s")


def test_ctrl_c_then_resume_runs_every_cell_exactly_once(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "run", *ARGS, "--out", str(out), "--cache-dir", str(cache_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"},
                            # A shell's background job inherits SIGINT ignored, and Python then installs no
                            # KeyboardInterrupt handler: restore the default so that Ctrl-C is what the test sends.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_rows(out / "results.jsonl", 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    assert f"onnxbench run --resume {out}" in stdout and "Traceback" not in stdout

    # the interrupted directory is valid and reportable on its own
    first = read_rows(out)
    header = json.loads((out / "header.json").read_text())
    expected = {c.cell_id for c in resume_spec(out).expand()}
    assert header["interrupted"] is True and "finished" not in header
    assert 2 <= len(first) < len(expected) == 6
    assert len(pd.read_csv(out / "results.csv")) == len(first) == len(load(out))
    report = run_cli("report", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    top = "\n".join((out / "report.md").read_text().splitlines()[:4])
    assert header["n_cells"] == 6 and "Incomplete run (interrupted" in top
    assert f"{6 - len(first)} of the matrix's 6 cells did not run" in top

    resumed = run_cli("run", "--resume", str(out), "--cache-dir", str(cache_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"({len(expected) - len(first)} left to run)" in resumed.stderr
    rows = read_rows(out)
    ids = [r["cell_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a cell ran twice"
    assert set(ids) == expected, "a cell is missing"
    # rows of the first part are kept as they were, but for their fractions of the ceilings (and the reason's
    # above-peak warning), recomputed against the ceilings re-probed at the end of the resumed run
    derived = ("frac_peak_flops", "frac_peak_bw", "reason")
    assert [{k: v for k, v in r.items() if k not in derived} for r in rows[: len(first)]] == [
        {k: v for k, v in r.items() if k not in derived} for r in first]
    assert {r["run_id"] for r in rows} == {header["run_id"]}
    assert all(r["status"] == "ok" for r in rows)
    header = json.loads((out / "header.json").read_text())
    assert header["interrupted"] is False and header["finished"] and len(header["resumed"]) == 1
    # the ceilings were probed at the start and again when the resumed run ended; the higher bounds every row
    ceilings = header["ceilings"]
    assert len(ceilings["probes"]) == 2
    assert ceilings["cpu"]["gemm_gflops"] == max(p["cpu"]["gemm_gflops"] for p in ceilings["probes"])
    for r in rows:
        assert r["frac_peak_flops"] == pytest.approx(r["achieved_gflops"] / ceilings["cpu"]["gemm_gflops"])
    assert len(pd.read_parquet(out / "results.parquet")) == len(expected)


def test_resume_keeps_failed_cells_unless_asked_to_retry_them(tmp_path, cache_dir, monkeypatch):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8, 16],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02))
    monkeypatch.setenv(FAULT_ENV, "raise:seq_len=16")
    run_matrix(spec, tmp_path, cache_dir=cache_dir)
    monkeypatch.delenv(FAULT_ENV)
    assert [r["status"] for r in read_rows(tmp_path)] == ["ok", "failed"]
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir, resume=True)
    assert summary.rows == [] and len(read_rows(tmp_path)) == 2
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir, resume=True, retry_failed=True)
    assert [r["seq_len"] for r in summary.rows] == [16]
    assert sorted((r["seq_len"], r["status"]) for r in read_rows(tmp_path)) == [(8, "ok"), (16, "ok")]


def test_resume_refuses_axis_flags_and_non_run_directories(tmp_path):
    proc = run_cli("run", "--resume", str(tmp_path), "--models", "tiny")
    assert proc.returncode == 2 and "drop --models" in proc.stderr
    proc = run_cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "has no header.json" in proc.stderr
    missing = tmp_path / "no-such-run"
    proc = run_cli("run", "--resume", str(missing))
    assert proc.returncode == 2 and f"{missing} does not exist" in proc.stderr and "header.json" not in proc.stderr
    assert not missing.exists()


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_directory_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, cache_dir):
    out = tmp_path / "run"
    shutil.copytree(DATA / "run_small", out)
    before = _files(out)
    old_id = json.loads((out / "header.json").read_text())["run_id"]
    args = ["run", "--models", "tiny", "--runtimes", "ort-cpu", "--batches", "1", "--seq-lens", "8",
            "--min-time", "0.01", "--min-iters", "3", "--no-ceilings", "--no-report", "--out", str(out),
            "--cache-dir", str(cache_dir)]
    refused = run_cli(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr.strip()
    assert refused.stderr.count("\n") == 1, repr(refused.stderr)  # one line, no blank ones around it
    assert "Traceback" not in refused.stdout + refused.stderr
    assert f"already holds run {old_id}" in message and "--resume" in message and "--overwrite" in message
    assert _files(out) == before, "the old run must be untouched"
    with pytest.raises(FileExistsError, match="already holds run"):
        run_matrix(MatrixSpec(models=["tiny"], runtimes=["ort-cpu"]), out)
    assert _files(out) == before

    replaced = run_cli(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    aside = tmp_path / f"run.replaced-{old_id}"
    assert f"moved the run that was in {out} to {aside}" in replaced.stderr
    assert _files(aside) == before, "the old run is kept, whole, beside the new one"
    rows = read_rows(out)
    new_id = json.loads((out / "header.json").read_text())["run_id"]
    assert new_id != old_id and [r["run_id"] for r in rows] == [new_id]
