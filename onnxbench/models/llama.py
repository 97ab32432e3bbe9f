"""Building blocks of the Llama family of the reference transformer (Llama, Qwen2, SmolLM): rotary positions
(RoPE), RMSNorm, the SwiGLU feed-forward network and the key/value head sharing of grouped-query attention.

The transformer itself (:mod:`onnxbench.models.transformer`) assembles them when ``TransformerConfig.family`` is
``"llama"``; the equations and the sources are in its docstring and in docs/models.md. Each function here matches
Hugging Face ``transformers/models/llama/modeling_llama.py`` (``rotate_half``, ``apply_rotary_pos_emb``,
``LlamaRotaryEmbedding`` with ``rope_type="default"``, ``LlamaRMSNorm``, ``LlamaMLP``, ``repeat_kv``) term by term,
so that the ONNX exports of both have the same structure (what onnxscript's ONNX Runtime fusions look for).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (as Hugging Face computes RMSNorm and RoPE angles), else ``dtype`` itself:
    a float64 reference stays float64 throughout."""
    return torch.promote_types(dtype, torch.float32)


def rope_inverse_frequencies(d_head: int, theta: float) -> torch.Tensor:
    """float32 (d_head / 2,): theta^(-2i / d_head) for i = 0 .. d_head/2 - 1 (Su et al. 2021, *RoFormer*, eq. 15).

    Computed in float32 exactly as Hugging Face's default RoPE (``1 / base ** (arange(0, d, 2).float() / d)``),
    whatever the model's dtype, so that a float64 reference and an fp32 graph rotate by the same frequencies
    (the model definition), and differ only in how precisely they evaluate the angles.
    """
    return 1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.int64).to(torch.float32) / d_head))


def rope_cos_sin(positions: torch.Tensor, d_head: int, theta: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles of each position, in Hugging Face's half-split layout.

    Args:
        positions: int64 (B or 1, T), absolute token positions (``cumsum(mask) - 1``).
        d_head: per-head width (even).
        theta: RoPE base.
        dtype: dtype of the result (the model's).

    Returns:
        (cos, sin), each (B or 1, T, d_head): angle m·theta_i for position m in both halves
        (``cat(freqs, freqs)``), evaluated in float32 at least and cast to ``dtype``.
    """
    compute = _compute_dtype(dtype)
    freqs = positions[..., None].to(compute) * rope_inverse_frequencies(d_head, theta).to(
        device=positions.device, dtype=compute)  # (B|1, T, d_head / 2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (B|1, T, d_head)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis: Hugging Face's ``rotate_half``, which pairs
    dimension i with i + d_head/2 (RoFormer pairs 2i with 2i + 1; the two differ by a fixed permutation of
    W^Q and W^K's output rows, which Hugging Face's Llama conversion applies to Meta's weights)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, heads, T, d_head) by position: ``x * cos + rotate_half(x) * sin`` with cos/sin
    (B or 1, T, d_head) broadcast over the heads (Su et al. 2021, eq. 34, half-split layout)."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, n_kv_heads, T, d_head) -> (B, n_kv_heads * groups, T, d_head): K/V head j serves query heads
    j*groups .. (j+1)*groups - 1 (Ainslie et al. 2023, GQA; Hugging Face ``repeat_kv``, i.e.
    ``repeat_interleave(x, groups, dim=1)`` written as Unsqueeze/Expand/Reshape)."""
    if groups == 1:
        return x
    B, H_kv, T, d = x.shape
    return x[:, :, None, :, :].expand(B, H_kv, groups, T, d).reshape(B, H_kv * groups, T, d)


class RMSNorm(nn.Module):
    """Root-mean-square layer normalisation (Zhang & Sennrich 2019, eq. 4): y = g * x / sqrt(mean(x^2) + eps),
    no centring, no bias. (B, T, d_model) -> (B, T, d_model) in the input's dtype; fp16/bf16 inputs are
    normalised in float32 and the gain applied after the cast back (Hugging Face ``LlamaRMSNorm``)."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))  # g
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(_compute_dtype(dtype))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class SwiGLU(nn.Module):
    """Gated feed-forward network FFN_SwiGLU(x) = W2 (SiLU(W1 x) * W3 x) (Shazeer 2020, *GLU Variants Improve
    Transformer*, eq. 6; SiLU = Swish_1), no biases. (B, T, d_model) -> (B, T, d_model).

    W1 is Hugging Face's ``gate_proj``, W3 its ``up_proj``, W2 its ``down_proj`` (Meta's Llama code calls them
    w1, w3, w2 as here).
    """

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)  # gate: SiLU(W1 x)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)  # up: W3 x
        self.w2 = nn.Linear(d_ff, d_model, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
