"""int8-dynamic: ONNX Runtime dynamic quantization of an fp32 graph's MatMul weights, cached like an export, for our
exports and for a user's ONNX file (weights inline or in external data)."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.verify.quantized import check_quantized
from onnxbench.export import to_onnx
from onnxbench.export.quantize import INT8_DYNAMIC, Int8DynamicOptions, model_sha256, quantize_int8_dynamic
from onnxbench.models import get_preset

IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default


def _run(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.fixture(scope="module")
def tiny_int8(tiny_artifact, cache_dir):
    return quantize_int8_dynamic(tiny_artifact, cache_dir=cache_dir)


def test_tiny_int8_runs_in_ort_cpu_and_agrees(tiny_artifact, tiny_int8):
    config = get_preset("tiny")
    assert tiny_int8.precision == INT8_DYNAMIC and tiny_int8.variant == "decomposed"
    assert tiny_int8.config == config and tiny_int8.model_name == "tiny"
    assert [s.name for s in tiny_int8.inputs] == ["input_ids"] and tiny_int8.outputs[0].dtype == "float32"
    # every weight MatMul quantized: Q, K, V, O, fc_in, fc_out per block and the (tied) unembedding
    ops = _ops(tiny_int8.path)
    assert ops["MatMulInteger"] == 6 * config.n_layers + 1
    assert ops["MatMul"] == 2 * config.n_layers  # q·k^T and softmax·v stay float
    info = json.loads(tiny_int8.metadata["onnxbench.quantization"])
    assert info["weight_type"] == "QInt8" and info["per_channel"] and info["reduce_range"]
    assert info["matmuls_quantized"] == 6 * config.n_layers + 1 and info["op_types"] == ["MatMul"]
    assert tiny_int8.metadata["onnxbench.source_sha256"] == model_sha256(tiny_artifact.path)
    int8_bytes = sum(i.ByteSize() for i in onnx.load(str(tiny_int8.path)).graph.initializer
                     if i.data_type == TensorProto.INT8)
    assert int8_bytes >= 6 * config.n_layers * config.d_model ** 2  # the weights really are stored as int8
    for b, t in ((1, 32), (4, 128)):
        feeds = make_feeds(tiny_artifact.inputs, b, t, int_high=config.vocab_size)
        y_ref, y = _run(tiny_artifact.path, feeds), _run(tiny_int8.path, feeds)
        assert not np.array_equal(y, y_ref)  # it is a different graph...
        assert check_quantized(y, y_ref).agree  # ...that still agrees by the int8 criteria


def test_cached_by_source_content_and_options(tiny_artifact, tiny_int8, cache_dir, tmp_path):
    again = quantize_int8_dynamic(tiny_artifact.path, cache_dir=cache_dir)
    assert again.cached and again.path == tiny_int8.path and again.export_s == 0.0
    other = quantize_int8_dynamic(tiny_artifact, options=Int8DynamicOptions(reduce_range=False), cache_dir=cache_dir)
    assert other.path != tiny_int8.path and not other.cached
    assert json.loads(other.metadata["onnxbench.quantization"])["reduce_range"] is False
    # same file name, different weights: a different cache entry
    model = onnx.load(str(tiny_artifact.path))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2 and i.dims[0] == i.dims[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    changed = tmp_path / "model.onnx"
    onnx.save(model, str(changed))
    assert quantize_int8_dynamic(changed, cache_dir=cache_dir).path != tiny_int8.path
    own = tmp_path / "own"  # force replaces the entry: never the shared one, which the other xdist worker may read
    assert quantize_int8_dynamic(tiny_artifact, cache_dir=own).cached is False
    assert quantize_int8_dynamic(tiny_artifact, cache_dir=own, force=True).cached is False


@pytest.mark.parametrize("variant", ["sdpa", "onnx-attention", "ort-fused"])
def test_every_attention_variant_quantizes_and_runs(variant, cache_dir, tmp_path, tmp_path_factory, monkeypatch):
    config = get_preset("tiny")
    art = to_onnx(config, variant=variant, cache_dir=cache_dir, model_name="tiny")
    monkeypatch.chdir(tmp_path)
    # a cache of its own, so that the quantizer runs here (and never replaces an entry the other worker reads)
    q = quantize_int8_dynamic(art, cache_dir=tmp_path_factory.mktemp("int8"))
    assert list(tmp_path.iterdir()) == []  # ORT's failed symbolic inference dumps files into the cwd otherwise
    assert q.variant == variant and q.precision == INT8_DYNAMIC
    # ort-fused's unembedding is a com.microsoft FusedMatMul, which the quantizer leaves in fp32
    expected = 6 * config.n_layers + (0 if variant == "ort-fused" else 1)
    assert _ops(q.path)["MatMulInteger"] == expected
    steps = json.loads(q.metadata["onnxbench.quantization"])["preprocess"]
    assert "ort_basic_optimization" in steps
    if variant in ("onnx-attention", "ort-fused"):  # symbolic shape inference cannot follow these graphs
        assert steps[0].startswith("symbolic_shape_inference skipped")
    feeds = make_feeds(art.inputs, 2, 16, int_high=config.vocab_size)
    assert check_quantized(_run(q.path, feeds), _run(art.path, feeds)).agree


def test_user_file_with_external_data(tiny_artifact, cache_dir, tmp_path):
    model = onnx.load(str(tiny_artifact.path))
    del model.metadata_props[:]  # a file from elsewhere: no onnxbench provenance
    path = tmp_path / "user-lm.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="user-lm.weights", size_threshold=0)
    assert (tmp_path / "user-lm.weights").stat().st_size > path.stat().st_size
    q = quantize_int8_dynamic(path, cache_dir=cache_dir)
    assert q.config is None and q.variant == "external" and q.precision == INT8_DYNAMIC
    assert q.model_name == "user-lm" and q.metadata["onnxbench.source"] == str(path.resolve())
    feeds = make_feeds(q.inputs, 1, 32, int_high=get_preset("tiny").vocab_size)
    assert check_quantized(_run(q.path, feeds), _run(path, feeds)).agree
    # the content hash covers the external weights: change them and the key changes
    before = model_sha256(path)
    data = bytearray((tmp_path / "user-lm.weights").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "user-lm.weights").write_bytes(bytes(data))
    assert model_sha256(path) != before
    (tmp_path / "user-lm.weights").unlink()
    with pytest.raises(FileNotFoundError, match="user-lm.weights"):
        quantize_int8_dynamic(path, cache_dir=cache_dir)


def _matmul_model(path, elem_type=TensorProto.FLOAT, with_weight=True):
    np_type = helper.tensor_dtype_to_np_dtype(elem_type)
    inputs = [helper.make_tensor_value_info("x", elem_type, ["batch", 8])]
    inits = []
    if with_weight:
        inits = [numpy_helper.from_array(np.ones((8, 4), dtype=np_type), "w")]
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    else:
        inputs.append(helper.make_tensor_value_info("w", elem_type, [8, 4]))
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", elem_type, ["batch", 4])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION),
              str(path))
    return path


def test_bad_sources_get_one_clear_error_and_leave_nothing(tmp_path):
    cache_dir = tmp_path / "cache"  # its own: the session's is shared with the other xdist worker's exports
    with pytest.raises(ValueError, match="fp16.*takes an fp32 graph"):
        quantize_int8_dynamic(_matmul_model(tmp_path / "half.onnx", TensorProto.FLOAT16), cache_dir=cache_dir)
    before = sorted((cache_dir / "artifacts").rglob("*"))
    with pytest.raises(ValueError, match="no MatMul with a constant weight"):
        quantize_int8_dynamic(_matmul_model(tmp_path / "noweight.onnx", with_weight=False), cache_dir=cache_dir)
    after = [p for p in sorted((cache_dir / "artifacts").rglob("*")) if p not in before]
    assert all(p.is_dir() for p in after), after  # no model file, temp file or done marker left behind
    with pytest.raises(FileNotFoundError):
        quantize_int8_dynamic(tmp_path / "missing.onnx", cache_dir=cache_dir)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        quantize_int8_dynamic(tmp_path / "junk.onnx", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="weight_type"):
        Int8DynamicOptions(weight_type="QInt4")
