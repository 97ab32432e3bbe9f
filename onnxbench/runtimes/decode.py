"""The decode-loop contract: greedy generation run by a runtime, timed by the harness.

A session that can generate (:meth:`onnxbench.runtimes.base.Session.decoder`) returns a :class:`DecodeLoop` for
one request (B prompts of T0 tokens, left-padded, and N new tokens). The loop owns everything a runtime keeps
between steps (the key/value cache, the mask, the chosen tokens), allocated when the loop is made, so that the
harness (``onnxbench.benchmarks.measure.timing.measure_generation``) can time :meth:`DecodeLoop.prefill` (TTFT) and each
:meth:`DecodeLoop.step` (TPOT) as callables: a timed step is the step, its cache update and the greedy choice of
the next token, nothing else. Nothing here reads a clock. See docs/generation.md ("The decode loop").
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import numpy as np

from ..export.decoder_layout import DecoderLayout, position_ids


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


class ChosenOnDevice(DecodeLoop):
    """A loop that chooses each token on the session's device with one :meth:`_run_and_choose` per token (step
    ``s``: 0 the prefill), into torch buffers ``_tokens`` (B, N) and, when recording, ``_record`` (B, N, vocab)."""

    s: int = 0
    _tokens = None
    _record = None

    @abstractmethod
    def _run_and_choose(self) -> None:
        """Run step ``self.s`` and choose its token."""

    def prefill(self) -> None:
        self.s = 0
        self._run_and_choose()

    def step(self) -> None:
        if self.s + 1 >= self.new_tokens:
            raise IndexError(f"all {self.new_tokens} tokens are chosen; reset() first")
        self.s += 1
        self._run_and_choose()

    def tokens(self) -> np.ndarray:
        return self._tokens.cpu().numpy()

    def logits(self) -> np.ndarray:
        if self._record is None:
            raise RuntimeError("this generation was not recorded; reset(record=True) before the prefill")
        return self._record.numpy()


class BufferedDecodeLoop(ChosenOnDevice):
    """The buffers of a decode loop that runs an exported decoder-with-past graph (docs/generation.md), allocated
    once on the session's device, and the greedy choice; subclasses run one step of the graph on them
    (:meth:`_run`), binding the tensors :meth:`step_io` names.

    The graph's ``present.{i}.*`` is Concat(past, new), a new tensor of length past + T per step, so the cache
    cannot be updated in place in one buffer of the maximum length. Instead each cache tensor has two buffers of
    the maximum length T0 + N - 1 (ping-pong): step s reads its past from one and the runtime writes its present
    straight into the other, so the cache never leaves the device and is never copied outside the graph's own
    Concat. The prompt, the (B, T0 + s) mask of every step, the (B, 1) next-token buffer the greedy choice writes
    and the next step reads, and the logits buffers are allocated once too. All are torch tensors on ``device``,
    so the argmax runs where the logits are and, on a GPU, nothing crosses to the host between steps.

    A graph that takes ``position_ids`` (Hugging Face Optimum's layout) gets them too, one (B, T) int64 tensor
    per step allocated once: transformers' convention, ``cumsum(mask) - 1`` and 1 on padding
    (:func:`onnxbench.export.decoder_layout.position_ids`).

    Args:
        layout: the graph's cache layout (:class:`onnxbench.export.decoder_layout.DecoderLayout`: n_layers,
            n_kv_heads, d_head, vocab_size, position_ids, max_positions); for an onnxbench export
            ``DecoderLayout.of_config(config)``.
        input_ids: int64 (B, T0); attention_mask: int64 (B, T0), 0 on left padding.
        new_tokens: N >= 1.
        dtype: the graph's float dtype (torch.float32 / torch.float16 / torch.bfloat16).
        device: ``cpu`` or ``cuda:N``.
        stream: a torch CUDA stream the graph runs on; the greedy choice is queued on it too (None: torch's
            current stream).
        sync_each_step: wait for torch's stream after each greedy choice (a device synchronisation, no copy):
            needed when the graph runs on a stream of its own that does not follow torch's.

    Raises:
        GenerationError: for a request that cannot run (before anything is allocated).
    """

    def __init__(self, layout: DecoderLayout, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int,
                 dtype, device: str, stream=None, sync_each_step: bool = False) -> None:
        import torch

        from ..models import check_generation

        ids = torch.from_numpy(np.ascontiguousarray(input_ids))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        check_generation(layout, ids, new_tokens, mask)
        if layout.right_padding:
            raise ValueError(f"the {layout.kind} layout needs a right-padded, shared-buffer decode loop; "
                             "BufferedDecodeLoop left-pads and concatenates")
        self._torch = torch
        self.device = torch.device(device)
        self.stream = stream
        self.sync_each_step = sync_each_step and self.device.type == "cuda"
        self.batch, self.prompt_len = ids.shape
        self.new_tokens, self.vocab_size = new_tokens, layout.vocab_size
        B, T0, N = self.batch, self.prompt_len, new_tokens
        # the cache is n_kv_heads wide: fewer heads than the queries' with grouped-query attention
        self.n_kv_heads, self.d_head = layout.n_kv_heads, layout.d_head
        on = {"device": self.device}
        self.prompt = ids.to(torch.int64).to(**on).contiguous()
        self.next_ids = torch.zeros(B, 1, dtype=torch.int64, **on)
        full = torch.ones(B, T0 + N, dtype=torch.int64)
        full[:, :T0] = mask.to(torch.int64)
        self.masks = [full[:, :T0 + s].contiguous().to(**on) for s in range(N)]
        self.positions = None
        if layout.position_ids:
            positions = torch.from_numpy(position_ids(full.numpy()))
            self.positions = [positions[:, :T0].contiguous().to(**on)] + [
                positions[:, T0 + s - 1:T0 + s].contiguous().to(**on) for s in range(1, N)]
        longest = T0 + N - 1
        self.cache = {name: [torch.empty(B * self.n_kv_heads * longest * self.d_head, dtype=dtype, **on)
                             for _ in range(2)] for name in layout.cache_names}
        self.prefill_logits = torch.empty(B, T0, layout.vocab_size, dtype=dtype, **on)
        self.step_logits = torch.empty(B, 1, layout.vocab_size, dtype=dtype, **on)
        self._tokens = torch.zeros(B, N, dtype=torch.int64, **on)
        self.reset()

    def step_io(self, s: int) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """``(inputs, outputs)`` of step s (0: the prefill): ``{graph tensor name: (buffer, shape)}``; a buffer's
        first ``prod(shape)`` elements hold the tensor (C order)."""
        B, T0, H, d = self.batch, self.prompt_len, self.n_kv_heads, self.d_head
        past_len, step_len = (0, T0) if s == 0 else (T0 + s - 1, 1)
        inputs = {"input_ids": (self.prompt if s == 0 else self.next_ids, (B, step_len)),
                  "attention_mask": (self.masks[s], (B, T0 + s))}
        if self.positions is not None:
            inputs["position_ids"] = (self.positions[s], (B, step_len))
        outputs = {"logits": (self.prefill_logits if s == 0 else self.step_logits, (B, step_len, self.vocab_size))}
        for name, (even, odd) in self.cache.items():
            past, present = (odd, even) if s % 2 == 0 else (even, odd)
            inputs[f"past_key_values.{name}"] = (past, (B, H, past_len, d))
            outputs[f"present.{name}"] = (present, (B, H, past_len + step_len, d))
        return inputs, outputs

    @abstractmethod
    def _run(self, s: int) -> None:
        """Run step s of the graph on :meth:`step_io`'s buffers (asynchronously on a GPU)."""

    def reset(self, record: bool = False) -> None:
        self.s = 0
        self._tokens.zero_()
        self._record = self._torch.empty(self.batch, self.new_tokens, self.vocab_size) if record else None

    def _run_and_choose(self) -> None:
        torch = self._torch
        self._run(self.s)
        last = (self.prefill_logits if self.s == 0 else self.step_logits)[:, -1]  # (B, vocab_size)
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            torch.argmax(last, dim=-1, keepdim=True, out=self.next_ids)
            self._tokens[:, self.s] = self.next_ids[:, 0]
        if self._record is not None:
            if self.stream is not None:
                self.stream.synchronize()
            self._record[:, self.s] = last.float().cpu()
        if self.sync_each_step:
            torch.cuda.current_stream(self.device).synchronize()

    def tokens(self) -> np.ndarray:
        if self.stream is not None:
            self.stream.synchronize()
        return self._tokens.cpu().numpy()


