"""The Llama-family decoder with its KV cache updated in place: ONNX Runtime's ``GroupQueryAttention`` over one
preallocated buffer per cache tensor that past and present share (the ``ort-gqa-inplace`` attention variant).

No exporter produces this graph from the reference module (onnxscript's ORT fusions find no GroupQueryAttention
in it, docs/export.md), so it is written node by node from the module's weights, in the arrangement ONNX Runtime
GenAI's model builder writes for Llama (``onnxruntime_genai/models/builder.py``: packed QKV MatMul,
``GroupQueryAttention`` with ``do_rotary`` and cos/sin caches, ``seqlens_k`` and ``total_sequence_length``
computed from ``attention_mask``), with standard ops elsewhere (``RMSNormalization``, opset 23). Inputs and
outputs are those of the builder's decoders, so one decode loop runs both (docs/generation.md)::

    input_ids                   int64  (batch, sequence)
    attention_mask              int64  (batch, total_sequence)       1 = token; rows RIGHT-padded
    past_key_values.{i}.key     float  (batch, n_kv_heads, max_sequence, d_head)
    past_key_values.{i}.value   float  (batch, n_kv_heads, max_sequence, d_head)
    ->
    logits                      float  (batch, sequence, vocab_size)
    present.{i}.key             float  (batch, n_kv_heads, max_sequence, d_head)   same buffer as the past
    present.{i}.value           float  (batch, n_kv_heads, max_sequence, d_head)

The contract of ``com.microsoft.GroupQueryAttention`` (ONNX Runtime ``docs/ContribOperators.md``): with
``past_key`` and ``present_key`` bound to the same buffer of ``max_sequence`` positions, the op writes the step's
keys/values at positions ``seqlens_k[b] + 1 - sequence`` .. ``seqlens_k[b]`` of row b in place and attends keys
``0 .. seqlens_k[b]``; ``seqlens_k`` (int32 (batch,)) is each row's valid tokens - 1, here ``ReduceSum(mask) - 1``;
``total_sequence_length`` (int32 scalar) is the mask's width, and a step whose sequence equals it is a first
prompt. Valid keys are assumed to start at position 0, so rows must be right-padded. With ``do_rotary=1`` the op
applies RoPE itself (half-split, ``rotary_interleaved=0``, as Hugging Face's ``rotate_half``) at positions
``0 .. seqlens_k[b]`` from ``cos_cache`` / ``sin_cache`` (max_positions, d_head / 2): the rotary table bounds
prompt + generation to ``max_positions``. Fed an empty past (max_sequence = 0) the same graph concatenates instead
(present = past + new), which is how references and prefill checks run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .decoder_with_past import BATCH, SEQUENCE, TOTAL, input_names, output_names
from .variants import MS_DOMAIN, VariantMismatch

#: Opset of the default domain (``RMSNormalization`` exists from 23).
OPSET = 23
#: The cache axis that past and present share.
MAX_SEQUENCE = "max_sequence"
_NP = {torch.float32: np.float32, torch.float16: np.float16}
_ONNX = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _rope_tables(config, np_dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin caches (max_positions, d_head / 2) of GroupQueryAttention: angle m * theta_i evaluated in float32
    as the reference's fp32 RoPE does (:func:`onnxbench.models.llama.rope_cos_sin`), cast to the graph's dtype."""
    from ..models.llama import rope_inverse_frequencies

    positions = torch.arange(config.max_positions, dtype=torch.float32)[:, None]
    angles = positions * rope_inverse_frequencies(config.d_head, config.rope_theta)[None]  # (P, d_head / 2)
    return angles.cos().numpy().astype(np_dtype), angles.sin().numpy().astype(np_dtype)


