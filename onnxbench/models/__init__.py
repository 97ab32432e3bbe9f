"""Reference transformer (SLP3 ch. 9 decoder) and its presets."""

from .generation import Generation, GenerationError, check_generation, greedy_generate, left_pad
from .presets import PRESETS, get_preset
from .transformer import (
    ATTENTION_IMPLEMENTATIONS,
    KeyValue,
    Transformer,
    TransformerConfig,
    build,
    causal_mask,
    init_weights,
    load,
    mask_fill_value,
    save,
)

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "Generation",
    "GenerationError",
    "KeyValue",
    "PRESETS",
    "Transformer",
    "TransformerConfig",
    "build",
    "causal_mask",
    "check_generation",
    "get_preset",
    "greedy_generate",
    "init_weights",
    "left_pad",
    "load",
    "mask_fill_value",
    "save",
]
