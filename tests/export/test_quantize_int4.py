"""int4-weight: ONNX Runtime's MatMulNBits quantizer on an fp32 graph, cached like an export; the artifact holds
4-bit MatMulNBits with the block size and accuracy level asked, its provenance says what ran, and it agrees with
the float graph by the int4 criteria."""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.verify.quantized import check_quantized
from onnxbench.benchmarks.verify.verdict import QUANT_THRESHOLDS
from onnxbench.export import to_onnx
from onnxbench.export.quantize import INT4_WEIGHT, model_sha256
from onnxbench.export.quantize_int4 import NO_CONSTANT_WEIGHT, Int4WeightOptions, quantize_int4_weight
from onnxbench.models import get_preset

IR_VERSION = 10


def _run(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _nbits(path) -> list[dict]:
    model = onnx.load(str(path), load_external_data=False)
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
            if n.op_type == "MatMulNBits" and n.domain == "com.microsoft"]


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_every_weight_matmul_becomes_matmulnbits_block_32_accuracy_level_4(preset, cache_dir):
    config = get_preset(preset)
    fp32 = to_onnx(config, cache_dir=cache_dir, model_name=preset)
    q = quantize_int4_weight(fp32, cache_dir=cache_dir)
    assert q.precision == INT4_WEIGHT and q.config == config and q.model_name == preset
    weights_per_block = 7 if config.family == "llama" else 6  # SwiGLU has three MLP matrices
    nodes = _nbits(q.path)
    assert len(nodes) == weights_per_block * config.n_layers + 1  # + the unembedding (tied: folded by preprocess)
    assert {(n["bits"], n["block_size"], n["accuracy_level"]) for n in nodes} == {(4, 32, 4)}
    ops = collections.Counter(n.op_type for n in onnx.load(str(q.path)).graph.node)
    assert ops["MatMul"] == 2 * config.n_layers  # q·k^T and softmax·v have no constant weight
    info = json.loads(q.metadata["onnxbench.quantization"])
    assert info["quantizer"].endswith("MatMulNBitsQuantizer") and info["bits"] == 4 and info["is_symmetric"]
    assert info["block_sizes"] == [32] and info["accuracy_levels"] == [4]  # read back from the graph
    assert info["matmuls_converted"] == len(nodes)
    assert info["matmuls_float"] == {NO_CONSTANT_WEIGHT: 2 * config.n_layers}
    assert q.metadata["onnxbench.source_sha256"] == model_sha256(fp32.path)
    # the weights are stored as packed 4-bit codes: (N, K / 32, 16) uint8, one float scale per block
    model = onnx.load(str(q.path))
    inits = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    n, k = attrs["N"], attrs["K"]
    assert tuple(inits[node.input[1]].dims) == (n, k // 32, 16) and inits[node.input[1]].data_type == TensorProto.UINT8
    assert math.prod(inits[node.input[2]].dims) == n * k // 32 and len(node.input) == 3  # symmetric: no zero points
    for b, t in ((1, 32), (2, 64)):
        feeds = make_feeds(fp32.inputs, b, t, int_high=config.vocab_size)
        y_ref, y = _run(fp32.path, feeds), _run(q.path, feeds)
        assert not np.allclose(y, y_ref, atol=1e-3)  # a different graph...
        assert check_quantized(y, y_ref, QUANT_THRESHOLDS[INT4_WEIGHT]).agree  # ...within the int4 criteria


def test_cached_by_content_and_options(tiny_artifact, cache_dir):
    first = quantize_int4_weight(tiny_artifact, cache_dir=cache_dir)
    again = quantize_int4_weight(tiny_artifact.path, cache_dir=cache_dir)
    assert again.cached and again.path == first.path and again.export_s == 0.0
    other = quantize_int4_weight(tiny_artifact, options=Int4WeightOptions(accuracy_level=0, is_symmetric=False),
                                 cache_dir=cache_dir)
    assert other.path != first.path
    info = json.loads(other.metadata["onnxbench.quantization"])
    assert info["accuracy_levels"] == [0] and not info["is_symmetric"]  # level 0: the attribute is left out
    assert all(len(n.input) == 4 for n in onnx.load(str(other.path)).graph.node if n.op_type == "MatMulNBits")


def test_refusals(tmp_path):
    cache_dir = tmp_path / "cache"  # its own: the session's is shared with the other xdist worker's exports
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "x2"], ["y"])], "noweight",
                              [x, helper.make_tensor_value_info("x2", TensorProto.FLOAT, [64, 64])], [y])
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION), str(tmp_path / "noweight.onnx"))
    with pytest.raises(ValueError, match="no MatMul with a constant weight"):
        quantize_int4_weight(tmp_path / "noweight.onnx", cache_dir=cache_dir)
    w = numpy_helper.from_array(np.ones((64, 64), np.float16), "w")
    half = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"])], "half",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 64, 64])],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT16, ["batch", 64, 64])], [w])
    onnx.save(helper.make_model(half, ir_version=IR_VERSION), str(tmp_path / "half.onnx"))
    with pytest.raises(ValueError, match="fp16; int4-weight quantization takes an fp32 graph"):
        quantize_int4_weight(tmp_path / "half.onnx", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="block_size"):
        Int4WeightOptions(block_size=24)
    assert not list((cache_dir / "artifacts").glob("*.tmp-*"))  # nothing partial is left behind