def build_gqa_decoder(model, path: str | Path) -> None:
    """Write the in-place-cache decoder of ``model`` (a Llama-family :class:`onnxbench.models.Transformer` in
    float32 or float16) to ``path``: the graph in the module docstring, weights as initializers (external data in
    ``<path>.data`` beyond 2 GiB is left to the caller's checks; the presets here stay below).

    Raises:
        ValueError: for a GPT-2-family model (learned positions, LayerNorm, GELU) or a dtype other than float32 /
            float16 (GroupQueryAttention's CPU kernel has no bfloat16).
    """
    config = model.config
    if config.family != "llama":
        raise ValueError(f"the GroupQueryAttention decoder is written for the llama family, not {config.family!r}")
    dtype = next(model.parameters()).dtype
    if dtype not in _NP:
        raise ValueError(f"the GroupQueryAttention decoder is written in float32 or float16, not {dtype}")
    np_dtype = _NP[dtype]
    elem = _ONNX[np_dtype]
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str] | str, domain: str = "", **attrs) -> list[str]:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{len(nodes)}", domain=domain, **attrs))
        return outputs

    def rms(x: str, weight: str, out: str) -> str:
        return node("RMSNormalization", [x, init(weight, weights[weight])], out, axis=-1,
                    epsilon=config.layer_norm_eps, stash_type=1)[0]

    # seqlens_k = valid tokens per row - 1, total_sequence_length = the mask's width (GroupQueryAttention's inputs)
    init("one_i64", np.array(1, np.int64))
    init("axis_1", np.array([1], np.int64))
    node("ReduceSum", ["attention_mask", "axis_1"], "mask_rows", keepdims=0)
    node("Sub", ["mask_rows", "one_i64"], "seqlens_k_i64")
    node("Cast", ["seqlens_k_i64"], "seqlens_k", to=TensorProto.INT32)
    node("Shape", ["attention_mask"], "mask_shape")
    node("Gather", ["mask_shape", "one_i64"], "total_i64", axis=0)
    node("Cast", ["total_i64"], "total_sequence_length", to=TensorProto.INT32)
    cos, sin = _rope_tables(config, np_dtype)
    init("cos_cache", cos)
    init("sin_cache", sin)

    node("Gather", [init("wte.weight", weights["wte.weight"]), "input_ids"], "h_0", axis=0)  # (B, T, d_model)
    x = "h_0"
    for i in range(config.n_layers):
        p = f"blocks.{i}."
        h = rms(x, p + "ln_1.weight", f"ln_1_{i}")
        qkv_w = np.concatenate([weights[p + f"attn.{n}_proj.weight"] for n in "qkv"], axis=0).T  # (d_model, d_qkv)
        qkv = node("MatMul", [h, init(p + "attn.qkv.weight", qkv_w)], f"qkv_{i}")[0]
        if config.qkv_bias:
            bias = np.concatenate([weights[p + f"attn.{n}_proj.bias"] for n in "qkv"])
            qkv = node("Add", [qkv, init(p + "attn.qkv.bias", bias)], f"qkv_biased_{i}")[0]
        attn = node("GroupQueryAttention",
                    [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                     "total_sequence_length", "cos_cache", "sin_cache"],
                    [f"attn_{i}", f"present.{i}.key", f"present.{i}.value"], domain=MS_DOMAIN,
                    num_heads=config.n_heads, kv_num_heads=config.n_kv_heads, do_rotary=1, rotary_interleaved=0)[0]
        o = node("MatMul", [attn, init(p + "attn.o_proj.weight", weights[p + "attn.o_proj.weight"].T)], f"o_{i}")[0]
        x = node("Add", [x, o], f"h_attn_{i}")[0]
        h = rms(x, p + "ln_2.weight", f"ln_2_{i}")
        gate_up = np.concatenate([weights[p + "mlp.w1.weight"], weights[p + "mlp.w3.weight"]], axis=0).T
        gu = node("MatMul", [h, init(p + "mlp.w13.weight", gate_up)], f"gate_up_{i}")[0]
        gate, up = node("Split", [gu], [f"gate_{i}", f"up_{i}"], axis=-1, num_outputs=2)
        sig = node("Sigmoid", [gate], f"gate_sigmoid_{i}")[0]
        silu = node("Mul", [gate, sig], f"gate_silu_{i}")[0]  # SiLU(W1 x) = W1 x * sigmoid(W1 x)
        prod = node("Mul", [silu, up], f"swiglu_{i}")[0]
        down = node("MatMul", [prod, init(p + "mlp.w2.weight", weights[p + "mlp.w2.weight"].T)], f"down_{i}")[0]
        x = node("Add", [x, down], f"h_{i + 1}")[0]
    h = rms(x, "ln_f.weight", "ln_f")
    # logits = RMSNorm(x) W_U^T; with tied embeddings W_U is E, read in place (Gemm transB) rather than stored twice
    unembed = "wte.weight" if config.tie_embeddings else init("lm_head.weight", weights["lm_head.weight"])
    init("flat_shape", np.array([-1, config.d_model], np.int64))
    flat = node("Reshape", [h, "flat_shape"], "ln_f_flat")[0]
    node("Gemm", [flat, unembed], "logits_flat", transB=1)
    node("Shape", ["input_ids"], "ids_shape")
    init("vocab", np.array([config.vocab_size], np.int64))
    node("Concat", ["ids_shape", "vocab"], "logits_shape", axis=0)
    node("Reshape", ["logits_flat", "logits_shape"], "logits")

    cache = [BATCH, config.n_kv_heads, MAX_SEQUENCE, config.d_head]
    names_in, names_out = input_names(config.n_layers), output_names(config.n_layers)
    graph_inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, SEQUENCE]),
                    helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [BATCH, TOTAL])]
    graph_inputs += [helper.make_tensor_value_info(name, elem, cache) for name in names_in[2:]]
    graph_outputs = [helper.make_tensor_value_info("logits", elem, [BATCH, SEQUENCE, config.vocab_size])]
    graph_outputs += [helper.make_tensor_value_info(name, elem, cache) for name in names_out[1:]]
    graph = helper.make_graph(nodes, "onnxbench_gqa_inplace_decoder", graph_inputs, graph_outputs, inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                         helper.make_opsetid(MS_DOMAIN, 1)],
                                   producer_name="onnxbench")
    onnx_model.ir_version = 10
    onnx.save(onnx_model, str(path))


