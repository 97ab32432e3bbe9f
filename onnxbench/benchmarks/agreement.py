"""Numerical agreement of a runtime's outputs with the reference's on the same inputs.

The pass rule is numpy's ``allclose`` rule, ``|y - y_ref| <= atol + rtol * |y_ref|`` elementwise
(https://numpy.org/doc/stable/reference/generated/numpy.allclose.html), plus "every value finite" and a
minimum cosine similarity, so that one bad element or a systematic drift both fail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol of the allclose rule and the minimum cosine similarity (unitless)."""

    atol: float
    rtol: float
    min_cosine: float = 0.9999


#: Tolerances by compute precision of the graph, for logits of magnitude ~1-100.
#: fp32: reassociation and fused kernels change the rounding of sums over d_model and vocab; errors of
#: 1e-6-1e-4 are measured on ORT CPU (DESIGN.md: ~4e-5 on logits of magnitude ~100), so 1e-3 leaves margin
#: while still catching a wrong mask or a missing bias (errors of order 1e-1 and up).
#: fp16 / bf16: unit roundoff 2^-11 ~ 4.9e-4 and 2^-8 ~ 3.9e-3 (IEEE 754 binary16; bfloat16), compounded over
#: layers; the bands follow the practice of ORT's and Polygraphy's fp16 comparisons (1e-2 to 5e-2).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.99999),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999),
    "bf16": Tolerance(atol=1.5e-1, rtol=1e-1, min_cosine=0.995),
}


#: GPU runtimes: fp16 band widened to ONNX Runtime's own GPT-2 GPU parity threshold for fp16 logits
#: (atol 0.2, ``onnxruntime/python/tools/transformers/models/gpt2/gpt2_helper.py`` DEFAULT_TOLERANCE), since
#: cuBLAS / TensorRT fp16 kernels may accumulate in fp16 and fuse differently from the CPU's fp32-accumulating
#: Casts; fp32 without TF32 keeps the fp32 band (ORT's GPT-2 fp32 GPU parity: atol 5e-4).
GPU_FP16 = Tolerance(atol=2e-1, rtol=5e-2, min_cosine=0.999)

#: Tolerances keyed by (runtime, precision, TF32 allowed). Keys absent here use ``TOLERANCES[precision]``.
#: TF32 keeps 10 mantissa bits (NVIDIA A100 whitepaper, "TF32 Tensor Core"), the same as fp16, so an fp32
#: graph with TF32 allowed gets the GPU fp16 band.
RUNTIME_TOLERANCES: dict[tuple[str, str, bool], Tolerance] = {
    **{(rt, "fp32", True): GPU_FP16 for rt in ("ort-cuda", "ort-trt", "tensorrt")},
    **{(rt, "fp16", tf32): GPU_FP16 for rt in ("ort-cuda", "ort-trt", "tensorrt") for tf32 in (False, True)},
}


def tolerance_for(precision: str, runtime: str | None = None, tf32: bool = False) -> Tolerance:
    """Tolerance for (runtime, graph precision, whether TF32 was allowed): :data:`RUNTIME_TOLERANCES` where
    it has the key, else the precision's band in :data:`TOLERANCES` (fp32 with TF32 on any other runtime
    also gets the fp16 band, for the reason given at :data:`RUNTIME_TOLERANCES`).

    Raises:
        KeyError: for an unknown precision (lists the known ones).
    """
    if precision not in TOLERANCES:
        raise KeyError(f"no tolerance for precision {precision!r}; known: {list(TOLERANCES)}")
    key = (runtime or "", precision, bool(tf32))
    if key in RUNTIME_TOLERANCES:
        return RUNTIME_TOLERANCES[key]
    if precision == "fp32" and tf32:
        return TOLERANCES["fp16"]
    return TOLERANCES[precision]


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
    ok = nan_count == 0 and bool(np.all(diff <= tol.atol + tol.rtol * np.abs(b))) and cosine >= tol.min_cosine
    return Agreement(name, max_abs, max_rel, cosine, top1, nan_count, tol.atol, tol.rtol, tol.min_cosine, ok)


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
