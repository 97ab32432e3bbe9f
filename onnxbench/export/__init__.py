"""ONNX export of the reference transformer, artifacts and the export cache."""

from .decoder_with_past import DECODER_WITH_PAST, DecoderWithPast, empty_past, present_as_past, verify_past
from .onnx_export import (
    BATCH_AXES,
    DEFAULT_OPSET,
    EXPORTERS,
    PARTS,
    PRECISIONS,
    SEQ_AXES,
    ExportArtifact,
    TensorSpec,
    cache_key,
    content_sha256,
    default_cache_dir,
    external_data_files,
    read_artifact,
    to_onnx,
)
from .opsets import UnsupportedOpset, check_opset, supported_opsets, unsupported_reason
from .variants import VARIANTS, VariantMismatch, census, get_variant, verify_variant

__all__ = [
    "BATCH_AXES",
    "DECODER_WITH_PAST",
    "DecoderWithPast",
    "empty_past",
    "present_as_past",
    "verify_past",
    "PARTS",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "PRECISIONS",
    "SEQ_AXES",
    "ExportArtifact",
    "TensorSpec",
    "cache_key",
    "content_sha256",
    "default_cache_dir",
    "external_data_files",
    "read_artifact",
    "to_onnx",
    "UnsupportedOpset",
    "check_opset",
    "supported_opsets",
    "unsupported_reason",
    "VARIANTS",
    "VariantMismatch",
    "census",
    "get_variant",
    "verify_variant",
]