def verify_inplace(model: onnx.ModelProto, n_layers: int, n_heads: int, n_kv_heads: int) -> None:
    """Check that ``model`` holds what ``ort-gqa-inplace`` promises: per block one ``com.microsoft.
    GroupQueryAttention`` with ``num_heads`` / ``kv_num_heads`` of the model and ``do_rotary=1``, reading
    ``past_key_values.{i}.key/value`` straight from the graph inputs and writing ``present.{i}.key/value`` straight
    to the graph outputs, both declared (batch, n_kv_heads, max_sequence, d_head) so that one buffer can be both;
    ``seqlens_k`` and ``total_sequence_length`` given; no ``Softmax``, ONNX ``Attention`` or cache ``Concat``.

    Raises:
        VariantMismatch: naming the first thing that differs.
    """
    fail = lambda why: VariantMismatch(f"attention variant 'ort-gqa-inplace': {why}")  # noqa: E731
    gqa = [n for n in model.graph.node if n.domain == MS_DOMAIN and n.op_type == "GroupQueryAttention"]
    if len(gqa) != n_layers:
        raise fail(f"expected {n_layers} com.microsoft:GroupQueryAttention nodes, found {len(gqa)}")
    others = [n.op_type for n in model.graph.node if n.op_type in ("Softmax", "Attention", "Concat")
              and any(i.startswith("past_key_values.") for i in n.input)]
    if others or any(n.op_type in ("Softmax", "Attention") for n in model.graph.node):
        raise fail(f"a Softmax, ONNX Attention or cache Concat is left in the graph ({others})")
    declared = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in (*model.graph.input, *model.graph.output)}
    for i, node in enumerate(sorted(gqa, key=lambda n: next(
            (int(s.split(".")[1]) for s in n.input if s.startswith("past_key_values.")), -1))):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (attrs.get("num_heads"), attrs.get("kv_num_heads"), attrs.get("do_rotary")) != (n_heads, n_kv_heads, 1):
            raise fail(f"block {i}: num_heads/kv_num_heads/do_rotary are {attrs.get('num_heads')}/"
                       f"{attrs.get('kv_num_heads')}/{attrs.get('do_rotary')}, expected {n_heads}/{n_kv_heads}/1")
        inputs, outputs = list(node.input) + [""] * 9, list(node.output)
        past = (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
        present = (f"present.{i}.key", f"present.{i}.value")
        if tuple(inputs[3:5]) != past or tuple(outputs[1:3]) != present:
            raise fail(f"block {i}: GroupQueryAttention reads {inputs[3:5]} and writes {outputs[1:3]}, expected the "
                       f"graph's {past} and {present} directly")
        if not inputs[5] or not inputs[6]:
            raise fail(f"block {i}: seqlens_k / total_sequence_length missing")
        for a, b in zip(past, present, strict=True):
            if declared.get(a) != declared.get(b) or declared.get(a, [None] * 3)[2] != MAX_SEQUENCE:
                raise fail(f"{a} {declared.get(a)} and {b} {declared.get(b)} are not declared as one "
                           f"(batch, n_kv_heads, {MAX_SEQUENCE}, d_head) buffer")
