"""The reference transformer: the decoder-only language model of Jurafsky & Martin, *Speech and Language
Processing* (3rd ed. draft), chapter 9 ("The Transformer"), in two arrangements chosen by
``TransformerConfig.family``.

``family="gpt2"`` (Radford et al. 2019)::

    x   = E[w] + P[pos]                                   # token + positional embedding (SLP3 §9.4)
    for each block:                                       # pre-LayerNorm blocks (SLP3 §9.2, Fig. 9.7)
        x = x + MultiHeadAttention(LayerNorm(x))          # causal: position i attends to keys j <= i
        x = x + FFN(LayerNorm(x))                         # FFN = W2 · GELU(W1 x)
    logits = LayerNorm(x) @ E^T                           # unembedding tied to E (SLP3 §9.5)

Attention per head (SLP3 eq. 9.11-9.14): q = x W^Q, k = x W^K, v = x W^V,
softmax(q k^T / sqrt(d_k)) over keys j <= i, heads concatenated, then projected by W^O.

``family="llama"`` (Llama, Qwen2, SmolLM; Touvron et al. 2023) changes four things and keeps the rest::

    x   = E[w]                                            # no positional embedding: RoPE below
    for each block:
        x = x + GroupedQueryAttention(RMSNorm(x))
        x = x + W2 (SiLU(W1 x) * W3 x)                    # SwiGLU FFN (Shazeer 2020), on RMSNorm(x)
    logits = RMSNorm(x) @ E^T                             # or an untied W_U (``tie_embeddings=False``)

- **RoPE** (Su et al. 2021, *RoFormer*): q = x W^Q and k = x W^K as before, then each head's q and k at position
  m are rotated, q' = R_m q, k' = R_m k, where R_m turns the pair of dimensions (i, i + d_head/2) by the angle
  m·theta^(-2i/d_head) (base ``rope_theta``); Hugging Face's ``rotate_half`` layout: q' = q cos + rotate_half(q)
  sin. Scores are q'·k'^T / sqrt(d_head), which depend on the positions only through m - n. v is not rotated.
  The KV cache holds k' (rotated once, at the key's own position).
- **GQA** (Ainslie et al. 2023): W^K and W^V have n_kv_heads·d_head output columns instead of d_model, so there
  are n_kv_heads key/value heads; query head h uses key/value head floor(h / (n_heads / n_kv_heads)), i.e. each
  group of n_heads / n_kv_heads query heads shares one K/V head. n_kv_heads = n_heads is multi-head attention,
  n_kv_heads = 1 multi-query attention. The KV cache is n_kv_heads wide: (B, n_kv_heads, T, d_head).
- **RMSNorm** (Zhang & Sennrich 2019) replaces every LayerNorm: g * x / sqrt(mean(x^2) + eps), no bias.
- **No biases**, except Qwen2's biases on W^Q, W^K and W^V (``qkv_bias=True``).

Two attention implementations compute the same function and are chosen by ``TransformerConfig.attention``
(never by probing what the runtime supports): ``"explicit"`` writes the math above out op by op, ``"sdpa"``
calls :func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal=True``. Both support GQA: the
explicit math repeats each K/V head over its query group (Hugging Face's ``repeat_kv``), SDPA gets
``enable_gqa=True`` (docs/models.md says why).

Generation (SLP3 §10.2 autoregressive decoding) reuses the keys and values of earlier tokens: ``forward`` takes
``past_key_values`` (per block, K and V of the T_past tokens already seen) and an ``attention_mask`` over all
T_past + T key positions (1 = token, 0 = left padding), and with ``use_cache=True`` also returns the present keys
and values (past and new, concatenated). Query i of a step (0-based) attends key j iff j <= T_past + i and key j
is not padding; positions are counted over the mask's tokens (``cumsum - 1``, as Hugging Face GPT-2 generation
does), so a left-padded prompt gets the same positions, and the same logits, as the unpadded one (for both the
learned positional embedding and RoPE). See docs/generation.md.

Parameter names follow a GPT-2-like layout (``wte``, ``wpe``, ``blocks.N.ln_1``...) so that a mapping to the
Hugging Face ``GPT2LMHeadModel`` layout is a rename plus a concatenation of W^Q, W^K, W^V. The Llama family uses
the same names where the role is the same (``ln_1``/``ln_2``/``ln_f`` are its RMSNorms, ``mlp.w1``/``w3``/``w2``
its SwiGLU matrices, ``lm_head`` an untied unembedding); the mapping to Hugging Face ``LlamaForCausalLM`` /
``Qwen2ForCausalLM`` is in :mod:`onnxbench.models.hf_llama` and docs/models.md.
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

from .llama import RMSNorm, SwiGLU, apply_rope, repeat_kv, rope_cos_sin

ATTENTION_IMPLEMENTATIONS = ("explicit", "sdpa")
GELU_APPROXIMATIONS = ("none", "tanh")
#: Architectures of the reference: the GPT-2 arrangement and the Llama family (Llama, Qwen2, SmolLM).
FAMILIES = ("gpt2", "llama")
#: RoPE base of Su et al. 2021 and Llama 1/2 (Hugging Face's default ``rope_theta``).
DEFAULT_ROPE_THETA = 10000.0

#: One block's cache entry: (keys, values), each (B, n_kv_heads, T_past, d_head) (n_kv_heads = n_heads for GPT-2).
KeyValue = tuple[torch.Tensor, torch.Tensor]


def mask_fill_value(dtype: torch.dtype) -> float:
    """Additive attention-bias value for a masked key: half the dtype's most negative finite value.

    -inf would make a fully masked row (a query over left padding only) -inf everywhere, and softmax of it NaN;
    ``finfo(float16).min`` saturates in fp16 (score + min rounds to -inf for any negative score). Half of it
    keeps ``score + fill`` finite for |score| <= |fill|, and exp(fill - max) is exactly 0 in every float dtype,
    so the softmax over the unmasked keys is unchanged. For float16 this is -32752, the value the fp16 mask
    sanitising of exported graphs writes (``onnxbench.export.variants.SAFE_FP16_FILL``).
    """
    return torch.finfo(dtype).min / 2


def causal_mask(past_length: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (T, T_past + T): entry (i, j) is True iff query i of the step (absolute position T_past + i) may
    attend key j, i.e. j <= T_past + i. For T_past = 0 this is the lower triangle (SLP3 §9.1, Fig. 9.4)."""
    query_pos = torch.arange(past_length, past_length + length, device=device)  # (T,)
    key_pos = torch.arange(past_length + length, device=device)  # (T_past + T,)
    return key_pos[None, :] <= query_pos[:, None]


