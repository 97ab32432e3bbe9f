"""Work model of one cell: FLOPs and bytes moved per inference, and what the measured latency achieves against the
machine's ceilings (roofline model: Williams, Waterman & Patterson, *Roofline: an insightful visual performance
model for multicore architectures*, CACM 52(4), 2009).

FLOPs are the matmul FLOPs of :mod:`onnxbench.models.flops` (Kaplan et al. 2020, §2.1, Table 1), for both
families: the Llama family's grouped-query attention reads K and V n_kv_heads wide (W^K, W^V are d_model x
n_kv_heads·d_head; its KV cache is n_kv_heads wide), and its SwiGLU feed-forward has three d_model x d_ff
matrices (docs/work_model.md).

Bytes moved is a **lower bound on DRAM traffic** (the roofline's "operational intensity" denominator), counting
exactly:

- every parameter read once, at the graph's precision (``element_size(precision)`` bytes each; the tied
  embedding/unembedding matrix E once);
- the graph inputs written by the caller and read once: ``input_ids`` as int64 (8 bytes per token) for the full
  model; the block input ``x`` of shape (B, T, d_model) at the graph's precision for the attention part;
- the graph outputs written once: logits (B, T, vocab_size) for the full model, (B, T, d_model) for the
  attention part, at the graph's precision.

Intermediate activations (Q/K/V, the (B, n_heads, T, T) attention scores, the FFN hidden state) are *not*
counted: whether they reach DRAM depends on cache size and kernel fusion, so counting them would no longer be a
bound. A real run moves at least this many bytes, so ``achieved_gbs`` is a lower bound on the bandwidth used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ...models.flops import attention_flops, forward_flops
from ...models.transformer import TransformerConfig
from ...tolerance import tf32_allowed
from .ceilings import peak_for

#: Bytes per element of each graph precision.
ELEMENT_SIZE = {"fp32": 4, "fp16": 2, "bf16": 2}
#: Bytes per token id (the graphs take int64 ``input_ids``).
TOKEN_ID_BYTES = 8


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes moved (lower bound) of one inference of a model part at (batch, seq_len)."""

    flops: float
    bytes_moved: float


def attention_params(config: TransformerConfig) -> int:
    """Parameters of one block's attention: W^Q (d x d), W^K and W^V (d x d_kv, d_kv = n_kv_heads·d_head, = d
    without GQA) and W^O (d x d), with their biases where the family has them (GPT-2: all four, ``4 (d^2 + d)``;
    Llama: none; Qwen2: q/k/v)."""
    d, d_kv = config.d_model, config.n_kv_heads * config.d_head
    weights = 2 * d * d + 2 * d * d_kv
    if config.family == "gpt2":
        return weights + 2 * d + 2 * d_kv
    return weights + (d + 2 * d_kv if config.qkv_bias else 0)


def work(config: TransformerConfig, part: str, batch: int, seq_len: int, precision: str = "fp32") -> Work:
    """FLOPs and bytes moved of one inference of ``part`` (``"model"`` or ``"attention"``, one block) at
    (batch, seq_len) with the graph at ``precision``. See the module docstring for what is counted.

    Raises:
        ValueError: for an unknown part or precision, or batch/seq_len < 1.
    """
    if precision not in ELEMENT_SIZE:
        raise ValueError(f"precision must be one of {list(ELEMENT_SIZE)}, got {precision!r}")
    elt = ELEMENT_SIZE[precision]
    tokens = batch * seq_len
    if part == "model":
        flops = forward_flops(config, batch, seq_len).total
        nbytes = config.n_params * elt + tokens * TOKEN_ID_BYTES + tokens * config.vocab_size * elt
    elif part == "attention":
        flops = attention_flops(config, batch, seq_len)
        nbytes = attention_params(config) * elt + 2 * tokens * config.d_model * elt
    else:
        raise ValueError(f"part must be 'model' or 'attention', got {part!r}")
    return Work(float(flops), float(nbytes))


def decode_step_work(config: TransformerConfig, batch: int, prompt_len: int, new_tokens: int,
                     precision: str = "fp32") -> Work:
    """FLOPs and bytes moved (lower bound) of one greedy decode step of the full model, at the mean context of a
    generation's N - 1 steps: step s (1 <= s < N) feeds one token per row and attends over T0 + s keys, so the
    mean is L = T0 + N/2 keys, of which L - 1 come from the cache.

    FLOPs (Kaplan et al. 2020, Table 1, one token per row with L keys): per layer 2·d·(d + 2·d_kv) (Q/K/V; d_kv =
    n_kv_heads·d_head, = d without GQA) + 2·2·L·d (q·k^T and the weighted sum of v, over all n_heads query heads)
    + 2·d² (W^O) + 2·m·d·d_ff (m = 2 matrices, 3 for SwiGLU), plus 2·d·V for the unembedding, times B.

    Bytes: every parameter once (decode at small batch is memory-bound: the weights are read once per step
    whatever B is), the cache read (2·n_layers·B·(L - 1)·d_kv elements: GQA's cache is n_kv_heads wide), the
    step's new keys and values written (2·n_layers·B·d_kv), the token ids read and the (B, 1, V) logits written.
    A concatenating graph also copies the whole cache into ``present`` every step (docs/generation.md); that copy
    is not counted, since an in-place cache does not make it, so this stays a lower bound.

    Raises:
        ValueError: for an unknown precision, or batch / prompt_len / new_tokens < 1.
    """
    if precision not in ELEMENT_SIZE:
        raise ValueError(f"precision must be one of {list(ELEMENT_SIZE)}, got {precision!r}")
    if min(batch, prompt_len, new_tokens) < 1:
        raise ValueError(f"batch, prompt_len and new_tokens must be >= 1, got {batch}, {prompt_len}, {new_tokens}")
    elt = ELEMENT_SIZE[precision]
    d, f, n, vocab = config.d_model, config.d_ff, config.n_layers, config.vocab_size
    d_kv, ffn_matrices = config.n_kv_heads * config.d_head, 3 if config.ffn == "swiglu" else 2
    keys = prompt_len + new_tokens / 2
    flops = batch * (n * (2 * d * (d + 2 * d_kv) + 2 * 2 * keys * d + 2 * d * d + 2 * ffn_matrices * d * f)
                     + 2 * d * vocab)
    cache_read = 2 * n * batch * (keys - 1) * d_kv
    cache_written = 2 * n * batch * d_kv
    nbytes = (config.n_params + cache_read + cache_written + batch * vocab) * elt + batch * TOKEN_ID_BYTES
    return Work(float(flops), float(nbytes))


