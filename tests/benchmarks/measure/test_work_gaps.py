"""The graph counter gets through a real BERT from transformers at batch 1 (ONNX shape inference stops at the
Slice of ``position_ids`` there; ONNX Runtime's symbolic shape inference does not), and a row whose work could not
be counted says why in its ``reason`` instead of leaving the work columns empty in silence."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from onnxbench.benchmarks.measure.graph_work import graph_work
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.run.runner import run_matrix

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)
D, LAYERS, D_FF = 32, 2, 64  # the bert_onnx fixture's BertConfig


def _hand_count(batch: int, seq_len: int) -> int:
    tokens = batch * seq_len
    per_layer = 2 * tokens * 4 * D * D + 2 * 2 * batch * seq_len * seq_len * D + 2 * 2 * tokens * D * D_FF
    return LAYERS * per_layer + 2 * batch * D * D  # + the pooler


def test_bert_at_batch_1_is_counted_in_full(bert_onnx):
    for seq_len in (8, 16):
        counted = graph_work(bert_onnx, 1, seq_len)
        assert counted.complete, counted.uncounted
        assert counted.flops == _hand_count(1, seq_len), counted.flops_by_op
        assert counted.output_shapes == {"last_hidden_state": (1, seq_len, D), "pooler_output": (1, D)}


def test_bert_rows_at_batch_1_carry_flops_and_bytes(bert_onnx, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(bert_onnx)], int_ranges={"input_ids": [0, 100]}))
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=False).rows
    assert row["status"] == "ok", row["reason"]
    assert row["flops"] == _hand_count(1, 8) and row["bytes_moved"] > 0
    assert "work not counted" not in row["reason"]


def test_a_row_whose_work_cannot_be_counted_says_why(tmp_path, cache_dir):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y_b"])], "b", [],
                               [helper.make_tensor_value_info("y_b", TensorProto.FLOAT, None)])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
                              "branchy", [x, cond], [y])
    path = tmp_path / "branchy.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(path)]))
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=False).rows
    assert row["status"] == "ok" and row["flops"] is None
    assert "work not counted" in row["reason"] and "If" in row["reason"], row["reason"]
