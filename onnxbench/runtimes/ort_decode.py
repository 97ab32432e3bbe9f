"""Greedy decoding on an ONNX Runtime session of a decoder-with-past graph, every buffer bound once.

The graph (``onnxbench.export.decoder_with_past``) returns ``present.{i}.*`` = Concat(past, new) of length
past + T, a new tensor per step, so the cache cannot be updated in place in a buffer of the maximum length
(docs/generation.md). What the loop does instead, with ONNX Runtime's IOBinding
(https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding):

- Two buffers per cache tensor (ping-pong), each of the maximum length T0 + N - 1, allocated once on the
  session's device. Step s reads its past from one and ORT writes its present straight into the other (an
  output bound to a preallocated buffer is written in place), so the cache never leaves the device and is never
  copied outside the graph's own Concat.
- The (B, T0 + s) mask of every step, the prompt, the (B, 1) next-token buffer and the logits buffers are
  allocated once too, and one IOBinding per step is built when the loop is made (buffers bound by pointer,
  ``IOBinding.bind_input``/``bind_output`` with ``buffer_ptr``), so a timed step is ``run_with_iobinding`` plus
  the greedy choice (argmax of the last position's logits, written into the bound next-token buffer) and
  nothing else.

Buffers are torch tensors on the session's device (``cpu`` or ``cuda:N``): the argmax runs where the logits
are, so on a GPU no token, logit or cache value crosses to the host between steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch

from ..models import TransformerConfig, check_generation
from .base import RuntimeUnavailable
from .decode import DecodeLoop

_NP_DTYPES = {"float32": np.float32, "float16": np.float16}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class OrtDecodeLoop(DecodeLoop):
    """Greedy decoding of one request on ``session`` (see the module docstring).

    Args:
        session: an ``onnxruntime.InferenceSession`` of a decoder-with-past graph.
        config: the model's config (n_layers, n_heads, d_head, vocab_size, max_positions).
        input_ids: int64 (B, T0); attention_mask: int64 (B, T0), 0 on left padding.
        new_tokens: N >= 1.
        float_type: the graph's cache dtype, ``float32`` or ``float16``.
        device: ``cpu`` or ``cuda:N``.

    On a GPU the greedy choice runs on torch's current stream and ORT on its own, so each step ends by waiting
    for torch's stream (a device synchronisation, no copy to the host) before the next ORT run reads the token.

    Raises:
        GenerationError: for a request that cannot run (before anything is allocated).
        RuntimeUnavailable: for a cache dtype IOBinding cannot bind by pointer (bfloat16).
    """

    def __init__(self, session: ort.InferenceSession, config: TransformerConfig, input_ids: np.ndarray,
                 attention_mask: np.ndarray, new_tokens: int, float_type: str, device: str) -> None:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        check_generation(config, ids, new_tokens, mask)
        if float_type not in _NP_DTYPES:
            raise RuntimeUnavailable(f"the ONNX Runtime decode loop binds float32/float16 caches; this graph's is "
                                     f"{float_type} (numpy has no bfloat16 for IOBinding's element type)")
        self.session = session
        self.batch, self.prompt_len = ids.shape
        self.new_tokens, self.vocab_size = new_tokens, config.vocab_size
        self.device = torch.device(device)
        self.sync: Callable[[], None] = (torch.cuda.current_stream(self.device).synchronize
                                         if self.device.type == "cuda" else (lambda: None))
        ort_device, device_id = ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)
        B, T0, N, H, d = self.batch, self.prompt_len, new_tokens, config.n_heads, config.d_head
        dt, np_dt = _TORCH_DTYPES[float_type], _NP_DTYPES[float_type]
        on = {"device": self.device}
        self.prompt = ids.to(torch.int64).to(**on).contiguous()
        self.next_ids = torch.zeros(B, 1, dtype=torch.int64, **on)
        full = torch.ones(B, T0 + N, dtype=torch.int64)
        full[:, :T0] = mask.to(torch.int64)
        self.masks = [full[:, :T0 + s].contiguous().to(**on) for s in range(N)]
        longest = T0 + N - 1
        names = [f"{i}.{kv}" for i in range(config.n_layers) for kv in ("key", "value")]
        self.cache = {name: [torch.empty(B * H * longest * d, dtype=dt, **on) for _ in range(2)] for name in names}
        self.prefill_logits = torch.empty(B, T0, config.vocab_size, dtype=dt, **on)
        self.step_logits = torch.empty(B, 1, config.vocab_size, dtype=dt, **on)
        self._tokens = torch.zeros(B, N, dtype=torch.int64, **on)

        def bind(binding, name: str, tensor_or_buffer: torch.Tensor, shape: tuple, dtype, output: bool) -> None:
            fn = binding.bind_output if output else binding.bind_input
            fn(name, ort_device, device_id, dtype, list(shape), tensor_or_buffer.data_ptr())

        self.bindings = []
        for s in range(N):
            binding = session.io_binding()
            past_len, step_len = (0, T0) if s == 0 else (T0 + s - 1, 1)
            bind(binding, "input_ids", self.prompt if s == 0 else self.next_ids, (B, step_len), np.int64, False)
            bind(binding, "attention_mask", self.masks[s], (B, T0 + s), np.int64, False)
            for name, (even, odd) in self.cache.items():
                past, present = (odd, even) if s % 2 == 0 else (even, odd)
                bind(binding, f"past_key_values.{name}", past, (B, H, past_len, d), np_dt, False)
                bind(binding, f"present.{name}", present, (B, H, past_len + step_len, d), np_dt, True)
            logits = self.prefill_logits if s == 0 else self.step_logits
            bind(binding, "logits", logits, tuple(logits.shape), np_dt, True)
            self.bindings.append(binding)
        self.reset()

    def reset(self, record: bool = False) -> None:
        self.s = 0
        self._tokens.zero_()
        self._record = torch.empty(self.batch, self.new_tokens, self.vocab_size) if record else None

    def _run_and_choose(self) -> None:
        self.session.run_with_iobinding(self.bindings[self.s])
        last = (self.prefill_logits if self.s == 0 else self.step_logits)[:, -1]  # (B, vocab_size)
        torch.argmax(last, dim=-1, keepdim=True, out=self.next_ids)
        self._tokens[:, self.s] = self.next_ids[:, 0]
        if self._record is not None:
            self._record[:, self.s] = last.float().cpu()
        self.sync()

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