def _eager() -> bool:
    """True outside torch.export / torch.compile / tracing: shape checks that raise run only then (an export
    carries the limits as dynamic-shape bounds instead)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()  # torch >= 2.7
    return not (torch.compiler.is_compiling() or exporting or torch.jit.is_tracing())


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and numerics of the reference transformer.

    Attributes:
        vocab_size: number of token ids V; ``input_ids`` take values in ``[0, V)``.
        max_positions: longest sequence T_max: the size of the positional embedding (GPT-2), the longest
            sequence the model accepts (Llama: RoPE has no table).
        d_model: width of the residual stream.
        n_heads: attention (query) heads; ``d_head = d_model // n_heads``.
        n_layers: number of transformer blocks.
        d_ff: hidden width of the feed-forward network (4 * d_model in GPT-2; W1 and W3's width with SwiGLU).
        layer_norm_eps: epsilon of every norm layer: LayerNorm (GPT-2, 1e-5) or RMSNorm (Llama family).
        attention: ``"explicit"`` (MatMul, scale, causal mask, Softmax, MatMul) or ``"sdpa"``
            (``F.scaled_dot_product_attention(is_causal=True)``).
        gelu_approximate: ``"tanh"`` is GPT-2's GELU (Hendrycks & Gimpel 2016, eq. for the tanh
            approximation; Hugging Face ``gelu_new``); ``"none"`` is the exact erf form. GPT-2 family only.
        family: ``"gpt2"`` (learned positions, LayerNorm, GELU FFN, biases everywhere) or ``"llama"`` (RoPE,
            RMSNorm, SwiGLU FFN, no biases but ``qkv_bias``); see the module docstring.
        n_kv_heads: key/value heads of grouped-query attention (Llama family); ``None`` means ``n_heads``
            (multi-head attention) and is stored as ``n_heads``.
        rope_theta: RoPE base theta (Llama family): 10000 in Llama 2 and SmolLM, 5e5 in Llama 3, 1e6 in Qwen2.5.
        qkv_bias: biases on W^Q, W^K, W^V (Qwen2); Llama family only.
        tie_embeddings: unembedding = E^T; ``False`` gives a separate ``lm_head`` (Llama family only).

    The derived properties :attr:`positions`, :attr:`norm` and :attr:`ffn` name what the family uses.
    :meth:`to_dict` leaves out the Llama-family fields at their defaults, so a GPT-2 config's dict (the export
    cache key, the run header) is what it was before they existed.

    Raises:
        ValueError: one per problem, naming the fix: ``d_model`` not divisible by ``n_heads``, ``n_heads`` not
            divisible by ``n_kv_heads``, an odd ``d_head`` with RoPE, a size that is not positive, an option not
            among the allowed values, or a Llama-family option set on a GPT-2 config (and GELU's on a Llama one).
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
    family: str = "gpt2"
    n_kv_heads: int | None = None
    rope_theta: float = DEFAULT_ROPE_THETA
    qkv_bias: bool = False
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for name in ("vocab_size", "max_positions", "d_model", "n_heads", "n_layers", "d_ff", "n_kv_heads"):
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
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: grouped-query attention "
                "shares each K/V head among n_heads / n_kv_heads query heads; pick n_kv_heads dividing n_heads"
            )
        if self.family == "gpt2":
            llama_only = {"n_kv_heads": (self.n_kv_heads, self.n_heads), "rope_theta": (self.rope_theta,
                          DEFAULT_ROPE_THETA), "qkv_bias": (self.qkv_bias, False),
                          "tie_embeddings": (self.tie_embeddings, True)}
            for name, (value, default) in llama_only.items():
                if value != default:
                    raise ValueError(f"{name}={value!r} needs family='llama'; the GPT-2 arrangement has "
                                     f"{name}={default!r}")
        else:
            if self.gelu_approximate != "tanh":
                raise ValueError(f"gelu_approximate={self.gelu_approximate!r} applies to family='gpt2' only; "
                                 "the llama family's feed-forward network is SwiGLU")
            if self.d_head % 2:
                raise ValueError(f"d_head={self.d_head} (d_model {self.d_model} / n_heads {self.n_heads}) is odd; "
                                 "RoPE rotates pairs of dimensions and needs an even d_head")
            if not self.rope_theta > 0:
                raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")

    @property
    def d_head(self) -> int:
        """Per-head width d_k = d_model / n_heads."""
        return self.d_model // self.n_heads

    @property
    def kv_groups(self) -> int:
        """Query heads per K/V head, n_heads / n_kv_heads (1: multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def positions(self) -> str:
        """``"learned"`` (GPT-2's positional embedding P) or ``"rope"``."""
        return "learned" if self.family == "gpt2" else "rope"

    @property
    def norm(self) -> str:
        """``"layernorm"`` or ``"rmsnorm"``."""
        return "layernorm" if self.family == "gpt2" else "rmsnorm"

    @property
    def ffn(self) -> str:
        """``"gelu"`` (W2 GELU(W1 x)) or ``"swiglu"`` (W2 (SiLU(W1 x) * W3 x))."""
        return "gelu" if self.family == "gpt2" else "swiglu"

    @property
    def n_params(self) -> int:
        """Parameter count, the tied embedding E counted once.

        GPT-2: E, P, per block 4 projections with bias, the FFN and two LayerNorms, and the final LayerNorm.
        Llama family: E, per block W^Q and W^O (d_model x d_model), W^K and W^V (d_model x n_kv_heads·d_head),
        Qwen2's q/k/v biases, the three SwiGLU matrices and two RMSNorm gains, the final RMSNorm gain, and an
        untied W_U (V x d_model) when ``tie_embeddings`` is off.
        """
        d, f = self.d_model, self.d_ff
        if self.family == "gpt2":
            per_block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
            return self.vocab_size * d + self.max_positions * d + self.n_layers * per_block + 2 * d
        kv = self.n_kv_heads * self.d_head
        attention = 2 * d * d + 2 * d * kv + ((d + 2 * kv) if self.qkv_bias else 0)
        per_block = attention + 3 * d * f + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * per_block + d + head

    def replace(self, **changes) -> TransformerConfig:
        """Return a copy with ``changes`` applied (validated again). A config with as many K/V heads as query
        heads keeps that property when ``n_heads`` changes (unless ``n_kv_heads`` is given too)."""
        if "n_heads" in changes and "n_kv_heads" not in changes and self.n_kv_heads == self.n_heads:
            changes["n_kv_heads"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dict, leaving out the Llama-family fields at their defaults (``n_kv_heads`` equal to
        ``n_heads`` included) and, for the llama family, the unused default ``gelu_approximate``: a GPT-2
        config gives exactly the keys it gave before the Llama family existed."""
        data = dataclasses.asdict(self)
        for name, default in _OMITTED_AT_DEFAULT.items():
            if data[name] == default:
                del data[name]
        if data["n_kv_heads"] == self.n_heads:
            del data["n_kv_heads"]
        if self.family != "gpt2" and data["gelu_approximate"] == "tanh":
            del data["gelu_approximate"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        """Build a config from :meth:`to_dict` output (a missing key takes its default, so dicts written before
        a field existed still load).

        Raises:
            ValueError: on unknown keys (names them), or as the constructor does.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


#: Fields left out of :meth:`TransformerConfig.to_dict` at these values (``n_kv_heads``: when equal to n_heads).
_OMITTED_AT_DEFAULT = {"family": "gpt2", "rope_theta": DEFAULT_ROPE_THETA, "qkv_bias": False,
                       "tie_embeddings": True}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate W^Q, W^K, W^V and W^O (SLP3 §9.1, eq. 9.11-9.14); in the
    Llama family with RoPE applied to q and k and grouped-query K/V heads (module docstring).

    ``forward(x, mask=None, past=None, use_cache=False, rope=None)``:

    - ``x``: float (B, T, d_model), dtype of the module's parameters.
    - ``mask``: bool (B or 1, 1, T, T_past + T), True where query i may attend key j; ``None`` means the causal
      mask alone (:func:`causal_mask`).
    - ``past``: (keys, values) of earlier tokens, each (B, n_kv_heads, T_past, d_head); T_past may be 0.
    - ``rope``: (cos, sin), each (B or 1, T, d_head), of the step's positions (Llama family;
      :func:`onnxbench.models.llama.rope_cos_sin`); ``None`` means positions T_past .. T_past + T - 1 (the
      module used on its own, e.g. the ``attention`` export part). Ignored by the GPT-2 family.
    - returns (B, T, d_model), and with ``use_cache`` also the present (keys, values), each
      (B, n_kv_heads, T_past + T, d_head), keys after RoPE.

    A query row with no key allowed (left padding only) gives a finite output (a select or additive fill of
    :func:`mask_fill_value`, never -inf); it belongs to a padded position whose logits are not used.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.d_head = config.d_head
        self.implementation = config.attention
        self.rope_theta = config.rope_theta if config.positions == "rope" else None
        gpt2 = config.family == "gpt2"
        qkv_bias = gpt2 or config.qkv_bias
        d_kv = config.n_kv_heads * config.d_head
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)  # W^Q
        self.k_proj = nn.Linear(config.d_model, d_kv, bias=qkv_bias)  # W^K
        self.v_proj = nn.Linear(config.d_model, d_kv, bias=qkv_bias)  # W^V
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=gpt2)  # W^O

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: KeyValue | None = None,
                use_cache: bool = False, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, KeyValue]:
        B, T, C = x.shape
        # (B, T, d_model) -> (B, n_heads, T, d_head); k and v: (B, n_kv_heads, T, d_head)
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        if self.rope_theta is not None:
            if rope is None:
                start = 0 if past is None else past[0].shape[2]
                positions = torch.arange(start, start + T, device=x.device)[None].expand(B, T)  # (B, T)
                rope = rope_cos_sin(positions, self.d_head, self.rope_theta, q.dtype)
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # q' = R_m q, k' = R_m k
        if past is not None:
            # dim=-2, not 2: onnxscript's past-aware MultiHeadAttention fusion matches Concat(axis=-2) only
            # (docs/generation.md)
            k = torch.cat([past[0], k], dim=-2)  # (B, H_kv, T_past + T, d_head)
            v = torch.cat([past[1], v], dim=-2)
            if mask is None:
                mask = causal_mask(k.shape[2] - T, T, x.device)  # (T, T_past + T)
        # GQA: each K/V head serves n_heads / n_kv_heads query heads. The explicit math repeats each K/V head over
        # its group (Hugging Face's repeat_kv); SDPA is told (enable_gqa), so that the dynamo export at opset 23
        # gives ONNX Attention the n_kv_heads-wide K/V, except under the TorchScript exporter, which cannot
        # convert enable_gqa (docs/models.md).
        groups = self.n_heads // self.n_kv_heads
        if self.implementation == "sdpa":
            gqa = {}
            if groups > 1 and torch.jit.is_tracing():
                k_heads, v_heads = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, T_past + T, d_head)
            else:
                k_heads, v_heads = k, v
                if groups > 1:
                    gqa = {"enable_gqa": True}
            if mask is None:
                y = F.scaled_dot_product_attention(q, k_heads, v_heads, is_causal=True, **gqa)  # (B, H, T, d_head)
            else:
                # An additive bias with a finite fill, not a bool mask: a bool mask becomes -inf, and a fully
                # padded row then gives NaN (in torch and in the exported graph alike).
                bias = torch.where(mask, 0.0, mask_fill_value(q.dtype)).to(q.dtype)  # (B|1, 1, T, T_past + T)
                y = F.scaled_dot_product_attention(q, k_heads, v_heads, attn_mask=bias, **gqa)  # (B, H, T, d_head)
        else:
            k_heads, v_heads = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, T_past + T, d_head)
            scores = (q @ k_heads.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H, T, T_past + T)
            # A select, not an additive mask, with the dtype's own finite minimum as the fill: fp16 never sees
            # -inf - -inf = NaN, and a row with every key masked (left padding) becomes uniform, not NaN.
            if mask is None:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # keys j <= i
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
            y = torch.softmax(scores, dim=-1) @ v_heads  # (B, H, T, d_head)
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, d_model)
        return (y, (k, v)) if use_cache else y


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
    """Pre-norm transformer block (SLP3 §9.2): residual stream (B, T, d_model) in and out. GPT-2: LayerNorm and
    the GELU FFN; Llama family: RMSNorm and SwiGLU."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = _norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _norm(config)
        self.mlp = FeedForward(config) if config.ffn == "gelu" else SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: KeyValue | None = None,
                use_cache: bool = False, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, KeyValue]:
        """``mask``, ``past``, ``use_cache`` and ``rope`` as in :class:`CausalSelfAttention`."""
        a = self.attn(self.ln_1(x), mask, past, use_cache, rope)
        a, present = a if use_cache else (a, None)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return (x, present) if use_cache else x


def _norm(config: TransformerConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
    return RMSNorm(config.d_model, eps=config.layer_norm_eps)


class Transformer(nn.Module):
    """Decoder-only transformer language model.

    ``forward(input_ids)``: ``input_ids`` int64 (B, T) with values in [0, vocab_size) and
    1 <= T <= max_positions; returns ``logits`` (B, T, vocab_size) in the parameters' dtype.

    ``forward(input_ids, attention_mask=None, past_key_values=None, use_cache=False)`` (a prefill when
    ``past_key_values`` is None or T_past = 0, a decode step otherwise):

    - ``attention_mask``: int64 or bool (B, T_past + T), 1 for a token, 0 for (left) padding; ``None`` means
      all ones. Positions are ``clamp(cumsum(mask) - 1, min=0)`` over the whole row, the last T of them for this
      step (Hugging Face ``GPT2LMHeadModel.prepare_inputs_for_generation`` uses ``cumsum - 1`` too, and fills
      padded positions with 1 instead of 0; a padded position's logits are meaningless either way).
    - ``past_key_values``: one (keys, values) per block, each (B, n_kv_heads, T_past, d_head), T_past >= 0
      (n_kv_heads = n_heads unless the config has grouped-query attention).
    - returns ``logits`` (B, T, vocab_size); with ``use_cache=True`` the tuple ``(logits, present)``, where
      ``present`` holds one (keys, values) per block, each (B, n_kv_heads, T_past + T, d_head).

    The same positions drive the learned positional embedding (GPT-2) or the RoPE angles (Llama family, one
    (cos, sin) pair computed here and shared by every block).

    Raises:
        ValueError: if T is 0 (an empty prompt), T_past + T exceeds ``max_positions``, the mask is not
            (B, T_past + T), or ``past_key_values`` does not hold n_layers (keys, values) pairs of shape
            (B, n_kv_heads, T_past, d_head). Checked eagerly; an ONNX export instead carries the limits as the
            size of the positional table and its dynamic-axis bounds.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)  # E
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.max_positions, config.d_model)  # positional embedding
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = _norm(config)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # W_U

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: list[KeyValue] | tuple[KeyValue, ...] | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[KeyValue]]:
        B, T = input_ids.shape
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if _eager():
            self._check_inputs(input_ids, attention_mask, past_key_values, past_length)
        if attention_mask is None and past_key_values is None:
            positions = torch.arange(T, device=input_ids.device)  # (T,)
            mask = None  # causal only: built in each attention
            if self.config.positions == "rope":
                # (B, T), not a broadcast (1, T): ONNX RotaryEmbedding (opset 23), which torch's exporter fuses
                # this into, takes per-batch cos/sin and does not broadcast them (docs/models.md)
                positions = positions[None].expand(B, T)
        else:
            if attention_mask is None:
                attention_mask = torch.ones(B, past_length + T, dtype=torch.int64, device=input_ids.device)
            tokens = attention_mask.to(torch.int64)  # (B, T_past + T)
            positions = (tokens.cumsum(-1) - 1).clamp(min=0)[:, past_length:]  # (B, T)
            # (1, 1, T, T_past + T) causal & (B, 1, 1, T_past + T) not padding -> (B, 1, T, T_past + T)
            mask = causal_mask(past_length, T, input_ids.device)[None, None] & tokens.bool()[:, None, None, :]
        if self.config.positions == "learned":
            x = self.wte(input_ids) + self.wpe(positions)  # (B, T, d_model)
            rope = None
        else:
            x = self.wte(input_ids)  # (B, T, d_model)
            rope = rope_cos_sin(positions, self.config.d_head, self.config.rope_theta, x.dtype)  # (B|1, T, d_head)
        present = []
        for n, block in enumerate(self.blocks):
            past = None if past_key_values is None else past_key_values[n]
            x = block(x, mask, past, use_cache, rope)
            if use_cache:
                x, kv = x
                present.append(kv)  # each (B, H_kv, T_past + T, d_head)
        x = self.ln_f(x)
        if self.config.tie_embeddings:
            logits = x @ self.wte.weight.T  # tied unembedding: (B, T, vocab_size)
        else:
            logits = self.lm_head(x)  # (B, T, vocab_size)
        return (logits, present) if use_cache else logits

    def _check_inputs(self, input_ids, attention_mask, past_key_values, past_length: int) -> None:
        config = self.config
        B, T = input_ids.shape
        if T == 0:
            raise ValueError("input_ids has no tokens (T = 0): a prompt or a decode step needs at least one token")
        if past_length + T > config.max_positions:
            what = f"past {past_length} + new {T} tokens" if past_length else f"sequence length {T}"
            raise ValueError(f"{what} exceeds max_positions={config.max_positions}")
        if past_key_values is not None:
            expected = (B, config.n_kv_heads, past_length, config.d_head)
            if len(past_key_values) != config.n_layers:
                raise ValueError(f"past_key_values holds {len(past_key_values)} entries; the model has "
                                 f"n_layers={config.n_layers} (one (keys, values) pair per block)")
            for n, kv in enumerate(past_key_values):
                if len(kv) != 2 or any(tuple(t.shape) != expected for t in kv):
                    shapes = [tuple(t.shape) for t in kv]
                    raise ValueError(f"past_key_values[{n}] has shapes {shapes}; expected (keys, values), each "
                                     f"(B, n_kv_heads, T_past, d_head) = {expected}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past_length + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected (B, T_past + T) = "
                             f"({B}, {past_length + T}): one entry per past and new token")

    def num_parameters(self) -> int:
        """Unique parameters (the tied E counted once)."""
        return sum(p.numel() for p in self.parameters())


def init_weights(model: Transformer, seed: int) -> Transformer:
    """Fill ``model`` deterministically from ``seed`` with GPT-2's initialisation (Radford et al. 2019,
    §2.3: N(0, 0.02) weights, zero biases, unit LayerNorm, residual projections scaled by 1/sqrt(2 n_layers)).
    The Llama family gets Hugging Face's ``LlamaPreTrainedModel`` initialisation: N(0, 0.02) for every matrix
    and the embedding (``initializer_range``), zero biases, unit RMSNorm gains, no residual scaling.

    Parameters are filled in ``named_parameters`` order from one CPU ``torch.Generator``, so the same seed
    gives the same weights on every machine.
    """
    gen = torch.Generator().manual_seed(seed)
    n_layers = model.config.n_layers
    scale_residual = model.config.family == "gpt2"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = 0.02
                if scale_residual and name.endswith(("o_proj.weight", "fc_out.weight")):
                    std = 0.02 / math.sqrt(2 * n_layers)
                # In place: a temporary as large as the weight would double the peak memory of building a
                # large model (e.g. a 2.4 GB embedding); the values are those of randn(...) * std.
                torch.randn(p.shape, generator=gen, dtype=torch.float32, out=p.data).mul_(std)
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
