"""Float64 references and the noise floor of a precision (docs/agreement.md).

A runtime's error only means something next to the error that rounding alone makes. For the reference
transformer (presets and checkpoints) the **float64 reference** is the torch module in float64 on the CPU on the
cell's inputs; the **noise floor** of a precision is the error of the same torch module at that precision
(fp32, fp16, bf16) against float64. A correct runtime's error against float64 lands within a small factor of the
floor; a wrong operator lands orders of magnitude above it, even where it stays inside an absolute band.

For a foreign ONNX file the float64 reference is ``onnx.reference.ReferenceEvaluator`` on a float64 copy of the
graph (:func:`float64_copy`), where the graph is small enough (:data:`FLOAT64_MAX_ELEMENTS`).

Float64 results are cached on disk under ``<cache>/reference64/<key>.npz`` (``<cache>`` is the export cache,
``onnxbench.export.default_cache_dir()``), keyed by the weights (config + seed, or the checkpoint's sha256), the
part, the inputs' bytes (so shape and input seed) and the torch version: the float64 forward of gpt2-small at
B = 4, T = 128 takes seconds and every (artifact, runtime) group of a run needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from ...export import ExportArtifact, default_cache_dir
from ...models import TransformerConfig, build

#: Unit roundoff u = 2^-p of each precision (p = significand bits incl. the implicit one; IEEE 754-2008
#: binary32 / binary16, and bfloat16's 8 bits). The noise floor is never taken below u * max|y_fp64|, the
#: rounding of the largest output value alone, so that a floor that happens to be 0 cannot make every error
#: infinitely large.
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "fp16": 2.0**-11, "bf16": 2.0**-8, "fp64": 2.0**-53}
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}


@dataclass
class ForwardResult:
    """Outputs of one forward pass, and the residual stream after each transformer block.

    Attributes:
        outputs: output name -> float64 array (``logits`` (B, T, vocab_size) or ``attention_output``
            (B, T, d_model)).
        blocks: residual stream after block i, float64 (B, T, d_model), for i in 0..n_layers-1 (empty for the
            attention part, and for graphs whose block boundaries were not found).
    """

    outputs: dict[str, np.ndarray]
    blocks: list[np.ndarray] = field(default_factory=list)


def feeds_digest(feeds: dict[str, np.ndarray]) -> str:
    """sha256 of the feeds' names, dtypes, shapes and bytes (the inputs' identity, so shape and input seed)."""
    h = hashlib.sha256()
    for name in sorted(feeds):
        value = np.ascontiguousarray(feeds[name])
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def torch_forward(module: torch.nn.Module, feeds: dict[str, np.ndarray], part: str = "model") -> ForwardResult:
    """Run the reference module on ``feeds`` and capture the residual stream after each block (forward hooks on
    ``module.blocks[i]``, which return the stream, :class:`onnxbench.models.transformer.Block`).

    Args:
        module: a :class:`~onnxbench.models.Transformer` (``part='model'``: feeds ``{"input_ids": int (B, T)}``)
            or block 0's attention (``part='attention'``: feeds ``{"hidden_states": float (B, T, d_model)}``).
        feeds: host arrays; floating feeds are cast to the module's dtype, and all go to its device.
        part: ``model`` or ``attention``.

    Returns:
        outputs and block states, as float64 numpy arrays.
    """
    parameter = next(module.parameters())
    dtype, device = parameter.dtype, parameter.device
    name, output = ("input_ids", "logits") if part == "model" else ("hidden_states", "attention_output")
    if name not in feeds:
        raise ValueError(f"the reference {part} takes {name!r}; the feeds have {sorted(feeds)}")
    x = torch.from_numpy(np.ascontiguousarray(feeds[name]))
    x = (x.to(dtype) if x.is_floating_point() else x.to(torch.int64)).to(device)
    blocks: list[torch.Tensor] = []
    # a block returns the stream, or (stream, present key/values) when asked for its cache
    hooks = [b.register_forward_hook(lambda _m, _i, out: blocks.append((out[0] if isinstance(out, tuple) else out)
                                                                       .detach()))
             for b in getattr(module, "blocks", [])]
    try:
        with torch.inference_mode():
            y = module(x)
    finally:
        for hook in hooks:
            hook.remove()
    as64 = lambda t: t.to("cpu", torch.float64).numpy()  # noqa: E731
    return ForwardResult({output: as64(y)}, [as64(b) for b in blocks])


def build_module(config: TransformerConfig, seed: int | None, checkpoint: str | None, precision: str,
                 part: str = "model") -> torch.nn.Module:
    """The reference module at ``precision`` (``fp64`` included): built from (config, seed) or loaded from the
    checkpoint directory; block 0's attention for ``part='attention'``.

    Raises:
        FileNotFoundError: for a missing checkpoint file.
    """
    dtype = _TORCH_DTYPES[precision]
    if checkpoint:
        from ...models import load_checkpoint

        module = load_checkpoint(checkpoint, dtype=dtype, attention=config.attention)
    else:
        module = build(config, seed or 0, dtype=dtype)
    return module.blocks[0].attn if part == "attention" else module


def noise_floor(y: np.ndarray, y64: np.ndarray, precision: str) -> float:
    """max |y - y_fp64| over the positions finite in both, floored at ``u * max|y_fp64|``
    (:data:`UNIT_ROUNDOFF`). 0.0 for an output with no finite position."""
    finite = np.isfinite(y) & np.isfinite(y64)
    if not finite.any():
        return 0.0
    err = float(np.max(np.abs(y[finite].astype(np.float64) - y64[finite])))
    return max(err, UNIT_ROUNDOFF[precision] * float(np.max(np.abs(y64[finite]))))


def floor_ratio(err: float, floor: float) -> float:
    """``err / floor``; 0 when both are 0, +inf when only the floor is."""
    if floor > 0:
        return err / floor
    return 0.0 if err == 0 else float("inf")


class TorchForwards:
    """The forward passes of one model (preset or checkpoint) in torch: in float64 (disk-cached) and at a cell's
    precision, whose error against float64 is the noise floor. The reference built on them is
    :class:`onnxbench.benchmarks.verify.reference.TorchFloat64Reference`.

    Args:
        config: the model's config; its ``attention`` implementation is the one the floor runs (the cell's
            variant), the float64 forward always uses the explicit math (both compute the same function).
        seed: weight seed (``None`` with a checkpoint).
        checkpoint / checkpoint_sha256: checkpoint directory (GPT-2, Llama or Qwen2) and the hash of its files.
        part: ``model`` or ``attention``.
        cache_dir: the export cache; float64 results go to ``cache_dir/reference64`` (default
            ``onnxbench.export.default_cache_dir()``).
    """

    def __init__(self, config: TransformerConfig, seed: int | None = 0, checkpoint: str | None = None,
                 checkpoint_sha256: str | None = None, part: str = "model",
                 cache_dir: str | Path | None = None) -> None:
        self.model_config = config
        self.seed = seed
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.part = part
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._modules: dict[str, torch.nn.Module] = {}
        self._floors: dict[tuple[str, str], ForwardResult] = {}

    @classmethod
    def of_artifact(cls, artifact: ExportArtifact, cache_dir: str | Path | None = None) -> TorchForwards:
        """The reference of an onnxbench export (its metadata names config, seed or checkpoint, part).

        Raises:
            ValueError: for an artifact without an onnxbench config (a foreign ONNX file).
        """
        if artifact.config is None:
            raise ValueError(f"{artifact.path} has no onnxbench config: no torch reference to rebuild")
        return cls(artifact.config, artifact.seed, artifact.checkpoint, artifact.checkpoint_sha256, artifact.part,
                   cache_dir)

    def _module(self, precision: str) -> torch.nn.Module:
        if precision not in self._modules:
            config = self.model_config.replace(attention="explicit") if precision == "fp64" else self.model_config
            self._modules[precision] = build_module(config, self.seed, self.checkpoint, precision, self.part)
        return self._modules[precision]

    def _key(self, feeds: dict[str, np.ndarray]) -> str:
        weights = ({"checkpoint_sha256": self.checkpoint_sha256} if self.checkpoint
                   else {"seed": self.seed, "config": self.model_config.replace(attention="explicit").to_dict()})
        payload = json.dumps({"weights": weights, "part": self.part, "feeds": feeds_digest(feeds),
                              "torch": torch.__version__, "format": 1}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def float64(self, feeds: dict[str, np.ndarray]) -> ForwardResult:
        """Outputs and block states of the float64 module on ``feeds`` (disk-cached)."""
        path = self.cache_dir / "reference64" / f"{self._key(feeds)}.npz"
        if path.is_file():
            try:
                with np.load(path) as data:
                    outputs = {k.removeprefix("out:"): data[k] for k in data.files if k.startswith("out:")}
                    blocks = [data[f"block:{i}"] for i in range(sum(k.startswith("block:") for k in data.files))]
                return ForwardResult(outputs, blocks)
            except (OSError, ValueError, KeyError):
                pass  # a torn or foreign file: compute again and overwrite it
        result = torch_forward(self._module("fp64"), feeds, self.part)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"out:{k}": v for k, v in result.outputs.items()}
        arrays.update({f"block:{i}": b for i, b in enumerate(result.blocks)})
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return result

    def at_precision(self, feeds: dict[str, np.ndarray], precision: str, keep: bool = True) -> ForwardResult:
        """Outputs and block states of the module at ``precision`` (the floor's run), kept in memory for the
        latest feeds unless ``keep`` is False."""
        key = (precision, feeds_digest(feeds))
        if key in self._floors:
            return self._floors[key]
        self._floors.clear()
        result = torch_forward(self._module(precision), feeds, self.part)
        if keep:
            self._floors[key] = result
        return result

    def sequence_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, precision: str) -> np.ndarray:
        """Logits of the full model at ``precision`` (``fp64`` included) over whole sequences, without a cache:
        ``input_ids`` and ``attention_mask`` int64 (B, T) (0 on left padding) -> float64 (B, T, vocab_size).
        Not cached (generation references differ per runtime's tokens).

        Raises:
            ValueError: for the attention part (no logits).
        """
        if self.part != "model" and self.part != "decoder-with-past":
            raise ValueError(f"the {self.part} part has no logits")
        module = self._module(precision)
        with torch.inference_mode():
            logits = module(torch.from_numpy(np.ascontiguousarray(input_ids)).to(torch.int64),
                            attention_mask=torch.from_numpy(np.ascontiguousarray(attention_mask)).to(torch.int64))
        return logits.to(torch.float64).numpy()

    def close(self) -> None:
        self._modules.clear()
        self._floors.clear()


# --- foreign ONNX files: a float64 copy of the graph under onnx's reference evaluator ---------------------------

#: Largest graph (initializer elements) evaluated in float64 by ``onnx.reference.ReferenceEvaluator``: 2^25
#: elements are 256 MiB as float64. The evaluator runs every node in numpy from Python, keeps every
#: intermediate alive (no memory planning) and has no fused kernels; docs/agreement.md gives its measured time.
FLOAT64_MAX_ELEMENTS = 2**25
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _to_double(tensor: onnx.TensorProto) -> onnx.TensorProto:
    from onnx import numpy_helper

    if tensor.data_type not in _FLOATS:
        return tensor
    out = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)
    return out


def _retype(value: onnx.ValueInfoProto) -> None:
    t = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if t is not None and t.elem_type in _FLOATS:
        t.elem_type = onnx.TensorProto.DOUBLE


def _double_graph(graph: onnx.GraphProto) -> None:
    for i, init in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(_to_double(init))
    for value in (*graph.input, *graph.output, *graph.value_info):
        _retype(value)
    _double_nodes(graph.node)


def _double_nodes(nodes) -> None:
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(_to_double(attr.t))
            elif attr.type == onnx.AttributeProto.GRAPH:
                _double_graph(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _double_graph(g)
            elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i in _FLOATS:
                attr.i = onnx.TensorProto.DOUBLE  # Cast(to=float), EyeLike/RandomNormal(dtype=float), ...
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value_float":  # value_float makes a float32 tensor: replace by a double one
                    value = attr.f
                    attr.Clear()
                    attr.name, attr.type = "value", onnx.AttributeProto.TENSOR
                    attr.t.CopyFrom(onnx.numpy_helper.from_array(np.array(value, dtype=np.float64)))
                elif attr.name == "value_floats":
                    values = list(attr.floats)
                    attr.Clear()
                    attr.name, attr.type = "value", onnx.AttributeProto.TENSOR
                    attr.t.CopyFrom(onnx.numpy_helper.from_array(np.array(values, dtype=np.float64)))


def float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64: float/float16/bfloat16 initializers, constants, ``Cast``
    targets (``to``/``dtype`` attributes), graph inputs, outputs and ``value_info`` become double; local
    functions and subgraphs too. Integer and bool tensors are unchanged.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _double_graph(copy.graph)
    for function in copy.functions:
        _double_nodes(function.node)
    return copy


def float64_size_problem(model: onnx.ModelProto) -> str | None:
    """Why ``model`` is not evaluated in float64 (too large, or an operator domain the reference evaluator
    lacks), or ``None`` if it can be."""
    elements = sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)
    if elements > FLOAT64_MAX_ELEMENTS:
        return (f"{elements:,} initializer elements exceed the float64 evaluation limit of "
                f"{FLOAT64_MAX_ELEMENTS:,} (FLOAT64_MAX_ELEMENTS, docs/agreement.md)")
    local = {f.domain for f in model.functions}
    domains = {n.domain for n in model.graph.node} - {"", "ai.onnx"} - local
    if domains:
        return f"operators of domain(s) {sorted(domains)} have no implementation in onnx's reference evaluator"
    return None


def onnx_float64(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``model`` evaluated in float64 (``onnx.reference.ReferenceEvaluator`` on
    :func:`float64_copy`); floating feeds are cast to float64, others passed as they are.

    Raises:
        ValueError: naming the reason when the graph is too large or uses operators the evaluator lacks
            (:func:`float64_size_problem`); any error of the evaluator itself propagates.
    """
    from onnx.reference import ReferenceEvaluator

    problem = float64_size_problem(model)
    if problem:
        raise ValueError(problem)
    evaluator = ReferenceEvaluator(float64_copy(model))
    inputs = {k: (v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v) for k, v in feeds.items()}
    names = [o.name for o in model.graph.output]
    return dict(zip(names, (np.asarray(v) for v in evaluator.run(None, inputs)), strict=True))
