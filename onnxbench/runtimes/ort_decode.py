"""Greedy decoding on an ONNX Runtime session of a decoder-with-past graph, every buffer bound once.

The buffers (ping-pong cache of the maximum length, the mask of every step, the next-token and logits buffers)
are :class:`~onnxbench.runtimes.decode.BufferedDecodeLoop`'s, on the session's device. Here they are bound with
ONNX Runtime's IOBinding (https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding) by pointer
(``bind_input`` / ``bind_output`` with ``buffer_ptr``): one IOBinding per step, all built when the loop is made,
so a timed step is ``run_with_iobinding`` plus the greedy choice and nothing else. An output bound to a
preallocated buffer is written in place, so ORT writes each step's present straight into the other cache buffer.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..export.decoder_layout import DecoderLayout
from .base import RuntimeUnavailable
from .decode import BufferedDecodeLoop, InPlaceDecodeLoop

_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


class OrtDecodeLoop(BufferedDecodeLoop):
    """Greedy decoding of one request on ``session`` (see the module docstring).

    Args:
        session: an ``onnxruntime.InferenceSession`` of a decoder-with-past graph (onnxbench's or Optimum's
            layout: the past grows by concatenation).
        layout, input_ids, attention_mask, new_tokens, device: as :class:`BufferedDecodeLoop`; the cache dtype
            is ``layout.cache_dtype`` (``float32`` or ``float16``).

    On a GPU the greedy choice runs on torch's current stream and ORT on its own, so each step ends by waiting
    for torch's stream (a device synchronisation, no copy to the host) before the next ORT run reads the token.

    Raises:
        GenerationError: for a request that cannot run (before anything is allocated).
        RuntimeUnavailable: for a cache dtype IOBinding cannot bind by pointer (bfloat16: IOBinding's element
            type is a numpy dtype).
    """

    def __init__(self, session: ort.InferenceSession, layout: DecoderLayout, input_ids: np.ndarray,
                 attention_mask: np.ndarray, new_tokens: int, device: str) -> None:
        import torch

        float_type = layout.cache_dtype
        if float_type not in _NP_DTYPES:
            raise RuntimeUnavailable(f"the ONNX Runtime decode loop binds float32/float16 caches; this graph's is "
                                     f"{float_type} (numpy has no bfloat16 for IOBinding's element type)")
        super().__init__(layout, input_ids, attention_mask, new_tokens, getattr(torch, float_type), device,
                         sync_each_step=True)
        self.session = session
        ort_device, device_id = ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)
        np_float = _NP_DTYPES[float_type]
        self.bindings = []
        for s in range(new_tokens):
            binding = session.io_binding()
            inputs, outputs = self.step_io(s)
            for name, (buffer, shape) in inputs.items():
                dtype = np.int64 if buffer.dtype == torch.int64 else np_float
                binding.bind_input(name, ort_device, device_id, dtype, list(shape), buffer.data_ptr())
            for name, (buffer, shape) in outputs.items():
                binding.bind_output(name, ort_device, device_id, np_float, list(shape), buffer.data_ptr())
            self.bindings.append(binding)

    def _run(self, s: int) -> None:
        self.session.run_with_iobinding(self.bindings[s])


class OrtInPlaceDecodeLoop(InPlaceDecodeLoop):
    """Greedy decoding on ``session`` of a graph whose cache is updated in place (GroupQueryAttention over a
    buffer past and present share: the ``builder`` layout and onnxbench's ``ort-gqa-inplace``;
    :class:`~onnxbench.runtimes.decode.InPlaceDecodeLoop` has the buffers).

    One IOBinding for the whole generation: each cache buffer is bound once, by pointer, as both
    ``past_key_values.{i}.*`` and ``present.{i}.*`` with the buffer's full shape (B, n_kv_heads, buffer_len,
    d_head), so ONNX Runtime hands GroupQueryAttention the same memory as past and present and the op writes the
    step's keys and values into it (its CPU and CUDA kernels detect the shared buffer by address). The next-token
    buffer and the step logits are bound once too; per step only ``attention_mask`` is bound again (its width
    T0 + s grows by one, and the graph derives ``seqlens_k`` and ``total_sequence_length`` from it), plus the
    switch from the prompt to the next-token buffer after the prefill.

    Args:
        session: an ``onnxruntime.InferenceSession`` of such a graph.
        layout, input_ids, attention_mask, new_tokens, device, buffer_len: as :class:`InPlaceDecodeLoop`.

    Raises:
        GenerationError: for a request that cannot run (before anything is allocated), a prompt plus new tokens
            beyond ``buffer_len`` included.
        RuntimeUnavailable: for a cache dtype IOBinding cannot bind by pointer (bfloat16).
    """

    def __init__(self, session: ort.InferenceSession, layout: DecoderLayout, input_ids: np.ndarray,
                 attention_mask: np.ndarray, new_tokens: int, device: str, buffer_len: int | None = None) -> None:
        import torch

        float_type = layout.cache_dtype
        if float_type not in _NP_DTYPES:
            raise RuntimeUnavailable(f"the ONNX Runtime decode loop binds float32/float16 caches; this graph's is "
                                     f"{float_type} (numpy has no bfloat16 for IOBinding's element type)")
        super().__init__(layout, input_ids, attention_mask, new_tokens, getattr(torch, float_type), device,
                         buffer_len=buffer_len, sync_each_step=True)
        self.session = session
        self._where = ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)
        self._float = _NP_DTYPES[float_type]
        self.binding = session.io_binding()
        for name, buffer in self.cache.items():
            shape = list(buffer.shape)
            self.binding.bind_input(f"past_key_values.{name}", *self._where, self._float, shape, buffer.data_ptr())
            self.binding.bind_output(f"present.{name}", *self._where, self._float, shape, buffer.data_ptr())

    def _bind(self, name: str, buffer, dtype, output: bool = False) -> None:
        bind = self.binding.bind_output if output else self.binding.bind_input
        bind(name, *self._where, dtype, list(buffer.shape), buffer.data_ptr())

    def _run(self, s: int) -> None:
        if s <= 1:  # the prefill feeds the prompt; from step 1 on every step feeds the chosen token
            self._bind("input_ids", self.prompt if s == 0 else self.next_ids, np.int64)
            self._bind("logits", self.prefill_logits if s == 0 else self.step_logits, self._float, output=True)
        self._bind("attention_mask", self.masks[s], np.int64)
        self.session.run_with_iobinding(self.binding)
