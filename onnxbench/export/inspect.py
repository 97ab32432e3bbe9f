"""Graph inspection: opset, op histogram, attention nodes per block, parameters and FLOPs of an ONNX model, and for
a decoder of the Llama family how its RoPE and RMSNorm appear (decomposed into primitive ops, or as ONNX opset-23
``RotaryEmbedding`` / ``RMSNormalization`` or ONNX Runtime contrib ops) and how many K/V heads its attention has.

Attention nodes are found from what the exporter leaves behind, in this order:

1. node metadata ``pkg.torch.onnx.name_scopes`` written by torch's dynamo exporter (the module path, e.g.
   ``['', 'blocks.0', 'blocks.0.attn', 'scaled_dot_product_attention']``; onnxscript's fusions keep it on the
   fused nodes);
2. node names of the TorchScript exporter (``/blocks.0/attn/MatMul``);
3. for a standalone attention model (``onnxbench.part = attention``), every node is block 0's attention;
4. otherwise attention cores (Softmax, Attention, com.microsoft attention) are numbered in graph order.
"""

from __future__ import annotations

import ast
import collections
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..models import TransformerConfig
from ..models.flops import attention_flops, flops_per_token
from .variants import MS_DOMAIN, ORT_FUSED_OPS, _nodes

_SCOPE = re.compile(r"^blocks\.(\d+)\.attn$")
_NAME = re.compile(r"/blocks\.(\d+)/attn/")
DEFAULT_SEQ_LENS = (1, 32, 128, 512, 1024)


@dataclass
class ModelInspection:
    """What :func:`inspect_model` found (all plain data; ``to_dict`` gives JSON-able output).

    Attributes:
        path: the file inspected.
        opset: default-domain opset; ``opsets`` maps every imported domain to its version.
        ir_version: ONNX IR version of the file.
        inputs / outputs: ``{name: [dtype, shape...]}`` with dynamic axes as names.
        n_nodes: nodes in the main graph.
        op_histogram: ``"domain:op_type"`` -> count (main graph and local functions), most frequent first.
        attention_blocks: block label (``blocks.N``) -> op histogram of that block's attention nodes.
        attention_cores: block label -> attention-core op types in it (Softmax / Attention / com.microsoft).
        block_source: how blocks were found: ``name_scopes``, ``node_names``, ``standalone`` or ``order``.
        n_params: elements of the floating-point initializers: what the file stores. It differs from
            ``n_params_config`` because torch's dynamo exporter stores identical tensors once (with seeded
            weights every zero-initialised bias and every unit LayerNorm weight of one size share one
            initializer) and adds the graph's scalar constants (attention scale, GELU coefficients, mask fill);
            the tied unembedding is the embedding's initializer, not a second copy. See ``n_params_note``.
        n_params_note: what ``n_params`` counts, in words (printed by ``onnxbench inspect``).
        n_params_config: the reference module's parameter count from the ``onnxbench.config`` metadata
            (the full model with the tied unembedding counted once, or one attention block's W^Q, W^K, W^V, W^O
            and biases), if known.
        n_params_config_label: what ``n_params_config`` counts, in words.
        variant / part / precision: from ``onnxbench.*`` metadata (None for foreign models).
        flops_per_token: seq_len -> forward matmul FLOPs per token (Kaplan et al. 2020, Table 1); empty
            when the model shape is unknown (see ``flops_note``).
        flops_note: what the FLOP count covers, or why there is none.
        rope: how rotary position embedding appears (:func:`rope_form`): ``"none"``, ``"decomposed x N"`` or the
            op (``"ai.onnx:RotaryEmbedding x N"``, ``"com.microsoft:RotaryEmbedding x N"``).
        norm: how the normalisation layers appear (:func:`norm_form`), e.g. ``"ai.onnx:LayerNormalization x5"``,
            ``"decomposed RMSNorm x5"``, ``"ai.onnx:RMSNormalization x5"``.
        kv_heads: K/V heads of the attention cores (:func:`kv_heads`), None where the graph does not say.
        kv_heads_note: where ``kv_heads`` was read and, for grouped-query attention, how K/V reach the core.
    """

    path: str
    opset: int
    opsets: dict[str, int]
    ir_version: int
    inputs: dict[str, list]
    outputs: dict[str, list]
    n_nodes: int
    op_histogram: dict[str, int]
    attention_blocks: dict[str, dict[str, int]]
    attention_cores: dict[str, list[str]]
    block_source: str
    n_params: int
    n_params_config: int | None = None
    n_params_note: str = ""
    n_params_config_label: str = ""
    variant: str | None = None
    part: str | None = None
    precision: str | None = None
    flops_per_token: dict[int, float] = field(default_factory=dict)
    flops_note: str = ""
    rope: str = "none"
    norm: str = "none"
    kv_heads: int | None = None
    kv_heads_note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _is_core(node: onnx.NodeProto) -> bool:
    if node.domain in ("", "ai.onnx"):
        return node.op_type in ("Softmax", "Attention")
    return node.domain == MS_DOMAIN and node.op_type in ORT_FUSED_OPS


