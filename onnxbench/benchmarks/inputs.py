"""Deterministic inputs for a session from its input specs."""

from __future__ import annotations

import numpy as np

from ..export import TensorSpec

#: Dynamic axis names bound to the cell's batch and sequence length.
BATCH_AXES = ("batch", "batch_size", "N")
SEQ_AXES = ("sequence", "seq", "seq_len", "sequence_length", "T")


def make_feeds(specs: tuple[TensorSpec, ...], batch: int, seq_len: int, *, seed: int = 0,
               int_high: int = 2, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random feeds for ``specs`` at (batch, seq_len), the same for every runtime given the same seed.

    Dynamic axes named like batch/sequence take ``batch``/``seq_len``; others come from ``dims``. Integer
    inputs are drawn uniformly from ``[0, int_high)`` (token ids: ``int_high = vocab_size``); float inputs
    from N(0, 1).

    Raises:
        ValueError: for a dynamic axis that no rule binds (names the axis and the ``--dim NAME=SIZE`` fix).
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds = {}
    for spec in specs:
        shape = []
        for axis in spec.shape:
            if isinstance(axis, int) and axis > 0:
                shape.append(axis)
            elif axis in dims:
                shape.append(int(dims[axis]))
            elif axis in BATCH_AXES:
                shape.append(batch)
            elif axis in SEQ_AXES:
                shape.append(seq_len)
            else:
                raise ValueError(
                    f"input {spec.name!r} has dynamic axis {axis!r} with no size; bind it with --dim {axis}=SIZE"
                )
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.integer):
            feeds[spec.name] = rng.integers(0, int_high, size=shape, dtype=dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = np.ones(shape, dtype=np.bool_)
        else:
            feeds[spec.name] = rng.standard_normal(size=shape).astype(dtype)
    return feeds