class InPlaceDecodeLoop(ChosenOnDevice):
    """The buffers of a decode loop over a graph whose KV cache is updated in place: ONNX Runtime's
    ``GroupQueryAttention`` with past and present bound to one buffer per cache tensor (onnxbench's
    ``ort-gqa-inplace`` export, :mod:`onnxbench.export.gqa_decoder`, and the ORT model builder's decoders). One
    buffer (B, n_kv_heads, buffer_len, d_head) per cache tensor is allocated once and is both every step's
    ``past_key_values.*`` and its ``present.*``: the op writes the step's keys and values at each row's next
    position and nothing is copied or swapped between steps (docs/generation.md, "The decode loop").

    GroupQueryAttention takes a row's valid keys to be positions 0 .. ``seqlens_k`` (ONNX Runtime
    ``docs/ContribOperators.md``), so the left-padded prompt is moved to right padding
    (:func:`onnxbench.export.decoder_layout.left_to_right`): row b's n_b tokens first, and each step's mask
    (B, T0 + s) has n_b + s ones at the front, from which the graph computes ``seqlens_k`` and
    ``total_sequence_length``. The prefill's token is chosen from each row's last token (position n_b - 1), a
    step's from its one position. Prompt, masks, next-token and logits buffers are allocated once, as in
    :class:`BufferedDecodeLoop`.

    Args:
        layout: the graph's layout (``shared_buffer`` true).
        input_ids: int64 (B, T0); attention_mask: int64 (B, T0), 0 on left padding.
        new_tokens: N >= 1.
        dtype: the cache's torch dtype.
        device: ``cpu`` or ``cuda:N``.
        buffer_len: positions of the in-place buffer (None: T0 + N - 1, the longest cache this request reaches,
            as ONNX Runtime GenAI sizes it by its ``max_length``).
        sync_each_step: as :class:`BufferedDecodeLoop`.

    Raises:
        GenerationError: for a request that cannot run, before anything is allocated: those of
            :func:`onnxbench.models.check_generation`, and a prompt plus new tokens beyond the in-place buffer
            (T0 + N - 1 > ``buffer_len``).
    """

    def __init__(self, layout: DecoderLayout, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int,
                 dtype, device: str, buffer_len: int | None = None, sync_each_step: bool = False) -> None:
        import torch

        from ..export.decoder_layout import left_to_right
        from ..models import GenerationError, check_generation

        ids = torch.from_numpy(np.ascontiguousarray(input_ids))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        check_generation(layout, ids, new_tokens, mask)
        B, T0 = ids.shape
        needed = T0 + new_tokens - 1  # the last token is chosen, never fed back
        buffer_len = needed if buffer_len is None else buffer_len
        if needed > buffer_len:
            raise GenerationError(
                f"prompt length {T0} + {new_tokens} new tokens needs {needed} cache positions but the in-place KV "
                f"cache buffer holds {buffer_len}; shorten the prompt or generate at most "
                f"{max(buffer_len - T0 + 1, 0)} tokens")
        if not layout.shared_buffer:
            raise ValueError(f"the {layout.kind} layout concatenates its cache; use BufferedDecodeLoop")
        self._torch = torch
        self.device = torch.device(device)
        self.sync_each_step = sync_each_step and self.device.type == "cuda"
        self.batch, self.prompt_len, self.new_tokens = B, T0, new_tokens
        self.vocab_size, self.buffer_len = layout.vocab_size, buffer_len
        self.n_kv_heads, self.d_head = layout.n_kv_heads, layout.d_head
        on = {"device": self.device}
        right_ids, right_mask = left_to_right(ids.numpy().astype(np.int64), mask.numpy().astype(np.int64))
        lengths = torch.from_numpy(right_mask.sum(axis=1))  # n_b
        self.prompt = torch.from_numpy(right_ids).to(**on).contiguous()
        self.next_ids = torch.zeros(B, 1, dtype=torch.int64, **on)
        columns = torch.arange(T0 + new_tokens)[None]
        # step s's mask (B, T0 + s): n_b + s ones in front
        self.masks = [(columns[:, :T0 + s] < (lengths[:, None] + s)).to(torch.int64).to(**on).contiguous()
                      for s in range(new_tokens)]
        self.rows = torch.arange(B, **on)
        self.last = (lengths - 1).to(**on)  # each row's last prompt token in the right-padded prompt
        shape = (B, self.n_kv_heads, buffer_len, self.d_head)
        self.cache = {name: torch.zeros(shape, dtype=dtype, **on) for name in layout.cache_names}
        self.prefill_logits = torch.empty(B, T0, layout.vocab_size, dtype=dtype, **on)
        self.step_logits = torch.empty(B, 1, layout.vocab_size, dtype=dtype, **on)
        self._tokens = torch.zeros(B, new_tokens, dtype=torch.int64, **on)
        self.reset()

    @abstractmethod
    def _run(self, s: int) -> None:
        """Run step s (0: the prefill) of the graph on the buffers, the cache bound as both past and present."""

    def reset(self, record: bool = False) -> None:
        # nothing to clear in the cache: the prefill overwrites positions 0 .. T0 - 1 of every row, each step the
        # next one, and a row attends only the positions its mask counts
        self.s = 0
        self._tokens.zero_()
        self._record = self._torch.empty(self.batch, self.new_tokens, self.vocab_size) if record else None

    def _run_and_choose(self) -> None:
        torch = self._torch
        self._run(self.s)
        if self.s == 0:
            last = self.prefill_logits[self.rows, self.last]  # (B, vocab_size)
        else:
            last = self.step_logits[:, -1]
        torch.argmax(last, dim=-1, keepdim=True, out=self.next_ids)
        self._tokens[:, self.s] = self.next_ids[:, 0]
        if self._record is not None:
            self._record[:, self.s] = last.float().cpu()
        if self.sync_each_step:
            torch.cuda.current_stream(self.device).synchronize()


