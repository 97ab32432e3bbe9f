"""Numerical agreement of a runtime's outputs with the reference's on the same inputs.

The pass rule and the bands live in :mod:`onnxbench.tolerance` (each runtime picks its bands); this module
measures the errors and applies the rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import runtimes
from ..tolerance import CPU_BANDS, TOLERANCES, Tolerance, band


def tolerance_for(precision: str, runtime: str | None = None, tf32: bool = False) -> Tolerance:
    """The agreement band of ``runtime`` (its :attr:`~onnxbench.runtimes.Runtime.tolerances`) for a graph of
    ``precision`` run with TF32 allowed or not; without a runtime, the CPU bands.

    Raises:
        KeyError: for an unknown runtime or a precision without a band (lists the known ones).
    """
    if runtime is None:
        return band(CPU_BANDS, precision, tf32)
    return runtimes.runtime_class(runtime).tolerance(precision, tf32)


@dataclass(frozen=True)
class Agreement:
    """Agreement of one output with its reference.

    Attributes:
        output: output name.
        max_abs_err: max |y - y_ref|.
        max_rel_err: max |y - y_ref| / max(|y_ref|, rel_floor).
        cosine: cosine similarity of the flattened arrays (float64 arithmetic).
        top1_agree: fraction of positions (all axes but the last) whose argmax over the last axis matches;
            NaN for outputs of rank < 2.
        nan_count: number of NaN or +-Inf values in ``y``.
        atol / rtol / min_cosine: the tolerance applied.
        agree: whether the output passed.
    """

    output: str
    max_abs_err: float
    max_rel_err: float
    cosine: float
    top1_agree: float
    nan_count: int
    atol: float
    rtol: float
    min_cosine: float
    agree: bool

    def as_row(self) -> dict:
        """Columns of the result schema (``min_cosine`` is part of the tolerance, not a column)."""
        row = asdict(self)
        row.pop("output")
        row.pop("min_cosine")
        return row


def compare(y: np.ndarray, y_ref: np.ndarray, tol: Tolerance, name: str = "output",
            rel_floor: float = 1e-3) -> Agreement:
    """Compare ``y`` with ``y_ref`` (same shape; any float dtype, compared in float64).

    Args:
        y: runtime output, e.g. logits (B, T, vocab_size).
        y_ref: reference output of the same shape.
        tol: tolerance to apply.
        name: output name recorded in the result.
        rel_floor: denominator floor of the relative error, so that near-zero references do not blow it up.

    Raises:
        ValueError: if the shapes differ (names both).
    """
    if y.shape != y_ref.shape:
        raise ValueError(f"output {name!r}: shape {y.shape} differs from the reference's {y_ref.shape}")
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(y_ref, dtype=np.float64)
    finite = np.isfinite(a)
    nan_count = int(a.size - finite.sum())
    diff = np.abs(a - b)
    max_abs = float(np.nanmax(diff)) if a.size else 0.0
    max_rel = float(np.nanmax(diff / np.maximum(np.abs(b), rel_floor))) if a.size else 0.0
    fa, fb = np.where(finite, a, 0.0).ravel(), b.ravel()
    denom = np.linalg.norm(fa) * np.linalg.norm(fb)
    cosine = float(fa @ fb / denom) if denom > 0 else float(np.array_equal(fa, fb))
    top1 = float(np.mean(a.argmax(-1) == b.argmax(-1))) if a.ndim >= 2 and a.size else float("nan")
    return Agreement(name, max_abs, max_rel, cosine, top1, nan_count, tol.atol, tol.rtol, tol.min_cosine,
                     tol.passes(a, b, cosine))


def compare_outputs(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                    tol: Tolerance) -> list[Agreement]:
    """Compare every output present in both dicts (matched by name, or by position when the names differ).

    Raises:
        ValueError: if the two runs have different numbers of outputs.
    """
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs vs {len(reference)} in the reference")
    if set(outputs) == set(reference):
        pairs = [(k, outputs[k], reference[k]) for k in reference]
    else:
        pairs = [(k, v, r) for (k, v), r in zip(outputs.items(), reference.values(), strict=True)]
    return [compare(v, r, tol, name=k) for k, v, r in pairs]


def worst(agreements: list[Agreement]) -> Agreement:
    """The agreement that summarises a cell: the first failing output, else the one with max abs error."""
    failing = [a for a in agreements if not a.agree]
    return failing[0] if failing else max(agreements, key=lambda a: a.max_abs_err)


__all__ = ["TOLERANCES", "Agreement", "Tolerance", "compare", "compare_outputs", "tolerance_for", "worst"]
