"""Agreement tolerances: the :class:`Tolerance` dataclass, the pass rule, and the named bands that runtimes
choose from (``onnxbench.runtimes.Runtime.tolerances``; the figures behind them: docs/design.md, "Tolerances").

The pass rule is numpy's ``allclose`` rule, ``|y - y_ref| <= atol + rtol * |y_ref|`` elementwise
(https://numpy.org/doc/stable/reference/generated/numpy.allclose.html), plus "every value finite" and a
minimum cosine similarity, so that one bad element or a systematic drift both fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol of the allclose rule and the minimum cosine similarity (unitless)."""

    atol: float
    rtol: float
    min_cosine: float = 0.9999

    def passes(self, y: np.ndarray, y_ref: np.ndarray, cosine: float) -> bool:
        """Whether ``y`` agrees with ``y_ref`` (same shape, compared in float64): every value of ``y`` finite,
        ``|y - y_ref| <= atol + rtol * |y_ref|`` everywhere, and ``cosine >= min_cosine``."""
        a = np.asarray(y, dtype=np.float64)
        b = np.asarray(y_ref, dtype=np.float64)
        return (bool(np.isfinite(a).all()) and bool(np.all(np.abs(a - b) <= self.atol + self.rtol * np.abs(b)))
                and cosine >= self.min_cosine)


#: fp32 graphs: reassociation and fused kernels change the rounding of sums over d_model and vocab; the errors
#: measured on ORT CPU are 1e-6 to 1e-4 (docs/design.md), so 1e-3 leaves margin while still catching a wrong
#: mask or a missing bias (errors of order 1e-1 and up).
FP32 = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.99999)
#: fp16 / bf16 graphs: unit roundoff 2^-11 ~ 4.9e-4 and 2^-8 ~ 3.9e-3 (IEEE 754 binary16; bfloat16), compounded
#: over layers; the bands follow the practice of ORT's and Polygraphy's fp16 comparisons (1e-2 to 5e-2).
FP16 = Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999)
BF16 = Tolerance(atol=1.5e-1, rtol=1e-1, min_cosine=0.995)
#: fp16 on CUDA devices: ONNX Runtime's own GPT-2 GPU parity threshold for fp16 logits (atol 0.2,
#: ``onnxruntime/python/tools/transformers/models/gpt2/gpt2_helper.py`` DEFAULT_TOLERANCE), since cuBLAS /
#: TensorRT fp16 kernels may accumulate in fp16 and fuse differently from the CPU's fp32-accumulating Casts.
GPU_FP16 = Tolerance(atol=2e-1, rtol=5e-2, min_cosine=0.999)

#: The band of each graph precision on the CPU (what a comparison outside any runtime uses).
TOLERANCES: dict[str, Tolerance] = {"fp32": FP32, "fp16": FP16, "bf16": BF16}

#: Bands of a runtime keyed by (graph precision, TF32 allowed).
Bands = dict[tuple[str, bool], Tolerance]

#: CPU runtimes. TF32 keeps 10 mantissa bits (NVIDIA A100 whitepaper, "TF32 Tensor Core"), as fp16 does, so an
#: fp32 graph with TF32 allowed gets the fp16 band.
CPU_BANDS: Bands = {**{(p, tf32): t for p, t in TOLERANCES.items() for tf32 in (False, True)}, ("fp32", True): FP16}
#: CUDA runtimes: fp16 (and fp32 with TF32) widened to :data:`GPU_FP16`; fp32 without TF32 keeps the fp32 band
#: (ORT's GPT-2 fp32 GPU parity: atol 5e-4).
CUDA_BANDS: Bands = {**CPU_BANDS, ("fp32", True): GPU_FP16, ("fp16", False): GPU_FP16, ("fp16", True): GPU_FP16}


def band(bands: Bands, precision: str, tf32: bool = False) -> Tolerance:
    """The band of ``bands`` for (graph precision, whether TF32 was allowed).

    Raises:
        KeyError: for a precision the table has no band for (lists the known ones).
    """
    try:
        return bands[(precision, bool(tf32))]
    except KeyError:
        known = sorted({p for p, _ in bands})
        raise KeyError(f"no tolerance for precision {precision!r}; known: {known}") from None