def _block_of(node: onnx.NodeProto) -> tuple[str | None, str]:
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            for scope in ast.literal_eval(scopes):
                m = _SCOPE.match(str(scope))
                if m:
                    return f"blocks.{m.group(1)}", "name_scopes"
        except (ValueError, SyntaxError):
            pass
    m = _NAME.search(node.name)
    if m:
        return f"blocks.{m.group(1)}", "node_names"
    return None, ""


def _value_specs(values, skip: set[str]) -> dict[str, list]:
    out = {}
    for v in values:
        if v.name in skip:
            continue
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        out[v.name] = [dtype] + [d.dim_param or d.dim_value for d in t.shape.dim]
    return out


def inspect_model(path: str | Path, seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS) -> ModelInspection:
    """Inspect the ONNX file at ``path``.

    FLOPs per token follow Kaplan et al. 2020, *Scaling Laws for Neural Language Models*, §2.1 and Table 1
    (see :mod:`onnxbench.models.flops`): for the full model ``2·N_matmul + 4·n_layers·T·d_model`` per token
    at sequence length T; for a standalone attention part, one block's attention (Q/K/V/O projections and the
    two T-long score products). They need the model shape, which only onnxbench exports carry
    (``onnxbench.config`` metadata); sequence lengths beyond ``max_positions`` are left out.

    Args:
        path: an ONNX file (weights in external data are not loaded; their count is read from the dims).
        seq_lens: sequence lengths T at which to give FLOPs per token.

    Raises:
        ValueError: if the file is not a loadable ONNX model (names the file and the parser's reason).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    if not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model with a graph (no nodes found)")
    meta = {p.key: p.value for p in model.metadata_props}
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    histogram = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in nodes)

    part = meta.get("onnxbench.part")
    blocks: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    cores: dict[str, list[str]] = collections.defaultdict(list)
    sources = set()
    unassigned_cores = []
    for node in model.graph.node:
        block, source = _block_of(node)
        if block is None and part == "attention":
            block, source = "blocks.0", "standalone"
        op = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        if block is None:
            if _is_core(node):
                unassigned_cores.append(op)
            continue
        sources.add(source)
        blocks[block][op] += 1
        if _is_core(node):
            cores[block].append(op)
    for i, op in enumerate(unassigned_cores):  # no provenance left: number the cores in graph order
        label = f"core#{i}"
        blocks[label][op] += 1
        cores[label].append(op)
        sources.add("order")
    order = sorted(blocks, key=lambda b: (not b.startswith("blocks."), int(re.sub(r"\D", "", b) or 0)))

    initializer_names = {i.name for i in model.graph.initializer}
    n_params = sum(int(np.prod(i.dims, dtype=np.int64)) for i in model.graph.initializer
                   if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                      onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE))

    config = None
    if "onnxbench.config" in meta:
        config = TransformerConfig.from_dict(json.loads(meta["onnxbench.config"]))
    flops: dict[int, float] = {}
    if config is None:
        note = "no onnxbench.config metadata: the model shape (d_model, n_layers, ...) is unknown"
    elif part == "attention":
        flops = {t: attention_flops(config, 1, t) / t for t in seq_lens if 1 <= t <= config.max_positions}
        note = "one block's attention: Q/K/V/O projections + q·k^T + softmax·v (Kaplan et al. 2020, Table 1)"
    else:
        flops = {t: flops_per_token(config, t) for t in seq_lens if 1 <= t <= config.max_positions}
        note = "forward matmul FLOPs per token, 2·N + 4·n_layers·T·d_model (Kaplan et al. 2020, Table 1)"

    heads, heads_note = kv_heads(model, config)
    return ModelInspection(
        path=str(path), opset=opsets.get("ai.onnx", 0), opsets=opsets, ir_version=model.ir_version,
        inputs=_value_specs(model.graph.input, initializer_names), outputs=_value_specs(model.graph.output, set()),
        n_nodes=len(model.graph.node), op_histogram=dict(histogram.most_common()),
        attention_blocks={b: dict(blocks[b].most_common()) for b in order},
        attention_cores={b: cores[b] for b in order},
        block_source="+".join(sorted(sources)) or "none", n_params=n_params,
        n_params_note=("values stored in the file: identical tensors such as zero biases kept once, scalar constants "
                       "included"),
        n_params_config=_reference_params(config, part),
        n_params_config_label=_reference_label(config, part),
        variant=meta.get("onnxbench.variant"),
        part=part, precision=meta.get("onnxbench.precision"), flops_per_token=flops, flops_note=note,
        rope=rope_form(model), norm=norm_form(model), kv_heads=heads, kv_heads_note=heads_note,
    )


def _reference_params(config: TransformerConfig | None, part: str | None) -> int | None:
    if config is None:
        return None
    if part == "attention":
        d, kv = config.d_model, config.n_kv_heads * config.d_head
        if config.family == "gpt2":
            return 4 * (d * d + d)
        return 2 * d * d + 2 * d * kv + ((d + 2 * kv) if config.qkv_bias else 0)
    return config.n_params


def _reference_label(config: TransformerConfig | None, part: str | None) -> str:
    if config is None:
        return ""
    if part == "attention":
        biases = {"gpt2": " and biases"}.get(config.family, " and q/k/v biases" if config.qkv_bias else "")
        return f"model: block 0's attention, W^Q, W^K, W^V, W^O{biases}"
    return "model, tied unembedding counted once" if config.tie_embeddings else "model, untied unembedding W_U included"


def _producers(nodes) -> dict[str, onnx.NodeProto]:
    return {out: node for node in nodes for out in node.output}


def _count(histogram: collections.Counter, *ops: str) -> str:
    return " + ".join(f"{op} x{histogram[op]}" for op in ops if histogram[op])


def rope_form(model: onnx.ModelProto) -> str:
    """How rotary position embedding appears in ``model``: an op (ONNX ``RotaryEmbedding``, opset 23,
    https://onnx.ai/onnx/operators/onnx__RotaryEmbedding.html, or ONNX Runtime's ``com.microsoft``
    ``RotaryEmbedding``), ``"decomposed x N"`` (N rotations written out: Hugging Face's ``rotate_half``, a
    ``Concat`` of a ``Neg`` and a slice, beside ``Sin``/``Cos`` of the angles), inside the attention op
    (``"com.microsoft:GroupQueryAttention do_rotary x N"``: ONNX Runtime's GQA rotating q and k itself, as in the
    ``ort-gqa-inplace`` variant and the ORT model builder's graphs), or ``"none"`` (no RoPE: learned positions)."""
    nodes = list(_nodes(model))
    hist = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in nodes)
    fused = _count(hist, "ai.onnx:RotaryEmbedding", "com.microsoft:RotaryEmbedding")
    in_gqa = sum(1 for n in nodes if n.domain == "com.microsoft" and n.op_type == "GroupQueryAttention"
                 and any(a.name == "do_rotary" and a.i == 1 for a in n.attribute))
    if in_gqa:
        fused = " + ".join(x for x in (fused, f"com.microsoft:GroupQueryAttention do_rotary x{in_gqa}") if x)
    producers = _producers(nodes)
    rotations = sum(1 for n in nodes if n.op_type == "Concat" and n.input
                    and getattr(producers.get(n.input[0]), "op_type", None) == "Neg")
    decomposed = f"decomposed x{rotations}" if rotations and hist["ai.onnx:Sin"] and hist["ai.onnx:Cos"] else ""
    return " + ".join(x for x in (fused, decomposed) if x) or "none"


