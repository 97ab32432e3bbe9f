"""Numerical agreement of a runtime's outputs with the reference's on the same inputs.

The pass rule and the bands live in :mod:`onnxbench.tolerance` (each runtime picks its bands); this module
measures the errors and applies the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...tolerance import TOLERANCES, Tolerance


@dataclass(frozen=True)
class FloorCheck:
    """An output's error against the float64 reference next to the noise floor of its precision
    (docs/agreement.md; :mod:`onnxbench.benchmarks.verify.fp64`).

    Attributes:
        err_fp64: max |y - y_fp64| over the positions finite in both.
        noise_floor: max |y_p - y_fp64| of the reference at the cell's precision p (floored at u_p * max|y_fp64|).
        floor_ratio: err_fp64 / noise_floor (unitless).
        floor_factor: the largest ratio that passes (``Tolerance.floor_factor``).
    """

    err_fp64: float
    noise_floor: float
    floor_ratio: float
    floor_factor: float

    @property
    def passed(self) -> bool:
        return self.floor_ratio <= self.floor_factor


@dataclass(frozen=True)
class Agreement:
    """Agreement of one output with its reference.

    Attributes:
        output: output name.
        max_abs_err: max |y - y_ref| over the positions finite in both.
        max_rel_err: max |y - y_ref| / max(|y_ref|, rel_floor) over the same positions.
        cosine: cosine similarity of y and y_ref over the positions finite in both (float64 arithmetic).
        top1_agree: fraction of positions (all axes but the last) whose argmax over the last axis matches, over
            the positions whose rows are finite in both; NaN for outputs of rank < 2.
        nan_count: number of NaN or +-Inf values in ``y``.
        atol / rtol / min_cosine: the tolerance applied.
        agree: whether the output passed: the absolute band and cosine, and the floor check where there is one.
        required_atol: the smallest atol that would have passed the band at ``rtol`` (inf when ``y`` is
            non-finite where ``y_ref`` is finite).
        ref_nonfinite: NaN/Inf values in ``y_ref``; where ``y`` differs there the position is not judged.
        nonfinite_matched: positions non-finite in both with the same value (NaN and NaN, or the same
            infinity), compared as equal.
        floor: the noise-floor check, or ``None`` when no float64 reference exists for the output.
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
    required_atol: float = 0.0
    ref_nonfinite: int = 0
    nonfinite_matched: int = 0
    floor: FloorCheck | None = None

    def criteria(self) -> str:
        """The criteria applied (docs/agreement.md, "The verdict"), e.g. ``"allclose atol=0.001 rtol=0.001, no
        NaN/Inf, cosine >= 0.99999, floor_ratio <= 10"``."""
        text = f"allclose atol={self.atol:g} rtol={self.rtol:g}, no NaN/Inf, cosine >= {self.min_cosine:g}"
        return text + (f", floor_ratio <= {self.floor.floor_factor:g}" if self.floor is not None else "")

    def failures(self) -> list[str]:
        """Each criterion missed, with the measured value against its limit (empty when the output agrees), e.g.
        ``"floor_ratio 1.6e+04 > floor_factor 10"``."""
        out = []
        if self.required_atol == float("inf"):
            out.append(f"NaN/Inf where the reference is finite ({self.nan_count} non-finite values)")
        elif self.required_atol > self.atol:
            out.append(f"allclose: required_atol {self.required_atol:.4g} > atol {self.atol:g} (at rtol {self.rtol:g}; "
                       f"max_abs_err {self.max_abs_err:.3g})")
        if not self.cosine >= self.min_cosine:
            out.append(f"cosine {self.cosine:.6g} < {self.min_cosine:g}")
        if self.floor is not None and not self.floor.passed:
            out.append(f"floor_ratio {self.floor.floor_ratio:.4g} > floor_factor {self.floor.floor_factor:g} "
                       f"(err_fp64 {self.floor.err_fp64:.3g}, noise_floor {self.floor.noise_floor:.3g})")
        if not self.agree and not out:  # the band's own rounding at its edge: say which values decided
            out.append(f"allclose: required_atol {self.required_atol:.6g} vs atol {self.atol:g} at rtol {self.rtol:g}")
        return out


def required_atol(y: np.ndarray, y_ref: np.ndarray, rtol: float) -> float:
    """Smallest atol for which ``|y - y_ref| <= atol + rtol * |y_ref|`` holds at every position (0 if it holds
    with atol = 0): ``max(|y - y_ref| - rtol * |y_ref|)``. Polygraphy's comparator reports the same quantity
    with rtol unset (its "Minimum Required Tolerance: elemwise error | [abs=max |y - y_ref|]",
    ``polygraphy/comparator/compare.py``); here it is taken at the row's rtol, so it is directly the atol to
    configure. Both arrays float64, same shape, finite."""
    if not y.size:
        return 0.0
    return max(float(np.max(np.abs(y - y_ref) - rtol * np.abs(y_ref))), 0.0)


