"""Reference transformer (SLP3 ch. 9 decoder) and its presets."""

from .presets import PRESETS, get_preset
from .transformer import (
    ATTENTION_IMPLEMENTATIONS,
    Transformer,
    TransformerConfig,
    build,
    init_weights,
    load,
    save,
)

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "PRESETS",
    "Transformer",
    "TransformerConfig",
    "build",
    "get_preset",
    "init_weights",
    "load",
    "save",
]
