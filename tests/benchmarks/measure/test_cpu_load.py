"""A busy machine is seen while cells run, not only at the start: each ok row records the CPU load of other
processes while its measured part ran (``cpu_busy_pct``: the system's CPU time minus the measuring process's), the
run's header keeps the highest (``cpu_busy_pct_during``), and the one busy rule (:mod:`onnxbench.noise`) reads it
beside ``cpu_busy_pct_at_start``, so that the CLI's end-of-run table and the report mark every timing figure of
such a run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from onnxbench import noise
from onnxbench.benchmarks.measure.load import OtherLoad
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.cli.summary import print_summary
from onnxbench.schema import COLUMNS


def _share(process: psutil.Process, seconds: float) -> float:
    """Percent of all logical cores ``process`` used over ``seconds`` (from now)."""
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return 100 * (after.user + after.system - before.user - before.system) / (seconds * psutil.cpu_count())


def test_another_process_s_work_is_counted_and_our_own_is_not():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        load = OtherLoad.start()
        hog_share = _share(psutil.Process(hog.pid), 1.0)
        other = load.stop()
    finally:
        hog.kill()
        hog.wait()
    assert other is not None and other >= 0.8 * hog_share, (other, hog_share)
    load = OtherLoad.start()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # our own work, on one core
        pass
    other = load.stop()
    assert load.own_pct > 5, load.own_pct  # it saw our loop (its share depends on the machine's other work)...
    assert other + load.own_pct <= 105, (other, load.own_pct)  # ...and did not count it as other work


def test_a_window_too_short_to_tell_records_nothing():
    load = OtherLoad.start()
    assert load.stop() is None  # /proc/stat counts 10 ms ticks: a few ms tell nothing


def test_rows_record_the_load_and_the_header_keeps_the_highest(tmp_path, cache_dir):
    timing = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.4, max_iters=10_000)
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1, 2], seq_lens=[8], timing=timing,
                      exporter="torchscript")
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=False).rows
    assert "cpu_busy_pct" in COLUMNS
    loads = [r["cpu_busy_pct"] for r in rows]
    assert all(r["status"] == "ok" for r in rows) and all(v is not None and 0 <= v <= 100 for v in loads), loads
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    assert header["cpu_busy_pct_during"] == pytest.approx(max(loads))


def test_the_busy_rule_reads_the_load_during_the_run():
    quiet_start = {"cpu_busy_pct_at_start": 3.0, "cpu_busy_pct_during": noise.BUSY_LIMIT_PCT + 30}
    assert noise.busy_pct(quiet_start) == pytest.approx(noise.BUSY_LIMIT_PCT + 30)
    assert "while cells were measured" in noise.busy_note(quiet_start)
    assert noise.busy_pct({"cpu_busy_pct_at_start": 3.0, "cpu_busy_pct_during": 5.0}) is None


def test_the_cli_table_marks_every_timing_figure_of_a_busy_run(capsys):
    row = {"status": "ok", "scenario": "prefill", "model": "tiny", "runtime": "ort-cpu", "batch": 1, "seq_len": 8,
           "latency_ms_p50": 1.25, "throughput_tok_s": 6400.0, "floor_ratio": 1.5, "verdict": "pass", "reason": ""}
    print_summary([row], busy="the CPUs were 63 % busy with other work when the run started")
    out = capsys.readouterr().out
    assert "1.25 ‡" in out and "6,400 ‡" in out, out
    assert "63 % busy" in out
    print_summary([row])
    assert "‡" not in capsys.readouterr().out
