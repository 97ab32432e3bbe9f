"""Agreement tolerances: the :class:`Tolerance` dataclass, the pass rule, and the named bands that runtimes
choose from (``onnxbench.runtimes.Runtime.tolerances``; the figures behind them: docs/design.md, "Tolerances").

The pass rule is numpy's ``allclose`` rule, ``|y - y_ref| <= atol + rtol * |y_ref|`` elementwise
(https://numpy.org/doc/stable/reference/generated/numpy.allclose.html) over the positions finite in both, no
NaN/Inf where the reference is finite, and a minimum cosine similarity, so that one bad element or a systematic
drift both fail; where a float64 reference exists, also the error against it within ``floor_factor`` times the
precision's noise floor (docs/agreement.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol of the allclose rule, the minimum cosine similarity (unitless), and the floor factor: the
    largest ratio of the error against float64 to the precision's noise floor that passes (docs/agreement.md,
    "Floor factors"; ``inf``: no floor check)."""

    atol: float
    rtol: float
    min_cosine: float = 0.9999
    floor_factor: float = math.inf

    def passes(self, y: np.ndarray, y_ref: np.ndarray, cosine: float) -> bool:
        """Whether ``y`` agrees with ``y_ref`` (same shape, compared in float64): no NaN/Inf in ``y`` where
        ``y_ref`` is finite, ``|y - y_ref| <= atol + rtol * |y_ref|`` wherever both are finite, and
        ``cosine >= min_cosine``. Positions where ``y_ref`` is not finite are the reference's, not judged here."""
        a = np.asarray(y, dtype=np.float64)
        b = np.asarray(y_ref, dtype=np.float64)
        fin_b = np.isfinite(b)
        if not np.isfinite(a[fin_b]).all():
            return False
        both = fin_b & np.isfinite(a)
        close = np.abs(a[both] - b[both]) <= self.atol + self.rtol * np.abs(b[both])
        return bool(close.all()) and cosine >= self.min_cosine


#: Floor factors (docs/agreement.md, "Floor factors"): the largest error-to-noise-floor ratio that passes.
#: Measured on clean exports (tiny and gpt2-small, four attention variants, dynamo and TorchScript, ORT CPU with
#: and without graph optimizations, torch): fp32 ratios at most 1.3 on the logits and 2.4 at a block boundary,
#: fp16 at most 1.1; planted one-block faults give 1e4 and more in fp32. 10 leaves 4x over the clean maximum.
FP32_FLOOR_FACTOR = 10.0
#: fp16 / bf16: the floor is itself 2^13 (fp16) or 2^16 (bf16) times the fp32 one, so faults stand out less
#: (planted faults on tiny: 5.5x and up); 4 keeps 3.5x over the measured clean maximum.
FP16_FLOOR_FACTOR = 4.0
#: CUDA fp16 kernels may accumulate in fp16 (cuBLAS/TensorRT tactics) where the CPU floor accumulates in fp32:
#: a sum of K terms then carries up to ~sqrt(K) more rounding (K = 768 for gpt2-small: ~28x); not measured
#: here (no GPU), so 32 until a GPU run measures it.
GPU_FP16_FLOOR_FACTOR = 32.0
#: TF32 rounds matmul inputs to 10 mantissa bits, 2^13 coarser than fp32, against an fp32 floor: the ratio of
#: unit roundoffs times the fp32 factor (in effect the absolute band decides).
TF32_FLOOR_FACTOR = FP32_FLOOR_FACTOR * 2.0**13

#: fp32 graphs: reassociation and fused kernels change the rounding of sums over d_model and vocab; the errors
#: measured on ORT CPU are 1e-6 to 1e-4 (docs/design.md), so 1e-3 leaves margin while still catching a wrong
#: mask or a missing bias (errors of order 1e-1 and up).
FP32 = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.99999, floor_factor=FP32_FLOOR_FACTOR)
#: fp16 / bf16 graphs: unit roundoff 2^-11 ~ 4.9e-4 and 2^-8 ~ 3.9e-3 (IEEE 754 binary16; bfloat16), compounded
#: over layers; the bands follow the practice of ORT's and Polygraphy's fp16 comparisons (1e-2 to 5e-2).
FP16 = Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, floor_factor=FP16_FLOOR_FACTOR)
BF16 = Tolerance(atol=1.5e-1, rtol=1e-1, min_cosine=0.995, floor_factor=FP16_FLOOR_FACTOR)
#: fp16 on CUDA devices: ONNX Runtime's own GPT-2 GPU parity threshold for fp16 logits (atol 0.2,
#: ``onnxruntime/python/tools/transformers/models/gpt2/gpt2_helper.py`` DEFAULT_TOLERANCE), since cuBLAS /
#: TensorRT fp16 kernels may accumulate in fp16 and fuse differently from the CPU's fp32-accumulating Casts.
GPU_FP16 = Tolerance(atol=2e-1, rtol=5e-2, min_cosine=0.999, floor_factor=GPU_FP16_FLOOR_FACTOR)
#: fp32 graphs with TF32 allowed: the fp16 band (CPU) or the GPU fp16 band (CUDA) for the absolute check, and
#: :data:`TF32_FLOOR_FACTOR` against the fp32 floor.
TF32 = dataclasses.replace(FP16, floor_factor=TF32_FLOOR_FACTOR)
GPU_TF32 = dataclasses.replace(GPU_FP16, floor_factor=TF32_FLOOR_FACTOR)

#: The band of each graph precision on the CPU (what a comparison outside any runtime uses).
TOLERANCES: dict[str, Tolerance] = {"fp32": FP32, "fp16": FP16, "bf16": BF16}

#: Bands of a runtime keyed by (graph precision, TF32 allowed).
Bands = dict[tuple[str, bool], Tolerance]

#: CPU runtimes. TF32 keeps 10 mantissa bits (NVIDIA A100 whitepaper, "TF32 Tensor Core"), as fp16 does, so an
#: fp32 graph with TF32 allowed gets the fp16 band.
CPU_BANDS: Bands = {**{(p, tf32): t for p, t in TOLERANCES.items() for tf32 in (False, True)}, ("fp32", True): TF32}
#: CUDA runtimes: fp16 (and fp32 with TF32) widened to :data:`GPU_FP16`; fp32 without TF32 keeps the fp32 band
#: (ORT's GPT-2 fp32 GPU parity: atol 5e-4).
CUDA_BANDS: Bands = {**CPU_BANDS, ("fp32", True): GPU_TF32, ("fp16", False): GPU_FP16, ("fp16", True): GPU_FP16}


def tf32_allowed(options) -> bool:
    """Whether a session ran fp32 matrix products with TF32 allowed: its options (a mapping, as
    ``Session.options`` and the ``options`` column hold them) say ``tf32 = true``. The one place the setting is
    read: the agreement band (:func:`band`) and the ceiling a row is read against depend on it, and the CUDA
    runtimes record what was in force (docs/design.md, "Tolerances")."""
    return bool((options or {}).get("tf32", False))


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
