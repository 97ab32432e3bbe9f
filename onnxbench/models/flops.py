"""Analytic work model of the reference transformer: matmul FLOPs of one forward pass (a prefill).

Counting follows Kaplan et al. 2020, *Scaling Laws for Neural Language Models*, §2.1 and Table 1: a
multiply-accumulate is 2 FLOPs, and per token and layer the forward pass costs 2·(3·d_model·d_attn) for the
Q/K/V projections, 2·T·d_attn each for q·k^T and the weighted sum of v, 2·d_attn·d_model for W^O and
2·2·d_model·d_ff for the feed-forward network; the unembedding costs 2·d_model·V per token. Element-wise work
(LayerNorm, softmax, GELU, residual adds, embedding gathers) is lower order and left out, as in the paper.

Llama family: W^K and W^V are d_model × n_kv_heads·d_head (GQA), so the projections cost
2·d_model·(d_model + 2·n_kv_heads·d_head) per token; the score and weighted-value products still run over all
n_heads query heads (d_attn = d_model); SwiGLU has three d_model × d_ff matrices (2·3·d_model·d_ff). RoPE and
RMSNorm are element-wise and left out.

The attention score terms count the full T×T square. The decomposed graph computes all of it (the causal
mask is applied after the product); a causal-aware fused kernel skips about half, so its achieved FLOP/s
read against this count is an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from .transformer import TransformerConfig


@dataclass(frozen=True)
class ForwardFlops:
    """Matmul FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` tokens, split by term."""

    qkv: float
    scores: float
    weighted_values: float
    out_proj: float
    ffn: float
    unembed: float

    @property
    def attention(self) -> float:
        """FLOPs of every block's attention (projections included), the ``part='attention'`` work times
        n_layers."""
        return self.qkv + self.scores + self.weighted_values + self.out_proj

    @property
    def total(self) -> float:
        return self.attention + self.ffn + self.unembed


def forward_flops(config: TransformerConfig, batch: int, seq_len: int) -> ForwardFlops:
    """Matmul FLOPs of the full model's forward pass at (batch, seq_len) (Kaplan et al. 2020, Table 1).

    Raises:
        ValueError: if batch or seq_len is < 1.
    """
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and seq_len must be >= 1, got {batch}, {seq_len}")
    tokens = batch * seq_len
    d, f, n = config.d_model, config.d_ff, config.n_layers
    d_kv = config.n_kv_heads * config.d_head  # = d_model without GQA
    ffn_matrices = 3 if config.ffn == "swiglu" else 2
    return ForwardFlops(
        qkv=n * 2 * tokens * d * (d + 2 * d_kv),
        scores=n * 2 * tokens * seq_len * d,
        weighted_values=n * 2 * tokens * seq_len * d,
        out_proj=n * 2 * tokens * d * d,
        ffn=n * 2 * ffn_matrices * tokens * d * f,
        unembed=2 * tokens * d * config.vocab_size,
    )


def attention_flops(config: TransformerConfig, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of ONE block's attention (Q/K/V projections, q·k^T, softmax·v, W^O) at (batch, seq_len)."""
    return forward_flops(config, batch, seq_len).attention / config.n_layers


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
    """Forward FLOPs per token of a prefill of ``seq_len`` tokens: 2·N_matmul + 4·n_layers·T·d_model
    (Kaplan et al. 2020, Table 1, with the context term at T)."""
    return forward_flops(config, 1, seq_len).total / seq_len
