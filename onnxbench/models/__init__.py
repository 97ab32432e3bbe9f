"""Reference transformer (SLP3 ch. 9 decoder; GPT-2 arrangement and Llama family), its presets and checkpoints."""

from .checkpoint import checkpoint_config, checkpoint_sha256, load_checkpoint
from .generation import Generation, GenerationError, check_generation, greedy_generate, left_pad
from .presets import PRESETS, PUBLISHED_PARAMS, get_preset
from .transformer import (
    ATTENTION_IMPLEMENTATIONS,
    FAMILIES,
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
    "FAMILIES",
    "Generation",
    "GenerationError",
    "KeyValue",
    "PRESETS",
    "PUBLISHED_PARAMS",
    "Transformer",
    "TransformerConfig",
    "build",
    "causal_mask",
    "check_generation",
    "checkpoint_config",
    "checkpoint_sha256",
    "get_preset",
    "greedy_generate",
    "init_weights",
    "left_pad",
    "load",
    "load_checkpoint",
    "mask_fill_value",
    "save",
]
