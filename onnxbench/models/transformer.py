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

Generation (SLP3 §10.2 autoregressive decoding) reuses the keys and values of earlier tokens: ``forward`` takes
``past_key_values`` (per block, K and V of the T_past tokens already seen) and an ``attention_mask`` over all
T_past + T key positions (1 = token, 0 = left padding), and with ``use_cache=True`` also returns the present keys
and values (past and new, concatenated). Query i of a step (0-based) attends key j iff j <= T_past + i and key j
is not padding; positions are counted over the mask's tokens (``cumsum - 1``, as Hugging Face GPT-2 generation
does), so a left-padded prompt gets the same positions, and the same logits, as the unpadded one.
See docs/generation.md.

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

#: One block's cache entry: (keys, values), each (B, n_heads, T_past, d_head).
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

    ``forward(x, mask=None, past=None, use_cache=False)``:

    - ``x``: float (B, T, d_model), dtype of the module's parameters.
    - ``mask``: bool (B or 1, 1, T, T_past + T), True where query i may attend key j; ``None`` means the causal
      mask alone (:func:`causal_mask`).
    - ``past``: (keys, values) of earlier tokens, each (B, n_heads, T_past, d_head); T_past may be 0.
    - returns (B, T, d_model), and with ``use_cache`` also the present (keys, values), each
      (B, n_heads, T_past + T, d_head).

    A query row with no key allowed (left padding only) gives a finite output (a select or additive fill of
    :func:`mask_fill_value`, never -inf); it belongs to a padded position whose logits are not used.
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: KeyValue | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, KeyValue]:
        B, T, C = x.shape
        # (B, T, d_model) -> (B, n_heads, T, d_head)
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        if past is not None:
            # dim=-2, not 2: onnxscript's past-aware MultiHeadAttention fusion matches Concat(axis=-2) only
            # (docs/generation.md)
            k = torch.cat([past[0], k], dim=-2)  # (B, H, T_past + T, d_head)
            v = torch.cat([past[1], v], dim=-2)
            if mask is None:
                mask = causal_mask(k.shape[2] - T, T, x.device)  # (T, T_past + T)
        if self.implementation == "sdpa":
            if mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d_head)
            else:
                # An additive bias with a finite fill, not a bool mask: a bool mask becomes -inf, and a fully
                # padded row then gives NaN (in torch and in the exported graph alike).
                bias = torch.where(mask, 0.0, mask_fill_value(q.dtype)).to(q.dtype)  # (B|1, 1, T, T_past + T)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, d_head)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H, T, T_past + T)
            # A select, not an additive mask, with the dtype's own finite minimum as the fill: fp16 never sees
            # -inf - -inf = NaN, and a row with every key masked (left padding) becomes uniform, not NaN.
            if mask is None:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # keys j <= i
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
            y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, d_head)
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
    """Pre-LayerNorm transformer block (SLP3 §9.2): residual stream (B, T, d_model) in and out."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: KeyValue | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, KeyValue]:
        """``mask``, ``past`` and ``use_cache`` as in :class:`CausalSelfAttention`."""
        a = self.attn(self.ln_1(x), mask, past, use_cache)
        a, present = a if use_cache else (a, None)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return (x, present) if use_cache else x


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
    - ``past_key_values``: one (keys, values) per block, each (B, n_heads, T_past, d_head), T_past >= 0.
    - returns ``logits`` (B, T, vocab_size); with ``use_cache=True`` the tuple ``(logits, present)``, where
      ``present`` holds one (keys, values) per block, each (B, n_heads, T_past + T, d_head).

    Raises:
        ValueError: if T is 0 (an empty prompt), T_past + T exceeds ``max_positions``, the mask is not
            (B, T_past + T), or ``past_key_values`` does not hold n_layers (keys, values) pairs of shape
            (B, n_heads, T_past, d_head). Checked eagerly; an ONNX export instead carries the limits as the
            size of the positional table and its dynamic-axis bounds.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)  # E
        self.wpe = nn.Embedding(config.max_positions, config.d_model)  # positional embedding
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

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
        else:
            if attention_mask is None:
                attention_mask = torch.ones(B, past_length + T, dtype=torch.int64, device=input_ids.device)
            tokens = attention_mask.to(torch.int64)  # (B, T_past + T)
            positions = (tokens.cumsum(-1) - 1).clamp(min=0)[:, past_length:]  # (B, T)
            # (1, 1, T, T_past + T) causal & (B, 1, 1, T_past + T) not padding -> (B, 1, T, T_past + T)
            mask = causal_mask(past_length, T, input_ids.device)[None, None] & tokens.bool()[:, None, None, :]
        x = self.wte(input_ids) + self.wpe(positions)  # (B, T, d_model)
        present = []
        for n, block in enumerate(self.blocks):
            past = None if past_key_values is None else past_key_values[n]
            x = block(x, mask, past, use_cache)
            if use_cache:
                x, kv = x
                present.append(kv)  # each (B, H, T_past + T, d_head)
        x = self.ln_f(x)
        logits = x @ self.wte.weight.T  # tied unembedding: (B, T, vocab_size)
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
            expected = (B, config.n_heads, past_length, config.d_head)
            if len(past_key_values) != config.n_layers:
                raise ValueError(f"past_key_values holds {len(past_key_values)} entries; the model has "
                                 f"n_layers={config.n_layers} (one (keys, values) pair per block)")
            for n, kv in enumerate(past_key_values):
                if len(kv) != 2 or any(tuple(t.shape) != expected for t in kv):
                    shapes = [tuple(t.shape) for t in kv]
                    raise ValueError(f"past_key_values[{n}] has shapes {shapes}; expected (keys, values), each "
                                     f"(B, n_heads, T_past, d_head) = {expected}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past_length + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected (B, T_past + T) = "
                             f"({B}, {past_length + T}): one entry per past and new token")

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
