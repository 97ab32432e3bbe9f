"""Agreement of a quantized graph's logits with the float reference, judged on what quantization should preserve.

An int8 graph cannot meet the elementwise ``allclose`` bands of :mod:`onnxbench.benchmarks.verify.agreement` (its
logits move by about 1e-2, far beyond the fp32 band), yet it is fine if the model still predicts the same next
token from nearly the same distribution. So a quantized graph is judged by:

- **cosine similarity** of the flattened logits (float64): a systematic distortion (a wrong scale) lowers it;
- **top-1 agreement**: the fraction of positions whose argmax over the vocabulary matches the reference's;
- **KL divergence of the next-token distribution**, ``KL(p_ref || p_q) = sum_v p_ref(v) (log p_ref(v) -
  log p_q(v))`` with ``p = softmax(logits)`` over the vocabulary at each position (Kullback & Leibler 1951; the
  direction that weighs the tokens the reference finds likely), in nats, computed in float64 with a stable
  log-softmax; its mean over positions measures the typical damage, its max the worst position.

The thresholds in :data:`INT8_DYNAMIC_THRESHOLDS` were chosen from measurements of clean and deliberately broken
quantizations; the figures and the reasons are in docs/quantization.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class QuantThresholds:
    """Pass limits for a quantized graph (all unitless; KL in nats).

    Attributes:
        min_cosine: minimum cosine similarity of the logits.
        min_top1: minimum fraction of positions with the same argmax token.
        max_kl_mean: maximum mean over positions of KL(p_ref || p_q).
        max_kl_max: maximum over positions of KL(p_ref || p_q).
    """

    min_cosine: float
    min_top1: float
    max_kl_mean: float
    max_kl_max: float


#: int8-dynamic (ONNX Runtime dynamic quantization of the MatMul weights). Measured on tiny and gpt2-small at
#: B in {1, 4}, T in {32, 128} (docs/quantization.md): clean quantizations reach cosine >= 0.998, top-1 >= 0.87,
#: KL mean <= 5e-4 and KL max <= 2e-2 nats; every broken one measured (a weight scale x2, per-tensor weights with an
#: outlier, outliers inside a column) misses at least one limit. KL mean 1e-2 nats is about a 1% rise in perplexity,
#: a bound that also holds for trained checkpoints, whose peaked distributions give larger KL than random weights.
INT8_DYNAMIC_THRESHOLDS = QuantThresholds(min_cosine=0.99, min_top1=0.70, max_kl_mean=1e-2, max_kl_max=1e-1)


@dataclass(frozen=True)
class QuantAgreement:
    """Agreement of quantized logits with the float reference.

    Attributes:
        output: output name.
        cosine: cosine similarity of the flattened logits (float64).
        top1_agree: fraction of positions (all axes but the last) with the same argmax.
        kl_mean / kl_max: mean and max over positions of KL(p_ref || p_q), nats.
        max_abs_err: max |y - y_ref| (for the record; not a pass criterion).
        nan_count: NaN or +-Inf values in the quantized logits.
        thresholds: the limits applied.
        agree: whether every limit was met and every value is finite.
    """

    output: str
    cosine: float
    top1_agree: float
    kl_mean: float
    kl_max: float
    max_abs_err: float
    nan_count: int
    thresholds: QuantThresholds
    agree: bool

    def as_row(self) -> dict:
        """Flat columns (thresholds prefixed ``min_`` / ``max_`` as in :class:`QuantThresholds`)."""
        row = asdict(self)
        row.pop("output")
        row.update(row.pop("thresholds"))
        return row


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis in float64, shifted by the row max so that exp never overflows."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def next_token_kl(logits_ref: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    """KL(p_ref || p_q) in nats at every position: ``logits_*`` of shape (..., vocab) -> array of shape (...).

    Raises:
        ValueError: if the shapes differ or the arrays have rank < 1.
    """
    if logits_ref.shape != logits_q.shape or logits_ref.ndim < 1:
        raise ValueError(f"logits shapes {logits_ref.shape} and {logits_q.shape} must be equal and of rank >= 1")
    log_p = log_softmax(logits_ref)
    log_q = log_softmax(logits_q)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def check_quantized(y: np.ndarray, y_ref: np.ndarray, thresholds: QuantThresholds = INT8_DYNAMIC_THRESHOLDS,
                      name: str = "logits") -> QuantAgreement:
    """Judge quantized logits ``y`` against the float reference ``y_ref``, both (..., vocab), e.g. (B, T, V).

    Any float dtype; everything is computed in float64. Non-finite values in ``y`` fail the check (and are
    counted); KL and cosine are then computed over the finite positions only, for the record.

    Raises:
        ValueError: if the shapes differ (names both) or the logits have rank < 2 (no positions).
    """
    if y.shape != y_ref.shape:
        raise ValueError(f"output {name!r}: shape {y.shape} differs from the reference's {y_ref.shape}")
    if y.ndim < 2:
        raise ValueError(f"output {name!r}: need logits of shape (..., vocab) with at least one position axis, "
                         f"got shape {y.shape}")
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(y_ref, dtype=np.float64)
    finite = np.isfinite(a)
    nan_count = int(a.size - finite.sum())
    rows = finite.all(axis=-1)
    fa, fb = np.where(finite, a, 0.0).ravel(), b.ravel()
    denom = np.linalg.norm(fa) * np.linalg.norm(fb)
    cosine = float(fa @ fb / denom) if denom > 0 else float(np.array_equal(fa, fb))
    top1 = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    kl = next_token_kl(b[rows], a[rows]) if rows.any() else np.array([np.inf])
    kl_mean, kl_max = float(kl.mean()), float(kl.max())
    max_abs = float(np.max(np.abs(np.where(finite, a, 0.0) - b)))
    ok = (nan_count == 0 and cosine >= thresholds.min_cosine and top1 >= thresholds.min_top1
          and kl_mean <= thresholds.max_kl_mean and kl_max <= thresholds.max_kl_max)
    return QuantAgreement(name, cosine, top1, kl_mean, kl_max, max_abs, nan_count, thresholds, bool(ok))
