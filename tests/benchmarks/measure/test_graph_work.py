"""Work model of any ONNX file, counted from the graph: agrees with the analytic model on our own exports (every
attention variant, both parts, int8 too), and with hand counts on graphs that are not transformers."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks.measure.graph_work import graph_work
from onnxbench.benchmarks.measure.workmodel import work
from onnxbench.export import to_onnx
from onnxbench.export.quantize import quantize_int8_dynamic
from onnxbench.export.quantize_int4 import quantize_int4_weight
from onnxbench.models import get_preset
from onnxbench.models.flops import forward_flops

IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default
SHAPES = [(1, 32), (4, 128)]


def _save(tmp_path, name, nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION),
              str(path))
    return path


@pytest.mark.parametrize("variant", ["decomposed", "sdpa", "onnx-attention", "ort-fused"])
@pytest.mark.parametrize("part", ["model", "attention"])
def test_own_exports_agree_with_the_analytic_model(variant, part, cache_dir):
    config = get_preset("tiny")
    art = to_onnx(config, variant=variant, part=part, cache_dir=cache_dir, model_name="tiny")
    for batch, seq_len in SHAPES:
        counted = graph_work(art.path, batch, seq_len)
        analytic = work(config, part, batch, seq_len)
        assert counted.complete, counted.uncounted
        assert counted.flops == pytest.approx(analytic.flops, rel=0.02), counted.flops_by_op
        assert counted.bytes_moved == pytest.approx(analytic.bytes_moved, rel=0.02)
        assert counted.input_shapes == {art.inputs[0].name: (batch, seq_len, *art.inputs[0].shape[2:])}
    if variant == "ort-fused":  # the attention core is one contrib node per block, counted by its own rule
        assert "com.microsoft:MultiHeadAttention" in counted.flops_by_op
    if variant == "onnx-attention":
        assert "ai.onnx:Attention" in counted.flops_by_op


def test_int8_graph_counts_the_same_flops_with_fewer_bytes(tiny_artifact, cache_dir):
    config = get_preset("tiny")
    q = quantize_int8_dynamic(tiny_artifact, cache_dir=cache_dir)
    fp32, int8 = graph_work(tiny_artifact.path, 2, 64), graph_work(q.path, 2, 64)
    assert int8.complete and int8.flops == pytest.approx(work(config, "model", 2, 64).flops, rel=1e-9)
    analytic = forward_flops(config, 2, 64)  # the weight products run as MatMulInteger, q·k^T and softmax·v in float
    assert int8.flops_by_op["ai.onnx:MatMulInteger"] == analytic.total - analytic.scores - analytic.weighted_values
    # int8 weights are a quarter of fp32 ones; the embedding Gather keeps its fp32 table
    assert int8.weight_bytes < 0.75 * fp32.weight_bytes
    assert int8.bytes_moved - int8.weight_bytes == fp32.bytes_moved - fp32.weight_bytes  # same inputs/outputs


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_int4_graph_counts_4bit_weight_bytes(preset, cache_dir):
    """MatMulNBits moves N·K/2 bytes of packed 4-bit codes and N·K/32 fp32 scales per weight (block 32,
    symmetric: no zero points); the FLOPs are the float graph's."""
    config = get_preset(preset)
    fp32 = to_onnx(config, cache_dir=cache_dir, model_name=preset)
    q = quantize_int4_weight(fp32, cache_dir=cache_dir)
    counted, float_count = graph_work(q.path, 2, 64), graph_work(fp32.path, 2, 64)
    assert counted.complete and counted.flops == pytest.approx(float_count.flops, rel=1e-9)
    model = onnx.load(str(q.path))
    nbits = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
             if n.op_type == "MatMulNBits"]
    assert counted.flops_by_op["com.microsoft:MatMulNBits"] == sum(2 * 2 * 64 * a["N"] * a["K"] for a in nbits)
    packed = sum(a["N"] * a["K"] / 2 + 4 * a["N"] * a["K"] / 32 for a in nbits)
    quantized_names = {i for n in model.graph.node if n.op_type == "MatMulNBits" for i in n.input[1:]}
    rest = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.name not in quantized_names)
    rest += sum(numpy_helper.to_array(a.t).nbytes for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value")
    assert counted.weight_bytes == pytest.approx(packed + rest, rel=1e-12)
    # the same weights in fp32 are 4 bytes each: 4-bit codes + scales are 1/8 + 1/32 of that
    float_weights = sum(4 * a["N"] * a["K"] for a in nbits)
    assert packed == pytest.approx(float_weights * (1 / 8 + 1 / 32))
    assert counted.bytes_moved - counted.weight_bytes == float_count.bytes_moved - float_count.weight_bytes


def test_bert_from_transformers_matches_a_hand_count(bert_onnx):
    d, layers, d_ff = 32, 2, 64  # the fixture's BertConfig
    for batch, seq_len in [(2, 8), (3, 16)]:
        tokens = batch * seq_len
        per_layer = 2 * tokens * 4 * d * d + 2 * 2 * batch * seq_len * seq_len * d + 2 * 2 * tokens * d * d_ff
        pooler = 2 * batch * d * d
        counted = graph_work(bert_onnx, batch, seq_len)
        assert counted.complete, counted.uncounted
        assert counted.flops == layers * per_layer + pooler, counted.flops_by_op
        assert counted.output_shapes == {"last_hidden_state": (batch, seq_len, d), "pooler_output": (batch, d)}


def test_conv_gemm_graph_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(8, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 2, 5, 5)).astype(np.float32), "w2")  # group=4
    w3 = numpy_helper.from_array(rng.standard_normal((10, 4 * 7 * 7)).astype(np.float32), "w3")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),  # (N, 8, 32, 32)
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=4, strides=[4, 4]),  # (N, 4, 7, 7)
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1),  # (N, 10)
    ]
    path = _save(tmp_path, "convnet", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w1, b1, w2, w3])
    n = 2
    conv1 = 2 * (n * 8 * 32 * 32) * (3 * 3 * 3)
    conv2 = 2 * (n * 4 * 7 * 7) * (2 * 5 * 5)  # each output channel sees C / group = 2 input channels
    gemm = 2 * n * 10 * (4 * 7 * 7)
    counted = graph_work(path, batch=n)
    assert counted.flops == conv1 + conv2 + gemm
    assert counted.flops_by_op == {"ai.onnx:Conv": conv1 + conv2, "ai.onnx:Gemm": gemm}
    weights = 4 * (8 * 27 + 8 + 4 * 2 * 25 + 10 * 196)
    assert counted.weight_bytes == weights
    assert counted.bytes_moved == weights + 4 * n * 3 * 32 * 32 + 4 * n * 10
    assert counted.output_shapes == {"y": (n, 10)}
    assert graph_work(path, dims={"N": 5}).flops == pytest.approx(counted.flops * 5 / 2)


