"""Named model shapes. ``tiny`` is for tests; ``gpt2-small`` is the 124M-parameter GPT-2 shape
(Radford et al. 2019, Table 2: 12 layers, d_model 768); the larger ones are for GPUs."""

from __future__ import annotations

from .transformer import TransformerConfig

PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(
        vocab_size=512, max_positions=128, d_model=64, n_heads=4, n_layers=2, d_ff=256
    ),
    "small": TransformerConfig(
        vocab_size=8192, max_positions=512, d_model=256, n_heads=8, n_layers=4, d_ff=1024
    ),
    "gpt2-small": TransformerConfig(
        vocab_size=50257, max_positions=1024, d_model=768, n_heads=12, n_layers=12, d_ff=3072
    ),
    "gpt2-medium": TransformerConfig(
        vocab_size=50257, max_positions=1024, d_model=1024, n_heads=16, n_layers=24, d_ff=4096
    ),
    "gpt2-large": TransformerConfig(
        vocab_size=50257, max_positions=1024, d_model=1280, n_heads=20, n_layers=36, d_ff=5120
    ),
}


def get_preset(name: str, **overrides) -> TransformerConfig:
    """Return the preset ``name`` with ``overrides`` applied (e.g. ``attention="sdpa"``).

    Raises:
        KeyError: for an unknown preset; the message lists the known ones.
    """
    try:
        config = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return config.replace(**overrides) if overrides else config
