"""Bring your own ONNX model (a "foreign" artifact) and local checkpoints through the matrix.

A foreign model is any ONNX file not exported by onnxbench. It has no torch module, so:

- its reference is ONNX Runtime's CPU EP running the same file in its own precision (:data:`FOREIGN_REFERENCE`);
  ``torch`` cells become ``skipped`` with the reason;
- its inputs are generated from the graph's input specs (:func:`onnxbench.benchmarks.inputs.make_feeds`):
  dynamic dims are bound from ``MatrixSpec.dims`` (``--dim NAME=SIZE``) or, for axes named like a batch or a
  sequence, from the matrix's batch sizes and sequence lengths; integer inputs are drawn from
  ``MatrixSpec.int_ranges`` (``--int-range [INPUT=]LO:HI``);
- its result rows have ``model`` = the file's stem, ``attention`` = ``"external"``, ``opset`` read from the graph,
  ``precision`` from the graph's first floating-point output, ``batch`` = the size bound to the batch axis and
  ``seq_len`` = the size bound to the sequence axis (1 where the graph has no such axis, so that tokens/s is
  then sequences/s).

A checkpoint model is the reference transformer with weights from a local GPT-2-style checkpoint directory
(:mod:`onnxbench.models.gpt2`); its rows have ``model`` = the directory's name and it is compared with torch eager
running the same weights.

The runner calls the small functions here, so that the foreign/checkpoint logic stays out of its control flow.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import onnx

from ..export import ExportArtifact, TensorSpec, read_artifact
from .inputs import BATCH_AXES, SEQ_AXES, make_feeds

#: Attention label of a foreign model's cells (schema: ``attention``).
EXTERNAL = "external"
#: Reference runtime of a foreign model: ONNX Runtime CPU EP on the same file.
FOREIGN_REFERENCE = "ort-cpu"
_PRECISION_OF = {"float16": "fp16", "bfloat16": "bf16"}


def is_foreign(artifact_or_cell) -> bool:
    """Whether an artifact (no reference config) or a cell (attention ``external``) is a foreign model."""
    if isinstance(artifact_or_cell, ExportArtifact):
        return artifact_or_cell.config is None
    return artifact_or_cell.attention == EXTERNAL


def reference_runtime(artifact_or_cell, default: str) -> str:
    """The runtime whose outputs a cell is compared with: ``default`` (torch) or :data:`FOREIGN_REFERENCE`."""
    return FOREIGN_REFERENCE if is_foreign(artifact_or_cell) else default


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
        raise ValueError(f"{path}: input {spec.name!r} has element type {spec.dtype}, which onnxbench cannot "
                         "generate (bool, integer and float16/32/64 inputs are supported)") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"{path}: input {spec.name!r} has element type {spec.dtype}, which onnxbench cannot "
                         "generate (bool, integer and float16/32/64 inputs are supported)")


def inspect_onnx(path: str | Path) -> tuple[ExportArtifact, int]:
    """Describe a foreign ONNX file: its artifact (specs, opset, sha256) and its parameter count (initializer
    elements).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a loadable ONNX model, or an input is not a numeric tensor (string
            tensors, sequences, maps, optionals, bfloat16 and other element types numpy cannot make).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    return _inspect(str(path.resolve()), path.stat().st_mtime_ns)


def model_name(path: str | Path) -> str:
    """Label of a foreign model or a checkpoint in result rows: the file's stem or the directory's name."""
    path = Path(path)
    return path.stem if path.suffix == ".onnx" else path.resolve().name


def _dynamic_axes(specs: tuple[TensorSpec, ...]) -> set[str]:
    return {a for s in specs for a in s.shape if isinstance(a, str)}


def shape_axes(artifact: ExportArtifact, batches: list[int], seq_lens: list[int],
               dims: dict[str, int]) -> tuple[list[int], list[int]]:
    """The (batch, seq_len) values a foreign model's cells take.

    A batch-like dynamic axis (``batch``, ``batch_size``, ``N``) bound in ``dims`` fixes the batch to that size,
    otherwise it takes each of ``batches``; the same for a sequence-like axis. Without such an axis the value is
    ``[1]``.
    """
    axes = _dynamic_axes(artifact.inputs)
    out = []
    for names, values in ((BATCH_AXES, batches), (SEQ_AXES, seq_lens)):
        present = [a for a in names if a in axes]
        bound = [dims[a] for a in present if a in dims]
        out.append([int(bound[0])] if bound else (list(values) if present else [1]))
    return out[0], out[1]


