"""The reference transformer: the decoder-only language model of Jurafsky & Martin, *Speech and Language
Processing* (3rd ed. draft), chapter 9 ("The Transformer"), in the GPT-2 arrangement.

    x   = E[w] + P[pos]                                   # token + positional embedding (SLP3 §9.4)
    for each block:                                       # pre-LayerNorm blocks (SLP3 §9.2, Fig. 9.7)
        x = x + MultiHeadAttention(LayerNorm(x))          # causal: position i attends to keys j <= i
        x = x + FFN(LayerNorm(x))                         # FFN = W2 · GELU(W1 x)
    logits = LayerNorm(x) @ E^T                           # unembedding tied to E (SLP3 §9.5)

Attention per head (SLP3 eq. 9.11-9.14): q = x W^Q, k = x W^K, v = x W^V,
softmax(q k^T / sqrt(d_k)) over keys j <= i, heads concatenated, then projected by W^O.

Two attention implementations compute the same function and are chosen by ``TransformerConfig.attention``
(never by probing what the runtime supports): ``"explicit"`` writes the math above out op by op, ``"sdpa"``
calls :func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal=True``.

Parameter names follow a GPT-2-like layout (``wte``, ``wpe``, ``blocks.N.ln_1``...) so that a mapping to the
Hugging Face ``GPT2LMHeadModel`` layout is a rename plus a concatenation of W^Q, W^K, W^V.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_IMPLEMENTATIONS = ("explicit", "sdpa")
GELU_APPROXIMATIONS = ("none", "tanh")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and numerics of the reference transformer.

    Attributes:
        vocab_size: number of token ids V; ``input_ids`` take values in ``[0, V)``.
        max_positions: longest sequence T_max the positional embedding covers.
        d_model: width of the residual stream.
        n_heads: attention heads; ``d_head = d_model // n_heads``.
        n_layers: number of transformer blocks.
        d_ff: hidden width of the feed-forward network (4 * d_model in GPT-2).
        layer_norm_eps: epsilon of every LayerNorm (1e-5 in GPT-2).
        attention: ``"explicit"`` (MatMul, scale, causal mask, Softmax, MatMul) or ``"sdpa"``
            (``F.scaled_dot_product_attention(is_causal=True)``).
        gelu_approximate: ``"tanh"`` is GPT-2's GELU (Hendrycks & Gimpel 2016, eq. for the tanh
            approximation; Hugging Face ``gelu_new``); ``"none"`` is the exact erf form.

    Raises:
        ValueError: if ``d_model`` is not divisible by ``n_heads``, a size is not positive, or an option
            is not one of the allowed values.
    """

    vocab_size: int = 512
    max_positions: int = 128
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    layer_norm_eps: float = 1e-5
    attention: str = "explicit"
    gelu_approximate: str = "tanh"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_positions", "d_model", "n_heads", "n_layers", "d_ff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; d_head must be an integer"
            )
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if self.gelu_approximate not in GELU_APPROXIMATIONS:
            raise ValueError(
                f"gelu_approximate must be one of {GELU_APPROXIMATIONS}, got {self.gelu_approximate!r}"
            )

    @property
    def d_head(self) -> int:
        """Per-head width d_k = d_model / n_heads."""
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Parameter count (tied embedding E counted once): E, P, per block 4 projections with bias, the FFN
        and two LayerNorms, and the final LayerNorm."""
        d, f = self.d_model, self.d_ff
        per_block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
        return self.vocab_size * d + self.max_positions * d + self.n_layers * per_block + 2 * d

    def replace(self, **changes) -> TransformerConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        """Build a config from :meth:`to_dict` output.

        Raises:
            ValueError: on unknown keys (names them).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate W^Q, W^K, W^V and W^O (SLP3 §9.1, eq. 9.11-9.14).

    Input and output: float tensor (B, T, d_model), dtype of the module's parameters.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.d_head = config.d_head
        self.implementation = config.attention
        self.q_proj = nn.Linear(config.d_model, config.d_model)  # W^Q
        self.k_proj = nn.Linear(config.d_model, config.d_model)  # W^K
        self.v_proj = nn.Linear(config.d_model, config.d_model)  # W^V
        self.o_proj = nn.Linear(config.d_model, config.d_model)  # W^O

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, d_model) -> (B, n_heads, T, d_head)
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        if self.implementation == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d_head)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # keys j <= i
            # A select, not an additive mask: the diagonal is always kept, so no row is fully masked,
            # and the fill value is the dtype's own finite minimum, so fp16 never sees -inf - -inf = NaN.
            scores = torch.where(causal, scores, torch.finfo(scores.dtype).min)
            y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, d_head)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, d_model)
        return self.o_proj(y)


class FeedForward(nn.Module):
    """Position-wise FFN: W2 · GELU(W1 x + b1) + b2 (SLP3 §9.2). (B, T, d_model) -> (B, T, d_model)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.d_model, config.d_ff)
        self.fc_out = nn.Linear(config.d_ff, config.d_model)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x), approximate=self.approximate))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (SLP3 §9.2): residual stream (B, T, d_model) in and out."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """Decoder-only transformer language model.

    ``forward(input_ids)``: ``input_ids`` int64 (B, T) with values in [0, vocab_size) and
    1 <= T <= max_positions; returns ``logits`` (B, T, vocab_size) in the parameters' dtype.

    Raises:
        ValueError: if T exceeds ``max_positions`` (checked eagerly; an ONNX export instead carries the
            limit as the size of the positional table).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)  # E
        self.wpe = nn.Embedding(config.max_positions, config.d_model)  # positional embedding
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing() and T > self.config.max_positions:
            raise ValueError(f"sequence length {T} exceeds max_positions={self.config.max_positions}")
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.wte(input_ids) + self.wpe(positions)  # (B, T, d_model)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.wte.weight.T  # tied unembedding: (B, T, vocab_size)

    def num_parameters(self) -> int:
        """Unique parameters (the tied E counted once)."""
        return sum(p.numel() for p in self.parameters())


def init_weights(model: Transformer, seed: int) -> Transformer:
    """Fill ``model`` deterministically from ``seed`` with GPT-2's initialisation (Radford et al. 2019,
    §2.3: N(0, 0.02) weights, zero biases, unit LayerNorm, residual projections scaled by 1/sqrt(2 n_layers)).

    The generator is a CPU ``torch.Generator``, so the same seed gives the same weights on every machine.
    """
    gen = torch.Generator().manual_seed(seed)
    n_layers = model.config.n_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = 0.02
                if name.endswith(("o_proj.weight", "fc_out.weight")):
                    std = 0.02 / math.sqrt(2 * n_layers)
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)
    return model


def build(config: TransformerConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> Transformer:
    """Build the reference transformer in eval mode with deterministic weights.

    Args:
        config: model shape and attention implementation.
        seed: weight seed (same seed, same weights, any machine).
        dtype: parameter dtype (torch.float32 default; float16/bfloat16 cast after initialisation).
    """
    model = init_weights(Transformer(config), seed)
    return model.to(dtype).eval()


def save(model: Transformer, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tied E stored once) into ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    save_model(model, str(directory / "model.safetensors"))
    return directory


def load(directory: str | Path) -> Transformer:
    """Load a model written by :func:`save`.

    Raises:
        FileNotFoundError: if ``config.json`` or ``model.safetensors`` is missing.
    """
    from safetensors.torch import load_model

    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (expected a directory written by save())")
    config = TransformerConfig.from_dict(json.loads((directory / "config.json").read_text()))
    model = Transformer(config)
    load_model(model, str(directory / "model.safetensors"))
    return model.eval()
