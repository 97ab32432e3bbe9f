"""The benchmark matrix: axes, the embedded default, TOML matrix files, and the built matrix (its model sources
and cells)."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ...errors import MatrixError
from ...export import DEFAULT_OPSET, PRECISIONS
from ...export.opsets import describe, supported_opsets, unsupported_reason
from ...export.quantize import QUANTIZED_PRECISIONS
from ...export.variants import VARIANTS
from ...noise import NOISE_LIMIT
from ..cells import Cell, parse_shard, shard_cells
from ..measure.timing import TimingConfig
from .sources import ModelSource, OnnxFileSource, build_sources

#: Attention variants -> the reference config's ``attention`` implementation they are exported from
#: (the export recipes and graph checks live in ``onnxbench.export.variants``).
ATTENTION_VARIANTS = {name: v.implementation for name, v in VARIANTS.items()}
#: Values of the ``precisions`` axis: the export precisions, and the quantized ones made from the fp32 graph
#: (docs/quantization.md).
MATRIX_PRECISIONS = (*PRECISIONS, *QUANTIZED_PRECISIONS)
#: Model parts a cell can measure: the full transformer, or block 0's attention alone.
PARTS = ("model", "attention")
#: What a cell measures: one forward pass over the prompt, or greedy generation after it (docs/generation.md).
SCENARIOS = ("prefill", "generate")


@dataclass
class MatrixSpec:
    """Axes of a benchmark matrix; the cells are their Cartesian product.

    Attributes:
        models: preset names (see ``onnxbench.models.PRESETS``; :class:`~.sources.PresetSource`).
        attention: attention variants (keys of :data:`ATTENTION_VARIANTS`).
        precisions: ``fp32`` / ``fp16`` / ``bf16`` / ``int8-dynamic`` (the fp32 graph's MatMul weights quantized
            by ONNX Runtime, :mod:`onnxbench.export.quantize`; run by the runtimes that declare it, a ``skipped``
            row on the others; an ONNX file gets int8-dynamic cells beside its own precision).
        opsets: ONNX opsets to export at.
        runtimes: runtime registry names.
        threads: intra-op thread counts (``--threads 1,2``), an axis of the runtimes that declare it
            (:attr:`onnxbench.runtimes.Runtime.thread_axis`: ort-cpu, torch); each is 1 .. the logical core count.
            Empty (the default): one cell per runtime at its default thread count (``threads`` column 0).
        batches: batch sizes B.
        seq_lens: sequence lengths T (prefill of T tokens).
        seed: weight and input seed.
        exporter: ``dynamo`` or ``torchscript``.
        timing: the timing harness settings.
        shapes: optional per-model override ``{preset: {"batches": [...], "seq_lens": [...]}}``.
        checkpoints: local GPT-2-style checkpoint directories (``config.json`` + ``model.safetensors``); each is
            a model named after its directory, exported with its own weights (:class:`~.sources.CheckpointSource`).
        onnx_models: paths of users' ONNX files, each a model named after the file's stem, run on the ONNX
            runtimes with ORT CPU without graph optimizations as the reference (:class:`~.sources.OnnxFileSource`).
        dims: sizes of named dynamic axes of the ONNX files (``{"batch": 4, "past": [1, 3, 8]}``): a size, or
            ``[min, opt, max]`` (inputs are fed at opt; optimization profiles span min..max).
        int_ranges: ``{input name or "*": [lo, hi)}`` for integer inputs of the ONNX files.
        input_shapes: ``{input name: [d0, d1, ...]}`` shapes (sizes or axis names) of ONNX-file inputs, required
            for an input whose graph declares no shape (``--shape NAME=d0,d1,...``).
        reference_models: ``{ONNX file's model name: preset name or checkpoint directory}``: that file is
            compared with the model's float64 torch reference instead of ONNX Runtime (``--reference-model``;
            the file must take ``input_ids`` and output ``logits``, checked before anything runs).
        locate_divergence: name the first diverging block of every row (``--locate-divergence``), not only of
            failing ones (docs/agreement.md).
        parts: ``model`` and/or ``attention`` (block 0's attention exported alone).
        cell_timeout_s: a worker that produces no row for this many seconds (per cell; session creation
            counts as one cell) is killed and its remaining cells become ``failed`` rows.
        scenarios: ``prefill`` (one forward pass over B x T tokens: the rows of every run before generation
            existed) and/or ``generate`` (greedy decoding after a prompt of T tokens; the full model only, exported
            with its KV cache as ``part = decoder-with-past``).
        new_tokens: generate: tokens to generate per row, N >= 1 (``--new-tokens``).
        paddings: generate: fractions of left padding in [0, 1) (``--padding``); row b of a batch of B has
            ``floor(padding * T * (b + 1) / B)`` padding tokens, so rows differ and the last has the fraction.
        shard: ``"K/N"``: run only the K-th of N deterministic parts of the cells (whole (artifact, runtime)
            groups; :func:`onnxbench.benchmarks.cells.shard_cells`), for batch-scheduler array jobs whose run
            directories ``onnxbench merge`` joins (docs/scaling.md).
        noise_limit: a cell whose median is noisier than this (:func:`onnxbench.noise.is_noisy`: 95 % CI of the
            median wider than this fraction of p50) gets a warning in its ``reason``; the report and the CLI use
            the same limit. ``cov_warn``, its name before, is read as this key.

    A variant that dictates its opset (``onnx-attention``: 23; ``ort-fused``: at most 22) gets that opset in
    its cells, and cells that become identical are kept once. An opset the exporter cannot produce for a
    variant (measured: docs/export.md) makes that variant's cells ``skipped`` rows, and an error when no variant
    of the matrix can use it.

    Which combinations are errors and which are ``skipped`` rows: an axis value that no cell of the matrix can
    use (unknown name, size < 1, a sequence length above every model's ``max_positions``) is an error raised by
    :meth:`validate` before anything runs; a combination that only some cells cannot run (a sequence length
    above one model's ``max_positions`` when another model accepts it) is expanded and becomes a ``skipped`` row
    whose reason is :meth:`Matrix.unrunnable_reason`.
    """

    models: list[str] = field(default_factory=lambda: ["tiny", "gpt2-small"])
    attention: list[str] = field(default_factory=lambda: ["decomposed"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    opsets: list[int] = field(default_factory=lambda: [DEFAULT_OPSET])
    runtimes: list[str] = field(default_factory=lambda: ["torch", "ort-cpu"])
    threads: list[int] = field(default_factory=list)
    batches: list[int] = field(default_factory=lambda: [1, 4])
    seq_lens: list[int] = field(default_factory=lambda: [32, 128])
    seed: int = 0
    exporter: str = "dynamo"
    timing: TimingConfig = field(default_factory=TimingConfig)
    shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    onnx_models: list[str] = field(default_factory=list)
    dims: dict[str, int | list[int]] = field(default_factory=dict)
    int_ranges: dict[str, list[int]] = field(default_factory=dict)
    input_shapes: dict[str, list[int | str]] = field(default_factory=dict)
    reference_models: dict[str, str] = field(default_factory=dict)
    locate_divergence: bool = False
    parts: list[str] = field(default_factory=lambda: ["model"])
    cell_timeout_s: float = 600.0
    noise_limit: float = NOISE_LIMIT
    scenarios: list[str] = field(default_factory=lambda: ["prefill"])
    new_tokens: list[int] = field(default_factory=lambda: [64])
    paddings: list[float] = field(default_factory=lambda: [0.0])
    shard: str | None = None

    def validate(self) -> None:
        """Check every axis value and every model (see :meth:`build`).

        Raises:
            MatrixError / ValueError / FileNotFoundError: naming the bad value and the allowed ones (or the limit it
                breaks).
        """
        self.build()

    def build(self) -> Matrix:
        """Validate the axes, build the model sources once and expand the cells.

        Raises:
            MatrixError: (a ValueError) naming the bad value and the allowed ones (or the limit it breaks).
            ValueError / FileNotFoundError: for a checkpoint directory or ONNX file that cannot be used.
        """
        from ... import runtimes

        for a in self.attention:
            if a not in ATTENTION_VARIANTS:
                raise MatrixError(f"unknown attention variant {a!r}; known: {', '.join(ATTENTION_VARIANTS)}")
        for p in self.parts:
            if p not in PARTS:
                raise MatrixError(f"unknown part {p!r}; known: {', '.join(PARTS)}")
        if self.exporter != "dynamo":
            needs = [a for a in self.attention if VARIANTS[a].dynamo_only]
            if needs:
                raise MatrixError(f"attention variants {needs} need the dynamo exporter; drop them or use "
                                 "--exporter dynamo")
        if self.models or self.checkpoints:
            self._validate_opsets()
        for p in self.precisions:
            if p not in MATRIX_PRECISIONS:
                raise MatrixError(f"unknown precision {p!r}; known: {', '.join(MATRIX_PRECISIONS)}")
        for r in self.runtimes:
            if r not in runtimes.registry():
                raise MatrixError(f"unknown runtime {r!r}; registered: {', '.join(runtimes.registry())}")
        self._validate_generation()
        if self.shard is not None:
            parse_shard(self.shard)
        self._validate_threads()
        if self.cell_timeout_s <= 0:
            raise MatrixError(f"cell_timeout_s must be > 0 seconds, got {self.cell_timeout_s}")
        sources = build_sources(self)
        if not sources:
            raise MatrixError("nothing to run: give presets (--models), --checkpoint DIR or --onnx PATH")
        files = [name for name, source in sources.items() if isinstance(source, OnnxFileSource)]
        for name in self.reference_models:
            if name not in files:
                raise MatrixError(f"reference_models names {name!r}, which is not one of the ONNX files' models "
                                  f"({', '.join(files) or 'none given'}; a file's model name is its stem)")
        for source in sources.values():
            source.validate(self)
            batches, seq_lens = self.shape_axes(source.name)
            if any(b < 1 for b in batches) or any(t < 1 for t in seq_lens):
                raise MatrixError("batch sizes and sequence lengths must be >= 1")
        limits = {name: s.max_positions for name, s in sources.items() if s.max_positions is not None}
        longest = max(limits.values(), default=0)
        too_long = sorted({t for m in limits for t in self.shape_axes(m)[1] if t > longest})
        if too_long:
            raise MatrixError(f"sequence lengths {too_long} exceed {names_of(limits)}; use --seq-lens up to "
                              f"{longest}")
        if "generate" in self.scenarios:
            over = sorted({(t, n) for m in limits for t in self.shape_axes(m)[1] for n in self.new_tokens
                           if t + n > longest})
            if over:
                t, n = over[0]
                raise MatrixError(f"prompt length {t} + {n} new tokens = {t + n} exceeds {names_of(limits)}; "
                                  f"generate at most {max(longest - t, 0)} new tokens after a {t}-token prompt "
                                  "(--new-tokens) or shorten the prompt (--seq-lens)")
        cells = list(dict.fromkeys(cell for source in sources.values()
                                   for cell in self._with_threads(source.cells(self))))
        if self.shard is not None:
            cells = shard_cells(cells, self.shard)
        return Matrix(self, sources, cells)

    def _validate_generation(self) -> None:
        """The generate scenario's axes: known scenarios, at least one new token, padding in [0, 1) so that every
        row keeps a token (a prompt of padding alone has nothing to continue)."""
        for name in self.scenarios:
            if name not in SCENARIOS:
                raise MatrixError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        if "generate" not in self.scenarios:
            return
        if not self.new_tokens or any(n < 1 for n in self.new_tokens):
            raise MatrixError(f"new tokens must be >= 1 (a generation makes at least one token), got "
                              f"{self.new_tokens}; use e.g. --new-tokens 64")
        if not self.paddings or any(not 0 <= p < 1 for p in self.paddings):
            raise MatrixError(f"padding fractions must lie in [0, 1) (every row keeps at least one prompt token), "
                              f"got {self.paddings}; use e.g. --padding 0,0.25")

    def _validate_threads(self) -> None:
        """Thread counts are 1 .. the logical core count, and some runtime of the matrix takes them."""
        from ... import runtimes
        from ...env import cpu_counts

        if not self.threads:
            return
        logical = cpu_counts()[0] or max(self.threads)
        bad = [t for t in self.threads if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= logical]
        if bad:
            raise MatrixError(f"threads {bad} out of range: intra-op thread counts are 1 .. {logical} (the logical "
                              "cores of this machine)")
        takers = [n for n, cls in runtimes.registry().items() if cls.thread_axis]
        if not any(r in takers for r in self.runtimes):
            raise MatrixError(f"threads is an axis of the CPU runtimes that take a thread count ({', '.join(takers)})"
                              f"; none is among the runtimes asked for ({', '.join(self.runtimes)})")

    def _with_threads(self, cells: list[Cell]) -> list[Cell]:
        """Each cell of a runtime that takes a thread count once per value of :attr:`threads` (adjacent, so
        that the cells of one artifact and runtime stay together); other cells as they are."""
        from ... import runtimes

        if not self.threads:
            return cells
        return [dataclasses.replace(cell, threads=t) if runtimes.runtime_class(cell.runtime).thread_axis else cell
                for cell in cells for t in (self.threads if runtimes.runtime_class(cell.runtime).thread_axis
                                            else [0])]

    def _validate_opsets(self) -> None:
        """An opset that the exporter cannot produce for any of the matrix's attention variants is an error; one
        that only some variants cannot use becomes skipped rows (``TransformerSource.unrunnable_reason``). The
        table is measured (:mod:`onnxbench.export.opsets`, docs/export.md)."""
        for opset in self.opsets:
            if all(unsupported_reason(self.exporter, a, VARIANTS[a].resolve_opset(opset)) for a in self.attention):
                ranges = "; ".join(f"{a}: {describe(supported_opsets(self.exporter, a))}" for a in self.attention)
                raise MatrixError(f"the {self.exporter} exporter cannot produce opset {opset} for the attention "
                                 f"variants asked for (supported opsets: {ranges}; measured, docs/export.md)")

    def shape_axes(self, model: str) -> tuple[list[int], list[int]]:
        """(batches, seq_lens) for ``model``, with per-model overrides applied."""
        override = self.shapes.get(model, {})
        return list(override.get("batches", self.batches)), list(override.get("seq_lens", self.seq_lens))

    def expand(self) -> list[Cell]:
        """All cells (of :meth:`build`), grouped so that cells sharing an artifact and a runtime are adjacent."""
        return self.build().cells

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, base: MatrixSpec | None = None) -> MatrixSpec:
        """A spec from a mapping shaped like :meth:`to_dict` (a TOML table or a run header's ``matrix``);
        keys absent from ``data`` keep ``base``'s values (default: the dataclass defaults).

        Raises:
            MatrixError: (a ValueError) for an unknown key (naming the known ones) or a bad ``timing`` entry.
        """
        spec = dataclasses.replace(base) if base is not None else cls()
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MatrixError(f"unknown matrix keys {unknown}; known: {', '.join(sorted(known))}")
        lists = {f.name for f in dataclasses.fields(cls) if isinstance(getattr(cls(), f.name), list)}
        for key, value in data.items():
            if key in lists and not isinstance(value, list):
                value = [value]  # `models = "tiny"` means ["tiny"], not the characters of the string
            if key == "timing":
                timing_keys = {f.name for f in dataclasses.fields(TimingConfig)}
                bad = sorted(set(value) - timing_keys)
                if bad:
                    raise MatrixError(f"unknown [timing] keys {bad}; known: {', '.join(sorted(timing_keys))}")
                value = dataclasses.replace(spec.timing, **value)
            elif key == "shapes":
                value = {m: dict(axes) for m, axes in value.items()}
            elif isinstance(value, list):
                value = list(value)
            setattr(spec, key, value)
        return spec


@dataclass
class Matrix:
    """A validated matrix: its spec, its model sources (built once, by name) and its cells in run order.

    Attributes:
        spec: the axes.
        sources: ``{model name: source}``.
        cells: every cell, grouped so that cells sharing an artifact and a runtime are adjacent.
    """

    spec: MatrixSpec
    sources: dict[str, ModelSource]
    cells: list[Cell]

    def source(self, cell: Cell) -> ModelSource:
        """The source of ``cell``'s model."""
        return self.sources[cell.model]

    def unrunnable_reason(self, cell: Cell) -> str | None:
        """Why ``cell`` cannot run (it becomes a ``skipped`` row), or ``None`` if it can: the model's reason
        (:meth:`ModelSource.unrunnable_reason`), or a precision the runtime does not run
        (:meth:`onnxbench.runtimes.Runtime.precision_reason`)."""
        from ... import runtimes

        why = self.source(cell).unrunnable_reason(cell)
        if why:
            return why
        why = runtimes.runtime_class(cell.runtime).precision_reason(cell.precision)
        if why:
            able = [n for n, cls in runtimes.registry().items() if cell.precision in cls.quantized_precisions]
            return f"{why}; runtimes that run it: {', '.join(able) or 'none registered'}"
        return None


def names_of(limits: dict[str, int]) -> str:
    """``"tiny's max_positions=128, ..."`` for error messages."""
    return ", ".join(f"{m}'s max_positions={n}" for m, n in limits.items())


#: Keys renamed since runs were first recorded -> their current name (old headers and matrix files still load).
LEGACY_KEYS = {"cov_warn": "noise_limit"}


def load_matrix(path: str | Path, base: MatrixSpec | None = None) -> MatrixSpec:
    """Read a matrix spec from a TOML file (format: ``examples/matrix.toml``, README "Matrix files"); keys the
    file leaves out keep ``base``'s values (default :func:`default_matrix`).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        MatrixError: (a ValueError) for invalid TOML (with the parser's line and column) or an unknown key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matrix file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path} is not valid TOML: {exc}") from None
    try:
        return MatrixSpec.from_dict(data, base if base is not None else default_matrix())
    except (ValueError, TypeError) as exc:
        raise MatrixError(f"{path}: {exc}") from None


def default_matrix() -> MatrixSpec:
    """The embedded default: tiny and gpt2-small, fp32, decomposed attention, B in {1, 4}, T in {32, 128},
    gpt2-small at B = 1 only; every registered runtime except those marked ``in_default_matrix = False``
    (torch-compile, whose compile of gpt2-small takes minutes on 2 cores); the ones that cannot run here become
    ``skipped`` rows. About 2 minutes on 2 CPU cores, most of it the one-time dynamo export of gpt2-small."""
    from ... import runtimes

    names = [name for name, cls in runtimes.registry().items() if cls.in_default_matrix]
    return MatrixSpec(runtimes=names, shapes={"gpt2-small": {"batches": [1]}})
