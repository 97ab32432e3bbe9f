"""The memory a cell will need, estimated before it runs, and the pre-check that refuses a cell that cannot fit
(docs/work_model.md, "Memory estimate": the formula, its sources and its measured margin).

A cell whose estimate exceeds the memory available becomes a ``skipped`` row naming both, before anything is
allocated for it: on the host the runner checks before the cell's artifact is exported
(:mod:`onnxbench.benchmarks.run.runner`), on a GPU the worker checks before the session opens
(:mod:`onnxbench.benchmarks.run.worker`). The estimate is an upper bound of what one inference keeps alive at
once, not a prediction of ``peak_rss_mb``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...models.transformer import TransformerConfig
from .workmodel import ELEMENT_SIZE, attention_params

#: Bytes per weight element the session holds, per graph precision; the quantized ones counted as fp32 (their
#: embedding and the operators they leave float stay fp32; an upper bound).
WEIGHT_BYTES = {**ELEMENT_SIZE, "int8-dynamic": 4, "int4-weight": 4}
#: Bytes per activation element (both quantized precisions keep fp32 activations between their operators).
ACTIVATION_BYTES = {**ELEMENT_SIZE, "int8-dynamic": 4, "int4-weight": 4}
#: Copies of the weights a session holds: ONNX Runtime keeps an initializer beside the pre-packed copy its
#: MatMul kernels use (measured, docs/work_model.md).
SESSION_WEIGHT_COPIES = 2
#: Copies of a cell's outputs alive at once: the graph's output, the checked run's result and the timed path's.
OUTPUT_COPIES = 3
#: The interpreter and libraries of the worker and of its reference process (docs/measurement.md: a forked
#: worker's baseline is 200-280 MiB).
PROCESS_BASE_BYTES = 512 * 2**20
MIB = 2**20


@dataclass(frozen=True)
class Footprint:
    """Estimated peak memory of one cell, in bytes, by what holds it.

    Attributes:
        weights: the session's weights (:data:`SESSION_WEIGHT_COPIES` copies at the graph's precision).
        working: what one inference keeps alive besides the weights and outputs: one block's transient
            activations, and for a generation the KV cache.
        outputs: the cell's outputs (:data:`OUTPUT_COPIES` copies; a generation's recorded logits too).
        reference: the reference (float64 module, the module at the cell's precision for the noise floor, their
            forward's activations and float64 outputs); 0 where not estimated.
    """

    weights: float
    working: float
    outputs: float
    reference: float

    def host(self, device: str) -> float:
        """Bytes needed on the host for a runtime on ``device``: everything on the CPU; on a GPU, the weights as
        staged before the copy, the outputs fetched back and the reference (the working memory is the
        device's). Both plus :data:`PROCESS_BASE_BYTES`."""
        session = self.weights + self.working + self.outputs if device == "cpu" else self.weights + self.outputs
        return session + self.reference + PROCESS_BASE_BYTES

    def device(self) -> float:
        """Bytes needed on a GPU: weights, working memory and output buffers."""
        return self.weights + self.working + self.outputs


def _block_transients(config: TransformerConfig, batch: int, seq_len: int, elt: int) -> float:
    """One block's live activations at (B, T): attention scores, softmax and mask sum (3 · B·n_heads·T² for
    attention that materializes them), the FFN's hidden state and its activation (2 · B·T·d_ff) and the
    residual stream, Q, K, V, attention output and normalized inputs (7 · B·T·d_model)."""
    tokens = batch * seq_len
    return elt * tokens * (3 * config.n_heads * seq_len + 2 * config.d_ff + 7 * config.d_model)


def footprint(config: TransformerConfig, part: str, batch: int, seq_len: int, precision: str,
              new_tokens: int = 0) -> Footprint:
    """The estimate for a cell of the reference transformer (formula: docs/work_model.md, "Memory estimate").

    Args:
        config: the model's config.
        part: ``model`` or ``attention`` (one block's attention); ignored for a generation.
        batch / seq_len: B and T (a generation's prompt length T0).
        precision: the graph's precision (``fp32``, ``fp16``, ``bf16``, ``int8-dynamic``, ``int4-weight``).
        new_tokens: N for a generation (the decoder with its KV cache), 0 for a prefill.

    Raises:
        KeyError: for an unknown precision.
    """
    e_w, e_a = WEIGHT_BYTES[precision], ACTIVATION_BYTES[precision]
    floor_elt = ELEMENT_SIZE.get(precision, 0)  # quantized cells have no noise floor, so no module at precision
    if part == "attention" and not new_tokens:
        n_params, width = attention_params(config), config.d_model
    else:
        n_params, width = config.n_params, config.vocab_size
    weights = SESSION_WEIGHT_COPIES * n_params * e_w
    if new_tokens:
        # the prompt's prefill, and the cache in three copies (past fed, present returned, the loop's buffers)
        length = seq_len + new_tokens
        cache = 2 * config.n_layers * batch * length * config.n_kv_heads * config.d_head * e_a
        working = _block_transients(config, batch, seq_len, e_a) + 3 * cache
        outputs = OUTPUT_COPIES * batch * seq_len * width * e_a + 2 * batch * new_tokens * width * 4
        ref_len = length  # the teacher-forced reference recomputes the whole sequence without a cache
    else:
        working = _block_transients(config, batch, seq_len, e_a)
        outputs = OUTPUT_COPIES * batch * seq_len * width * e_a
        ref_len = seq_len
    blocks = config.n_layers if part == "model" or new_tokens else 0
    reference = (n_params * (8 + floor_elt) + _block_transients(config, batch, ref_len, 8)
                 + OUTPUT_COPIES * batch * ref_len * width * 8 + 2 * 8 * blocks * batch * ref_len * config.d_model)
    return Footprint(float(weights), float(working), float(outputs), float(reference))


def host_available() -> int:
    """Bytes of host memory available to new work (``psutil.virtual_memory().available``: Linux's
    ``MemAvailable``, free memory plus what the page cache can give back without swapping)."""
    import psutil

    return int(psutil.virtual_memory().available)


def memory_reason(estimate: Footprint | None, device: str, host_free: int | None,
                  device_free: int | None = None) -> str | None:
    """Why a cell with ``estimate`` cannot fit (its ``skipped`` reason: the estimate and what is available, in
    MiB), or None when it fits, has no estimate, or nothing available was read.

    Args:
        estimate: the cell's footprint (None: not estimated, never refused).
        device: the runtime's device (``cpu`` or ``cuda``).
        host_free: bytes available on the host (None: not checked).
        device_free: bytes free on the GPU (None: not checked).
    """
    if estimate is None:
        return None
    if host_free is not None and estimate.host(device) > host_free:
        return (f"estimated peak memory {estimate.host(device) / MIB:,.0f} MiB exceeds the host's available "
                f"{host_free / MIB:,.0f} MiB (session {_session(estimate, device) / MIB:,.0f} MiB, reference "
                f"{estimate.reference / MIB:,.0f} MiB; docs/work_model.md, Memory estimate)")
    if device != "cpu" and device_free is not None and estimate.device() > device_free:
        return (f"estimated device memory {estimate.device() / MIB:,.0f} MiB exceeds the GPU's free "
                f"{device_free / MIB:,.0f} MiB (weights {estimate.weights / MIB:,.0f} MiB, activations and "
                f"KV cache {estimate.working / MIB:,.0f} MiB; docs/work_model.md, Memory estimate)")
    return None


def _session(estimate: Footprint, device: str) -> float:
    return estimate.host(device) - estimate.reference - PROCESS_BASE_BYTES
