"""Work model of any ONNX file: FLOPs and bytes per inference counted from the graph at bound input shapes.

:mod:`onnxbench.benchmarks.measure.workmodel` derives the work of onnxbench's own transformer from its config; a user's
ONNX file has no config, so here the graph itself is counted:

1. the dynamic axes of the inputs are bound by the rules of the input generator
   (:func:`onnxbench.benchmarks.inputs.bind_shapes`: ``--dim NAME=SIZE``, batch- and sequence-like axis names);
2. shapes are propagated with ONNX shape inference (``onnx.shape_inference.infer_shapes`` with data propagation,
   https://onnx.ai/onnx/api/shape_inference.html) on a copy whose large initializers are replaced by typed graph
   inputs (shape inference needs their shapes, not their values). ONNX Runtime's contrib operators
   (``com.microsoft``: MultiHeadAttention, FusedMatMul, DynamicQuantizeMatMul, SkipLayerNormalization, ...) are
   unknown to ONNX shape inference, so their output shapes come from small rules here (from the operator
   definitions in https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md) and inference is
   run again past them. Where that leaves a shape the count needs unknown, ONNX Runtime's symbolic shape
   inference (``onnxruntime.tools.symbolic_shape_infer.SymbolicShapeInference``, which evaluates shape
   arithmetic that ONNX's data propagation does not: a transformers BERT at batch 1 stops ONNX inference at the
   ``Slice`` of its ``position_ids`` buffer) fills the gaps;
3. the matrix-multiply-class nodes are counted with the convention of :mod:`onnxbench.models.flops` (Kaplan et
   al. 2020, §2.1): a multiply-accumulate is 2 FLOPs, element-wise work (norms, softmax, activations, residual and
   bias adds, (de)quantization) is left out. Counted: MatMul, Gemm, MatMulInteger, QLinearMatMul, Conv,
   ConvInteger, QLinearConv, ConvTranspose, Einsum, ONNX Attention (opset 23, grouped-query included), and the
   contrib FusedMatMul, DynamicQuantizeMatMul, MatMulIntegerToFloat, MatMulNBits, MultiHeadAttention,
   GroupQueryAttention, Attention and QAttention. Attention counts the full S_q x S_kv score square and the
   weighted sum of values over every query head, as the analytic model does (a causal kernel skips about half of
   it); GroupQueryAttention's S_kv is its ``total_sequence_length`` (the keys it attends, whether the cache is a
   growing past or a max-length buffer shared with ``present``).

Bytes moved is the lower bound of :mod:`onnxbench.benchmarks.measure.workmodel`: every initializer (and every
``Constant``
node's tensor) read once at its own dtype (int8 weights 1 byte, int4 half a byte; a ``MatMulNBits`` weight is
stored packed, uint8 (N, ceil(K / block_size), block_size · bits / 8), so its N · K 4-bit codes count N · K / 2
bytes, plus its (N, ceil(K / block_size)) scales and any zero points), the bound inputs read once and the outputs
written once. Nodes that may hold heavy work but cannot be counted (an operator outside the list above
such as LSTM or GroupQueryAttention, a shape that inference could not determine, a control-flow subgraph) are
listed in :attr:`GraphWork.uncounted`, so that a partial count never passes for a full one.

Agreement with the analytic model on onnxbench's exports, and checks against hand counts: docs/work_model.md.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto

from ...export.onnx_export import tensor_specs
from ..inputs import bind_shapes
from .workmodel import Work

MS_DOMAIN = "com.microsoft"
#: Initializers with more elements than this become typed graph inputs in the copy given to shape inference:
#: their values never decide a shape (shape tensors, axes and slice bounds are small), and leaving them out keeps
#: inference fast on models of any size.
INLINE_ELEMENTS = 4096
#: Operators that can carry heavy work but that this counter does not count (reported as uncounted when seen).
NOT_COUNTED = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "PackedAttention",
                         "PackedMultiHeadAttention", "DecoderMaskedMultiHeadAttention", "SparseAttention",
                         "QOrderedAttention", "Loop", "Scan", "If"})
#: The ``GraphWork.uncounted`` key of graph outputs whose shape could not be inferred.
OUTPUT_SHAPE_UNKNOWN = "output shape unknown"
#: ONNX Runtime's operators registered in the ONNX domain itself (ONNX shape inference does not know them).
ORT_IN_ONNX_DOMAIN = frozenset({"SimplifiedLayerNormalization"})
#: Contrib operators whose first output has the shape of their first input.
_SAME_SHAPE = frozenset({"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "FastGelu", "BiasGelu",
                         "Gelu", "QuickGelu", "BiasAdd", "BiasSplitGelu", "RotaryEmbedding", "LayerNormalization",
                         "SimplifiedLayerNormalization", "BiasDropout", "BiasSoftmax"})


@dataclass(frozen=True)
class GraphWork:
    """FLOPs and bytes moved (lower bound) of one inference of an ONNX graph at bound input shapes.

    Attributes:
        flops: matrix-multiply FLOPs (2 per multiply-accumulate).
        bytes_moved: initializer + Constant bytes at their dtypes + input bytes + output bytes.
        flops_by_op: ``"domain:op_type"`` -> FLOPs of those nodes.
        uncounted: ``"domain:op_type"`` -> number of nodes that may do heavy work but were not counted
            (empty when the count is complete).
        input_shapes / output_shapes: the bound input shapes and the inferred output shapes.
        weight_bytes: the initializer + Constant part of ``bytes_moved``.
    """

    flops: float
    bytes_moved: float
    flops_by_op: dict[str, float] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    weight_bytes: float = 0.0

    @property
    def work(self) -> Work:
        """As the :class:`~onnxbench.benchmarks.measure.workmodel.Work` the result columns are computed from."""
        return Work(self.flops, self.bytes_moved)

    @property
    def complete(self) -> bool:
        """Whether every node that may carry heavy work was counted."""
        return not self.uncounted

    @property
    def why_incomplete(self) -> str:
        """Why the count is incomplete, for a row's ``reason`` ("" when complete): the operators not counted
        (:data:`NOT_COUNTED`) and the nodes whose input shapes could not be inferred, with their counts."""
        ops = [f"{n} {key.split(':')[-1]}" for key, n in self.uncounted.items() if key.split(":")[-1] in NOT_COUNTED]
        unknown = [f"{n} {key.split(':')[-1]}" for key, n in self.uncounted.items()
                   if key.split(":")[-1] not in NOT_COUNTED and key != OUTPUT_SHAPE_UNKNOWN]
        parts = [f"operators not counted: {', '.join(ops)}"] if ops else []
        parts += [f"shapes not inferred for {', '.join(unknown)} nodes"] if unknown else []
        if OUTPUT_SHAPE_UNKNOWN in self.uncounted:
            parts.append(f"{self.uncounted[OUTPUT_SHAPE_UNKNOWN]} output shapes not inferred")
        return " and ".join(parts)


def graph_work(path: str | Path, batch: int = 1, seq_len: int = 1, dims: dict[str, int] | None = None,
               input_shapes: dict[str, tuple[int | str, ...]] | None = None) -> GraphWork:
    """Count the FLOPs and bytes of one inference of the ONNX model at ``path`` with its inputs bound at
    (``batch``, ``seq_len``) and ``dims`` (see the module docstring for the method and what is counted).

    Args:
        path: an ONNX file; external data is not read (sizes come from the tensors' dims).
        batch / seq_len: sizes of batch-like and sequence-like dynamic axes (as in the benchmark matrix).
        dims: sizes of other dynamic axes by name (``--dim NAME=SIZE``; ``"input.i"`` for an unnamed one).
        input_shapes: shapes that replace the graph's for the named inputs (``--shape NAME=d0,d1,...``; a str
            entry is an axis name bound like the graph's own); needed for an input of unknown rank.

    Raises:
        ValueError: if the file is not a loadable ONNX model, an input of unknown rank has no ``input_shapes``
            entry, or a dynamic axis is left unbound (names it and the ``--dim`` fix).
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    initializer_names = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializer_names]
    given = dict(input_shapes or {})
    for value in graph_inputs:
        if not value.type.tensor_type.HasField("shape") and value.name not in given:
            raise ValueError(f"{path}: input {value.name!r} declares no shape (unknown rank); give it one with "
                             f"input_shapes (--shape {value.name}=d0,d1,...)")
    inputs = tuple(dataclasses.replace(spec, shape=tuple(given[spec.name])) if spec.name in given else spec
                   for spec in tensor_specs(graph_inputs))
    shapes_in = bind_shapes(inputs, batch, seq_len, dims)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    weight_bytes = _weight_bytes(model)
    shapes = _infer_shapes(_light_copy(model, shapes_in))
    shapes.update(_shape_scalars(model, shapes))
    by_op, uncounted, outputs = _count(model, shapes)
    if any(key.split(":")[-1] not in NOT_COUNTED for key in uncounted):  # a shape is missing, not an operator
        symbolic = _symbolic_shapes(_light_copy(model, shapes_in))
        if symbolic:
            shapes = {**symbolic, **shapes}
            shapes.update(_shape_scalars(model, shapes))
            by_op, uncounted, outputs = _count(model, shapes)
    io_bytes = sum(math.prod(s) * _itemsize(spec.dtype) for spec, s in
                   ((spec, shapes_in[spec.name]) for spec in inputs))
    io_bytes += sum(math.prod(shapes[o.name]) * _elem_bytes(o.type.tensor_type.elem_type)
                    for o in model.graph.output if shapes.get(o.name) is not None)
    return GraphWork(
        flops=float(sum(by_op.values())), bytes_moved=float(weight_bytes + io_bytes),
        flops_by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])), uncounted=dict(uncounted),
        input_shapes=shapes_in, output_shapes={k: v for k, v in outputs.items() if v is not None},
        weight_bytes=float(weight_bytes),
    )


