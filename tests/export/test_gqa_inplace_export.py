"""The ``ort-gqa-inplace`` attention variant (docs/generation.md, "A KV cache updated in place"): the llama-tiny
decoder written with ``com.microsoft.GroupQueryAttention`` over a past/present buffer shared in place. The export
holds what the variant promises (checked by ``verify_inplace``, which a planted graph fails), the graph agrees
with the float64 torch reference within the fp32 band both fed an empty past and with one buffer bound as past and
present, and the variant is refused where it has no graph (GPT-2, parts other than decoder-with-past, bf16)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxbench.export import DECODER_WITH_PAST, VariantMismatch, to_onnx
from onnxbench.export.decoder_layout import detect_layout
from onnxbench.export.gqa_decoder import MAX_SEQUENCE, verify_inplace
from onnxbench.export.inspect import inspect_model
from onnxbench.models import build, get_preset

CONFIG = get_preset("llama-tiny")  # 4 query heads, 2 K/V heads, d_head 16, max_positions 128
FP32 = {"atol": 1e-3, "rtol": 1e-3}  # the fp32 band (docs/design.md, "Tolerances")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return to_onnx(CONFIG, variant="ort-gqa-inplace", part=DECODER_WITH_PAST,
                   cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference():
    return build(CONFIG, 0, dtype=torch.float64).eval()


def test_the_export_holds_group_query_attention_over_a_shared_buffer(artifact):
    model = onnx.load(str(artifact.path))
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft"]
    assert len(gqa) == CONFIG.n_layers and artifact.opset == 23
    for i, node in enumerate(gqa):
        assert list(node.input[3:5]) == [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        assert list(node.output[1:3]) == [f"present.{i}.key", f"present.{i}.value"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["num_heads"], attrs["kv_num_heads"], attrs["do_rotary"]) == (4, 2, 1)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    assert dims["past_key_values.0.key"] == dims["present.0.key"] == ["batch", 2, MAX_SEQUENCE, 16]
    assert not any(n.op_type in ("Softmax", "Attention") for n in model.graph.node)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["onnxbench.variant"] == "ort-gqa-inplace"
    assert meta["onnxbench.past_consumers"] == "com.microsoft:GroupQueryAttention"
    report = inspect_model(artifact.path)  # RoPE is applied inside the attention op: inspect says so
    assert (report.rope, report.norm) == ("com.microsoft:GroupQueryAttention do_rotary x2",
                                          "ai.onnx:RMSNormalization x5")
    layout = detect_layout(artifact.path)
    assert (layout.kind, layout.shared_buffer, layout.right_padding, layout.n_kv_heads, layout.max_positions) == (
        "onnxbench", True, True, 2, 128)


def test_a_graph_that_breaks_the_promise_fails_the_check(artifact):
    model = onnx.load(str(artifact.path))
    verify_inplace(model, CONFIG.n_layers, CONFIG.n_heads, CONFIG.n_kv_heads)  # as exported: holds
    concat = onnx.ModelProto()
    concat.CopyFrom(model)
    concat.graph.output[1].type.tensor_type.shape.dim[2].dim_param = "total_sequence"  # present no longer the past
    with pytest.raises(VariantMismatch, match="not declared as one"):
        verify_inplace(concat, CONFIG.n_layers, CONFIG.n_heads, CONFIG.n_kv_heads)
    unrotated = onnx.ModelProto()
    unrotated.CopyFrom(model)
    node = next(n for n in unrotated.graph.node if n.op_type == "GroupQueryAttention")
    next(a for a in node.attribute if a.name == "do_rotary").i = 0
    with pytest.raises(VariantMismatch, match="do_rotary"):
        verify_inplace(unrotated, CONFIG.n_layers, CONFIG.n_heads, CONFIG.n_kv_heads)


def _cache(batch, length, value=0.0):
    return {f"{i}.{kv}": np.full((batch, CONFIG.n_kv_heads, length, CONFIG.d_head), value, np.float32)
            for i in range(CONFIG.n_layers) for kv in ("key", "value")}


def test_prefill_from_an_empty_past_agrees_with_float64(artifact, reference):
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (3, 9))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             **{f"past_key_values.{k}": v for k, v in _cache(3, 0).items()}}
    logits, *present = session.run(None, feeds)
    expected = reference(torch.from_numpy(ids)).detach().numpy()
    np.testing.assert_allclose(logits, expected, **FP32)
    assert present[0].shape == (3, 2, 9, 16)  # no shared buffer bound: present = past + new


def test_one_buffer_bound_as_past_and_present_is_written_in_place(artifact, reference):
    """Prefill of 9 tokens then one decode step, the four cache tensors each one (B, 2, 16, 16) buffer bound as
    both past and present: the step's logits agree with float64, and the buffer holds the 10 positions written."""
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    B, T, L = 2, 9, 16
    ids = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (B, T))
    cache = _cache(B, L, value=np.nan)  # never read beyond what was written: NaN there would show
    binding = session.io_binding()
    for name, buffer in cache.items():
        for bind, prefix in ((binding.bind_input, "past_key_values."), (binding.bind_output, "present.")):
            bind(prefix + name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)

    def run(tokens, width):
        tokens = np.ascontiguousarray(tokens, np.int64)
        mask = np.ones((B, width), np.int64)
        logits = np.empty((B, tokens.shape[1], CONFIG.vocab_size), np.float32)
        binding.bind_input("input_ids", "cpu", 0, np.int64, list(tokens.shape), tokens.ctypes.data)
        binding.bind_input("attention_mask", "cpu", 0, np.int64, list(mask.shape), mask.ctypes.data)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        session.run_with_iobinding(binding)
        return logits

    prefill = run(ids, T)
    chosen = prefill[:, -1].argmax(-1)[:, None]
    step = run(chosen, T + 1)
    full = np.concatenate([ids, chosen], 1)
    expected = reference(torch.from_numpy(full)).detach().numpy()
    np.testing.assert_allclose(prefill, expected[:, :T], **FP32)
    np.testing.assert_allclose(step[:, 0], expected[:, T], **FP32)
    assert np.isfinite(cache["0.key"][:, :, :T + 1]).all() and np.isnan(cache["0.key"][:, :, T + 1:]).all()


@pytest.mark.parametrize("config, part, precision, message", [
    (get_preset("tiny"), DECODER_WITH_PAST, "fp32", "not available for the gpt2 family"),
    (CONFIG, "model", "fp32", "exists only as part decoder-with-past"),
    (CONFIG, DECODER_WITH_PAST, "bf16", "fp32 or fp16"),
])
def test_the_variant_is_refused_where_it_has_no_graph(tmp_path, config, part, precision, message):
    with pytest.raises(ValueError, match=message):
        to_onnx(config, variant="ort-gqa-inplace", part=part, precision=precision, cache_dir=tmp_path)
    assert not any(tmp_path.rglob("*.onnx"))  # refused before any export
