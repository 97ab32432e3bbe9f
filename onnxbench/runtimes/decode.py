"""The decode-loop contract: greedy generation run by a runtime, timed by the harness.

A session that can generate (:meth:`onnxbench.runtimes.base.Session.decoder`) returns a :class:`DecodeLoop` for
one request (B prompts of T0 tokens, left-padded, and N new tokens). The loop owns everything a runtime keeps
between steps (the key/value cache, the mask, the chosen tokens), allocated when the loop is made, so that the
harness (``onnxbench.benchmarks.timing.measure_generation``) can time :meth:`DecodeLoop.prefill` (TTFT) and each
:meth:`DecodeLoop.step` (TPOT) as callables: a timed step is the step, its cache update and the greedy choice of
the next token, nothing else. Nothing here reads a clock. See docs/generation.md ("The decode loop").
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class DecodeLoop(ABC):
    """Greedy decoding of one request on one session.

    Usage (the harness's)::

        loop.reset(record=True)      # untimed: rewind to before the prefill
        loop.prefill()               # prompt -> cache, token 0 chosen (argmax of the last position's logits)
        for _ in range(loop.new_tokens - 1):
            loop.step()              # token s fed with the cache, cache updated, token s + 1 chosen
        loop.tokens(), loop.logits()

    Attributes:
        batch: B.
        prompt_len: T0 (padding included).
        new_tokens: N >= 1 (so N - 1 decode steps after the prefill).
    """

    batch: int
    prompt_len: int
    new_tokens: int

    @abstractmethod
    def reset(self, record: bool = False) -> None:
        """Rewind to before the prefill (cache empty, no token chosen). ``record``: keep each step's logits for
        :meth:`logits` (a copy per step, so off while timing)."""

    @abstractmethod
    def prefill(self) -> None:
        """Run the prompt, fill the cache and choose token 0. Asynchronous devices may still be working on return
        (the harness synchronizes)."""

    @abstractmethod
    def step(self) -> None:
        """Feed the last chosen token with the cache, update the cache and choose the next token.

        Raises:
            IndexError: when all N tokens are already chosen (call :meth:`reset` first).
        """

    @abstractmethod
    def tokens(self) -> np.ndarray:
        """int64 (B, N): the tokens chosen so far by this generation (columns not reached yet are 0)."""

    @abstractmethod
    def logits(self) -> np.ndarray:
        """float32 (B, N, vocab_size): the logits each token was chosen from (step 0: the prefill's last
        position), recorded since the last ``reset(record=True)``.

        Raises:
            RuntimeError: when the generation was not recorded.
        """
