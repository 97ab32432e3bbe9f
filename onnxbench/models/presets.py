"""Named model shapes, random weights from the seed.

GPT-2 arrangement: ``tiny`` is for tests; ``gpt2-small`` is the 124M-parameter GPT-2 shape (Radford et al. 2019,
Table 2: 12 layers, d_model 768); the larger ones are for GPUs.

Llama family (RoPE, RMSNorm, SwiGLU, grouped-query attention; docs/models.md has the table with parameter
counts against the published ones): ``llama-tiny`` is for tests (2 K/V heads for 4 query heads, so GQA is
exercised); the others have the shapes of public checkpoints (their ``config.json`` on the Hugging Face Hub),
with random weights:

- ``smollm-135m``: HuggingFaceTB/SmolLM-135M (``LlamaForCausalLM``; SmolLM2-135M has the same shapes with
  rope_theta 1e5 and 8192 positions).
- ``qwen2.5-0.5b``: Qwen/Qwen2.5-0.5B (``Qwen2ForCausalLM``: q/k/v biases). ``max_positions`` is 4096, not the
  checkpoint's 32768: the benchmark's own limit (every dynamic-axis bound, TensorRT optimization profile and
  preallocated cache is sized by it; RoPE itself has no table, so it changes no weight).
- ``llama-3.2-1b``: meta-llama/Llama-3.2-1B, **the shape only**: the checkpoint's ``rope_scaling``
  (``rope_type="llama3"``, factor 32) is not implemented, so this is Llama 3's unscaled RoPE at theta 5e5, and
  ``max_positions`` is 8192, the pre-extension context that RoPE was trained for
  (``original_max_position_embeddings``), not the scaled 131072.
"""

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
    "llama-tiny": TransformerConfig(
        family="llama", vocab_size=512, max_positions=128, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2,
        d_ff=192, layer_norm_eps=1e-5, rope_theta=10000.0,
    ),
    "smollm-135m": TransformerConfig(
        family="llama", vocab_size=49152, max_positions=2048, d_model=576, n_heads=9, n_kv_heads=3, n_layers=30,
        d_ff=1536, layer_norm_eps=1e-5, rope_theta=10000.0,
    ),
    "qwen2.5-0.5b": TransformerConfig(
        family="llama", vocab_size=151936, max_positions=4096, d_model=896, n_heads=14, n_kv_heads=2,
        n_layers=24, d_ff=4864, layer_norm_eps=1e-6, rope_theta=1000000.0, qkv_bias=True,
    ),
    "llama-3.2-1b": TransformerConfig(
        family="llama", vocab_size=128256, max_positions=8192, d_model=2048, n_heads=32, n_kv_heads=8,
        n_layers=16, d_ff=8192, layer_norm_eps=1e-5, rope_theta=500000.0,
    ),
}

#: Parameter counts published on the model cards of the checkpoints whose shapes the Llama-family presets copy,
#: as rounded there: SmolLM-135M "135M", Qwen2.5-0.5B "0.49B" (0.36B non-embedding), Llama-3.2-1B "1.23B".
PUBLISHED_PARAMS = {"smollm-135m": 135e6, "qwen2.5-0.5b": 0.49e9, "llama-3.2-1b": 1.23e9}


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