def _count(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
           ) -> tuple[dict[str, float], collections.Counter, dict[str, tuple[int, ...] | None]]:
    """FLOPs by operator, the uncounted nodes and the output shapes of ``model`` given ``shapes``."""
    by_op: dict[str, float] = collections.defaultdict(float)
    uncounted: collections.Counter = collections.Counter()
    for node in model.graph.node:
        key = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        rule = _FLOPS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        if rule is None:
            if node.op_type in NOT_COUNTED:
                uncounted[key] += 1
            continue
        try:
            flops = rule(node, shapes)
        except _Unknown:
            uncounted[key] += 1
            continue
        by_op[key] += flops
    outputs = {o.name: shapes.get(o.name) for o in model.graph.output}
    missing = [name for name, shape in outputs.items() if shape is None]
    if missing:
        uncounted[OUTPUT_SHAPE_UNKNOWN] += len(missing)
    return by_op, uncounted, outputs


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes from ONNX Runtime's symbolic shape inference on the light copy (inputs bound, so every
    dimension it can evaluate is a number); empty where it fails (it raises on operators it does not know)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    except Exception:  # noqa: BLE001 - AssertionError / Exception on unknown operators, ImportError without sympy
        return {}
    return _collect(inferred)[0] if inferred is not None else {}


@functools.lru_cache(maxsize=64)
def _graph_work(path: str, mtime_ns: int, batch: int, seq_len: int, dims: tuple, input_shapes: tuple) -> GraphWork:
    return graph_work(path, batch, seq_len, dict(dims), {k: tuple(v) for k, v in input_shapes})


