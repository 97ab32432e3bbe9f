"""The decoder with a KV cache as one ONNX graph: prefill (empty past) and decode steps alike.

Graph inputs and outputs (names as Hugging Face Optimum's and ONNX Runtime GenAI's GPT-2 decoders; axes named
as this project's other graphs, Optimum's names in docs/generation.md)::

    input_ids                   int64  (batch, sequence)
    attention_mask              int64  (batch, total_sequence)
    past_key_values.{i}.key     float  (batch, n_kv_heads, past_sequence, d_head)
    past_key_values.{i}.value   float  (batch, n_kv_heads, past_sequence, d_head)
    ->
    logits                      float  (batch, sequence, vocab_size)
    present.{i}.key             float  (batch, n_kv_heads, total_sequence, d_head)
    present.{i}.value           float  (batch, n_kv_heads, total_sequence, d_head)

for blocks i = 0 .. n_layers - 1, ``total_sequence = past_sequence + sequence``, float in the precision's dtype;
``n_kv_heads = n_heads`` for GPT-2, fewer with grouped-query attention (Llama family; keys after RoPE).
A prefill feeds ``past_sequence = 0`` (empty past tensors); a decode step feeds the previous step's
``present.*`` as ``past_key_values.*`` and ``sequence = 1``. Semantics are the reference's
(:class:`onnxbench.models.Transformer` with ``use_cache=True``): positions from the mask, query i attends
key j <= past_sequence + i and no padded key. The graph does not check that ``attention_mask`` has
past_sequence + sequence columns (the caller's job, as with ONNX Runtime GenAI).

Per attention variant the past is consumed by the attention core itself where the format allows:

- ``decomposed`` / ``sdpa``: ``Concat(past, new)`` then MatMul/Softmax/MatMul; the Concat is ``present``.
- ``onnx-attention``: ONNX ``Attention`` (opset 23) with its ``past_key`` / ``past_value`` inputs and
  ``present_key`` / ``present_value`` outputs. torch's dynamo exporter emits ``Attention`` over the concatenated
  keys with the Concat outside, so :func:`fold_past_into_attention` moves the Concat into the op (an
  onnxscript rewrite rule).
- ``ort-fused``: ``com.microsoft:MultiHeadAttention`` with ``past_key`` / ``past_value`` and present outputs,
  produced by onnxscript's ``optimize_for_ort`` (its past-aware MHA rule; the model concatenates along
  ``dim=-2``, the axis that rule matches).
- ``ort-gqa-inplace``: not exported but written (:mod:`onnxbench.export.gqa_decoder`): ``com.microsoft:
  GroupQueryAttention`` over a past/present buffer of the maximum length shared in place, right-padded rows.

Why one graph for prefill and decode, and what was measured: docs/generation.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..models import KeyValue, Transformer, TransformerConfig
from .variants import MS_DOMAIN, ORT_FUSED_OPS, VariantMismatch, census, finish_variant, get_variant

#: The ``part`` name of a decoder-with-past export (``to_onnx(..., part=DECODER_WITH_PAST)``).
DECODER_WITH_PAST = "decoder-with-past"
#: Dynamic axis names of the graph.
BATCH, SEQUENCE, PAST, TOTAL = "batch", "sequence", "past_sequence", "total_sequence"
# Example shapes for tracing: none is 0 or 1 (torch.export specialises those) and all differ, so that no
# two axes are unified by accident; the graph runs at past_sequence = 0 and sequence = 1 all the same.
EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST = 2, 3, 5


def input_names(n_layers: int) -> list[str]:
    """``input_ids``, ``attention_mask``, then ``past_key_values.{i}.key`` / ``.value`` per block."""
    return ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(n_layers)
                                              for kv in ("key", "value")]


def output_names(n_layers: int) -> list[str]:
    """``logits``, then ``present.{i}.key`` / ``.value`` per block."""
    return ["logits"] + [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def empty_past(config: TransformerConfig, batch: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Feeds of an empty cache (past_sequence = 0) for a prefill: each (batch, n_kv_heads, 0, d_head)."""
    shape = (batch, config.n_kv_heads, 0, config.d_head)
    return {name: np.zeros(shape, dtype=dtype) for name in input_names(config.n_layers)[2:]}


