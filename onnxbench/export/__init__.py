"""ONNX export of the reference transformer, artifacts and the export cache."""

from .onnx_export import (
    BATCH_AXES,
    DEFAULT_OPSET,
    EXPORTERS,
    PRECISIONS,
    SEQ_AXES,
    ExportArtifact,
    TensorSpec,
    cache_key,
    default_cache_dir,
    read_artifact,
    to_onnx,
)
from .variants import VARIANTS, VariantMismatch, census, get_variant, verify_variant

__all__ = [
    "BATCH_AXES",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "PRECISIONS",
    "SEQ_AXES",
    "ExportArtifact",
    "TensorSpec",
    "cache_key",
    "default_cache_dir",
    "read_artifact",
    "to_onnx",
    "VARIANTS",
    "VariantMismatch",
    "census",
    "get_variant",
    "verify_variant",
]