def counted_work(path: str | Path, batch: int, seq_len: int, dims: dict[str, int] | None = None,
                 input_shapes: dict[str, list[int | str]] | None = None) -> GraphWork:
    """:func:`graph_work` of the file at ``path``, cached per file version and shape (a run asks once per row).

    Raises:
        ValueError / OSError: see :func:`graph_work`.
    """
    path = Path(path)
    return _graph_work(str(path.resolve()), path.stat().st_mtime_ns, batch, seq_len,
                       tuple(sorted((dims or {}).items())),
                       tuple(sorted((k, tuple(v)) for k, v in (input_shapes or {}).items())))


class _Unknown(Exception):
    """A shape needed for the count is not known."""


# ---------------------------------------------------------------------------------------------- bytes


def _elem_bytes(elem_type: int) -> float:
    if elem_type in (TensorProto.INT4, TensorProto.UINT4) or elem_type == getattr(TensorProto, "FLOAT4E2M1", -1):
        return 0.5
    if elem_type == TensorProto.STRING:
        return 0.0  # variable length; not a weight this model counts
    return float(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)


def _itemsize(dtype: str) -> float:
    return float(np.dtype(dtype).itemsize)


def _weight_bytes(model: onnx.ModelProto) -> float:
    total = sum(math.prod(t.dims) * _elem_bytes(t.data_type) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    total += math.prod(attr.t.dims) * _elem_bytes(attr.t.data_type)
    return total


# ---------------------------------------------------------------------------------------------- shapes


def _light_copy(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The graph with bound inputs, no stale value_info, and large initializers as typed inputs (no data).

    Built field by field rather than copied: a model's weights may exceed what protobuf copies in one piece."""
    source = model.graph
    graph = onnx.GraphProto(name=source.name, node=source.node, output=source.output,
                            sparse_initializer=source.sparse_initializer)
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")
    for value in source.input:
        value = graph.input.add(name=value.name, type=value.type)
        if value.name in input_shapes:
            value.type.tensor_type.shape.Clear()
            for size in input_shapes[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = size
    input_names = {v.name for v in graph.input}
    for init in source.initializer:
        if math.prod(init.dims) <= INLINE_ELEMENTS and not onnx.external_data_helper.uses_external_data(init):
            graph.initializer.append(init)
        elif init.name not in input_names:  # (IR < 4 lists initializers among the inputs already, typed)
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, graph=graph,
                           functions=model.functions)


def _infer_shapes(model: onnx.ModelProto, max_rounds: int = 256) -> dict[str, tuple[int, ...]]:
    """Static shapes of every value ONNX shape inference (plus the contrib rules) can determine."""
    added: dict[str, tuple[int, tuple[int, ...]]] = {}
    for _ in range(max_rounds):
        del model.graph.value_info[:]
        model.graph.value_info.extend(onnx.helper.make_tensor_value_info(name, elem, list(shape))
                                      for name, (elem, shape) in added.items())
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        shapes, types = _collect(inferred)
        progress = False
        for node in inferred.graph.node:
            contrib = node.domain == MS_DOMAIN or (not node.domain and node.op_type in ORT_IN_ONNX_DOMAIN)
            if not contrib or not node.output or node.output[0] in shapes:
                continue
            try:
                outputs = _contrib_output_shapes(node, shapes)
            except _Unknown:
                continue
            elem = types.get(node.input[0], TensorProto.FLOAT)
            if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE):
                elem = TensorProto.FLOAT  # integer-input contrib matmuls (MatMulIntegerToFloat) return float
            for name, shape in zip(node.output, outputs, strict=False):
                if name and shape is not None:
                    added[name] = (elem, shape)
                    shapes[name] = shape
            progress = True
        if not progress:
            return shapes
    return shapes


def _shape_scalars(model: onnx.ModelProto, shapes: dict) -> dict[tuple[str, str], int]:
    """Scalars the graph computes from tensor shapes (``Shape -> Gather -> Cast``, as the ORT model builder's
    ``total_sequence_length`` of GroupQueryAttention is the attention mask's width), keyed ``("value", name)``.
    ONNX shape inference propagates such values only into shapes, not into the scalar tensors themselves."""
    producers = {out: node for node in model.graph.node for out in node.output}
    values: dict[tuple[str, str], int] = {}

    def value(name: str, depth: int = 0) -> int | None:
        node = producers.get(name)
        if node is None or depth > 8:
            return None
        if node.op_type in ("Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity"):
            return value(node.input[0], depth + 1)
        if node.op_type == "Gather" and producers.get(node.input[0]) is not None \
                and producers[node.input[0]].op_type == "Shape":
            source = shapes.get(producers[node.input[0]].input[0])
            index = _constant_int(producers.get(node.input[1]))
            if source is not None and index is not None and -len(source) <= index < len(source):
                return int(source[index])
        return None

    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and len(node.input) > 6 and node.input[6]:
            found = value(node.input[6])
            if found is not None:
                values[("value", node.input[6])] = found
    return values


def _constant_int(node: onnx.NodeProto | None) -> int | None:
    """The integer a ``Constant`` node holds (a scalar or a one-element tensor), else None."""
    if node is None or node.op_type != "Constant":
        return None
    tensor = _attr(node, "value")
    if tensor is None:
        return None
    array = onnx.numpy_helper.to_array(tensor)
    return int(array.reshape(-1)[0]) if array.size == 1 else None


def _collect(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = value.type.tensor_type
        if t.elem_type:
            types[value.name] = t.elem_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in t.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _shape(node: onnx.NodeProto, index: int, shapes: dict) -> tuple[int, ...]:
    if index >= len(node.input) or not node.input[index]:
        raise _Unknown(f"{node.op_type} has no input {index}")
    shape = shapes.get(node.input[index])
    if shape is None:
        raise _Unknown(node.input[index])
    return shape


def _optional(node: onnx.NodeProto, index: int, shapes: dict) -> tuple[int, ...] | None:
    return _shape(node, index, shapes) if index < len(node.input) and node.input[index] else None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...], trans_a: int = 0, trans_b: int = 0) -> tuple[int, ...]:
    """numpy.matmul result shape (with optional transposes of the last two axes)."""
    if trans_a and len(a) >= 2:
        a = (*a[:-2], a[-1], a[-2])
    if trans_b and len(b) >= 2:
        b = (*b[:-2], b[-1], b[-2])
    if len(a) == 1 and len(b) == 1:
        return ()
    if len(a) == 1:
        return (*b[:-2], b[-1])
    if len(b) == 1:
        return a[:-1]
    batch = np.broadcast_shapes(a[:-2], b[:-2])
    return (*batch, a[-2], b[-1])


