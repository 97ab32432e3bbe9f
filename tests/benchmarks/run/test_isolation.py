"""Isolation: a worker killed, hung or raising mid-matrix costs only its cell; every other cell has its row.

Faults are injected through the documented hook ``ONNXBENCH_FAULT`` (onnxbench/benchmarks/worker.py), which acts
inside the real worker process running the real ONNX Runtime / torch session; nothing is mocked.
"""

import socket
import subprocess
import sys

import psutil
import pytest

from onnxbench.benchmarks import Executor, InProcessExecutor, MatrixSpec, ProcessPerGroupExecutor, read_rows, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.run.faults import FAULT_ENV, inject_fault
from onnxbench.benchmarks.run.messages import WorkerStarted


def _spec(**kw) -> MatrixSpec:
    axes = {"models": ["tiny"], "runtimes": ["torch", "ort-cpu"], "batches": [1], "seq_lens": [8, 16, 24],
            "timing": TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02)}
    return MatrixSpec(**{**axes, **kw})


def _by_cell(rows):
    return {(r["runtime"], r["seq_len"]): r for r in rows}


class _Recording(ProcessPerGroupExecutor):
    """The process-per-group executor, recording the pid of every worker it started."""

    def __init__(self, warm: bool) -> None:
        super().__init__(warm)
        self.pids: list[int] = []

    def run(self, groups):
        for group, message in super().run(groups):
            if isinstance(message, WorkerStarted):
                self.pids.append(message.pid)
            yield group, message


@pytest.mark.parametrize(
    "fault, runtimes, cell_timeout_s, warm, reason",
    [
        ("kill", ["torch", "ort-cpu"], 600.0, True,
         "worker killed by signal 9 (SIGKILL, e.g. by the out-of-memory killer) while measuring"),
        # the same through fresh interpreters (no fork server)
        ("kill", ["ort-cpu"], 600.0, False,
         "worker killed by signal 9 (SIGKILL, e.g. by the out-of-memory killer) while measuring"),
        # the exit status travels from the fork server, the forked worker's parent
        ("exit", ["ort-cpu"], 600.0, True, "worker exited with status 3 while measuring this cell"),
        # the timeout must exceed any real cell's time on a contended machine: ort-cpu cells take milliseconds
        ("hang", ["ort-cpu"], 10.0, True,
         "timed out after 10 s (cell_timeout_s); worker killed while measuring this cell"),
    ],
)
def test_a_dead_or_hung_worker_fails_only_its_cell(tmp_path, cache_dir, monkeypatch, fault, runtimes,
                                                    cell_timeout_s, warm, reason):
    monkeypatch.setenv(FAULT_ENV, f"{fault}:runtime=ort-cpu,seq_len=16")
    spec = _spec(cell_timeout_s=cell_timeout_s, runtimes=runtimes)
    executor = _Recording(warm)
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir, executor=executor)
    # one worker per group, and one more for the cells after the failed one; none outlives the run (the fork
    # server included)
    assert len(set(executor.pids)) == len(executor.pids) == len(runtimes) + 1
    assert psutil.Process().children(recursive=True) == []
    rows = read_rows(tmp_path)
    assert len(rows) == len(spec.expand()) == 3 * len(runtimes)
    assert [r["cell_id"] for r in rows] == [r["cell_id"] for r in summary.rows]
    by_cell = _by_cell(rows)
    killed = by_cell.pop(("ort-cpu", 16))
    assert killed["status"] == "failed" and reason in killed["reason"]
    assert killed["model"] == "tiny" and killed["batch"] == 1  # the failed row still carries its keys
    assert killed["host"] == socket.gethostname() and killed["gpu_name"] is None  # where it died
    # the cells after the killed one ran in a fresh worker, and so did the other runtime's group
    assert {k: r["status"] for k, r in by_cell.items()} == dict.fromkeys(by_cell, "ok")
    assert all(r["verdict"] in ("pass", "floor") and r["latency_ms_p50"] > 0 and r["peak_rss_mb"] > 50
               for r in by_cell.values())


