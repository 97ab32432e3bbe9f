"""Shards (``--shard K/N``) and ``onnxbench merge``: the shards of a matrix, merged, are the unsharded matrix's
cells once each; overlapping cells measured on different hardware are refused unless one run is preferred."""

import json
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest

from onnxbench.benchmarks import MatrixSpec, read_rows, run_matrix
from onnxbench.benchmarks.cells import shard_cells
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.run.merge import MergeError, merge_runs
from onnxbench.errors import MatrixError
from onnxbench.rundir import RunDir

CLI = [sys.executable, "-m", "onnxbench.cli"]


def _spec(**kw) -> MatrixSpec:
    axes = {"models": ["tiny"], "runtimes": ["torch", "ort-cpu"], "batches": [1], "seq_lens": [8, 16],
            "timing": TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02)}
    return MatrixSpec(**{**axes, **kw})


def test_shards_partition_the_cells_by_whole_groups_whatever_the_axis_order():
    spec = _spec(models=["tiny", "small"], precisions=["fp32", "fp16"], batches=[1, 2])
    cells = spec.build().cells
    shards = [shard_cells(cells, f"{k}/3") for k in (1, 2, 3)]
    assert Counter(c.cell_id for s in shards for c in s) == Counter(c.cell_id for c in cells)  # each cell once
    for shard in shards:  # a group (artifact, runtime) is never split between shards
        assert {c.group_key for c in shard}.isdisjoint({c.group_key for s in shards if s is not shard for c in s})
    assert sorted(len({c.group_key for c in s}) for s in shards) == [2, 3, 3]  # 8 groups dealt round-robin
    reordered = _spec(models=["small", "tiny"], precisions=["fp16", "fp32"], batches=[2, 1]).build().cells
    assert [{c.cell_id for c in shard_cells(reordered, f"{k}/3")} for k in (1, 2, 3)] == \
        [{c.cell_id for c in s} for s in shards]
    assert _spec(shard="2/3", models=["tiny", "small"], precisions=["fp32", "fp16"],
                 batches=[1, 2]).build().cells == shards[1]


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1-2", "a/b", "1/0"])
def test_a_malformed_shard_is_an_error_naming_the_form(bad):
    with pytest.raises(MatrixError, match="expected K/N with 1 <= K <= N"):
        _spec(shard=bad).build()


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory, cache_dir):
    """Shards 1/2 and 2/2 of the tiny matrix, measured in this process (the executor is not what is tested)."""
    root = tmp_path_factory.mktemp("shards")
    for k in (1, 2):
        run_matrix(_spec(shard=f"{k}/2"), root / f"s{k}", cache_dir=cache_dir, isolate=False)
    return root