def achieved(w: Work, latency_ms: float, ceilings: dict | None, device: str, precision: str,
             tf32: bool = False) -> dict[str, float]:
    """Result-row columns for a cell of work ``w`` that took ``latency_ms`` (its p50) on ``device``:
    ``flops``, ``bytes_moved``, ``achieved_gflops`` (= flops / p50 / 1e9), ``achieved_gbs`` (= bytes / p50 / 1e9)
    and ``frac_peak_flops`` / ``frac_peak_bw`` against the run's measured ceilings (None without ceilings; see
    :func:`onnxbench.benchmarks.measure.ceilings.peak_for` for which ceiling applies; ``tf32``: the cell ran with TF32
    allowed, so an fp32 cell on CUDA is read against the TF32 peak)."""
    row: dict[str, float] = {"flops": w.flops, "bytes_moved": w.bytes_moved}
    if not latency_ms or latency_ms <= 0 or math.isnan(latency_ms):
        return row
    seconds = latency_ms / 1e3
    row["achieved_gflops"] = w.flops / seconds / 1e9
    row["achieved_gbs"] = w.bytes_moved / seconds / 1e9
    row.update(fractions(row["achieved_gflops"], row["achieved_gbs"], ceilings, device, precision, tf32))
    return row


def fractions(achieved_gflops: float | None, achieved_gbs: float | None, ceilings: dict | None, device: str,
              precision: str, tf32: bool = False) -> dict[str, float | None]:
    """``frac_peak_flops`` = achieved GFLOP/s / GEMM peak and ``frac_peak_bw`` = achieved GB/s / bandwidth
    against ``ceilings`` (:func:`onnxbench.benchmarks.measure.ceilings.peak_for` picks the peak for ``device``,
    ``precision`` and ``tf32``); None where a figure is missing. A value above 1 means the ceiling was not an
    upper bound (see :func:`above_peak_reason`)."""
    peak_gflops, peak_gbs = peak_for(ceilings, device, precision, tf32)
    return {"frac_peak_flops": achieved_gflops / peak_gflops if peak_gflops and achieved_gflops else None,
            "frac_peak_bw": achieved_gbs / peak_gbs if peak_gbs and achieved_gbs else None}


def row_fractions(row: dict, ceilings: dict | None) -> dict[str, float | None]:
    """:func:`fractions` of a result row's achieved rates against ``ceilings`` (device, precision and the TF32 in
    force read from the row's ``device``, ``precision`` and ``options`` columns)."""
    try:
        tf32 = tf32_allowed(json.loads(row.get("options") or "{}"))
    except (ValueError, AttributeError):
        tf32 = False
    return fractions(row.get("achieved_gflops"), row.get("achieved_gbs"), ceilings, row.get("device") or "cpu",
                     row.get("precision") or "fp32", tf32)


#: Start of the warning a row carries in its ``reason`` when it exceeds a measured ceiling.
ABOVE_PEAK = "warning: above the measured peak"


def above_peak_reason(row: dict) -> str:
    """The row's ``reason`` with the above-peak warning set or cleared: a fraction of a ceiling above 1 is a
    measurement problem, never a result (docs/measurement.md, "Ceilings"). For the GEMM peak it means the probe
    read low (contention from other processes); for the copy bandwidth it usually means the cell's bytes stayed
    in the caches, which a DRAM copy does not bound. Other warnings in the reason are kept ("; "-separated)."""
    reason = row.get("reason") or ""
    causes = {"frac_peak_flops": "GEMM peak probed under contention?",
              "frac_peak_bw": "bytes cache-resident, beyond what the DRAM copy bandwidth bounds?"}
    over = [f"{col} {row[col]:.2f}: {cause}" for col, cause in causes.items()
            if row.get(col) is not None and row[col] > 1]
    if not over and ABOVE_PEAK not in reason:
        return reason  # nothing to set or clear: a skipped/failed reason stays exactly as it was
    parts = [p for p in reason.split("; ") if p and not p.startswith(ABOVE_PEAK)]
    if over:
        parts.append(f"{ABOVE_PEAK} ({' and '.join(over)}), a measurement problem, not a result")
    return "; ".join(parts)