def norm_form(model: onnx.ModelProto) -> str:
    """How the normalisation layers appear in ``model``: ONNX ``LayerNormalization`` / ``RMSNormalization``
    (opset 23), ONNX Runtime's ``SimplifiedLayerNormalization`` (RMSNorm; a contrib op that ONNX Runtime
    registers in the ONNX domain) and ``com.microsoft`` ``SkipSimplifiedLayerNormalization`` /
    ``SkipLayerNormalization`` (residual add fused in), or ``"decomposed RMSNorm x N"``: ``ReduceMean`` of a
    ``Pow`` whose base is not a ``Sub`` (a decomposed LayerNorm squares x - mean)."""
    nodes = list(_nodes(model))
    hist = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in nodes)
    ops = _count(hist, "ai.onnx:LayerNormalization", "ai.onnx:RMSNormalization", "ai.onnx:SimplifiedLayerNormalization",
                 "com.microsoft:SimplifiedLayerNormalization", "com.microsoft:SkipSimplifiedLayerNormalization",
                 "com.microsoft:SkipLayerNormalization")
    producers = _producers(nodes)
    rms = 0
    for node in nodes:
        if node.op_type != "ReduceMean":
            continue
        square = producers.get(node.input[0])
        if square is not None and square.op_type == "Pow":
            base = producers.get(square.input[0])
            rms += base is None or base.op_type != "Sub"
    decomposed = f"decomposed RMSNorm x{rms}" if rms else ""
    return " + ".join(x for x in (ops, decomposed) if x) or "none"


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    out = {}
    for v in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = v.type.tensor_type.shape.dim
        out[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return out


def kv_heads(model: onnx.ModelProto, config: TransformerConfig | None = None) -> tuple[int | None, str]:
    """K/V heads of the attention cores of ``model`` and where that was read, in this order: the
    ``kv_num_heads`` attribute of ONNX ``Attention`` (3D inputs) or ``com.microsoft:GroupQueryAttention``; the head
    axis of the K input of a 4D ONNX ``Attention`` (with a note when the model's cache has fewer heads, i.e. K/V
    are repeated before the core); ``num_heads`` of ``com.microsoft:MultiHeadAttention``; the head axis of the
    ``past_key_values.*`` inputs; ``n_kv_heads`` of the ``onnxbench.config`` metadata. (None, reason) when none
    says."""
    nodes = list(_nodes(model))
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    cache = None
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name.startswith("past_key_values.") and len(dims) == 4 and dims[1].HasField("dim_value"):
            cache = (dims[1].dim_value, value.name)
            break
    model_heads = cache[0] if cache else (config.n_kv_heads if config is not None else None)
    shapes = _shapes(model)
    for node in nodes:
        if node.domain == MS_DOMAIN and node.op_type == "GroupQueryAttention":
            return attrs(node)["kv_num_heads"], "com.microsoft:GroupQueryAttention kv_num_heads"
        if node.domain in ("", "ai.onnx") and node.op_type == "Attention":
            if "kv_num_heads" in attrs(node):
                return attrs(node)["kv_num_heads"], "ONNX Attention kv_num_heads"
            key = shapes.get(node.input[1], [])
            if len(key) == 4 and isinstance(key[1], int):
                note = f"head axis of ONNX Attention's K input {tuple(key)}"
                if model_heads and model_heads < key[1]:
                    note += f"; the model has {model_heads} K/V heads, repeated before the core"
                elif model_heads and model_heads == key[1] and config is not None and key[1] < config.n_heads:
                    note += f" (GQA: {config.n_heads} query heads read them)"
                return key[1], note
        if node.domain == MS_DOMAIN and node.op_type == "MultiHeadAttention":
            note = "com.microsoft:MultiHeadAttention num_heads (K/V as wide as Q)"
            if model_heads and model_heads < attrs(node)["num_heads"]:
                note += f"; the model has {model_heads} K/V heads, repeated before the core"
            return attrs(node)["num_heads"], note
    if cache:
        return cache[0], f"head axis of {cache[1]}"
    if config is not None:
        return config.n_kv_heads, "n_kv_heads of the onnxbench.config metadata"
    return None, "no attention op, cache input or onnxbench.config says"
