"""The work model of the Llama family (grouped-query attention, SwiGLU): the formula against the module's own
parameters and against the graph counter on our exports, prefill and decode step, and GroupQueryAttention counted
from a graph by hand (its keys are the ``total_sequence_length`` the graph computes from the mask's width)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks.measure.graph_work import graph_work
from onnxbench.benchmarks.measure.workmodel import attention_params, decode_step_work, work
from onnxbench.export import DECODER_WITH_PAST, to_onnx
from onnxbench.models import build, get_preset

LLAMA = get_preset("llama-tiny")  # 4 query heads, 2 K/V heads, SwiGLU


@pytest.mark.parametrize("config", [LLAMA, LLAMA.replace(qkv_bias=True), get_preset("tiny")],
                         ids=["llama", "qwen2-bias", "gpt2"])
def test_attention_params_are_the_modules_own(config):
    model = build(config)
    counted = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.0.attn."))
    assert attention_params(config) == counted


@pytest.mark.parametrize("variant", ["decomposed", "sdpa"])
def test_prefill_formula_and_graph_count_agree(variant, cache_dir):
    art = to_onnx(LLAMA, variant=variant, cache_dir=cache_dir, model_name="llama-tiny")
    for batch, seq_len in [(1, 16), (2, 64)]:
        counted, analytic = graph_work(art.path, batch, seq_len), work(LLAMA, "model", batch, seq_len)
        assert counted.complete, counted.uncounted
        assert counted.flops == pytest.approx(analytic.flops, rel=0.02), counted.flops_by_op
        assert counted.bytes_moved == pytest.approx(analytic.bytes_moved, rel=0.02)


def test_a_gqa_decode_step_formula_agrees_with_the_graph_and_reads_a_narrow_cache(cache_dir):
    art = to_onnx(LLAMA, variant="decomposed", part=DECODER_WITH_PAST, cache_dir=cache_dir, model_name="llama-tiny")
    prompt, new = 10, 12  # the formula's mean context: 10 + 12 / 2 = 16 keys, 15 of them from the cache
    step = decode_step_work(LLAMA, 2, prompt, new)
    counted = graph_work(art.path, 2, 1, {"past_sequence": 15, "total_sequence": 16})
    assert counted.complete, counted.uncounted
    assert counted.flops == pytest.approx(step.flops, rel=0.02), counted.flops_by_op
    # the cache is n_kv_heads wide: against full multi-head attention the step reads (and writes) a narrower cache
    # and fewer W^K/W^V weights, nothing else
    mha = LLAMA.replace(n_kv_heads=LLAMA.n_heads)
    full = decode_step_work(mha, 2, prompt, new)
    narrower = (mha.n_kv_heads - LLAMA.n_kv_heads) * LLAMA.d_head  # per token, per K or V, per layer
    cache = 2 * LLAMA.n_layers * 2 * (15 + 1) * narrower  # 15 cached positions read, 1 new written, B = 2
    weights = (mha.n_params - LLAMA.n_params)
    assert weights == LLAMA.n_layers * (attention_params(mha) - attention_params(LLAMA))
    assert full.bytes_moved - step.bytes_moved == pytest.approx(4 * (cache + weights), rel=1e-12)


def _gqa_graph(tmp_path, hq=4, hkv=2, dh=16, packed=False):
    """One GroupQueryAttention fed from a mask as the ORT model builder wires it: seqlens_k = ReduceSum(mask) - 1,
    total_sequence_length = Shape(mask)[1]; past/present a max-length buffer of 64 positions."""
    d = hq * dh
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])
    past_k = helper.make_tensor_value_info("past_key", TensorProto.FLOAT, ["batch", hkv, 64, dh])
    past_v = helper.make_tensor_value_info("past_value", TensorProto.FLOAT, ["batch", hkv, 64, dh])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    width = (hq + 2 * hkv) * dh if packed else d
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", "sequence", width])
    inputs = [q, mask, past_k, past_v]
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "one"], ["sum"], keepdims=0),
        helper.make_node("Sub", ["sum", "one"], ["seq_minus_1"]),
        helper.make_node("Cast", ["seq_minus_1"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Constant", [], ["index"], value=numpy_helper.from_array(np.array(1, dtype=np.int64))),
        helper.make_node("Gather", ["mask_shape", "index"], ["total_i64"], axis=0),
        helper.make_node("Cast", ["total_i64"], ["total"], to=TensorProto.INT32),
    ]
    if packed:
        attention_inputs = ["q", "", "", "past_key", "past_value", "seqlens_k", "total"]
    else:
        k = helper.make_tensor_value_info("k", TensorProto.FLOAT, ["batch", "sequence", hkv * dh])
        v = helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", "sequence", hkv * dh])
        inputs += [k, v]
        attention_inputs = ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total"]
    nodes.append(helper.make_node("GroupQueryAttention", attention_inputs, ["out", "present_key", "present_value"],
                                  domain="com.microsoft", num_heads=hq, kv_num_heads=hkv))
    graph = helper.make_graph(nodes, "gqa", inputs, [out],
                              [numpy_helper.from_array(np.array([1], dtype=np.int64), "one")])
    path = tmp_path / f"gqa{'-packed' if packed else ''}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                      helper.make_opsetid("com.microsoft", 1)], ir_version=10),
              str(path))
    return path


@pytest.mark.parametrize("packed", [False, True], ids=["separate-qkv", "packed-qkv"])
def test_group_query_attention_is_counted_over_the_keys_it_attends(tmp_path, packed):
    path = _gqa_graph(tmp_path, packed=packed)
    # a decode step: one new token, 40 keys attended (the mask's width), the buffer itself 64 long
    counted = graph_work(path, 2, 1, {"total": 40})
    assert counted.complete, counted.uncounted
    b, hq, dh = 2, 4, 16
    assert counted.flops_by_op == {"com.microsoft:GroupQueryAttention": 2.0 * b * hq * 1 * 40 * 2 * dh}
    assert counted.output_shapes["out"] == (b, 1, hq * dh)
    prefill = graph_work(path, 2, 8, {"total": 8})
    assert prefill.flops == 2.0 * b * hq * 8 * 8 * 2 * dh