def _contrib_output_shapes(node: onnx.NodeProto, shapes: dict) -> list[tuple[int, ...] | None]:
    """The shapes of a contrib operator's outputs, from its first on (None: an output without a rule)."""
    if node.op_type in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        x = _shape(node, 0, shapes)  # output, mean, inv_std_var, and input_skip_bias_sum (the residual sum)
        return [x, None, None, x]
    if node.op_type == "GroupQueryAttention":  # output; present_key and present_value (docs: ContribOperators.md)
        b, s, length, dh, hq, hkv = _gqa_dims(node, shapes)
        past = _optional(node, 3, shapes)
        present = (b, hkv, max(length, past[2] if past is not None else 0), dh)
        return [(b, s, hq * dh), present, present]
    return [_contrib_output_shape(node, shapes)]


def _contrib_output_shape(node: onnx.NodeProto, shapes: dict) -> tuple[int, ...]:
    op = node.op_type
    if op in _SAME_SHAPE:
        return _shape(node, 0, shapes)
    if op in ("FusedMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        return _matmul_shape(_shape(node, 0, shapes), _shape(node, 1, shapes),
                             _attr(node, "transA", 0), _attr(node, "transB", 0))
    if op == "MatMulNBits":
        return (*_shape(node, 0, shapes)[:-1], int(_attr(node, "N")))
    if op == "MultiHeadAttention":
        q = _shape(node, 0, shapes)
        return (q[0], q[1], _mha_dims(node, shapes)[3])
    if op in ("Attention", "QAttention"):
        x = _shape(node, 0, shapes)
        return (x[0], x[1], _contrib_attention_hidden(node, shapes)[2])
    raise _Unknown(op)