def test_an_exception_in_a_cell_is_a_failed_row_with_the_exception(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "raise:runtime=torch,seq_len=24")
    spec = _spec(runtimes=["torch"])
    run_matrix(spec, tmp_path, cache_dir=cache_dir)
    by_cell = _by_cell(read_rows(tmp_path))
    assert by_cell[("torch", 24)]["status"] == "failed"
    assert "RuntimeError: fault injected by ONNXBENCH_FAULT @ faults.py" in by_cell[("torch", 24)]["reason"]
    assert by_cell[("torch", 8)]["status"] == by_cell[("torch", 16)]["status"] == "ok"


def test_the_fault_hook_selects_cells_and_rejects_bad_specs(monkeypatch):
    cell = _spec().expand()[0]
    monkeypatch.setenv(FAULT_ENV, "raise:seq_len=9999")
    inject_fault(cell)  # not selected: returns
    monkeypatch.setenv(FAULT_ENV, f"raise:cell_id={cell.cell_id}")
    with pytest.raises(RuntimeError, match="fault injected"):
        inject_fault(cell)
    monkeypatch.setenv(FAULT_ENV, "explode:seq_len=8")
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        inject_fault(cell)


def test_peak_rss_is_measured_per_cell_in_the_worker(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1, 16], seq_lens=[128],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02))
    run_matrix(spec, tmp_path, cache_dir=cache_dir)
    rows = {r["batch"]: r for r in read_rows(tmp_path)}
    # B=16, T=128 logits alone are 16*128*512*4 bytes = 4 MiB per copy, on top of the same session
    assert rows[16]["peak_rss_mb"] > rows[1]["peak_rss_mb"] > 50
    assert rows[1]["device_mem_mb"] is None  # CPU: no device memory column


class _AllGroupsFirst(Executor):
    """Pulls every group before measuring any, then measures them last-first in this process: the runner must not
    depend on an executor's order or on it pulling groups lazily (a distributed executor does neither)."""

    def run(self, groups):
        pulled = list(groups)
        for group in reversed(pulled):
            yield from InProcessExecutor().run([group])


def test_any_executor_gets_every_cell_its_row(tmp_path, cache_dir):
    spec = _spec(seq_lens=[8, 16])
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir, executor=_AllGroupsFirst())
    rows = read_rows(tmp_path)
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in spec.expand())
    assert [r["runtime"] for r in rows] == ["ort-cpu", "ort-cpu", "torch", "torch"]  # the executor's order
    assert all(r["status"] == "ok" and r["verdict"] == ("floor" if r["runtime"] == "torch" else "pass")
               and r["reference_runtime"] == "torch" for r in rows)
    assert summary.session_s > 0 and summary.worker_start_s == 0  # in process: no worker started


def test_peak_rss_of_a_cell_does_not_depend_on_the_cells_before_it(tmp_path):
    """A B=1 cell measured after B=16 cells of the same session reports (within 10%) the peak it reports alone:
    ORT's arena, earlier reference outputs and freed heap are given back before each cell's peak is reset."""
    import json

    import onnx
    from onnx import TensorProto, helper

    # y[b, i] = sum_j x[b, i] * x[b, j]: a (B, T, T) float32 intermediate, 268 MB at B=16, T=2048
    nodes = [helper.make_node("Unsqueeze", ["x", "ax2"], ["a"]), helper.make_node("Unsqueeze", ["x", "ax1"], ["b"]),
             helper.make_node("Mul", ["a", "b"], ["c"]), helper.make_node("ReduceSum", ["c", "ax2"], ["y"],
                                                                            keepdims=0)]
    graph = helper.make_graph(
        nodes, "outer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence"])],
        [helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
         helper.make_tensor("ax2", TensorProto.INT64, [1], [2])])
    path = tmp_path / "outer.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))

    def peak_of_b1_t8(batches, seq_lens, out):
        proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "run", "--onnx", str(path), "--runtimes",
                               "ort-cpu", "--batches", batches, "--seq-lens", seq_lens, "--min-time", "0.01",
                               "--min-iters", "2", "--no-ceilings", "--no-report", "--out", str(out)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in rows] == ["ok"] * len(rows), rows
        return next(r["peak_rss_mb"] for r in rows if (r["batch"], r["seq_len"]) == (1, 8))

    after_big = peak_of_b1_t8("16,1", "2048,8", tmp_path / "after")
    alone = peak_of_b1_t8("1", "8", tmp_path / "alone")
    assert abs(after_big - alone) <= 0.10 * alone, (after_big, alone)
