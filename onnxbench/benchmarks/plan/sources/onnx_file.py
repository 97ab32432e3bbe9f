"""A user's ONNX file (any ONNX model not exported by onnxbench) as a model of the matrix.

It has no torch module, so:

- its reference is ONNX Runtime's CPU EP running the same file in its own precision with every graph
  optimization disabled, plus a float64 evaluation of the graph where it is small enough
  (:class:`onnxbench.benchmarks.verify.reference.OnnxFileReference`); or, for a file exported from one of our models by
  any exporter, that model's float64 torch reference (``reference_model``, ``--reference-model``);
  ``torch`` cells become ``skipped`` with the reason (the torch runtimes run a module rebuilt from a config,
  never the file: :attr:`onnxbench.runtimes.Runtime.runs_onnx`);
- a decoder with a KV cache (onnxbench's, Hugging Face Optimum's or the ORT model builder's layout, read from
  the graph: :func:`onnxbench.export.decoder_layout.detect_layout`) also runs the ``generate`` scenario: prompts
  of token ids in [0, vocab) from the seed, left-padded as the presets' are, the runtime's decode loop for that
  layout, and every step judged against the same file on ONNX Runtime CPU without graph optimizations recomputing
  the sequence (or the ``reference_model``'s float64 torch model); its rows say the layout
  (``decoder_layout``). Its prefill cells feed an empty cache. Another file with the generate scenario is one
  clear error naming the expected inputs and outputs (docs/usage.md, "Your own ONNX files");
- it is run as it is: the matrix's attention variants, opsets and parts do not apply; its cells have
  ``attention`` = :data:`ATTENTION_LABEL`, ``opset`` read from the graph and ``precision`` from the graph's first
  floating-point output. Of the precisions, only the quantized ones (``int8-dynamic``, ``int4-weight``) apply:
  when the matrix lists one, the file also gets cells that run it quantized (:func:`~onnxbench.benchmarks.plan.
  sources.base.quantized_artifact`, cached by the file's content), compared with the float file's reference;
- its inputs are generated from the graph's input specs (:func:`onnxbench.benchmarks.inputs.make_feeds`):
  dynamic dims are bound from ``OnnxFiles.dims`` (``--dim NAME=SIZE`` or ``--dim NAME=MIN:OPT:MAX``, fed at
  OPT) or, for axes named like a batch or a sequence, from the matrix's batch sizes and sequence lengths; an
  input whose graph declares no shape at all (unknown rank) must be given one with ``OnnxFiles.input_shapes``
  (``--shape NAME=d0,d1,...``), else the matrix is refused; integer inputs are drawn from
  ``OnnxFiles.int_ranges`` (``--int-range [INPUT=]LO:HI``);
- its rows have ``model`` = the file's stem, ``batch`` = the size bound to the batch axis and ``seq_len`` = the
  size bound to the sequence axis (1 where the graph has no such axis, so that tokens/s is then sequences/s),
  ``n_params`` = its initializers' elements, and work-model columns (``flops``, ``bytes_moved``, the achieved
  rates, fractions of the peaks and the roofline point) counted from the graph at the cell's bound shapes
  (:func:`onnxbench.benchmarks.measure.graph_work.graph_work`, docs/work_model.md); left empty where the count is
  incomplete (an operator that may hold heavy work but is not counted), so that a partial count never passes
  for a full one.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx

from ....errors import MatrixError
from ....export import DECODER_WITH_PAST, ExportArtifact, TensorSpec, read_artifact
from ....export.decoder_layout import DecoderLayout, LayoutError, detect_layout
from ....export.quantize import QUANTIZED_PRECISIONS
from ...cells import Cell, CellAxes
from ...inputs import BATCH_AXES, SEQ_AXES, bind_shapes, make_feeds, padding_tokens
from ...measure.graph_work import counted_work
from .base import ModelSource, SourceSettings, left_padded_prompts, quantized_artifact

if TYPE_CHECKING:
    from ....models import TransformerConfig
    from ...measure.workmodel import Work
    from ...verify.positions import RealPositions
    from ...verify.reference import Reference

@dataclass
class OnnxFiles:
    """The ONNX-file source's options: the ``[onnx]`` table of a matrix file, or the flags ``--onnx``, ``--dim``,
    ``--shape``, ``--int-range`` and ``--reference-model`` (docs/usage.md, "Your own ONNX files").

    Attributes:
        files: paths of users' ONNX files, each a model named after the file's stem (``--onnx``).
        dims: sizes of named dynamic axes (``{"batch": 4, "past": [1, 3, 8]}``): a size, or ``[min, opt, max]``
            (inputs are fed at opt; optimization profiles span min..max) (``--dim``).
        int_ranges: ``{input name or "*": [lo, hi)}`` for integer inputs (``--int-range``).
        input_shapes: ``{input name: [d0, d1, ...]}`` shapes (sizes or axis names), required for an input whose
            graph declares no shape (``--shape``).
        reference_models: ``{file's model name: preset name or checkpoint directory}``: that file is compared with
            the model's float64 torch reference instead of ONNX Runtime (``--reference-model``; the file must take
            ``input_ids`` and output ``logits``, checked before anything runs).
    """

    files: list[str] = field(default_factory=list)
    dims: dict[str, int | list[int]] = field(default_factory=dict)
    int_ranges: dict[str, list[int]] = field(default_factory=dict)
    input_shapes: dict[str, list[int | str]] = field(default_factory=dict)
    reference_models: dict[str, str] = field(default_factory=dict)

    #: Keys of the table before it existed (flat matrix keys, in old matrix files and run headers) -> its keys.
    LEGACY_KEYS: ClassVar[dict[str, str]] = {"onnx_models": "files", "dims": "dims", "int_ranges": "int_ranges",
                                              "input_shapes": "input_shapes", "reference_models": "reference_models"}

    @classmethod
    def from_dict(cls, data: dict) -> OnnxFiles:
        """The options of a TOML ``[onnx]`` table or a run header's ``matrix.onnx``; a bare list means ``files``.

        Raises:
            MatrixError: (a ValueError) for an unknown key (naming the known ones) or a value of the wrong kind.
        """
        if isinstance(data, (list, str)):
            data = {"files": data}
        if not isinstance(data, dict):
            raise MatrixError(f"[onnx] must be a table of {', '.join(f.name for f in dataclasses.fields(cls))}; "
                              f"got {data!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MatrixError(f"unknown [onnx] keys {unknown}; known: {', '.join(known)}")
        files = data.get("files", [])
        files = [files] if isinstance(files, str) else files
        for key in ("dims", "int_ranges", "input_shapes", "reference_models"):
            if not isinstance(data.get(key, {}), dict):
                raise MatrixError(f"[onnx] {key} must be a table (NAME = value), got {data[key]!r}")
        return cls([str(f) for f in files], *(dict(data.get(k, {})) for k in known[1:]))

    def validate(self) -> None:
        """Every ``reference_models`` key names one of the files' models.

        Raises:
            MatrixError: naming the key and the files' model names.
        """
        stems = [Path(f).stem for f in self.files]
        for name in self.reference_models:
            if name not in stems:
                raise MatrixError(f"reference_models names {name!r}, which is not one of the ONNX files' models "
                                  f"({', '.join(stems) or 'none given'}; a file's model name is its stem)")


#: The ``attention`` column of an ONNX file's cells: a label only (the graph's attention is whatever it holds).
ATTENTION_LABEL = "external"
_PRECISION_OF = {"float16": "fp16", "bfloat16": "bf16"}


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int) -> tuple[ExportArtifact, int, tuple[str, ...]]:
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
    # no `shape` field at all is an unknown rank (ONNX IR spec, "Static tensor shapes"); an empty one is a scalar
    unranked = tuple(v.name for v in model.graph.input
                     if v.name not in initializers and not v.type.tensor_type.HasField("shape"))
    return artifact, n_params, unranked


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
    return _inspect_file(path)[:2]


def _inspect_file(path: str | Path) -> tuple[ExportArtifact, int, tuple[str, ...]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    return _inspect(str(path.resolve()), path.stat().st_mtime_ns)


def with_input_shapes(path: str | Path, artifact: ExportArtifact, unranked: tuple[str, ...],
                      input_shapes: dict[str, list[int | str]]) -> ExportArtifact:
    """``artifact`` with the shapes of ``input_shapes`` (``--shape NAME=d0,d1,...``) in place of the graph's.

    An entry may be an int (a fixed size) or an axis name (bound like any dynamic axis, e.g. ``batch``).

    Raises:
        ValueError: for an input of unknown rank that ``input_shapes`` leaves out (a 0-d scalar would be fed
            and the cell reported ok at a shape the model was never meant for), a name that is no input, a
            size < 1, or a shape contradicting the graph's rank or static sizes.
    """
    names = {s.name for s in artifact.inputs}
    unknown = sorted(set(input_shapes) - names)
    if unknown:
        raise ValueError(f"--shape names {unknown}, which are not inputs of {path}; its inputs: {sorted(names)}")
    missing = [n for n in unranked if n not in input_shapes]
    if missing:
        raise ValueError(f"{path}: input {missing[0]!r} declares no shape (unknown rank), so onnxbench cannot "
                         f"generate it; give its shape with --shape {missing[0]}=d0,d1,... (sizes or axis names, "
                         "e.g. --shape x=batch,16; TOML: input_shapes = { x = [\"batch\", 16] })")
    inputs = []
    for spec in artifact.inputs:
        shape = input_shapes.get(spec.name)
        if shape is None:
            inputs.append(spec)
            continue
        shape = tuple(shape)
        if any(isinstance(d, int) and d < 1 for d in shape):
            raise ValueError(f"--shape {spec.name}: sizes must be >= 1, got {list(shape)}")
        if spec.name not in unranked:
            if len(shape) != len(spec.shape):
                raise ValueError(f"--shape {spec.name} has rank {len(shape)} but the graph declares rank "
                                 f"{len(spec.shape)} ({list(spec.shape)})")
            clash = [(g, d) for g, d in zip(spec.shape, shape, strict=True)
                     if isinstance(g, int) and g > 0 and g != d]
            if clash:
                raise ValueError(f"--shape {spec.name}={list(shape)} contradicts the graph's static sizes "
                                 f"{list(spec.shape)}")
        inputs.append(dataclasses.replace(spec, shape=shape))
    return dataclasses.replace(artifact, inputs=tuple(inputs))


def dim_sizes(dims: dict[str, int | list[int]]) -> dict[str, int]:
    """The size each bound axis is fed at: ``SIZE``, or OPT of ``[MIN, OPT, MAX]``."""
    return {k: int(v[1]) if isinstance(v, (list, tuple)) else int(v) for k, v in dims.items()}


def dim_ranges(dims: dict[str, int | list[int]]) -> dict[str, tuple[int, int, int]]:
    """The optimization-profile range of each bound axis: ``(s, s, s)`` for a fixed size, else (MIN, OPT, MAX).

    A size may be 0 (an empty axis: a KV cache with no past yet, which ONNX Runtime runs); whether the graph
    allows it is the runtime's to say (a ``failed`` row with its error otherwise).

    Raises:
        ValueError: for a range that is not three sizes with 0 <= MIN <= OPT <= MAX.
    """
    out = {}
    for key, value in dims.items():
        rng = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * 3
        if len(rng) != 3 or not 0 <= rng[0] <= rng[1] <= rng[2]:
            raise ValueError(f"--dim {key}: expected SIZE or MIN:OPT:MAX with 0 <= MIN <= OPT <= MAX, "
                             f"got {':'.join(map(str, rng))}")
        out[key] = rng
    return out


def dynamic_axes(artifact: ExportArtifact) -> dict[str, str]:
    """The keys ``--dim`` can bind in ``artifact``'s inputs, each with where it is: a named dynamic axis by its name
    (``dim_param``), an unnamed one as ``input.index`` (the rules of :func:`onnxbench.benchmarks.inputs.make_feeds`).
    """
    out: dict[str, str] = {}
    for spec in artifact.inputs:
        for index, axis in enumerate(spec.shape):
            if isinstance(axis, int) and axis > 0:
                continue
            named = isinstance(axis, str) and axis not in ("", "None")
            out.setdefault(axis if named else f"{spec.name}.{index}", f"{spec.name} axis {index}")
    return out


def check_dims(models: dict[str, ExportArtifact], dims: dict[str, int | list[int]]) -> None:
    """Every ``dims`` key (``--dim NAME=...``) binds an axis of some input of ``models`` (``{path: artifact}``),
    so that no size asked for is ignored.

    Raises:
        MatrixError: (a ValueError) for a name that no input has (listing the axes that exist), or an
            ``input.index`` key whose axis is named (bind it by its name) or static.
    """
    axes = {path: dynamic_axes(model) for path, model in models.items()}
    known = {key for keys in axes.values() for key in keys}
    for key in dims:
        if key in known:
            continue
        input_name, _, index = key.rpartition(".")
        for path, model in models.items():
            spec = next((s for s in model.inputs if s.name == input_name), None)
            if spec is None or not index.isdigit() or int(index) >= len(spec.shape):
                continue
            axis = spec.shape[int(index)]
            if isinstance(axis, int) and axis > 0:
                raise MatrixError(f"--dim {key}: axis {index} of input {input_name!r} of {path} is static (size "
                                  f"{axis}); only dynamic axes are bound")
            raise MatrixError(f"--dim {key}: axis {index} of input {input_name!r} of {path} is named {axis!r}; "
                              f"bind it by its name: --dim {axis}=SIZE")
        listing = "; ".join(f"{path}: {', '.join(keys) or 'none (every input axis is static)'}"
                            for path, keys in axes.items())
        raise MatrixError(f"--dim {key}: no input of the ONNX files has an axis {key!r}; their dynamic axes: "
                          f"{listing}")


def shape_axes(artifact: ExportArtifact, batches: list[int], seq_lens: list[int],
               dims: dict[str, int | list[int]]) -> tuple[list[int], list[int]]:
    """The (batch, seq_len) values an ONNX file's cells take.

    A batch-like dynamic axis (``batch``, ``batch_size``, ``N``) bound in ``dims`` fixes the batch to that size,
    otherwise it takes each of ``batches``; the same for a sequence-like axis. Without such an axis the value is
    ``[1]``.
    """
    axes = {a for s in artifact.inputs for a in s.shape if isinstance(a, str)}
    out = []
    for names, values in ((BATCH_AXES, batches), (SEQ_AXES, seq_lens)):
        present = [a for a in names if a in axes]
        bound = [dim_sizes(dims)[a] for a in present if a in dims]
        out.append([int(bound[0])] if bound else (list(values) if present else [1]))
    return out[0], out[1]


@functools.lru_cache(maxsize=16)
def reference_config(reference_model: str) -> TransformerConfig:
    """The config of ``--reference-model``: a preset name or a checkpoint directory.

    Raises:
        MatrixError: (a ValueError) for anything else (lists the presets).
    """
    from ....models import PRESETS, checkpoint_config

    if reference_model in PRESETS:
        return PRESETS[reference_model]
    if Path(reference_model).is_dir():
        return checkpoint_config(reference_model)
    raise MatrixError(f"--reference-model {reference_model!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                      "checkpoint directory (config.json + model.safetensors)")


def check_reference_fit(path: str, reference_model: str) -> None:
    """Check that the ONNX file ``path`` can be compared with the float64 reference of ``reference_model`` (a
    preset name or a checkpoint directory): inputs and outputs are matched by name and shape, so the file must
    take exactly the reference's ``input_ids`` (integer, rank 2: batch, sequence) and output ``logits`` of rank 3
    whose last axis, where static, is the reference's vocabulary size.

    Raises:
        MatrixError: (a ValueError) for a reference that is neither a preset nor a checkpoint directory, or
            naming the file, the mismatching input or output and what the reference expects.
    """
    config = reference_config(reference_model)
    artifact, _ = inspect_onnx(path)
    expects = (f"the reference model {reference_model} takes input_ids int64 (batch, sequence) and outputs logits "
               f"(batch, sequence, {config.vocab_size})")
    inputs = {spec.name: spec for spec in artifact.inputs}
    if "past_key_values.0.key" in inputs:
        _check_decoder_fit(path, reference_model, config)
        return
    if list(inputs) != ["input_ids"]:
        raise MatrixError(f"{path}: inputs {sorted(inputs)} do not fit: {expects} (or is a decoder with a KV cache: "
                          "docs/usage.md)")
    ids = inputs["input_ids"]
    if not np.issubdtype(np.dtype(ids.dtype), np.integer) or len(ids.shape) != 2:
        raise MatrixError(f"{path}: input 'input_ids' is {ids.dtype} of rank {len(ids.shape)}; {expects}")
    logits = next((spec for spec in artifact.outputs if spec.name == "logits"), None)
    if logits is None:
        raise MatrixError(f"{path}: no output named 'logits' (outputs: "
                         f"{[spec.name for spec in artifact.outputs]}); {expects}")
    vocab = logits.shape[-1] if logits.shape else None
    if len(logits.shape) != 3 or (isinstance(vocab, int) and vocab > 0 and vocab != config.vocab_size):
        raise MatrixError(f"{path}: output 'logits' has shape {list(logits.shape)}; {expects}")


def attention_masks(specs: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """The inputs that padding sets to 0: integer or bool inputs of rank 2 (batch, sequence) whose name contains
    ``mask`` (the inputs :func:`~onnxbench.benchmarks.inputs.make_feeds` fills with ones, "attend everywhere")."""
    out = []
    for spec in specs:
        try:
            kind = np.dtype(spec.dtype).kind
        except TypeError:
            continue
        if "mask" in spec.name.lower() and len(spec.shape) == 2 and kind in "biu":
            out.append(spec)
    return out


def _same_axis(a, b) -> bool:
    """Whether two axes of input/output specs are the same axis: one dynamic axis name, or one static size."""
    if isinstance(a, str) and isinstance(b, str):
        return a == b and a not in ("", "None")
    return isinstance(a, int) and isinstance(b, int) and a == b > 0


def _check_decoder_fit(path: str, reference_model: str, config: TransformerConfig) -> None:
    """A decoder file compared with ``reference_model``: its layout must be known and its cache and vocabulary
    sizes the model's (n_layers, n_kv_heads, d_head, vocab_size).

    Raises:
        MatrixError: naming the file, the size that differs and the model's.
    """
    try:
        layout = detect_layout(path)
    except LayoutError as exc:
        raise MatrixError(str(exc)) from None
    ours = {"n_layers": config.n_layers, "n_kv_heads": config.n_kv_heads, "d_head": config.d_head,
            "vocab_size": config.vocab_size}
    theirs = {"n_layers": layout.n_layers, "n_kv_heads": layout.n_kv_heads, "d_head": layout.d_head,
              "vocab_size": layout.vocab_size if layout.vocab_size is not None else config.vocab_size}
    differ = [f"{k} {theirs[k]} (the model's {ours[k]})" for k in ours if theirs[k] != ours[k]]
    if differ:
        raise MatrixError(f"{path} ({layout.kind} decoder layout) does not fit the reference model "
                          f"{reference_model}: {', '.join(differ)}")


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
    """An ONNX file run as it is, compared with ONNX Runtime's CPU EP running the same file without graph
    optimizations, or with ``reference_model``'s float64 torch reference.

    Attributes:
        name: the file's stem.
        path: the file.
        model: the file read as an artifact (``export_s`` 0).
        param_count: initializer elements.
        seed: input seed.
        dims: sizes (or ``[min, opt, max]`` ranges) of named (or ``input.index``) dynamic axes.
        int_ranges: ``{input name or "*": [lo, hi)}`` for integer inputs.
        input_shapes: shapes given to inputs (``--shape``), already applied to ``model.inputs``.
        reference_model: a preset name or checkpoint directory whose float64 torch reference the file is
            compared with (None: ONNX Runtime CPU without graph optimizations).
    """

    name: str
    path: str
    model: ExportArtifact
    param_count: int
    seed: int = 0
    dims: dict[str, int | list[int]] = field(default_factory=dict)
    int_ranges: dict[str, list[int]] = field(default_factory=dict)
    input_shapes: dict[str, list[int | str]] = field(default_factory=dict)
    reference_model: str | None = None
    spec_field: ClassVar[str] = "onnx"

    @property
    def reference_runtime(self) -> str:
        return "torch" if self.reference_model else "ort-cpu"

    @classmethod
    def at(cls, path: str | Path, seed: int = 0, dims: dict[str, int | list[int]] | None = None,
           int_ranges: dict[str, list[int]] | None = None,
           input_shapes: dict[str, list[int | str]] | None = None,
           reference_model: str | None = None) -> OnnxFileSource:
        """The ONNX file at ``path``.

        Raises:
            FileNotFoundError / ValueError: see :func:`inspect_onnx` and :func:`with_input_shapes`.
        """
        artifact, n_params, unranked = _inspect_file(path)
        artifact = with_input_shapes(path, artifact, unranked, dict(input_shapes or {}))
        return cls(Path(path).stem, str(path), artifact, n_params, seed, dict(dims or {}), dict(int_ranges or {}),
                   dict(input_shapes or {}), reference_model)

    @classmethod
    def from_options(cls, options: OnnxFiles, settings: SourceSettings) -> list[OnnxFileSource]:
        """The files of ``options`` (the matrix's ``[onnx]`` table), each with its ``reference_models`` entry.

        Raises:
            MatrixError: for a ``reference_models`` key that names no file.
        """
        options.validate()
        sources = [cls.at(path, settings.seed, options.dims, options.int_ranges, options.input_shapes,
                          options.reference_models.get(Path(path).stem)) for path in options.files]
        check_dims({source.path: source.model for source in sources}, options.dims)
        return sources

    def describe(self) -> str:
        return str(self.path)

    @property
    def n_params(self) -> int:
        return self.param_count

    @property
    def layout(self) -> DecoderLayout | None:
        """The file's KV-cache layout (:func:`onnxbench.export.decoder_layout.detect_layout`, cached per file
        version), or None where it is not a decoder with a KV cache in a known layout."""
        try:
            return detect_layout(self.path)
        except (LayoutError, OSError):
            return None

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary of the language model the file is, which makes an output whose last axis it is
        vocabulary logits (the quantized criteria by output kind, docs/quantization.md): a decoder's, from its
        KV-cache layout (the logits' static axis or the configs beside the file); an onnxbench export's, from the
        config in its metadata; None for any other file (an encoder, a graph without a known vocabulary)."""
        layout = self.layout
        if layout is not None and layout.vocab_size:
            return layout.vocab_size
        config = self.model.config
        return config.vocab_size if config is not None and self.model.part == "model" else None

    @property
    def max_positions(self) -> int | None:
        """A decoder's context length where the file or the configs beside it say (onnxbench metadata,
        ``genai_config.json`` ``context_length``, Hugging Face ``config.json``), else None."""
        layout = self.layout
        return layout.max_positions if layout is not None else None

    def generate_layout(self) -> DecoderLayout:
        """The layout of a file asked to generate, with the prompt's token range checked against its vocabulary.

        Raises:
            MatrixError: (a ValueError) for a file that is not a decoder with a KV cache in a known layout (names
                what it has and the expected inputs and outputs), a vocabulary size nothing gives, or an
                ``--int-range`` for input_ids outside [0, vocab).
        """
        try:
            layout = detect_layout(self.path)
        except LayoutError as exc:
            raise MatrixError(f"the generate scenario needs a decoder with a KV cache: {exc}") from None
        if layout.vocab_size is None:
            raise MatrixError(f"{self.path}: the logits' vocabulary axis is symbolic and neither genai_config.json "
                              "nor config.json beside the file gives vocab_size, so onnxbench cannot size the "
                              "decode loop's logits buffers")
        low, high = self._id_range(layout.vocab_size)
        if not 0 <= low < high <= layout.vocab_size:
            raise MatrixError(f"--int-range input_ids={low}:{high}: prompt token ids of {self.path} must lie in "
                              f"[0, {layout.vocab_size}) (its vocabulary)")
        return layout

    def _id_range(self, vocab: int | None) -> tuple[int, int]:
        """[low, high) of generated token ids: ``--int-range input_ids=`` (or ``*``), else [0, vocab)."""
        given = self.int_ranges.get("input_ids", self.int_ranges.get("*"))
        if given:
            return int(given[0]), int(given[1])
        if vocab is None and self.reference_model:
            vocab = reference_config(self.reference_model).vocab_size
        return 0, vocab if vocab is not None else 2

    def _feeds_empty_past(self, layout: DecoderLayout | None) -> bool:
        """Whether a prefill of this file feeds an empty cache: a decoder whose past axis no ``--dim`` binds."""
        return layout is not None and layout.axes[2] is not None and layout.axes[2] not in self.dims

    def decoder_layout(self, cell: Cell) -> str | None:
        """The layout's name for a generate cell, and for a prefill cell of a decoder fed an empty cache."""
        layout = self.layout
        if layout is not None and (cell.part == DECODER_WITH_PAST or self._feeds_empty_past(layout)):
            return layout.kind
        return None

    def prompt(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        """The prompts of a generate cell, the same for every runtime: ``(input_ids, attention_mask)`` int64
        (batch, seq_len), ids uniform in [0, vocab) (or ``--int-range input_ids=LO:HI``) from the seed, left-padded
        as the presets' prompts are (:func:`~onnxbench.benchmarks.plan.sources.base.left_padded_prompts`).

        Raises:
            MatrixError: see :meth:`generate_layout`.
        """
        low, high = self._id_range(self.generate_layout().vocab_size)
        return left_padded_prompts(self.seed, cell.batch, cell.seq_len, cell.padding, low, high)

    def validate(self) -> None:
        """Every dynamic dim bound and the integer ranges sane (generates inputs once at batch = seq_len = 1);
        with a ``reference_model``, the file's inputs and outputs fit it (:func:`check_reference_fit`).

        Raises:
            MatrixError: (a ValueError) naming the file, the input or the axis, and the flag that fixes it.
        """
        if self.reference_model:
            check_reference_fit(self.path, self.reference_model)
        for key, size in dim_sizes(self.dims).items():
            if size < 1 and (key in BATCH_AXES or key in SEQ_AXES):
                raise MatrixError(f"--dim {key}={size}: a batch or sequence axis is measured at size >= 1 (size 0 "
                                  "is for other axes, e.g. an empty KV cache: --dim past_sequence_length=0)")
        try:
            dim_ranges(self.dims)
            self.feeds(self.model.inputs, 1, 1)
        except ValueError as exc:
            raise MatrixError(f"{self.path}: {exc}") from None

    def cells(self, axes: CellAxes) -> list[Cell]:
        """Per scenario: (the file's own precision, then each quantized precision of ``axes.precisions``) x
        runtimes x the bound (batch, seq_len) values (:func:`shape_axes`; ``[shapes.STEM]`` overrides the
        batch/sequence lists as it does for presets) x the scenario's own fields. The matrix's attention variants,
        opsets and parts do not apply to a file run as it is; a decoding scenario's cells have part
        ``decoder-with-past``, as the presets' have.

        Raises:
            MatrixError: for a decoding scenario on a file that cannot generate (:meth:`generate_layout`).
        """
        if any(scenario.decoder for scenario in axes.scenarios):
            self.generate_layout()  # a file that cannot generate is refused before anything runs
        batches, seq_lens = shape_axes(self.model, list(axes.batches), list(axes.seq_lens), self.dims)
        precisions = [precision_of(self.model), *(p for p in axes.precisions if p in QUANTIZED_PRECISIONS)]
        # prefill cells take the matrix's paddings (right padding of the attention mask); padding 0 is the cell
        # runs recorded before the axis applied to files (the key field hashes only when not 0)
        paddings = tuple({"padding": float(p)} for p in axes.paddings) or ({},)
        return [Cell(self.name, ATTENTION_LABEL, precision, self.model.opset, runtime, b, t,
                     part=DECODER_WITH_PAST if scenario.decoder else "model", scenario=scenario.name, **fields)
                for scenario in axes.scenarios
                for precision, runtime, b, t, fields in itertools.product(
                    precisions, axes.runtimes, batches, seq_lens,
                    paddings if scenario.name == "prefill" else scenario.fields)]

    def unrunnable_reason(self, cell: Cell) -> str | None:
        """A scenario other than prefill and generate (a file is run as one forward pass, or a decoder's decode
        loop), a runtime that does not run ONNX graphs (:attr:`onnxbench.runtimes.Runtime.runs_onnx`: the torch
        runtimes rebuild a module from its config, so they would time another model under the file's name), a
        quantized generate cell (not made for files yet), a prompt + new tokens above the
        decoder's context length, or a quantized cell of a file that is not fp32 (quantization takes an fp32
        graph)."""
        from .... import runtimes

        if cell.part == DECODER_WITH_PAST:
            if cell.precision in QUANTIZED_PRECISIONS:
                return (f"{cell.precision} of an ONNX file is measured on prefill cells (a quantized decoder file's "
                        "generation has no reference path yet; presets and checkpoints generate quantized)")
            limit, total = self.max_positions, cell.seq_len + cell.new_tokens
            if limit is not None and total > limit:
                return (f"prompt length {cell.seq_len} + {cell.new_tokens} new tokens = {total} exceeds "
                        f"{self.name}'s context length {limit}")
        elif cell.scenario != "prefill":
            return (f"the {cell.scenario} scenario is not available for ONNX files yet: {self.path} is run as one "
                    "forward pass (prefill)")
        if not runtimes.runtime_class(cell.runtime).runs_onnx:
            takers = [name for name, cls in runtimes.registry().items() if cls.runs_onnx]
            compared = (f"{self.reference_model}'s float64 torch reference" if self.reference_model
                        else "ort-cpu as the reference")
            return (f"{cell.runtime} runs a torch module rebuilt from a model's config, not an ONNX file: "
                    f"{self.path} runs on the runtimes that read ONNX ({', '.join(takers)}), compared with "
                    f"{compared}")
        if cell.padding and not attention_masks(self.model.inputs):
            return (f"padding needs an attention-mask input (an integer or bool input named like *mask* of rank 2, "
                    f"(batch, sequence)); {self.path}'s inputs: "
                    f"{', '.join(f'{s.name} {s.dtype} {list(s.shape)}' for s in self.model.inputs)}")
        own = precision_of(self.model)
        if cell.precision in QUANTIZED_PRECISIONS and own != "fp32":
            return f"{cell.precision} is made from an fp32 graph; {self.path} is {own}"
        return super().unrunnable_reason(cell)

    def artifact(self, cell: Cell, cache_dir: str | Path | None = None) -> ExportArtifact:
        """The file as it is, or for a quantized cell the file quantized (cached by its content), with the
        file's ``input_shapes`` applied likewise.

        Raises:
            ValueError: from the quantizer (:func:`~onnxbench.benchmarks.plan.sources.base.quantized_artifact`;
                e.g. no MatMul weight).
        """
        if cell.precision not in QUANTIZED_PRECISIONS:
            return self.model
        quantized = quantized_artifact(self.path, cell.precision, cache_dir)
        _, _, unranked = _inspect_file(quantized.path)
        return with_input_shapes(quantized.path, quantized, unranked, dict(self.input_shapes))

    def work(self, cell: Cell, artifact: ExportArtifact | None = None) -> Work | None:
        """FLOPs and bytes of one inference of the graph that ran (``artifact``, else the file) at the cell's
        bound shapes, counted from the graph (:func:`counted_work`); for a generate cell of a decoder, of one
        decode step at the mean context (one token per row, T0 + N // 2 keys: the presets' convention,
        docs/generation.md), and a decoder's prefill from an empty cache. None where the count is incomplete
        (:attr:`GraphWork.uncounted <onnxbench.benchmarks.measure.graph_work.GraphWork>` not empty) or fails
        (:meth:`work_gap` says why)."""
        return self._count(cell, artifact)[0]

    def work_gap(self, cell: Cell, artifact: ExportArtifact | None = None) -> str:
        """Why :meth:`work` is None: what the counter could not count, or why it could not read the graph."""
        return self._count(cell, artifact)[1]

    def _count(self, cell: Cell, artifact: ExportArtifact | None) -> tuple[Work | None, str]:
        path = artifact.path if artifact is not None else self.path
        batch, seq_len, dims = cell.batch, cell.seq_len, dim_sizes(self.dims)
        layout = self.layout
        if self._feeds_empty_past(layout):
            _, _, past_axis, total_axis = layout.axes
            if cell.new_tokens > 1:  # one decode step at the mean context, as decode_step_work: T0 + N/2 keys
                keys, seq_len = cell.seq_len + cell.new_tokens // 2, 1
            else:  # the prefill, from an empty cache
                keys = cell.seq_len
            dims = {**dims, past_axis: keys - seq_len, **({total_axis: keys} if total_axis else {})}
            cache = next(spec for spec in self.model.inputs if spec.name == "past_key_values.0.key")
            # the builder leaves d_head symbolic (kv_cache_dim): the layout knows it
            for axis, size in ((cache.shape[1], layout.n_kv_heads), (cache.shape[3], layout.d_head)):
                if isinstance(axis, str):
                    dims.setdefault(axis, size)
        try:
            counted = counted_work(path, batch, seq_len, dims, self.input_shapes)
        except (ValueError, OSError) as exc:
            return None, f"the graph could not be counted: {exc}"
        return (counted.work, "") if counted.complete else (None, counted.why_incomplete)

    def feeds(self, specs: tuple[TensorSpec, ...], batch: int, seq_len: int) -> dict[str, np.ndarray]:
        """The graph's inputs with ``input_shapes``, ``dims`` (at OPT) and ``int_ranges`` applied (see
        :func:`make_feeds`); with a ``reference_model``, token ids below its vocabulary size unless
        ``int_ranges`` says otherwise. A decoder with a KV cache whose past axis no ``--dim`` binds gets a
        prefill: token ids in [0, vocab), an all-ones mask, an empty cache (past length 0) and, in Optimum's
        layout, position ids (:meth:`DecoderLayout.forward_feeds
        <onnxbench.export.decoder_layout.DecoderLayout.forward_feeds>`)."""
        specs = tuple(dataclasses.replace(s, shape=tuple(self.input_shapes[s.name])) if s.name in self.input_shapes
                      else s for s in specs)
        layout = self.layout
        names = {spec.name: spec for spec in specs}
        if self._feeds_empty_past(layout) and "past_key_values.0.key" in names:
            low, high = self._id_range(layout.vocab_size)
            ids = make_feeds((names["input_ids"],), batch, seq_len, seed=self.seed, dims=dim_sizes(self.dims),
                             int_ranges={"input_ids": (low, high)})["input_ids"]
            return layout.forward_feeds(ids, np.ones_like(ids))
        int_high = reference_config(self.reference_model).vocab_size if self.reference_model else 2
        return make_feeds(specs, batch, seq_len, seed=self.seed, dims=dim_sizes(self.dims),
                          int_ranges=self.int_ranges, int_high=int_high)

    def cell_feeds(self, specs: tuple[TensorSpec, ...], cell: Cell) -> dict[str, np.ndarray]:
        """:meth:`feeds` at the cell's shape, with its padding: each attention-mask input (:func:`attention_masks`)
        of row b of B gets its last ``floor(padding · T · (b + 1) / B)`` positions set to 0 (right padding, as
        encoders are fed: real tokens first; :func:`~onnxbench.benchmarks.inputs.padding_tokens`). The other
        inputs are unchanged: the mask alone tells the graph which positions are real."""
        feeds = self.feeds(specs, cell.batch, cell.seq_len)
        if not cell.padding:
            return feeds
        for spec in attention_masks(specs):
            mask = feeds[spec.name].copy()
            batch, length = mask.shape
            for row in range(batch):
                pad = padding_tokens(cell.padding, length, row, batch)
                if pad:
                    mask[row, length - pad:] = 0
            feeds[spec.name] = mask
        return feeds

    def real_positions(self, cell: Cell, feeds: dict[str, np.ndarray]) -> RealPositions | None:
        """For a padded cell: the first attention mask's nonzero positions, and the outputs whose two leading axes
        are that mask's (the same axis names, or the same static sizes), which are judged there only; for a
        decoder fed an empty cache also ``logits``, whose (batch, sequence) is then the mask's (batch, past +
        sequence) under other names."""
        from ...verify.positions import RealPositions

        masks = attention_masks(self.model.inputs)
        if not cell.padding or not masks or masks[0].name not in feeds:
            return None
        lead = masks[0].shape[:2]
        outputs = tuple(spec.name for spec in self.model.outputs
                        if len(spec.shape) >= 2 and all(map(_same_axis, spec.shape[:2], lead)))
        if self._feeds_empty_past(self.layout) and "logits" not in outputs:
            outputs += ("logits",)
        return RealPositions(np.asarray(feeds[masks[0].name]) != 0, outputs)

    def padding_length(self, cell: Cell) -> int:
        """The length of the first attention mask's sequence axis at the cell's shape (``seq_len`` where the
        axis is named like a sequence; a ``--dim`` or static size otherwise); for a decoder's generate cell or a
        prefill from an empty cache, the prompt: ``seq_len``."""
        masks = attention_masks(self.model.inputs)
        if not masks or cell.part == DECODER_WITH_PAST or self._feeds_empty_past(self.layout):
            return cell.seq_len
        return bind_shapes(masks[:1], cell.batch, cell.seq_len, dim_sizes(self.dims))[masks[0].name][1]

    def dim_ranges(self) -> dict[str, tuple[int, int, int]]:
        """Every ``--dim`` axis's (min, opt, max) for optimization profiles (see :func:`dim_ranges`)."""
        return dim_ranges(self.dims)

    def reference(self, artifact: ExportArtifact, cache_dir: str | Path | None = None) -> Reference:
        """ONNX Runtime CPU without graph optimizations on the file as given (and its float64 evaluation where the
        graph is small enough), or the ``reference_model``'s float64 torch reference; a quantized ``artifact`` is
        compared with the same float reference."""
        from ...verify.reference import OnnxFileReference, model_reference

        if self.reference_model:
            return model_reference(self.reference_model, self.seed, cache_dir=cache_dir)
        return OnnxFileReference(self.model, self.vocab_size)