# ---------------------------------------------------------------------------------------------- FLOPs


def _matmul_flops(a_index: int, b_index: int):
    def count(node: onnx.NodeProto, shapes: dict) -> float:
        a, b = _shape(node, a_index, shapes), _shape(node, b_index, shapes)
        trans_a, trans_b = _attr(node, "transA", 0), _attr(node, "transB", 0)
        k = a[-2] if trans_a and len(a) >= 2 else a[-1]
        return 2.0 * math.prod(_matmul_shape(a, b, trans_a, trans_b)) * k
    return count


def _matmul_nbits_flops(node: onnx.NodeProto, shapes: dict) -> float:
    a = _shape(node, 0, shapes)
    return 2.0 * math.prod(a[:-1]) * int(_attr(node, "N")) * int(_attr(node, "K"))


def _gemm_flops(node: onnx.NodeProto, shapes: dict) -> float:
    a, b = _shape(node, 0, shapes), _shape(node, 1, shapes)
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
    n = b[0] if _attr(node, "transB", 0) else b[1]
    return 2.0 * m * n * k


def _conv_flops(w_index: int):
    def count(node: onnx.NodeProto, shapes: dict) -> float:
        w = _shape(node, w_index, shapes)  # (M, C / group, k1, k2, ...)
        y = shapes.get(node.output[0])
        if y is None:
            raise _Unknown(node.output[0])
        return 2.0 * math.prod(y) * math.prod(w[1:])
    return count