def check(y: np.ndarray, y_ref: np.ndarray, tol: Tolerance, name: str = "output",
            rel_floor: float = 1e-3, fp64: tuple[np.ndarray, float] | None = None) -> Agreement:
    """Compare ``y`` with ``y_ref`` (same shape; any float dtype, compared in float64).

    NaN semantics: a position non-finite in both with the same value (NaN and NaN, or the same infinity)
    compares as equal and is counted (``nonfinite_matched``); a position where only ``y`` is non-finite fails;
    a position where the reference is non-finite and ``y`` differs is not judged (it is the reference's
    fault, counted in ``ref_nonfinite``). Errors, cosine and top-1 are computed over the positions finite in
    both.

    Args:
        y: runtime output, e.g. logits (B, T, vocab_size).
        y_ref: reference output of the same shape.
        tol: tolerance to apply.
        name: output name recorded in the result.
        rel_floor: denominator floor of the relative error, so that near-zero references do not blow it up.
        fp64: ``(y_fp64, noise floor)``: the float64 reference of this output and the noise floor of the cell's
            precision; the output then also fails when its error against ``y_fp64`` exceeds
            ``tol.floor_factor`` times the floor.

    Raises:
        ValueError: if the shapes differ (names both).
    """
    if y.shape != y_ref.shape:
        raise ValueError(f"output {name!r}: shape {y.shape} differs from the reference's {y_ref.shape}")
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(y_ref, dtype=np.float64)
    fin_a, fin_b = np.isfinite(a), np.isfinite(b)
    both = fin_a & fin_b
    matched = ~fin_a & ~fin_b & ((np.isnan(a) & np.isnan(b)) | (a == b))
    runtime_fault = ~fin_a & fin_b
    nan_count = int(a.size - fin_a.sum())
    da, db = a[both], b[both]
    diff = np.abs(da - db)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(np.max(diff / np.maximum(np.abs(db), rel_floor))) if diff.size else 0.0
    denom = np.linalg.norm(da) * np.linalg.norm(db)
    cosine = float(da @ db / denom) if denom > 0 else float(np.array_equal(da, db))
    top1 = float("nan")
    if a.ndim >= 2 and a.size:
        rows = both.all(axis=-1)
        if rows.any():
            top1 = float(np.mean(a[rows].argmax(-1) == b[rows].argmax(-1)))
    need = float("inf") if runtime_fault.any() else required_atol(da, db, tol.rtol)
    ok = tol.passes(a, b, cosine)
    floor = None
    if fp64 is not None:
        from .fp64 import floor_ratio

        y64, floor_value = fp64
        c = np.asarray(y64, dtype=np.float64)
        finite = fin_a & np.isfinite(c)
        err = float(np.max(np.abs(a[finite] - c[finite]))) if finite.any() else 0.0
        floor = FloorCheck(err, floor_value, floor_ratio(err, floor_value), tol.floor_factor)
        ok = ok and floor.passed
    return Agreement(name, max_abs, max_rel, cosine, top1, nan_count, tol.atol, tol.rtol, tol.min_cosine, ok,
                     need, int(b.size - fin_b.sum()), int(matched.sum()), floor)


def check_outputs(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                    tol: Tolerance, fp64: dict[str, tuple[np.ndarray, float]] | None = None) -> list[Agreement]:
    """Compare every output present in both dicts (matched by name, or by position when the names differ).
    ``fp64`` maps reference output names to (float64 output, noise floor) for the floor check of
    :func:`compare`.

    Raises:
        ValueError: if the two runs have different numbers of outputs.
    """
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs vs {len(reference)} in the reference")
    if set(outputs) == set(reference):
        pairs = [(k, outputs[k], reference[k]) for k in reference]
    else:
        pairs = [(k, v, r) for (k, v), r in zip(outputs.items(), reference.values(), strict=True)]
    names = list(reference)
    fp64 = fp64 or {}
    return [check(v, r, tol, name=k, fp64=fp64.get(names[i])) for i, (k, v, r) in enumerate(pairs)]


def worst(agreements: list[Agreement]) -> Agreement:
    """The agreement that summarises a cell: the first failing output, else the one with max abs error."""
    failing = [a for a in agreements if not a.agree]
    return failing[0] if failing else max(agreements, key=lambda a: a.max_abs_err)


__all__ = ["TOLERANCES", "Agreement", "Tolerance", "check", "check_outputs", "worst"]
