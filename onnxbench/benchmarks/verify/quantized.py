"""Agreement of a quantized graph's outputs with the float reference, judged on what quantization should preserve.

An int8 graph cannot meet the elementwise ``allclose`` bands of :mod:`onnxbench.benchmarks.verify.agreement` (its
logits move by about 1e-2, far beyond the fp32 band), yet it is fine if the model still predicts the same next
token from nearly the same distribution and its outputs keep their size. Which criteria judge an output depends on
its kind (:func:`output_kind`, docs/quantization.md "Judging a quantized graph"):

- every output:

  - **cosine similarity** of the flattened output (float64): a distortion of the direction lowers it;
  - **relative RMS error** ``rel_rms_err = ||y - y_ref||_2 / ||y_ref||_2`` (the root mean square of the error over
    that of the reference): cosine ignores scale, this does not: an output 100x too large has ``rel_rms_err`` 99;

- **vocabulary logits** only (softmax over the last axis is a next-token distribution):

  - **top-1 agreement**: the fraction of positions whose argmax over the vocabulary matches the reference's;
  - **KL divergence of the next-token distribution**, ``KL(p_ref || p_q) = sum_v p_ref(v) (log p_ref(v) -
    log p_q(v))`` with ``p = softmax(logits)`` over the vocabulary at each position (Kullback & Leibler 1951;
    the direction that weighs the tokens the reference finds likely), in nats, computed in float64 with a stable
    log-softmax; its mean over positions measures the typical damage, its max the worst position.

On other outputs (an encoder's hidden states, a pooled vector, a (batch, 1) score, a KV cache) the argmax and a
softmax over the last axis mean nothing: a softmax over one value is 1 whatever the value, so KL is 0 and top-1 is
1 for a (batch, 1) output of any scale.

The thresholds in :data:`INT8_DYNAMIC_THRESHOLDS` were chosen from measurements of clean and deliberately broken
quantizations; the figures and the reasons are in docs/quantization.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

#: The kinds of output (:func:`output_kind`): vocabulary logits get every criterion, other outputs cosine and the
#: relative RMS error only.
VOCAB_LOGITS = "vocabulary logits"
OTHER = "other"


def output_kind(shape: tuple[int, ...], vocab_size: int | None) -> str:
    """:data:`VOCAB_LOGITS` for an output of rank >= 2 whose last axis is ``vocab_size``, the vocabulary of the
    language model the reference is (a reference transformer's, a decoder file's); :data:`OTHER` for every other
    output, and for every output when ``vocab_size`` is None (an encoder file, a model without a vocabulary). The
    rule and why: docs/quantization.md, "Judging a quantized graph"."""
    return VOCAB_LOGITS if vocab_size and len(shape) >= 2 and shape[-1] == vocab_size else OTHER


@dataclass(frozen=True)
class QuantThresholds:
    """Pass limits for a quantized graph (all unitless; KL in nats).

    Attributes:
        min_cosine: minimum cosine similarity of an output (every output).
        min_top1: minimum fraction of positions with the same argmax token (vocabulary logits).
        max_kl_mean: maximum mean over positions of KL(p_ref || p_q) (vocabulary logits).
        max_kl_max: maximum over positions of KL(p_ref || p_q) (vocabulary logits).
        max_rel_rms_err: maximum ``||y - y_ref|| / ||y_ref||`` (every output).
    """

    min_cosine: float
    min_top1: float
    max_kl_mean: float
    max_kl_max: float
    max_rel_rms_err: float


#: int8-dynamic (ONNX Runtime dynamic quantization of the MatMul weights). Measured on tiny and gpt2-small at
#: B in {1, 4}, T in {32, 128} (docs/quantization.md): clean quantizations reach cosine >= 0.998, top-1 >= 0.87,
#: KL mean <= 5e-4 and KL max <= 2e-2 nats; every broken one measured (a weight scale x2, per-tensor weights with an
#: outlier, outliers inside a column) misses at least one limit. KL mean 1e-2 nats is about a 1% rise in perplexity,
#: a bound that also holds for trained checkpoints, whose peaked distributions give larger KL than random weights.
#: The relative RMS error of clean quantizations is at most 0.06 (logits and one block's attention output of tiny,
#: small, llama-tiny and gpt2-small); 0.15 matches the cosine limit (cosine 0.99 allows a direction error of
#: sqrt(2 * 0.01) = 0.14), so a wrong scale of more than 15% fails; a weight scale x2 gives 0.3 to 1, an output x100
#: gives 99 (docs/quantization.md, "The relative RMS error").
INT8_DYNAMIC_THRESHOLDS = QuantThresholds(min_cosine=0.99, min_top1=0.70, max_kl_mean=1e-2, max_kl_max=1e-1,
                                          max_rel_rms_err=0.15)

#: int4-weight (4-bit MatMulNBits weights, blocks of 32). A 4-bit step is 16x an 8-bit one, and over the 30 blocks
#: of smollm-135m clean int4 reaches cosine 0.935, top-1 0.37 (random weights: nearly flat next-token
#: distributions, many near-ties) and KL mean 1.5e-2 nats (docs/quantization.md, "int4-weight"). KL mean 5e-2 nats
#: (about a 5% rise in perplexity) leaves trained checkpoints room for what 4-bit round-to-nearest costs them; every
#: broken graph measured there (every scale x2, the unembedding's scales x100) misses it. Top-1 0.10 is a floor
#: far above chance (1 / vocab_size), not a precision instrument. The relative RMS error limit matches the cosine
#: limit (a direction error of sqrt(2 * 0.10) = 0.45); clean int4 logits reach 0.36 on smollm-135m.
INT4_WEIGHT_THRESHOLDS = QuantThresholds(min_cosine=0.90, min_top1=0.10, max_kl_mean=5e-2, max_kl_max=2.5e-1,
                                         max_rel_rms_err=0.45)


@dataclass(frozen=True)
class QuantAgreement:
    """Agreement of one quantized output with the float reference.

    Attributes:
        output: output name.
        kind: :data:`VOCAB_LOGITS` or :data:`OTHER` (:func:`output_kind`): which criteria apply.
        cosine: cosine similarity of the flattened output (float64).
        rel_rms_err: ``||y - y_ref||_2 / ||y_ref||_2`` over the positions finite in ``y`` (unitless; 0 when both
            are 0, inf when only the reference is).
        top1_agree: fraction of positions (all axes but the last) with the same argmax; None for other outputs.
        kl_mean / kl_max: mean and max over positions of KL(p_ref || p_q), nats; None for other outputs.
        max_abs_err: max |y - y_ref| (for the record; not a pass criterion).
        nan_count: NaN or +-Inf values in the quantized output.
        thresholds: the limits applied.
        agree: whether every limit of the output's kind was met and every value is finite.
    """

    output: str
    kind: str
    cosine: float
    rel_rms_err: float
    top1_agree: float | None
    kl_mean: float | None
    kl_max: float | None
    max_abs_err: float
    nan_count: int
    thresholds: QuantThresholds
    agree: bool

    def limits(self) -> list[tuple[str, float | None, str, float]]:
        """``(criterion, measured value, "<=" or ">=", limit)`` of every criterion of this output's kind, in the
        order the ``criteria`` column names them; the NaN/Inf count is first (none allowed)."""
        t = self.thresholds
        rows = [("nan_count", self.nan_count, "<=", 0), ("cosine", self.cosine, ">=", t.min_cosine)]
        if self.kind == VOCAB_LOGITS:
            rows += [("top1_agree", self.top1_agree, ">=", t.min_top1), ("kl_mean", self.kl_mean, "<=", t.max_kl_mean),
                     ("kl_max", self.kl_max, "<=", t.max_kl_max)]
        return rows + [("rel_rms_err", self.rel_rms_err, "<=", t.max_rel_rms_err)]

    def criteria(self) -> str:
        """The criteria applied, e.g. ``"cosine >= 0.99, rel_rms_err <= 0.1"`` (no NaN/Inf is implied)."""
        return ", ".join(f"{name} {op} {limit:g}" for name, _, op, limit in self.limits()[1:])

    def failures(self) -> list[str]:
        """Each criterion missed, with the measured value against its limit, e.g. ``"rel_rms_err 99 > 0.1"``."""
        out = []
        for name, value, op, limit in self.limits():
            if value is None or not np.isfinite(value) or (value < limit if op == ">=" else value > limit):
                out.append(f"{name} {_fmt(value)} {'<' if op == '>=' else '>'} {limit:g}")
        return out


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


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
                    name: str = "logits", kind: str = VOCAB_LOGITS) -> QuantAgreement:
    """Judge a quantized output ``y`` against the float reference ``y_ref`` (same shape) by the criteria of its
    ``kind``: vocabulary logits (..., vocab), e.g. (B, T, V), by all five; any other output by cosine and the
    relative RMS error (module docstring).

    Any float dtype; everything is computed in float64. Non-finite values in ``y`` fail the check (and are
    counted); the criteria are then computed over the finite positions only, for the record.

    Raises:
        ValueError: if the shapes differ (names both) or vocabulary logits have rank < 2 (no positions).
    """
    if y.shape != y_ref.shape:
        raise ValueError(f"output {name!r}: shape {y.shape} differs from the reference's {y_ref.shape}")
    if kind == VOCAB_LOGITS and y.ndim < 2:
        raise ValueError(f"output {name!r}: need logits of shape (..., vocab) with at least one position axis, "
                         f"got shape {y.shape}")
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(y_ref, dtype=np.float64)
    finite = np.isfinite(a)
    nan_count = int(a.size - finite.sum())
    fa, fb = np.where(finite, a, 0.0).ravel(), b.ravel()
    denom = np.linalg.norm(fa) * np.linalg.norm(fb)
    cosine = float(fa @ fb / denom) if denom > 0 else float(np.array_equal(fa, fb))
    err, size = np.linalg.norm(fa - fb), np.linalg.norm(fb)
    rel_rms = float(err / size) if size > 0 else (0.0 if err == 0 else float("inf"))
    top1 = kl_mean = kl_max = None
    if kind == VOCAB_LOGITS:
        rows = finite.all(axis=-1)
        top1 = float(np.mean(a.argmax(-1) == b.argmax(-1)))
        kl = next_token_kl(b[rows], a[rows]) if rows.any() else np.array([np.inf])
        kl_mean, kl_max = float(kl.mean()), float(kl.max())
    max_abs = float(np.max(np.abs(np.where(finite, a, 0.0) - b))) if a.size else 0.0
    result = QuantAgreement(name, kind, cosine, rel_rms, top1, kl_mean, kl_max, max_abs, nan_count, thresholds, False)
    return dataclasses.replace(result, agree=not result.failures())
