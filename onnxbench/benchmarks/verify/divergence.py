"""The first diverging block: where in the network a runtime's error leaves the noise floor (docs/agreement.md).

A failing cell is run again with the **residual stream after each block** as extra graph outputs, on the runtime
(the ONNX graph edited by :func:`with_block_outputs`) and on the float64 and cell-precision torch references
(forward hooks, :func:`onnxbench.benchmarks.verify.fp64.torch_forward`). The block whose error ratio to the floor first
exceeds the floor factor is named (:func:`first_divergent_block`).

Only block boundaries become outputs: the stream after block ``k`` is the input of block ``k+1``'s first
LayerNorm (``ln_f`` after the last block), so every fusion inside a block (attention, SkipLayerNorm, BiasGelu)
stays as it is. Where a ``com.microsoft.SkipLayerNormalization`` fuses the residual Add into the next block's
LayerNorm, the boundary is its optional fourth output (the input + skip + bias sum), which is named and kept.

Nodes are placed in modules by the exporter's records: the dynamo exporter writes the module path into node
metadata (``pkg.torch.onnx.name_scopes``, e.g. ``['', 'blocks.1', 'blocks.1.ln_1', 'layer_norm_2']``), the
TorchScript exporter into node names (``/blocks.1/ln_1/LayerNormalization``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx

from ...export import ExportArtifact, default_cache_dir, read_artifact

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_LAYER_NORMS = {("", "LayerNormalization"), ("ai.onnx", "LayerNormalization"),
                ("com.microsoft", "SkipLayerNormalization"), ("com.microsoft", "SkipSimplifiedLayerNormalization"),
                ("com.microsoft", "LayerNormalization")}
#: Output index of a fused SkipLayerNormalization that holds input + skip (+ bias): the residual stream
#: (ONNX Runtime contrib operators, https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md).
SKIP_SUM_OUTPUT = 3


class BoundaryNotFound(ValueError):
    """The graph does not show where a block ends (no module records, or a LayerNorm the search cannot see)."""


def module_scopes(node: onnx.NodeProto) -> set[str]:
    """Dotted module paths ``node`` was exported from (``{"blocks.1", "blocks.1.ln_1"}``), from dynamo metadata
    or TorchScript node names; empty when the graph records neither."""
    meta = {p.key: p.value for p in node.metadata_props}
    if SCOPES_KEY in meta:
        try:
            return {s for s in ast.literal_eval(meta[SCOPES_KEY]) if s}
        except (ValueError, SyntaxError):
            return set()
    if node.name.startswith("/"):
        parts = node.name.strip("/").split("/")[:-1]
        return {".".join(parts[: i + 1]) for i in range(len(parts))}
    return set()


def block_boundaries(model: onnx.ModelProto, n_layers: int) -> list[tuple[str, onnx.NodeProto, int]]:
    """Where the residual stream after each block lives: ``(tensor name, node, index)`` for block
    0..n_layers-1, where ``node`` is the LayerNorm that starts the next block (or ``ln_f``) and ``index`` says
    whether the stream is its input 0 (``("in", 0)`` encoded as -1) or its output ``SKIP_SUM_OUTPUT``.

    Raises:
        BoundaryNotFound: naming the block whose end could not be found.
    """
    norms: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if (node.domain, node.op_type) in _LAYER_NORMS:
            for scope in module_scopes(node):
                norms.setdefault(scope, node)
    out = []
    for k in range(n_layers):
        scope = f"blocks.{k + 1}.ln_1" if k + 1 < n_layers else "ln_f"
        node = norms.get(scope)
        if node is None:
            raise BoundaryNotFound(
                f"no LayerNormalization recorded for module {scope!r}, so the end of block {k} is unknown "
                "(the graph needs the dynamo exporter's name_scopes metadata or TorchScript's /module/ node "
                "names, and opset >= 17 for a LayerNormalization node)")
        if node.op_type.startswith("Skip"):
            out.append((node.output[SKIP_SUM_OUTPUT] if len(node.output) > SKIP_SUM_OUTPUT else "", node,
                        SKIP_SUM_OUTPUT))
        else:
            out.append((node.input[0], node, -1))
    return out


def with_block_outputs(model: onnx.ModelProto, n_layers: int) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose graph also outputs the residual stream after every block (float, (batch,
    sequence, d_model), the graph's precision), and the names of those outputs in block order. The original
    outputs come first, unchanged.

    Raises:
        BoundaryNotFound: see :func:`block_boundaries`.
    """
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    boundaries = block_boundaries(edited, n_layers)
    elem_type = edited.graph.output[0].type.tensor_type.elem_type
    existing = {o.name for o in edited.graph.output}
    names = []
    for k, (name, node, index) in enumerate(boundaries):
        if not name:  # a SkipLayerNormalization whose sum output was left unnamed: name it
            name = f"onnxbench.block_{k}.residual"
            while len(node.output) <= index:
                node.output.append("")
            node.output[index] = name
        names.append(name)
        if name not in existing:
            edited.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
            existing.add(name)
    return edited, names


def block_outputs_artifact(artifact: ExportArtifact, n_layers: int,
                           cache_dir: str | Path | None = None) -> tuple[ExportArtifact, list[str]]:
    """``artifact`` with the block boundaries as extra outputs (:func:`with_block_outputs`), written once to
    ``<cache>/divergence/<sha256 prefix>.onnx``; returns the new artifact (same config, seed, precision) and
    the block output names.

    Raises:
        BoundaryNotFound: see :func:`block_boundaries`.
    """
    directory = (Path(cache_dir) if cache_dir else default_cache_dir()) / "divergence"
    key = hashlib.sha256(f"{artifact.sha256}|{n_layers}|1".encode()).hexdigest()[:16]
    path = directory / f"{key}.onnx"
    names_path = directory / f"{key}.names"
    if not (path.is_file() and names_path.is_file()):
        model = onnx.load(str(artifact.path))
        edited, names = with_block_outputs(model, n_layers)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        # Protobuf caps one message at 2 GiB: larger graphs keep their weights in an external file.
        large = edited.ByteSize() > 1_800_000_000
        onnx.save(edited, str(tmp), save_as_external_data=large, location=f"{key}.onnx.data" if large else None)
        tmp.replace(path)
        names_path.write_text("\n".join(names))
    edited = read_artifact(path)
    return dataclasses.replace(artifact, path=path, sha256=edited.sha256, outputs=edited.outputs,
                               cached=True), names_path.read_text().split("\n")


def block_ratios(blocks: list[np.ndarray], ref64: list[np.ndarray], floors: list[float]) -> list[float]:
    """Per block: max |h - h_fp64| over finite positions divided by that block's floor."""
    from .fp64 import floor_ratio

    out = []
    for h, h64, floor in zip(blocks, ref64, floors, strict=True):
        finite = np.isfinite(h) & np.isfinite(h64)
        err = float(np.max(np.abs(h[finite].astype(np.float64) - h64[finite]))) if finite.any() else float("inf")
        out.append(floor_ratio(err, floor))
    return out


def first_divergent_block(ratios: list[float], factor: float) -> int | None:
    """Index of the first block whose ratio exceeds ``factor`` (non-finite ratios count as exceeding), or
    ``None`` when every block stays within it."""
    for k, ratio in enumerate(ratios):
        if not ratio <= factor:
            return k
    return None