def test_shards_merged_equal_the_unsharded_cells_with_no_duplicate(shard_runs, tmp_path):
    out = tmp_path / "merged"
    proc = subprocess.run([*CLI, "merge", str(shard_runs / "s1"), str(shard_runs / "s2"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_rows(out)
    unsharded = {c.cell_id for c in _spec().build().cells}
    assert Counter(r["cell_id"] for r in rows) == Counter(unsharded)
    assert all(r["status"] == "ok" and r["host"] == socket.gethostname() for r in rows)
    shard_rows = [read_rows(shard_runs / f"s{k}") for k in (1, 2)]
    assert all(shard_rows) and {r["run_id"] for r in rows} == {s[0]["run_id"] for s in shard_rows}  # provenance
    header = RunDir(out).read_header()
    assert header["n_cells"] == len(unsharded) and "shard" not in header["matrix"]
    assert [s["shard"] for s in header["merged_from"]] == ["1/2", "2/2"]
    assert (out / "report.md").is_file() and (out / "results.parquet").is_file()
    assert "did not run" not in (out / "report.md").read_text()  # complete: no incomplete-run warning


def _copy_on_other_hardware(src, dst, host="other-node", gpu_name=None):
    dst.mkdir()
    (dst / "header.json").write_text((src / "header.json").read_text())
    rows = [dict(r, host=host, gpu_name=gpu_name) for r in read_rows(src)]
    (dst / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_overlapping_cells_from_other_hardware_are_refused_unless_one_run_is_preferred(shard_runs, tmp_path):
    s1 = shard_runs / "s1"
    other = tmp_path / "s1-elsewhere"
    _copy_on_other_hardware(s1, other)
    with pytest.raises(MergeError, match=r"measured in more than one run on different hardware .*--prefer RUN"):
        merge_runs([s1, other, shard_runs / "s2"], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written
    summary = merge_runs([s1, other, shard_runs / "s2"], tmp_path / "kept", prefer=other)
    rows = read_rows(tmp_path / "kept")
    ids = {r["cell_id"] for r in read_rows(s1)}
    assert summary.preferred == len(ids) and len(rows) == len({r["cell_id"] for r in rows})
    assert {r["host"] for r in rows if r["cell_id"] in ids} == {"other-node"}


def test_a_cell_measured_twice_on_the_same_hardware_is_kept_once_preferring_ok(shard_runs, tmp_path):
    s1 = shard_runs / "s1"
    again = tmp_path / "again"
    rows = _copy_on_other_hardware(s1, again, host=socket.gethostname())
    rows[0] = dict(rows[0], status="failed", reason="worker killed by signal 9")
    (again / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = merge_runs([again, s1], tmp_path / "merged")
    merged = {r["cell_id"]: r for r in read_rows(tmp_path / "merged")}
    assert summary.duplicates_dropped == len(rows) and len(merged) == len(rows)
    assert merged[rows[0]["cell_id"]]["status"] == "ok"  # the ok row of s1 over the failed one


def test_merge_refuses_bad_input_with_one_line(shard_runs, tmp_path):
    s1, s2 = str(shard_runs / "s1"), str(shard_runs / "s2")
    for args, message in [([s1, "--out", str(tmp_path / "m")], "two or more run directories"),
                          ([s1, str(tmp_path), "--out", str(tmp_path / "m")], "holds no run"),
                          ([s1, s2, "--out", s1], "is one of the runs to merge"),
                          ([s1, s2, "--out", str(tmp_path / "m"), "--prefer", str(tmp_path)], "not one of the runs")]:
        proc = subprocess.run([*CLI, "merge", *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 2 and message in proc.stderr, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "m").exists()


def test_a_run_spanning_two_hosts_is_reported_by_host_and_compare_warns(shard_runs, tmp_path):
    s1 = shard_runs / "s1"
    elsewhere = tmp_path / "s2-elsewhere"
    _copy_on_other_hardware(shard_runs / "s2", elsewhere, host="gpu-node-7", gpu_name="NVIDIA H200")
    merged = tmp_path / "merged"
    proc = subprocess.run([*CLI, "merge", str(s1), str(elsewhere), "--out", str(merged)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (merged / "report.md").read_text()
    hosts = report.split("## Hosts", 1)[1].split("\n## ", 1)[0]
    assert socket.gethostname() in hosts and "gpu-node-7" in hosts and "NVIDIA H200" in hosts
    assert "gpu-node-7 · NVIDIA H200" in report  # a latency table of that machine's cells alone
    assert "merged from" in report and "shard 1/2" in report

    other = tmp_path / "s1-elsewhere"
    _copy_on_other_hardware(s1, other, host="gpu-node-7", gpu_name="NVIDIA H200")
    proc = subprocess.run([*CLI, "compare", str(s1), str(other)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    n = len(read_rows(s1))
    assert f"{n} cell(s) ran on different hardware" in proc.stderr, proc.stdout + proc.stderr
    assert f"Warning: {n} cell(s) ran on different hardware in A and B" in proc.stdout
    proc = subprocess.run([*CLI, "compare", str(s1), str(s1)], capture_output=True, text=True, timeout=300)
    assert "different hardware" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "unknown --executor 'dask'; known: process, ray"),
    (["--ray-address", "auto"], "--ray-address applies to --executor ray"),
    (["--shard", "3/2"], "expected K/N with 1 <= K <= N"),
])
def test_bad_executor_or_shard_flags_are_one_clear_error(args, message, tmp_path):
    proc = subprocess.run([*CLI, "run", "--models", "tiny", "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and message in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not (tmp_path / "run").exists()
