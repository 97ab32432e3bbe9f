"""Deterministic inputs for a session from its input specs."""

from __future__ import annotations

import math

import numpy as np

from ..export import BATCH_AXES, SEQ_AXES, TensorSpec


def make_feeds(specs: tuple[TensorSpec, ...], batch: int, seq_len: int, *, seed: int = 0,
               int_high: int = 2, dims: dict[str, int] | None = None,
               int_ranges: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Random feeds for ``specs`` at (batch, seq_len), the same for every runtime given the same seed.

    Axis sizes: a positive static size is kept; a dynamic axis takes ``dims[name]`` if given (``--dim
    NAME=SIZE``), else ``batch`` if named like a batch (:data:`BATCH_AXES`) or ``seq_len`` if named like a
    sequence (:data:`SEQ_AXES`); an unnamed dynamic axis (no ``dim_param``) of input ``x`` at index ``i`` takes
    ``dims["x.i"]``.

    Values by element type: integers uniform in ``[lo, hi)`` from ``int_ranges[input name]``, else
    ``int_ranges["*"]``, else ``[1, 2)`` (all ones) for inputs whose name contains ``mask`` (attend everywhere),
    else ``[0, int_high)`` (token ids: ``int_high = vocab_size``); bool all True; float16/32/64 from N(0, 1).

    Raises:
        ValueError: for a dynamic axis that no rule binds (names the axis and the ``--dim`` fix), a size < 0
            (0 is an empty axis, e.g. a KV cache with no past yet, which ONNX Runtime runs), an empty integer
            range or one outside the input's dtype, or an element type that cannot be generated (strings,
            bfloat16, complex).
    """
    rng = np.random.default_rng(seed)
    int_ranges = dict(int_ranges or {})
    shapes = bind_shapes(specs, batch, seq_len, dims)
    feeds = {}
    for spec in specs:
        shape = shapes[spec.name]
        dtype = _dtype(spec)
        if dtype == np.bool_:
            feeds[spec.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(dtype, np.integer):
            lo, hi = _int_range(spec, dtype, int_ranges, int_high)
            feeds[spec.name] = rng.integers(lo, hi, size=shape, dtype=dtype)
        else:
            feeds[spec.name] = rng.standard_normal(size=shape).astype(dtype)
    return feeds


def bind_shapes(specs: tuple[TensorSpec, ...], batch: int, seq_len: int,
                dims: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every input at (batch, seq_len), by the axis rules of :func:`make_feeds`.

    Raises:
        ValueError: for a dynamic axis that no rule binds (names the axis and the ``--dim`` fix) or a size < 0.
    """
    dims = dict(dims or {})
    return {spec.name: tuple(_axis_size(spec, i, axis, batch, seq_len, dims) for i, axis in enumerate(spec.shape))
            for spec in specs}


def _axis_size(spec: TensorSpec, index: int, axis, batch: int, seq_len: int, dims: dict[str, int]) -> int:
    if isinstance(axis, int) and axis > 0:
        return axis
    named = isinstance(axis, str) and axis not in ("", "None")
    key = axis if named else f"{spec.name}.{index}"
    if key in dims:
        size = int(dims[key])
    elif named and axis in BATCH_AXES:
        size = batch
    elif named and axis in SEQ_AXES:
        size = seq_len
    elif named:
        raise ValueError(f"input {spec.name!r} has dynamic axis {axis!r} with no size; bind it with --dim {axis}=SIZE")
    else:
        raise ValueError(f"input {spec.name!r} axis {index} is dynamic and unnamed; bind it with --dim {key}=SIZE")
    if size < 0:
        raise ValueError(f"size {size} of axis {key!r} must be >= 0")
    return size


def _dtype(spec: TensorSpec) -> np.dtype:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"input {spec.name!r} has element type {spec.dtype}, which cannot be generated "
                         "(bool, integer and float16/32/64 inputs are supported)")
    return dtype


def _int_range(spec: TensorSpec, dtype: np.dtype, int_ranges: dict, int_high: int) -> tuple[int, int]:
    if spec.name in int_ranges:
        lo, hi = int_ranges[spec.name]
    elif "*" in int_ranges:
        lo, hi = int_ranges["*"]
    elif "mask" in spec.name.lower():
        lo, hi = 1, 2
    else:
        lo, hi = 0, int_high
    info = np.iinfo(dtype)
    if hi <= lo:
        raise ValueError(f"input {spec.name!r}: empty integer range [{lo}, {hi}); give --int-range LO:HI with LO < HI")
    if lo < info.min or hi - 1 > info.max:
        raise ValueError(f"input {spec.name!r}: integer range [{lo}, {hi}) lies outside {dtype.name} "
                         f"[{info.min}, {info.max}]")
    return int(lo), int(hi)


def padding_tokens(padding: float, seq_len: int, row: int, batch: int) -> int:
    """Padding positions of row ``row`` (0-based) of a batch of ``batch`` rows of ``seq_len`` positions asked to
    have the fraction ``padding`` in [0, 1): ``floor(padding · seq_len · (row + 1) / batch)``, so that rows differ in
    length, the last row has the fraction asked for where ``padding · seq_len`` is whole, and every row keeps at
    least one position (docs/generation.md). Padding is whole tokens, so the fraction fed can be lower than asked
    (a one-token prompt pads nothing): :func:`padding_note` says so. The product is taken to 1e-9 so that a
    fraction like 0.29 of 100 gives 29, not the 28 of its binary rounding."""
    return math.floor(padding * seq_len * (row + 1) / batch + 1e-9)


def fed_padding(padding: float, seq_len: int) -> float:
    """The fraction of the last row's ``seq_len`` positions that :func:`padding_tokens` pads (whole tokens)."""
    return padding_tokens(padding, seq_len, 0, 1) / seq_len if seq_len else 0.0


def padding_note(asked: float, mask: np.ndarray) -> str:
    """The note a row carries when the padding fed differs from the padding asked for: ``mask`` (B, T), 0 on
    padded positions; what was fed is the fraction of the last row's positions that are 0. "" when they agree
    (to 1e-9)."""
    last = np.asarray(mask)[-1]
    padded = int((last == 0).sum())
    fed = padded / last.size if last.size else 0.0
    if abs(fed - asked) <= 1e-9:
        return ""
    return (f"note: padding {asked:g} asked, {fed:.4g} fed ({padded} of {last.size} positions of the last row; "
            "padding is whole tokens)")
