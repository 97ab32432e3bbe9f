"""Optimization profiles: the (min, opt, max) shape ranges a GPU engine is built for, derived from the matrix.

TensorRT builds an engine for dynamic inputs only within an *optimization profile*: per input a minimum, an
optimum (the shape kernels are tuned for) and a maximum shape; a shape outside it cannot run
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-dynamic-shapes.html, "Optimization
Profiles"). ONNX Runtime's TensorRT EP takes the same three shapes as ``trt_profile_{min,opt,max}_shapes``
strings in trtexec's ``name:d0xd1`` syntax.

Convention here: min and max are the extremes of the matrix's batch sizes and sequence lengths, opt is the
upper median of each axis's distinct values (for {1, 4} x {32, 128}: min (1, 32), opt (4, 128), max (4, 128)),
so that the tuned shape is one the matrix really times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..export import BATCH_AXES, SEQ_AXES, TensorSpec
from .base import ShapeOutOfRange


@dataclass(frozen=True)
class ShapeRange:
    """min / opt / max shape of one input (tuples of ints, same rank)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"min/opt/max ranks differ: {self}")
        if not all(lo <= o <= hi for lo, o, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(f"need min <= opt <= max on every axis, got {self}")

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max, strict=True))

    def describe(self) -> str:
        return f"min {self.min}, opt {self.opt}, max {self.max}"