def test_einsum_broadcast_matmul_and_uncounted_ops(tmp_path):
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Einsum", ["a", "b"], ["e"], equation="bij,bjk->bik"),  # (3,4,5) x (3,5,6)
        helper.make_node("MatMul", ["m", "n"], ["mm"]),  # (2,1,4,8) x (3,8,5) -> (2,3,4,5)
        helper.make_node("Einsum", ["e"], ["t"], equation="bik->bki"),  # one operand: no multiply-accumulate
    ]
    inputs = [helper.make_tensor_value_info(name, f, shape) for name, shape in
              [("a", [3, 4, 5]), ("b", [3, 5, 6]), ("m", [2, 1, 4, 8]), ("n", [3, 8, 5])]]
    outputs = [helper.make_tensor_value_info("t", f, None), helper.make_tensor_value_info("mm", f, None)]
    counted = graph_work(_save(tmp_path, "einsum", nodes, inputs, outputs))
    assert counted.flops_by_op == {"ai.onnx:Einsum": 2 * 3 * 4 * 5 * 6, "ai.onnx:MatMul": 2 * (2 * 3 * 4 * 5) * 8}
    assert counted.complete and counted.output_shapes == {"t": (3, 6, 4), "mm": (2, 3, 4, 5)}

    lstm = [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=4)]
    inits = [numpy_helper.from_array(np.zeros((1, 16, 3), np.float32), "w"),
             numpy_helper.from_array(np.zeros((1, 16, 4), np.float32), "r")]
    path = _save(tmp_path, "lstm", lstm, [helper.make_tensor_value_info("x", f, ["sequence", "batch", 3])],
                 [helper.make_tensor_value_info("y", f, None)], inits)
    partial = graph_work(path, batch=2, seq_len=5)
    assert partial.uncounted == {"ai.onnx:LSTM": 1} and not partial.complete  # never a silent zero


def test_unbound_axis_and_bad_file_get_clear_errors(tmp_path):
    path = _save(tmp_path, "dyn", [helper.make_node("Relu", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])])
    with pytest.raises(ValueError, match="--dim features=SIZE"):
        graph_work(path)
    assert graph_work(path, batch=2, dims={"features": 7}).bytes_moved == 2 * (2 * 7 * 4)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        graph_work(tmp_path / "junk.onnx")
    assert math.isclose(graph_work(path, batch=2, dims={"features": 7}).flops, 0.0)
    unranked = _save(tmp_path, "unranked", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                     [numpy_helper.from_array(np.ones((16, 4), np.float32), "w")])
    with pytest.raises(ValueError, match="unknown rank.*--shape x="):
        graph_work(unranked)
    assert graph_work(unranked, batch=3, input_shapes={"x": ("batch", 16)}).flops == 2 * 3 * 4 * 16