def _conv_transpose_flops(node: onnx.NodeProto, shapes: dict) -> float:
    x, w = _shape(node, 0, shapes), _shape(node, 1, shapes)  # w: (C, M / group, k1, ...); each input scatters
    return 2.0 * math.prod(x) * math.prod(w[1:])


def _einsum_flops(node: onnx.NodeProto, shapes: dict) -> float:
    """2 x the product of every index size (each output element sums over the contracted indices)."""
    equation = _attr(node, "equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if len(lhs) < 2:
        return 0.0  # one operand: a transpose, diagonal or reduction, no multiply-accumulate
    sizes: dict[str, int] = {}
    for i, term in enumerate(lhs):
        shape = _shape(node, i, shapes)
        if "..." in term:
            head, tail = term.split("...")
            n_ell = len(shape) - len(head) - len(tail)
            for j in range(n_ell):  # broadcast ellipsis axes, right-aligned
                key = f"...{n_ell - j}"
                sizes[key] = max(sizes.get(key, 1), shape[len(head) + j])
            term = head + "#" * n_ell + tail
        for letter, size in zip(term, shape, strict=True):
            if letter != "#":
                sizes[letter] = max(sizes.get(letter, 1), size)
    return 2.0 * math.prod(sizes.values())


def _onnx_attention_flops(node: onnx.NodeProto, shapes: dict) -> float:
    """ONNX Attention (opset 23): Q (B, Hq, Sq, dh) or (B, Sq, Hq*dh); K/V (B, Hkv, Skv, d) or (B, Skv, Hkv*d)."""
    q, k, v = _shape(node, 0, shapes), _shape(node, 1, shapes), _shape(node, 2, shapes)
    if len(q) == 4:
        b, hq, sq, dh = q
        skv, dv = k[2], v[3]
    else:
        hq, hkv = int(_attr(node, "q_num_heads")), int(_attr(node, "kv_num_heads"))
        b, sq, dh = q[0], q[1], q[2] // hq
        skv, dv = k[1], v[2] // hkv
    past = _optional(node, 4, shapes)
    if past is not None:
        skv += past[2]
    return 2.0 * b * hq * sq * skv * (dh + dv)


def _mha_dims(node: onnx.NodeProto, shapes: dict) -> tuple[int, int, int, int, int]:
    """(B, S, L, D_qk, D_v) of com.microsoft MultiHeadAttention, summed over heads (the head split does not change
    the count); L includes past_key."""
    q = _shape(node, 0, shapes)
    k = _optional(node, 1, shapes)
    v = _optional(node, 2, shapes)
    if len(q) == 5:  # packed QKV (B, S, N, 3, H)
        b, s, d = q[0], q[1], q[2] * q[4]
        return b, s, s, d, d
    b, s, d = q
    if k is None:
        raise _Unknown("MultiHeadAttention without key")
    if len(k) == 5:  # packed KV (B, L, N, 2, H)
        return b, s, k[1], d, k[2] * k[4]
    length = k[2] if len(k) == 4 else k[1]
    dv = d if v is None else (v[1] * v[3] if len(v) == 4 else v[2])
    past = _optional(node, 6, shapes)
    if past is not None and len(k) == 3:
        length += past[2]
    return b, s, length, d, dv


def _mha_flops(node: onnx.NodeProto, shapes: dict) -> float:
    b, s, length, d, dv = _mha_dims(node, shapes)
    return 2.0 * b * s * length * (d + dv)


def _gqa_dims(node: onnx.NodeProto, shapes: dict) -> tuple[int, int, int, int, int, int]:
    """(B, S, L, d_head, num_heads, kv_num_heads) of com.microsoft GroupQueryAttention: query (B, S, Hq·dh), or
    packed QKV (B, S, (Hq + 2·Hkv)·dh) when key is absent; L is ``total_sequence_length`` (input 6, a scalar the
    graph computes from the attention mask's width), read through the Shape -> Gather -> Cast chain that computes
    it, else the past length + S (a growing past)."""
    hq, hkv = int(_attr(node, "num_heads")), int(_attr(node, "kv_num_heads"))
    q = _shape(node, 0, shapes)
    packed = _optional(node, 1, shapes) is None
    dh = q[2] // (hq + 2 * hkv) if packed else q[2] // hq
    total = shapes.get(("value", node.input[6])) if len(node.input) > 6 and node.input[6] else None
    if total is None:
        past = _optional(node, 3, shapes)
        total = q[1] + (past[2] if past is not None else 0)
    return q[0], q[1], int(total), dh, hq, hkv


def _gqa_flops(node: onnx.NodeProto, shapes: dict) -> float:
    """GroupQueryAttention: q·k^T and the weighted sum of v for every query head (the K/V heads are shared, not
    fewer products)."""
    b, s, length, dh, hq, _ = _gqa_dims(node, shapes)
    return 2.0 * b * hq * s * length * 2 * dh


def _contrib_attention_hidden(node: onnx.NodeProto, shapes: dict) -> tuple[int, int, int]:
    w = _shape(node, 1, shapes)  # (input_hidden, q_hidden + k_hidden + v_hidden)
    sizes = _attr(node, "qkv_hidden_sizes")
    return tuple(int(x) for x in sizes) if sizes else (w[1] // 3,) * 3


def _contrib_attention_flops(node: onnx.NodeProto, shapes: dict) -> float:
    """com.microsoft Attention / QAttention: the fused Q/K/V input projection plus the attention products."""
    x, w = _shape(node, 0, shapes), _shape(node, 1, shapes)
    b, s = x[0], x[1]
    qh, _, vh = _contrib_attention_hidden(node, shapes)
    past_index = 4 if node.op_type == "Attention" else 8
    past = _optional(node, past_index, shapes)  # (2, B, N, P, H)
    length = s + (past[3] if past is not None else 0)
    return 2.0 * b * s * x[2] * w[1] + 2.0 * b * s * length * (qh + vh)


_FLOPS = {
    ("", "MatMul"): _matmul_flops(0, 1),
    ("", "MatMulInteger"): _matmul_flops(0, 1),
    ("", "QLinearMatMul"): _matmul_flops(0, 3),
    ("", "Gemm"): _gemm_flops,
    ("", "Conv"): _conv_flops(1),
    ("", "ConvInteger"): _conv_flops(1),
    ("", "QLinearConv"): _conv_flops(3),
    ("", "ConvTranspose"): _conv_transpose_flops,
    ("", "Einsum"): _einsum_flops,
    ("", "Attention"): _onnx_attention_flops,
    (MS_DOMAIN, "FusedMatMul"): _matmul_flops(0, 1),
    (MS_DOMAIN, "DynamicQuantizeMatMul"): _matmul_flops(0, 1),
    (MS_DOMAIN, "MatMulIntegerToFloat"): _matmul_flops(0, 1),
    (MS_DOMAIN, "MatMulNBits"): _matmul_nbits_flops,
    (MS_DOMAIN, "MultiHeadAttention"): _mha_flops,
    (MS_DOMAIN, "GroupQueryAttention"): _gqa_flops,
    (MS_DOMAIN, "Attention"): _contrib_attention_flops,
    (MS_DOMAIN, "QAttention"): _contrib_attention_flops,
}
