"""A user's ONNX file (any ONNX model not exported by onnxbench) as a model of the matrix.

It has no torch module, so:

- its reference is ONNX Runtime's CPU EP running the same file in its own precision; ``torch`` cells become
  ``skipped`` with the reason (the torch runtimes refuse an artifact without a config);
- it is run as it is: the matrix's attention variants, precisions, opsets and parts do not apply; its cells have
  ``attention`` = :data:`ATTENTION_LABEL`, ``opset`` read from the graph and ``precision`` from the graph's first
  floating-point output;
- its inputs are generated from the graph's input specs (:func:`onnxbench.benchmarks.inputs.make_feeds`):
  dynamic dims are bound from ``MatrixSpec.dims`` (``--dim NAME=SIZE``) or, for axes named like a batch or a
  sequence, from the matrix's batch sizes and sequence lengths; integer inputs are drawn from
  ``MatrixSpec.int_ranges`` (``--int-range [INPUT=]LO:HI``);
- its rows have ``model`` = the file's stem, ``batch`` = the size bound to the batch axis and ``seq_len`` = the
  size bound to the sequence axis (1 where the graph has no such axis, so that tokens/s is then sequences/s),
  ``n_params`` = its initializers' elements, and no work-model columns (no analytic FLOP count).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx

from ...errors import MatrixError
from ...export import ExportArtifact, TensorSpec, read_artifact
from ..cells import Cell
from ..inputs import BATCH_AXES, SEQ_AXES, make_feeds
from .base import ModelSource

if TYPE_CHECKING:
    from ..matrix import MatrixSpec

#: The ``attention`` column of an ONNX file's cells: a label only (the graph's attention is whatever it holds).
ATTENTION_LABEL = "external"
_PRECISION_OF = {"float16": "fp16", "bfloat16": "bf16"}


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int) -> tuple[ExportArtifact, int]:
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    initializers = {t.name for t in model.graph.initializer}
    for role, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            kind = value.type.WhichOneof("value")
            if value.name not in initializers and kind != "tensor_type":
                raise ValueError(f"{path}: {role} {value.name!r} is a {kind or 'untyped value'}; onnxbench feeds "
                                 "and compares tensors only (no sequences, maps, optionals or sparse tensors)")
    artifact = read_artifact(path)
    for spec in artifact.inputs:
        _check_dtype(path, spec)
    return artifact, n_params


def _check_dtype(path: str, spec: TensorSpec) -> None:
    if spec.dtype in ("object", "str") or spec.dtype.startswith(("<U", "|S")):
        raise ValueError(f"{path}: input {spec.name!r} is a string tensor; onnxbench generates numeric inputs only")
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"{path}: input {spec.name!r} has element type {spec.dtype}, which onnxbench cannot "
                         "generate (bool, integer and float16/32/64 inputs are supported)")


def inspect_onnx(path: str | Path) -> tuple[ExportArtifact, int]:
    """Describe an ONNX file: its artifact (specs, opset, sha256) and its parameter count (initializer elements).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a loadable ONNX model, or an input is not a numeric tensor (string
            tensors, sequences, maps, optionals, bfloat16 and other element types numpy cannot make).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    return _inspect(str(path.resolve()), path.stat().st_mtime_ns)


def shape_axes(artifact: ExportArtifact, batches: list[int], seq_lens: list[int],
               dims: dict[str, int]) -> tuple[list[int], list[int]]:
    """The (batch, seq_len) values an ONNX file's cells take.

    A batch-like dynamic axis (``batch``, ``batch_size``, ``N``) bound in ``dims`` fixes the batch to that size,
    otherwise it takes each of ``batches``; the same for a sequence-like axis. Without such an axis the value is
    ``[1]``.
    """
    axes = {a for s in artifact.inputs for a in s.shape if isinstance(a, str)}
    out = []
    for names, values in ((BATCH_AXES, batches), (SEQ_AXES, seq_lens)):
        present = [a for a in names if a in axes]
        bound = [dims[a] for a in present if a in dims]
        out.append([int(bound[0])] if bound else (list(values) if present else [1]))
    return out[0], out[1]


def precision_of(artifact: ExportArtifact) -> str:
    """``fp16``/``bf16`` if the first floating-point output has that type, else ``fp32``."""
    for spec in artifact.outputs:
        if spec.dtype in _PRECISION_OF:
            return _PRECISION_OF[spec.dtype]
        if spec.dtype.startswith("float"):
            return "fp32"
    return "fp32"


@dataclass(frozen=True)
class OnnxFileSource(ModelSource):
    """An ONNX file run as it is, compared with ONNX Runtime's CPU EP running the same file.

    Attributes:
        name: the file's stem.
        path: the file.
        model: the file read as an artifact (``export_s`` 0).
        param_count: initializer elements.
        seed: input seed.
        dims: sizes of named (or ``input.index``) dynamic axes.
        int_ranges: ``{input name or "*": [lo, hi)}`` for integer inputs.
    """

    name: str
    path: str
    model: ExportArtifact
    param_count: int
    seed: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    int_ranges: dict[str, list[int]] = field(default_factory=dict)
    spec_field: ClassVar[str] = "onnx_models"
    reference_runtime: ClassVar[str] = "ort-cpu"

    @classmethod
    def at(cls, path: str | Path, seed: int = 0, dims: dict[str, int] | None = None,
           int_ranges: dict[str, list[int]] | None = None) -> OnnxFileSource:
        """The ONNX file at ``path``.

        Raises:
            FileNotFoundError / ValueError: see :func:`inspect_onnx`.
        """
        artifact, n_params = inspect_onnx(path)
        return cls(Path(path).stem, str(path), artifact, n_params, seed, dict(dims or {}), dict(int_ranges or {}))

    @classmethod
    def from_spec(cls, spec: MatrixSpec) -> list[OnnxFileSource]:
        return [cls.at(path, spec.seed, spec.dims, spec.int_ranges) for path in spec.onnx_models]

    def describe(self) -> str:
        return str(self.path)

    @property
    def n_params(self) -> int:
        return self.param_count

    def validate(self, spec: MatrixSpec) -> None:
        """Every dynamic dim bound and the integer ranges sane (generates inputs once at batch = seq_len = 1).

        Raises:
            MatrixError: (a ValueError) naming the file, the input or the axis, and the flag that fixes it.
        """
        try:
            self.feeds(self.model.inputs, 1, 1)
        except ValueError as exc:
            raise MatrixError(f"{self.path}: {exc}") from None

    def cells(self, spec: MatrixSpec) -> list[Cell]:
        """runtimes x the bound (batch, seq_len) values (:func:`shape_axes`; ``spec.shapes[stem]`` overrides the
        batch/sequence lists as it does for presets)."""
        batches, seq_lens = shape_axes(self.model, *spec.shape_axes(self.name), self.dims)
        precision = precision_of(self.model)
        return [Cell(self.name, ATTENTION_LABEL, precision, self.model.opset, runtime, b, t)
                for runtime, b, t in itertools.product(spec.runtimes, batches, seq_lens)]

    def artifact(self, cell: Cell, cache_dir: str | Path | None = None) -> ExportArtifact:
        return self.model

    def feeds(self, specs: tuple[TensorSpec, ...], batch: int, seq_len: int) -> dict[str, np.ndarray]:
        """The graph's inputs with ``dims`` and ``int_ranges`` applied (see :func:`make_feeds`)."""
        return make_feeds(specs, batch, seq_len, seed=self.seed, dims=self.dims, int_ranges=self.int_ranges)