def axis_range(values: Iterable[int]) -> tuple[int, int, int]:
    """(min, opt, max) of one axis's values; opt is the upper median of the distinct values.

    Raises:
        ValueError: for no values or a value < 1.
    """
    distinct = sorted(set(int(v) for v in values))
    if not distinct or distinct[0] < 1:
        raise ValueError(f"an axis range needs sizes >= 1, got {distinct}")
    return distinct[0], distinct[len(distinct) // 2], distinct[-1]


def shape_ranges(batches: Iterable[int], seq_lens: Iterable[int]) -> dict[str, tuple[int, int, int]]:
    """``{"batch": (min, opt, max), "sequence": (min, opt, max)}`` from the matrix's batch sizes and sequence
    lengths (the cells one session will run)."""
    return {"batch": axis_range(batches), "sequence": axis_range(seq_lens)}


def generation_ranges(requests: Iterable[tuple[int, int]]) -> dict[str, tuple[int, int, int]]:
    """Ranges of a decoder-with-past graph's axes (docs/generation.md) over greedy generations of
    ``(prompt length T0, new tokens N)``: ``sequence`` from 1 (a decode step) to the longest prompt (a prefill),
    opt 1 since decode steps are most of the calls; ``past_sequence`` from 0 (the prefill's empty cache; TensorRT
    allows empty tensors) to T0 + N - 2; ``total_sequence`` (the mask) from the shortest prompt to T0 + N - 1;
    opt of both at the middle of the longest generation.

    Raises:
        ValueError: for no request, or a prompt or N < 1.
    """
    requests = list(requests)
    if not requests or min(min(t, n) for t, n in requests) < 1:
        raise ValueError(f"generation ranges need prompts and new tokens >= 1, got {requests}")
    longest_prompt = max(t for t, _ in requests)
    t0, n = max(requests, key=lambda r: r[0] + r[1])
    middle = t0 + n // 2
    return {"sequence": (1, 1, longest_prompt), "past_sequence": (0, middle - 1, t0 + n - 2),
            "total_sequence": (min(t for t, _ in requests), middle, t0 + n - 1)}


def profile_ranges(shapes: Iterable[tuple[int, int]], generations: Iterable[tuple[int, int]] = (),
                   dims: dict[str, tuple[int, int, int]] | None = None) -> dict[str, tuple[int, int, int]]:
    """Every dynamic axis's (min, opt, max) for one session (``RuntimeOptions.profile_ranges``): ``dims``, the
    axes bound by name (``--dim``), then the batch and sequence axes of the ``(batch, seq_len)`` ``shapes``
    (:func:`shape_ranges`), then for greedy ``generations`` of ``(prompt length, new tokens)`` the cache axes
    of a decoder-with-past graph (:func:`generation_ranges`).

    Raises:
        ValueError: for no shapes, or a size < 1.
    """
    shapes, generations = list(shapes), list(generations)
    ranges = {**(dims or {}), **shape_ranges([b for b, _ in shapes], [t for _, t in shapes])}
    if generations:
        ranges.update(generation_ranges(generations))
    return ranges


#: Used when the caller gives no ranges (a session opened outside the matrix runner).
DEFAULT_PROFILE_RANGES = {"batch": (1, 1, 4), "sequence": (1, 128, 512)}


def resolve_ranges(ranges: dict[str, tuple[int, int, int]] | None,
                   max_positions: int | None = None) -> dict[str, tuple[int, int, int]]:
    """``ranges`` (from the matrix) or :data:`DEFAULT_PROFILE_RANGES`, with the sequence axis clipped to the
    model's ``max_positions`` (a profile beyond it would describe shapes the model rejects)."""
    resolved = dict(ranges or DEFAULT_PROFILE_RANGES)
    if max_positions and "sequence" in resolved:
        resolved["sequence"] = tuple(min(v, max_positions) for v in resolved["sequence"])
    return resolved


def input_profile(inputs: Iterable[TensorSpec], ranges: dict[str, tuple[int, int, int]]) -> dict[str, ShapeRange]:
    """Per-input :class:`ShapeRange` for specs whose dynamic axes are named like batch or sequence.

    Static axes (ints) are the same in min, opt and max; an axis named in ``ranges`` directly takes that range
    (an unnamed dynamic axis ``i`` of input ``x`` is looked up as ``"x.i"``, as ``--dim`` names it); so every
    axis a ``--dim`` binds gets a range, ``(s, s, s)`` for a fixed size. The cache axes of a decoder-with-past
    graph, whatever their names, take the generation ranges (:func:`_cache_axis`).

    Raises:
        ValueError: for a dynamic axis with no range (names the input and the axis).
    """
    profile = {}
    for spec in inputs:
        lo, opt, hi = [], [], []
        for index, axis in enumerate(spec.shape):
            if isinstance(axis, int) and axis > 0:
                rng = (axis, axis, axis)
            elif axis in ranges:
                rng = ranges[axis]
            elif f"{spec.name}.{index}" in ranges:
                rng = ranges[f"{spec.name}.{index}"]
            elif axis in BATCH_AXES and "batch" in ranges:
                rng = ranges["batch"]
            elif axis in SEQ_AXES and "sequence" in ranges:
                rng = ranges["sequence"]
            elif _cache_axis(spec.name, index) in ranges:
                rng = ranges[_cache_axis(spec.name, index)]
            else:
                raise ValueError(f"input {spec.name!r}: dynamic axis {axis!r} has no (min, opt, max) range; "
                                 f"known ranges: {sorted(ranges)}; bind it with --dim {axis}=SIZE or "
                                 f"--dim {axis}=MIN:OPT:MAX")
            lo.append(rng[0])
            opt.append(rng[1])
            hi.append(rng[2])
        profile[spec.name] = ShapeRange(tuple(lo), tuple(opt), tuple(hi))
    return profile


def _cache_axis(name: str, index: int) -> str | None:
    """The generation range (:func:`generation_ranges`) of a decoder-with-past graph's axis, known by its place
    rather than its name, since exporters name them differently (onnxbench ``past_sequence``; Optimum
    ``past_sequence_length`` and ``past_sequence_length + sequence_length``; the ORT model builder
    ``total_sequence_length``): dim 2 of a ``past_key_values.*`` input is the past, dim 1 of ``attention_mask``
    the total sequence, dim 1 of ``position_ids`` the step's sequence (docs/generation.md)."""
    if name.startswith("past_key_values.") and index == 2:
        return "past_sequence"
    if name == "attention_mask" and index == 1:
        return "total_sequence"
    if name == "position_ids" and index == 1:
        return "sequence"
    return None


def trt_shape_strings(profile: dict[str, ShapeRange]) -> dict[str, str]:
    """ONNX Runtime TensorRT EP options ``trt_profile_{min,opt,max}_shapes`` for ``profile``, in trtexec's
    ``name:d0xd1,name2:...`` syntax (onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html)."""
    def fmt(which: str) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(r, which))}" for name, r in profile.items())

    return {f"trt_profile_{which}_shapes": fmt(which) for which in ("min", "opt", "max")}


def check_binding(name: str, dtype: str, shape: tuple[int, ...], expected_dtype: str,
                  shape_range: ShapeRange | None) -> None:
    """Check one input buffer against what the engine was built for.

    Args:
        name: input tensor name.
        dtype / expected_dtype: element type names (numpy or torch spelling, e.g. ``"int64"``, ``"float16"``).
        shape: the buffer's shape.
        shape_range: the engine's optimization profile for this input (None: no shape check).

    Raises:
        TypeError: dtype mismatch, e.g. int64 token ids bound to an int32 engine input (names both and the fix).
        ShapeOutOfRange: shape outside the profile (quotes min/opt/max).
    """
    got, want = _dtype_name(dtype), _dtype_name(expected_dtype)
    if got != want:
        raise TypeError(f"input {name!r} is {got} but the engine expects {want}; cast it (e.g. "
                        f"ids.astype('{want}')) or rebuild the engine from a graph whose input is {got}")
    if shape_range is not None and not shape_range.contains(tuple(shape)):
        raise ShapeOutOfRange(f"input {name!r} has shape {tuple(shape)}, outside the engine's optimization "
                              f"profile ({shape_range.describe()}); add that batch/sequence length to the "
                              "matrix so the profile covers it")


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")
