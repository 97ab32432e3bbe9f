"""Offline graph fusions for ONNX Runtime as options of the ORT runtimes: ONNX Runtime's transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``, ``RuntimeOptions.extra["transformer_optimizer"] = True``)
and onnxscript's ONNX Runtime fusions (``optimize_for_ort``, ``RuntimeOptions.extra["attention_fusion"] = True``:
:func:`attention_fused_path`), the two attention-fusion paths of the tuning grid.

On this project's decomposed GPT-2-style graph it fuses LayerNorm + residual into ``SkipLayerNormalization`` and
MatMul bias + GELU into ``BiasGelu``; it does not fuse the attention (separate W^Q/W^K/W^V with a causal
``Where`` mask; docs/design.md, "Attention variants and fusions"). Docs: https://onnxruntime.ai/docs/performance/transformers-optimization.html

``onnxruntime.transformers`` puts its own directory at the *end* of ``sys.path`` and imports sibling modules by
top-level name (``from onnx_utils import ...``), so any ``onnx_utils.py`` earlier on the path (a user's working
directory, say) shadows it; :func:`onnxbench.export.optimum.import_optimizer` puts the package directory first
while importing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..export import ExportArtifact
from ..export.optimum import import_optimizer

__all__ = ["attention_fused_path", "fused_op_counts", "import_optimizer", "optimized_path"]


def optimized_path(artifact: ExportArtifact) -> Path:
    """Path of ``artifact`` after the transformer optimizer (model_type ``gpt2``, fusions only, ``opt_level=0``
    so that ONNX Runtime's own graph optimisations still run at session creation), written beside the artifact
    once and reused.

    Raises:
        ValueError: for an artifact without a model config (num_heads / hidden_size unknown).
        ImportError: see :func:`import_optimizer`.
    """
    if artifact.config is None:
        raise ValueError(f"{artifact.path}: the transformer optimizer needs n_heads and d_model; "
                         "this ONNX file has no onnxbench config")
    target = artifact.path.with_name(f"{artifact.path.stem}.ort-transformers-{artifact.sha256[:12]}.onnx")
    if target.exists():
        return target
    optimizer = import_optimizer()
    model = optimizer.optimize_model(str(artifact.path), model_type="gpt2", num_heads=artifact.config.n_heads,
                                     hidden_size=artifact.config.d_model, opt_level=0, use_gpu=False)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    model.save_model_to_file(str(tmp))
    os.replace(tmp, target)  # atomic: concurrent runs never read a half-written file
    return target


def attention_fused_path(artifact: ExportArtifact) -> Path:
    """Path of ``artifact`` after onnxscript's ONNX Runtime fusions (:func:`onnxbench.export.variants.fuse_for_ort`:
    ``com.microsoft:MultiHeadAttention`` where a block's attention matches its patterns, as the dynamo export of
    ``F.scaled_dot_product_attention`` below opset 23 does, plus SkipLayerNormalization and BiasGelu; explicit-math
    attention stays unfused, docs/design.md "Attention variants and fusions"), written beside the artifact once
    and reused. External-data tensors stay references to the artifact's data file in the same folder.

    Raises:
        Exception: whatever onnx or onnxscript raise on a graph they cannot read or rewrite.
    """
    target = artifact.path.with_name(f"{artifact.path.stem}.ort-fusions-{artifact.sha256[:12]}.onnx")
    if target.exists():
        return target
    import onnx

    from ..export.variants import fuse_for_ort

    model = onnx.load(str(artifact.path), load_external_data=False)
    fused = fuse_for_ort(model, base_dir=str(artifact.path.parent))
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    onnx.save(fused, str(tmp))
    os.replace(tmp, target)  # atomic: concurrent runs never read a half-written file
    return target


def fused_op_counts(path: str | Path) -> dict[str, int]:
    """``{op_type: count}`` of the contrib-domain (``com.microsoft``) nodes of the model at ``path``."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