def present_as_past(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename a step's ``present.{i}.*`` outputs to the next step's ``past_key_values.{i}.*`` feeds."""
    return {"past_key_values." + k.removeprefix("present."): v for k, v in outputs.items()
            if k.startswith("present.")}


class DecoderWithPast(nn.Module):
    """The reference transformer with the cache in and out, in the flat form ONNX export needs.

    ``forward(input_ids, attention_mask, past_key_values)`` -> ``(logits, present)``; shapes as
    :class:`onnxbench.models.Transformer` with ``use_cache=True``.
    """

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_key_values: list[KeyValue]) -> tuple[torch.Tensor, list[KeyValue]]:
        return self.model(input_ids, attention_mask, past_key_values, use_cache=True)


def _example(config: TransformerConfig, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SEQ), generator=gen)
    mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_PAST + EXAMPLE_SEQ, dtype=torch.int64)
    shape = (EXAMPLE_BATCH, config.n_kv_heads, EXAMPLE_PAST, config.d_head)
    past = [(torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype))
            for _ in range(config.n_layers)]
    return ids, mask, past


def export_decoder_with_past(model: Transformer, path: str | Path, opset: int, exporter: str = "dynamo") -> None:
    """Export ``model`` with the cache to ``path`` (raw exporter output; :func:`finish_decoder_with_past` is the
    post-processing). Batch, sequence and past_sequence are dynamic (past_sequence from 0).

    Raises:
        ValueError: for an unknown exporter.
    """
    config = model.config
    module = DecoderWithPast(model).eval()
    dtype = next(model.parameters()).dtype
    args = _example(config, dtype)
    names_in, names_out = input_names(config.n_layers), output_names(config.n_layers)
    if exporter == "dynamo":
        batch = torch.export.Dim(BATCH, min=1, max=4096)
        seq = torch.export.Dim(SEQUENCE, min=1, max=config.max_positions)
        past = torch.export.Dim(PAST, min=0, max=config.max_positions - 1)
        # The mask's length is past + sequence; torch.export cannot declare a sum of two Dims, so AUTO lets it
        # infer the relation (the axis is renamed to total_sequence afterwards).
        dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: torch.export.Dim.AUTO},
                   "past_key_values": [({0: batch, 2: past}, {0: batch, 2: past}) for _ in range(config.n_layers)]}
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names_in,
                                        output_names=names_out, dynamic_shapes=dynamic, optimize=True,
                                        verbose=False)
        program.save(str(path))
    elif exporter == "torchscript":
        axes = {"input_ids": {0: BATCH, 1: SEQUENCE}, "attention_mask": {0: BATCH, 1: TOTAL},
                "logits": {0: BATCH, 1: SEQUENCE}}
        axes.update({name: {0: BATCH, 2: PAST} for name in names_in[2:]})
        axes.update({name: {0: BATCH, 2: TOTAL} for name in names_out[1:]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=names_in,
                              output_names=names_out, dynamic_axes=axes)
    else:
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")


def name_total_sequence(model: onnx.ModelProto) -> onnx.ModelProto:
    """Call the mask's length and the present's length ``total_sequence`` (the dynamo exporter names them
    ``s<N>`` and ``past_sequence + sequence``), in inputs, outputs and value_info alike. In place; returns
    ``model``."""
    mask = next(i for i in model.graph.input if i.name == "attention_mask")
    aliases = {f"{PAST} + {SEQUENCE}", f"{SEQUENCE} + {PAST}", mask.type.tensor_type.shape.dim[1].dim_param}
    aliases.discard("")
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in aliases:
                dim.dim_param = TOTAL
    return model


def fold_past_into_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite ``Attention(Q, Concat(past_key, K), Concat(past_value, V), mask)`` (opset 23) into
    ``Attention(Q, K, V, mask, past_key, past_value) -> (Y, present_key, present_value)``.

    Spec: https://onnx.ai/onnx/operators/onnx__Attention.html (past_key / past_value (B, kv_heads, past, d_head);
    present = concatenation of past and new along the sequence axis). The Concat outputs (``present.{i}.*``)
    become the op's present outputs.

    Returns:
        The rewritten model and the number of Attention nodes rewritten.
    """
    import onnx_ir as ir
    from onnxscript.rewriter import pattern, rewrite

    class FoldPast(pattern.RewriteRuleClassBase):
        def pattern(self, op, query, key, value, past_key, past_value):
            present_key = op.Concat(past_key, key, _outputs=["present_key"])
            present_value = op.Concat(past_value, value, _outputs=["present_value"])
            y = op.Attention(query, present_key, present_value, pattern.Var("mask", can_match_none=True),
                             _outputs=["y"])
            return y, present_key, present_value

        def check(self, context, y, present_key, present_value, past_key, **_):
            result = pattern.MatchResult()
            for concat in (present_key.producer(), present_value.producer()):
                if concat.attributes.get_int("axis") not in (2, -2):
                    return result.fail("Concat is not along the sequence axis", concat)
            if past_key.shape is None or past_key.shape.rank() != 4:
                return result.fail("past_key is not (B, H, S, d)", past_key)
            return result

        def rewrite(self, op, query, key, value, past_key, past_value, y, mask=None, **_):
            attributes = y.producer().attributes
            return op.Attention(query, key, value, mask, past_key, past_value, _outputs=3, **attributes)

    before = sum(n.op_type == "Attention" and len(n.input) > 4 for n in model.graph.node)
    ir_model = ir.serde.deserialize_model(model)
    ir_model = rewrite(ir_model, pattern_rewrite_rules=[FoldPast.rule()])
    model = ir.serde.serialize_model(ir_model)
    after = sum(n.op_type == "Attention" and len(n.input) > 4 for n in model.graph.node)
    return model, after - before


def past_consumers(model: onnx.ModelProto) -> dict[str, str]:
    """``{past input name: "domain:op_type"}`` of the node that reads each ``past_key_values.*`` input's values
    (``"-"`` if none does, several op types joined by ``+``); ``Shape`` nodes (the past length for positions and
    the mask) read no values and are left out."""
    readers: dict[str, set[str]] = {i.name: set() for i in model.graph.input if i.name.startswith("past_key_values.")}
    for node in model.graph.node:
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
            continue
        for name in node.input:
            if name in readers:
                readers[name].add(f"{node.domain or 'ai.onnx'}:{node.op_type}")
    return {name: "+".join(sorted(ops)) or "-" for name, ops in readers.items()}


def verify_past(model: onnx.ModelProto, variant: str, n_layers: int) -> dict[str, str]:
    """Check that every block's past reaches the variant's attention core: a Concat (decomposed, and sdpa below
    opset 23), the ONNX ``Attention`` op (onnx-attention, sdpa at 23), a com.microsoft attention op (ort-fused).

    Returns:
        :func:`past_consumers` of ``model``.

    Raises:
        VariantMismatch: naming the inputs whose reader is not the expected one.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if variant in ("ort-fused", "ort-gqa-inplace"):
        expected = {f"{MS_DOMAIN}:{op}" for op in ORT_FUSED_OPS}
    elif variant == "onnx-attention" or (variant == "sdpa" and opset >= 23):
        expected = {"ai.onnx:Attention"}
    else:
        expected = {"ai.onnx:Concat"}
    readers = past_consumers(model)
    wrong = {name: op for name, op in readers.items() if op not in expected}
    if len(readers) != 2 * n_layers or wrong:
        raise VariantMismatch(
            f"attention variant {variant!r}: expected {2 * n_layers} past inputs each read by one of "
            f"{sorted(expected)}; found {len(readers)} past inputs, wrong readers {wrong}"
        )
    return readers


def finish_decoder_with_past(model: onnx.ModelProto, variant: str, precision: str, n_layers: int,
                             metadata: dict[str, str] | None = None, base_dir: str | None = None) -> onnx.ModelProto:
    """Post-export steps of a decoder-with-past graph: name ``total_sequence``, fold the past into ONNX
    ``Attention`` nodes, :func:`onnxbench.export.variants.finish_variant` (ORT fusion, fp16 mask sanitising,
    variant check), then :func:`verify_past`. Records ``onnxbench.past_consumers`` in ``metadata``. ``base_dir``:
    the model's folder when it was loaded without its external data.

    Raises:
        VariantMismatch: if the attention core or the route of the past is not the variant's.
    """
    get_variant(variant)
    model = name_total_sequence(model)
    if census(model).onnx_attention:
        model, _ = fold_past_into_attention(model)
    model = finish_variant(model, variant, precision, n_layers, metadata, base_dir)
    readers = verify_past(model, variant, n_layers)
    if metadata is not None:
        metadata["onnxbench.past_consumers"] = ", ".join(sorted(set(readers.values())))
    return model
