"""Attention variants: how each is produced at export, and the graph check that proves it was.

- ``decomposed``: the explicit math (MatMul, scale, Where causal select, Softmax, MatMul), any exporter and
  opset; the graph has one ``Softmax`` per block.
- ``sdpa``: ``F.scaled_dot_product_attention`` lowered as the exporter sees fit: one ``Softmax`` per block
  below opset 23, one ONNX ``Attention`` per block from opset 23.
- ``onnx-attention``: ``F.scaled_dot_product_attention``, dynamo exporter at **opset 23** (fixed); one ONNX
  ``Attention`` per block, no ``Softmax``.
- ``ort-fused``: ``F.scaled_dot_product_attention``, dynamo exporter at opset 17-22, then ``optimize_for_ort``;
  one ``com.microsoft`` attention op (MultiHeadAttention) per block, no ``Softmax``.
- ``ort-gqa-inplace``: the Llama family's decoder with past only, written by onnxbench from the module's weights
  (:mod:`onnxbench.export.gqa_decoder`, opset 23): one ``com.microsoft:GroupQueryAttention`` per block whose
  past and present are one preallocated buffer updated in place (docs/generation.md).

The ONNX ``Attention`` operator exists from opset 23 (https://onnx.ai/onnx/operators/onnx__Attention.html) and
torch's dynamo exporter emits it for ``F.scaled_dot_product_attention`` only at that opset, so
``onnx-attention`` dictates its opset; the row's ``opset`` column records 23 whatever the matrix asked.
ONNX Runtime's contrib ``MultiHeadAttention`` (https://github.com/microsoft/onnxruntime/blob/main/docs/
ContribOperators.md) is produced by onnxscript's ORT fusions (``onnxscript.rewriter.ort_fusions.
optimize_for_ort``) from the dynamo export of the SDPA implementation; ONNX Runtime's own transformer optimizer
does not match this model's separate W^Q/W^K/W^V (docs/design.md, "Attention variants and fusions"). The
fusions leave an opset-23 ``Attention`` node alone, so ``ort-fused`` is exported below 23 (an asked-for 23
becomes 22).

:func:`verify_variant` counts the attention cores after export and raises :class:`VariantMismatch` when the
graph is not what the variant promises, so that no variant silently degrades into another.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import OnnxbenchError
from ..models.transformer import mask_fill_value
from .opsets import unsupported_reason

#: Contrib attention operators of ONNX Runtime (domain com.microsoft) that count as "fused attention".
ORT_FUSED_OPS = ("MultiHeadAttention", "Attention", "GroupQueryAttention", "PackedAttention",
                 "PackedMultiHeadAttention")
MS_DOMAIN = "com.microsoft"
#: First opset with the standard ONNX ``Attention`` operator.
ONNX_ATTENTION_OPSET = 23


class VariantMismatch(OnnxbenchError, RuntimeError):
    """The exported graph does not contain the attention the variant promises (e.g. ``ort-fused`` without a
    com.microsoft attention node). The message gives the counts found and what was expected."""


@dataclass(frozen=True)
class Variant:
    """How one attention variant is exported.

    Attributes:
        name: the variant's name (the ``attention`` column of results).
        implementation: ``TransformerConfig.attention`` of the module exported (``explicit`` or ``sdpa``).
        fixed_opset: opset the variant needs whatever is asked (None: the asked-for opset).
        max_opset: highest opset the variant can be produced at (None: no limit).
        fuse_for_ort: run onnxscript's ONNX Runtime fusions after export.
        dynamo_only: the TorchScript exporter cannot produce it.
        unsupported_families: model families (``TransformerConfig.family``) it cannot be produced for, each with
            the reason (docs/export.md).
        parts: the export parts it exists for (empty: every part).
        written: the graph is written by onnxbench node by node, not by an exporter, so the exporter's measured
            opset table does not apply (the variant's ``fixed_opset`` is the graph's).
    """

    name: str
    implementation: str
    fixed_opset: int | None = None
    max_opset: int | None = None
    fuse_for_ort: bool = False
    dynamo_only: bool = False
    unsupported_families: tuple[tuple[str, str], ...] = ()
    parts: tuple[str, ...] = ()
    written: bool = False

    def resolve_opset(self, requested: int) -> int:
        """The opset this variant is exported at when ``requested`` is asked for."""
        if self.fixed_opset is not None:
            return self.fixed_opset
        if self.max_opset is not None:
            return min(requested, self.max_opset)
        return requested

    def family_reason(self, family: str) -> str | None:
        """Why this variant cannot be produced for model family ``family``, or None if it can."""
        reason = dict(self.unsupported_families).get(family)
        if reason is None:
            return None
        return f"attention variant {self.name!r} is not available for the {family} family: {reason}"

    def part_reason(self, part: str) -> str | None:
        """Why this variant has no graph for export part ``part``, or None if it has."""
        if not self.parts or part in self.parts:
            return None
        return (f"attention variant {self.name!r} exists only as part {' / '.join(self.parts)} (its cache is a "
                f"buffer updated in place; docs/generation.md), not as part {part!r}")

    def precision_reason(self, precision: str) -> str | None:
        """Why this variant has no graph at ``precision``, or None if it has: the variants onnxbench writes itself
        use GroupQueryAttention, whose CPU kernel has no bfloat16 (ONNX Runtime's ContribOperators.md)."""
        if not self.written or precision in ("fp32", "fp16"):
            return None
        return (f"attention variant {self.name!r} is written in fp32 or fp16 (GroupQueryAttention's CPU kernel has "
                f"no bfloat16), not {precision}")

    def opset_reason(self, exporter: str, opset: int) -> str | None:
        """Why ``exporter`` cannot produce this variant at ``opset`` (the measured table,
        :func:`onnxbench.export.opsets.unsupported_reason`), or None; a variant onnxbench writes itself is
        always at its fixed opset whatever the exporter."""
        if self.written:
            return None
        return unsupported_reason(exporter, self.name, opset)

    def check_family(self, family: str) -> None:
        """Refuse a model family this variant cannot be produced for.

        Raises:
            ValueError: naming the variant, the family and the reason (:meth:`family_reason`).
        """
        reason = self.family_reason(family)
        if reason is not None:
            raise ValueError(reason)


VARIANTS: dict[str, Variant] = {
    "decomposed": Variant("decomposed", "explicit"),
    "sdpa": Variant("sdpa", "sdpa"),
    "onnx-attention": Variant("onnx-attention", "sdpa", fixed_opset=ONNX_ATTENTION_OPSET, dynamo_only=True),
    "ort-fused": Variant("ort-fused", "sdpa", max_opset=ONNX_ATTENTION_OPSET - 1, fuse_for_ort=True,
                         dynamo_only=True, unsupported_families=(("llama", (
                             "onnxscript 0.7's optimize_for_ort fuses its attention into MultiHeadAttention with "
                             "the K/V heads repeated and the cache concatenated outside (no GroupQueryAttention), "
                             "and writes ONNX Runtime's SimplifiedLayerNormalization in the ONNX domain, which "
                             "onnx.checker rejects (docs/export.md)")),)),
    "ort-gqa-inplace": Variant("ort-gqa-inplace", "sdpa", fixed_opset=ONNX_ATTENTION_OPSET,
                               parts=("decoder-with-past",), written=True, unsupported_families=(("gpt2", (
                                   "its graph is written for RoPE, RMSNorm and SwiGLU blocks (GroupQueryAttention "
                                   "applies the rotary positions itself); GPT-2's learned positions, LayerNorm and "
                                   "GELU are not written")),)),
}


def get_variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``.

    Raises:
        ValueError: for an unknown name (lists the known ones).
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown attention variant {name!r}; known: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class AttentionCensus:
    """Attention cores in a graph: ``Softmax`` nodes (decomposed), ONNX ``Attention`` nodes, and
    com.microsoft fused attention nodes (by op type)."""

    softmax: int
    onnx_attention: int
    ort_fused: dict[str, int]

    @property
    def n_fused(self) -> int:
        return sum(self.ort_fused.values())

    def describe(self) -> str:
        fused = ", ".join(f"com.microsoft:{k} x{v}" for k, v in sorted(self.ort_fused.items())) or "no com.microsoft"
        return f"Softmax x{self.softmax}, Attention x{self.onnx_attention}, {fused}"


def _nodes(model: onnx.ModelProto):
    """Every node, including those of local functions (a core hidden in a function still counts)."""
    yield from model.graph.node
    for function in model.functions:
        yield from function.node


def census(model: onnx.ModelProto) -> AttentionCensus:
    """Count the attention cores of ``model`` (main graph and local functions)."""
    softmax = onnx_attention = 0
    fused: collections.Counter = collections.Counter()
    for node in _nodes(model):
        if node.domain in ("", "ai.onnx"):
            softmax += node.op_type == "Softmax"
            onnx_attention += node.op_type == "Attention"
        elif node.domain == MS_DOMAIN and node.op_type in ORT_FUSED_OPS:
            fused[node.op_type] += 1
    return AttentionCensus(softmax, onnx_attention, dict(fused))


def verify_variant(model: onnx.ModelProto, variant: str, n_blocks: int) -> AttentionCensus:
    """Check that ``model`` holds exactly the attention of ``variant``: its core once per block, the other
    variants' cores absent.

    Args:
        model: the exported graph.
        variant: a key of :data:`VARIANTS`.
        n_blocks: attention blocks the graph must contain (n_layers for the model, 1 for ``part='attention'``).

    Returns:
        The :class:`AttentionCensus` found.

    Raises:
        VariantMismatch: naming the variant, what was expected and what was found.
        ValueError: for an unknown variant.
    """
    get_variant(variant)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    found = census(model)
    if variant == "decomposed" or (variant == "sdpa" and opset < ONNX_ATTENTION_OPSET):
        ok = found.softmax == n_blocks and found.onnx_attention == 0 and found.n_fused == 0
        expected = f"Softmax x{n_blocks}, no Attention, no com.microsoft attention"
    elif variant in ("onnx-attention", "sdpa"):
        ok = found.onnx_attention == n_blocks and found.softmax == 0 and found.n_fused == 0
        expected = f"ONNX Attention x{n_blocks} (opset {ONNX_ATTENTION_OPSET}), no Softmax, no com.microsoft"
    else:  # ort-fused, ort-gqa-inplace
        ok = found.n_fused == n_blocks and found.softmax == 0 and found.onnx_attention == 0
        expected = f"com.microsoft attention x{n_blocks}, no Softmax, no ONNX Attention"
    if not ok:
        raise VariantMismatch(
            f"attention variant {variant!r} (opset {opset}) expects {expected}, but the graph has "
            f"{found.describe()}; the exporter or the fusion did not produce this variant"
        )
    return found


def fuse_for_ort(model: onnx.ModelProto, base_dir: str | None = None) -> onnx.ModelProto:
    """Apply onnxscript's ONNX Runtime fusions (MultiHeadAttention, SkipLayerNormalization, BiasGelu, ...).

    Source: ``onnxscript.rewriter.ort_fusions.optimize_for_ort`` (onnxscript >= 0.3), which works on an
    ``onnx_ir`` model in place. ``base_dir`` is the folder external-data locations are relative to, for a
    model loaded without its external data (the tensors stay references).
    """
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    ir_model = ir.serde.deserialize_model(model)
    if base_dir is not None:
        ir.external_data.set_base_dir(ir_model.graph, base_dir)
    optimize_for_ort(ir_model)
    return ir.serde.serialize_model(ir_model)


# fp16 masks. An additive mask plane filled with -inf or finfo(float16).min saturates: score + (-65504) rounds
# to -inf for any negative score, and a row whose entries are all -inf gives exp(-inf - -inf) = NaN. Half the
# fp16 range keeps the masked logits finite (score + fill >= -65504 for |score| <= 32752) and exp(fill) is
# still exactly 0 in fp16 and fp32, so the softmax is unchanged. The reference model's own additive masks
# (attention_mask / KV cache) use the same value.
SAFE_FP16_FILL = mask_fill_value(torch.float16)


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: i for i in model.graph.initializer}
    out = {}
    for name, tensor in values.items():
        if np.prod(tensor.dims, dtype=np.int64) <= 1:
            out[name] = numpy_helper.to_array(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            t = node.attribute[0].t
            if np.prod(t.dims, dtype=np.int64) <= 1:
                out[node.output[0]] = numpy_helper.to_array(t)
    return out


#: Ops that move a mask plane around without changing its values (followed from a Where to its use).
_LAYOUT_OPS = ("Expand", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Transpose", "Slice", "Identity")


def _additive_mask_fills(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int, float]]:
    """(Where node, input index, value) of every scalar fill of a Where whose output is *added* to scores
    (an Add, or a com.microsoft attention op's bias input): the additive mask planes."""
    consts = _constant_values(model)
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    def added_to_scores(name: str, depth: int = 0) -> bool:
        for c in consumers[name]:
            if c.op_type == "Add" or (c.domain == MS_DOMAIN and c.op_type in ORT_FUSED_OPS):
                return True
            if c.op_type in _LAYOUT_OPS and depth < 4 and added_to_scores(c.output[0], depth + 1):
                return True
        return False

    fills = []
    for node in model.graph.node:
        if node.op_type != "Where" or not added_to_scores(node.output[0]):
            continue
        for index in (1, 2):
            value = consts.get(node.input[index])
            if value is not None and np.issubdtype(value.dtype, np.floating):
                fills.append((node, index, float(value.reshape(-1)[0]) if value.size else 0.0))
    return fills


def unsafe_fp16_mask_fills(model: onnx.ModelProto) -> list[float]:
    """Fill values of fp16 additive mask planes that saturate (-inf, finfo(float16).min: anything below
    :data:`SAFE_FP16_FILL`). Empty for a graph without such planes; fp32 planes are not reported."""
    consts = _constant_values(model)
    out = []
    for node, index, value in _additive_mask_fills(model):
        dtype = consts[node.input[index]].dtype
        if dtype == np.float16 and value < SAFE_FP16_FILL:
            out.append(value)
    return out


def sanitize_fp16_masks(model: onnx.ModelProto) -> int:
    """Replace saturating fills (-inf, finfo(float16).min) of fp16 additive mask planes by
    :data:`SAFE_FP16_FILL`, in place. Returns how many fills were replaced.

    torch's dynamo exporter lowers ``F.scaled_dot_product_attention(is_causal=True)`` below opset 23 to
    ``Add(scores, Where(causal, 0, finfo.min))``; this rewrite keeps that structure and only moves the fill.
    """
    consts = _constant_values(model)
    replaced = 0
    for node, index, value in _additive_mask_fills(model):
        if consts[node.input[index]].dtype != np.float16 or value >= SAFE_FP16_FILL:
            continue
        name = f"{node.output[0]}_safe_fp16_fill_{index}"
        model.graph.initializer.append(numpy_helper.from_array(np.array(SAFE_FP16_FILL, dtype=np.float16), name))
        node.input[index] = name
        replaced += 1
    if replaced:
        _drop_unused_initializers(model)
    return replaced


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def finish_variant(model: onnx.ModelProto, variant: str, precision: str, n_blocks: int,
                   metadata: dict[str, str] | None = None, base_dir: str | None = None) -> onnx.ModelProto:
    """Post-export steps of ``variant`` on a freshly exported graph: ORT fusion where the variant asks for
    it, fp16 mask sanitising (:func:`sanitize_fp16_masks`), then :func:`verify_variant`. Records the census
    and the number of replaced mask fills in ``metadata`` (``onnxbench.attention_census``,
    ``onnxbench.fp16_mask_fills_replaced``). ``base_dir``: the model's folder when it was loaded without its
    external data (see :func:`fuse_for_ort`).

    Raises:
        VariantMismatch: if the result does not hold the variant's attention once per block.
    """
    recipe = get_variant(variant)
    if recipe.fuse_for_ort:
        model = fuse_for_ort(model, base_dir)
        _drop_unused_initializers(model)  # the fusion leaves the fp32 mask fill behind
    replaced = sanitize_fp16_masks(model) if precision == "fp16" else 0
    found = verify_variant(model, variant, n_blocks)
    if metadata is not None:
        metadata["onnxbench.attention_census"] = found.describe()
        metadata["onnxbench.fp16_mask_fills_replaced"] = str(replaced)
    return model