def validate_onnx_models(paths: list[str], dims: dict[str, int], int_ranges: dict[str, list[int]],
                         taken: set[str] = frozenset(), seed: int = 0) -> None:
    """Check foreign models before anything runs: loadable, numeric tensor inputs, every dynamic dim bound,
    sane integer ranges, names (stems) distinct from each other and from ``taken`` (presets, checkpoints).

    Raises:
        FileNotFoundError / ValueError: naming the file, the input or the axis, and the flag that fixes it.
    """
    stems = dict.fromkeys(taken, "another model")
    for path in paths:
        name = model_name(path)
        if name in stems:
            raise ValueError(f"{path} and {stems[name]} share the model name {name!r}; rename one of them")
        stems[name] = path
        artifact, _ = inspect_onnx(path)
        try:  # binds every axis and checks the integer ranges
            make_feeds(artifact.inputs, 1, 1, seed=seed, dims=dims, int_ranges=int_ranges)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def checkpoint_max_positions(directories: list[str], taken: set[str] = frozenset()) -> dict[str, int]:
    """``{model name: max_positions}`` of checkpoint directories, read from their ``config.json``.

    Raises:
        FileNotFoundError: for a missing directory or file.
        ValueError: for an unsupported config, or a name already used by a preset or another checkpoint.
    """
    from ..models.gpt2 import checkpoint_config

    out: dict[str, int] = {}
    for directory in directories:
        name = model_name(directory)
        if name in out or name in taken:
            raise ValueError(f"checkpoint {directory}: the model name {name!r} is already used; rename the directory")
        out[name] = checkpoint_config(directory).max_positions
    return out


def foreign_cells(paths: list[str], runtimes: list[str], batches: list[int], seq_lens: list[int],
                  dims: dict[str, int], shapes: dict[str, dict[str, list[int]]]) -> list:
    """Cells of the foreign models: each file x runtime x bound (batch, seq_len); ``shapes[stem]`` overrides
    the batch/sequence lists for one model as it does for presets."""
    from .matrix import Cell

    cells = []
    for path in paths:
        artifact, _ = inspect_onnx(path)
        name = model_name(path)
        override = shapes.get(name, {})
        b_values, t_values = shape_axes(artifact, override.get("batches", batches),
                                        override.get("seq_lens", seq_lens), dims)
        precision = precision_of(artifact)
        for runtime, b, t in itertools.product(runtimes, b_values, t_values):
            cells.append(Cell(name, EXTERNAL, precision, artifact.opset, runtime, b, t))
    return cells


def precision_of(artifact: ExportArtifact) -> str:
    """``fp16``/``bf16`` if the first floating-point output has that type, else ``fp32``."""
    for spec in artifact.outputs:
        if spec.dtype in _PRECISION_OF:
            return _PRECISION_OF[spec.dtype]
        if spec.dtype.startswith("float"):
            return "fp32"
    return "fp32"


def find_path(paths: list[str], name: str) -> str | None:
    """The entry of ``paths`` whose :func:`model_name` is ``name`` (None if none)."""
    return next((p for p in paths if model_name(p) == name), None)


def foreign_artifact(path: str) -> ExportArtifact:
    """The artifact of a foreign model (read, not exported; ``export_s`` 0).

    Raises:
        ValueError: see :func:`inspect_onnx`.
    """
    return inspect_onnx(path)[0]


def n_params(artifact: ExportArtifact) -> int | None:
    """Parameters of the model behind an artifact: the reference config's count, or a foreign graph's
    initializer elements."""
    if artifact.config is not None:
        return artifact.config.n_params
    try:
        return inspect_onnx(artifact.path)[1]
    except (OSError, ValueError):
        return None


def cell_feeds(specs: tuple[TensorSpec, ...], cell, artifact: ExportArtifact, seed: int,
               dims: dict[str, int], int_ranges: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Inputs of one cell: token ids below ``vocab_size`` for the reference transformer; for a foreign model
    the graph's inputs with ``dims`` and ``int_ranges`` applied (see :func:`make_feeds`)."""
    if artifact.config is not None:
        return make_feeds(specs, cell.batch, cell.seq_len, seed=seed, int_high=artifact.config.vocab_size)
    return make_feeds(specs, cell.batch, cell.seq_len, seed=seed, dims=dims, int_ranges=int_ranges)
