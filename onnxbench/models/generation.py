"""Greedy generation with the reference transformer: the torch reference of a prefill + KV-cache decode loop.

A generation request is B prompts of T0 tokens (left-padded to a common length, ``attention_mask`` 0 on the
padding) and N new tokens. The prefill runs the prompt once and keeps each block's keys and values; each decode
step then feeds the one token chosen last (greedy: argmax of the logits, SLP3 §10.2) with the cache, so a step
costs O(T_past) attention instead of the O(T^2) of recomputing the whole sequence. ``use_cache=False`` is that
recomputation, the reference a cached decode is checked against. See docs/generation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import OnnxbenchError
from .transformer import Transformer, TransformerConfig


class GenerationError(OnnxbenchError, ValueError):
    """A generation request that cannot run (empty prompt, no new tokens, longer than ``max_positions``, a mask
    of the wrong shape, token ids out of range); the message names the limit or the fix."""


@dataclass(frozen=True)
class Generation:
    """Result of :func:`greedy_generate`.

    Attributes:
        tokens: int64 (B, N): the N new tokens per row.
        logits: (B, N, vocab_size) in the model's dtype: the logits each token was chosen from (step 0: the
            prefill's last position; step s: the decode step that fed token s - 1).
        attention_mask: int64 (B, T0 + N): the prompt's mask extended by one 1 per new token.
    """

    tokens: torch.Tensor
    logits: torch.Tensor
    attention_mask: torch.Tensor


def check_generation(config: TransformerConfig, input_ids: torch.Tensor, max_new_tokens: int,
                     attention_mask: torch.Tensor | None = None) -> None:
    """Refuse a request that cannot run, before any work.

    Args:
        config: the model's config (``max_positions`` bounds T0 + N, ``vocab_size`` the token ids), or any object
            with those two attributes (an ONNX decoder's layout, where either may be None: unknown, not checked).
        input_ids: int64 (B, T0) prompt token ids.
        max_new_tokens: N, tokens to generate (>= 1).
        attention_mask: int64 or bool (B, T0) or None.

    Raises:
        GenerationError: (a ``ValueError``) one per problem, naming the limit or the fix: an empty prompt
            (T0 = 0 or B = 0), N < 1, T0 + N > ``max_positions``, a mask that is not (B, T0), token ids outside
            [0, vocab_size).
    """
    if input_ids.dim() != 2:
        raise GenerationError(f"input_ids must be (B, T0), got shape {tuple(input_ids.shape)}")
    B, T0 = input_ids.shape
    if B == 0 or T0 == 0:
        raise GenerationError(f"empty prompt: input_ids has shape {(B, T0)}; generation needs at least one prompt "
                         "token per row (left-pad shorter prompts and mark the padding 0 in attention_mask)")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if config.max_positions is not None and T0 + max_new_tokens > config.max_positions:
        raise GenerationError(f"prompt length {T0} + {max_new_tokens} new tokens = {T0 + max_new_tokens} exceeds "
                         f"max_positions={config.max_positions}; shorten the prompt or generate at most "
                         f"{max(config.max_positions - T0, 0)} tokens")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, T0):
        raise GenerationError(f"attention_mask has shape {tuple(attention_mask.shape)}; it must match input_ids "
                         f"{(B, T0)} (1 for a prompt token, 0 for left padding)")
    if config.vocab_size is not None and input_ids.numel() and (int(input_ids.min()) < 0
                                                                or int(input_ids.max()) >= config.vocab_size):
        raise GenerationError(f"token ids must lie in [0, {config.vocab_size}), got [{int(input_ids.min())}, "
                         f"{int(input_ids.max())}]")


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists of unequal length into a batch.

    Returns:
        (input_ids, attention_mask), both int64 (B, max length): ``pad_id`` and 0 on the left padding.

    Raises:
        GenerationError: for no prompts or an empty prompt.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerationError("left_pad needs at least one prompt and no empty prompt")
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.as_tensor(prompt, dtype=torch.int64)
        attention_mask[row, width - len(prompt):] = 1
    return input_ids, attention_mask


@torch.no_grad()
def greedy_generate(model: Transformer, input_ids: torch.Tensor, max_new_tokens: int,
                    attention_mask: torch.Tensor | None = None, use_cache: bool = True) -> Generation:
    """Greedy decoding: prefill the prompt, then N - 1 decode steps of one token each.

    Args:
        model: the reference transformer (eval mode).
        input_ids: int64 (B, T0) prompts, left-padded where rows differ in length.
        max_new_tokens: N >= 1.
        attention_mask: int64 (B, T0), 1 for tokens, 0 for padding; None means no padding.
        use_cache: True feeds each step only its new token plus the cache of past keys and values; False
            recomputes the whole sequence at every step (the no-cache reference).

    Returns:
        A :class:`Generation`.

    Raises:
        GenerationError: see :func:`check_generation` (checked before the prefill).
    """
    check_generation(model.config, input_ids, max_new_tokens, attention_mask)
    B, _ = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(torch.int64)
    one = torch.ones(B, 1, dtype=torch.int64, device=input_ids.device)
    sequence, tokens, step_logits, past = input_ids, [], [], None
    feed = input_ids
    for _ in range(max_new_tokens):
        if use_cache:
            logits, past = model(feed, attention_mask=mask, past_key_values=past, use_cache=True)
        else:
            logits = model(sequence, attention_mask=mask)
        last = logits[:, -1]  # (B, vocab_size)
        token = last.argmax(-1, keepdim=True)  # (B, 1)
        tokens.append(token)
        step_logits.append(last)
        sequence = torch.cat([sequence, token], dim=1)
        feed = token
        if len(tokens) < max_new_tokens:  # the last token is chosen, never fed
            mask = torch.cat([mask, one], dim=1)
    return Generation(torch.cat(tokens, dim=1), torch.stack(step_logits, dim=1), torch.cat([mask, one], dim=1))
