
"""A user's ONNX file gets the work-model columns (FLOPs, bytes, achieved rates, fractions of the peaks, roofline
point) from the graph counter: on our own export given as a file they agree with the analytic model, on a BERT
from transformers they are the graph's count, and a graph the counter cannot count fully gets none."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from onnxbench.benchmarks.measure.graph_work import graph_work
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.measure.workmodel import work
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles, OnnxFileSource
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.models import get_preset
from onnxbench.reports import write_report

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)
CEILINGS = {"cpu": {"gemm_gflops": 50.0, "mem_bw_gbs": 10.0}}


def _ok(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, rows
    return ok


def test_own_export_as_a_file_gets_the_analytic_work_and_a_roofline_point(tiny_artifact, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1, 2], seq_lens=[16], timing=FAST,
                      onnx=OnnxFiles(files=[str(tiny_artifact.path)]))
    rows = _ok(run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=CEILINGS).rows)
    assert len(rows) == 2
    config = get_preset("tiny")
    for row in rows:
        analytic = work(config, "model", row["batch"], row["seq_len"])
        assert row["flops"] == pytest.approx(analytic.flops, rel=0.02)
        assert row["bytes_moved"] == pytest.approx(analytic.bytes_moved, rel=0.02)
        assert row["achieved_gflops"] == pytest.approx(row["flops"] / row["latency_ms_p50"] / 1e6)
        assert row["frac_peak_flops"] == pytest.approx(row["achieved_gflops"] / 50.0)
        assert row["frac_peak_bw"] == pytest.approx(row["achieved_gbs"] / 10.0)
    write_report(tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Roofline" in report and "plot_roofline" in report


def test_bert_rows_carry_the_graph_count(bert_onnx, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], seq_lens=[8, 16], timing=FAST,
                      onnx=OnnxFiles(files=[str(bert_onnx)], dims={"batch": 2}, int_ranges={"input_ids": [0, 100]}))
    rows = _ok(run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows)
    for row in rows:
        counted = graph_work(bert_onnx, row["batch"], row["seq_len"])
        assert counted.complete, counted.uncounted
        assert row["flops"] == counted.flops > 0 and row["bytes_moved"] == counted.bytes_moved
        # 2 layers of d=32, FFN 64: 2 * tokens * (4 d^2 + 2 d * 64) per layer for the weight products at least
        tokens = row["batch"] * row["seq_len"]
        assert row["flops"] >= 2 * 2 * tokens * (4 * 32 * 32 + 2 * 32 * 64)
    assert rows[1]["flops"] > rows[0]["flops"]  # T = 16 does more work than T = 8


def test_graph_the_counter_cannot_count_fully_gets_no_work_columns(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y_b"])], "b", [],
                               [helper.make_tensor_value_info("y_b", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "branchy", [x, cond], [y])
    path = tmp_path / "branchy.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    source = OnnxFileSource.at(path)
    (cell,) = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1], seq_lens=[8],
                         onnx=OnnxFiles(files=[str(path)])).build().cells
    assert not graph_work(path, 1, 8).complete
    assert source.work(cell) is None
