"""The benchmark matrix: axes, the embedded default, TOML matrix files and command-line overrides (applied by the
same code, :meth:`MatrixSpec.from_dict`), and the built matrix (its model sources and cells)."""

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
from ...export import DEFAULT_OPSET, EXPORTERS, PRECISIONS
from ...export.opsets import describe, supported_opsets
from ...export.paths import DEFAULT_EXPORT_PATH, EXPORT_PATHS
from ...export.quantize import QUANTIZED_PRECISIONS
from ...export.variants import VARIANTS
from ...noise import NOISE_LIMIT
from .. import scenarios as scenario_registry
from ..cells import Cell, CellAxes, ScenarioAxes, parse_shard, shard_cells
from ..inputs import fed_padding
from ..measure.timing import TimingConfig
from .sources import SOURCE_KINDS, ModelSource, OnnxFiles, SourceSettings, build_sources

#: Attention variants -> the reference config's ``attention`` implementation they are exported from
#: (the export recipes and graph checks live in ``onnxbench.export.variants``).
ATTENTION_VARIANTS = {name: v.implementation for name, v in VARIANTS.items()}
#: Values of the ``precisions`` axis: the export precisions, and the quantized ones made from the fp32 graph
#: (docs/quantization.md).
MATRIX_PRECISIONS = (*PRECISIONS, *QUANTIZED_PRECISIONS)
#: Model parts a cell can measure: the full transformer, or block 0's attention alone.
PARTS = ("model", "attention")


@dataclass
class MatrixSpec:
    """Axes of a benchmark matrix; the cells are their Cartesian product.

    Attributes:
        models: preset names (see ``onnxbench.models.PRESETS``; :class:`~.sources.PresetSource`).
        attention: attention variants (keys of :data:`ATTENTION_VARIANTS`).
        precisions: ``fp32`` / ``fp16`` / ``bf16`` / ``int8-dynamic`` / ``int4-weight`` (the fp32 graph's MatMul
            weights quantized by ONNX Runtime, :mod:`onnxbench.export.quantize`,
            :mod:`onnxbench.export.quantize_int4`; run by the runtimes that declare it, a ``skipped`` row on the
            others; an ONNX file gets quantized cells beside its own precision).
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
        checkpoints: local GPT-2, Llama or Qwen2 checkpoint directories (``config.json`` +
            ``model.safetensors``); each is a model named after its directory, exported with its own weights
            (:class:`~.sources.CheckpointSource`).
        onnx: users' ONNX files and their options (the ``[onnx]`` table: :class:`~.sources.OnnxFiles`), each file a
            model named after its stem, run on the ONNX runtimes with ORT CPU without graph optimizations as the
            reference (:class:`~.sources.OnnxFileSource`).
        locate_divergence: name the first diverging block of every row (``--locate-divergence``), not only of
            failing ones (docs/agreement.md).
        parts: ``model`` and/or ``attention`` (block 0's attention exported alone).
        cell_timeout_s: a worker that produces no row for this many seconds (per cell; session creation
            counts as one cell) is killed and its remaining cells become ``failed`` rows.
        scenarios: ``prefill`` (one forward pass over B x T tokens: the rows of every run before generation
            existed) and/or ``generate`` (greedy decoding after a prompt of T tokens; the full model only, exported
            with its KV cache as ``part = decoder-with-past``).
        new_tokens: generate: tokens to generate per row, N >= 1 (``--new-tokens``).
        paddings: fractions of padding in [0, 1) (``--padding``); row b of a batch of B has
            ``floor(padding * T * (b + 1) / B)`` padding positions, so rows differ and the last has the fraction.
            Generate cells: left padding of the prompts; an ONNX file's prefill cells: right padding of its
            attention mask, outputs judged at the real positions (docs/agreement.md, "Padded batches"). A
            fraction no cell of the matrix can take (no generate scenario and no ONNX file) is refused.
        export_paths: how each preset's or checkpoint's graphs are made (``--export-paths``;
            :data:`onnxbench.export.paths.EXPORT_PATHS`, docs/export.md "Export paths"): ``onnxbench`` (its own
            export, one per attention variant; the default), ``optimum`` (Hugging Face Optimum's exporter),
            ``optimum-opt`` (that export after ONNX Runtime's transformer optimizer), ``builder`` (ONNX Runtime
            GenAI's model builder), all from the same weights and judged against the same float64 reference. A
            path whose tool is not installed makes ``skipped`` rows naming the package.
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
    onnx: OnnxFiles = field(default_factory=OnnxFiles)
    locate_divergence: bool = False
    parts: list[str] = field(default_factory=lambda: ["model"])
    cell_timeout_s: float = 600.0
    noise_limit: float = NOISE_LIMIT
    scenarios: list[str] = field(default_factory=lambda: ["prefill"])
    new_tokens: list[int] = field(default_factory=lambda: [64])
    paddings: list[float] = field(default_factory=lambda: [0.0])
    export_paths: list[str] = field(default_factory=lambda: [DEFAULT_EXPORT_PATH])
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
        if not self.export_paths:
            raise MatrixError(f"export_paths is empty; give one or more of: {', '.join(EXPORT_PATHS)}")
        for p in self.export_paths:
            if p not in EXPORT_PATHS:
                raise MatrixError(f"unknown export path {p!r}; known: {', '.join(EXPORT_PATHS)} (docs/export.md, "
                                  "\"Export paths\")")
        for p in self.parts:
            if p not in PARTS:
                raise MatrixError(f"unknown part {p!r}; known: {', '.join(PARTS)}")
        if self.exporter not in EXPORTERS:
            raise MatrixError(f"unknown exporter {self.exporter!r}; known: {', '.join(EXPORTERS)}")
        if self.exporter != "dynamo":
            needs = [a for a in self.attention if VARIANTS[a].dynamo_only]
            if needs:
                raise MatrixError(f"attention variants {needs} need the dynamo exporter; drop them or use "
                                 "--exporter dynamo")
        for p in self.precisions:
            if p not in MATRIX_PRECISIONS:
                raise MatrixError(f"unknown precision {p!r}; known: {', '.join(MATRIX_PRECISIONS)}")
        for r in self.runtimes:
            if r not in runtimes.registry():
                raise MatrixError(f"unknown runtime {r!r}; registered: {', '.join(runtimes.registry())}")
        for name in self.scenarios:
            scenario_registry.get(name).validate(self)
        if self.shard is not None:
            parse_shard(self.shard)
        self._validate_threads()
        if self.cell_timeout_s <= 0:
            raise MatrixError(f"cell_timeout_s must be > 0 seconds, got {self.cell_timeout_s}")
        sources = build_sources({kind.spec_field: getattr(self, kind.spec_field) for kind in SOURCE_KINDS},
                                SourceSettings(self.seed, self.exporter))
        if not sources:
            raise MatrixError("nothing to run: give presets (--models), --checkpoint DIR or --onnx PATH")
        if any(source.exported for source in sources.values()):
            self._validate_opsets()
        for source in sources.values():
            source.validate()
            batches, seq_lens = self.shape_axes(source.name)
            bad = [f"{axis} {values}" for axis, values in (("batch sizes", [b for b in batches if b < 1]),
                                                            ("sequence lengths", [t for t in seq_lens if t < 1]))
                   if values]
            if bad:
                raise MatrixError(f"{source.name}: {' and '.join(bad)} must be >= 1 (--batches, --seq-lens or the "
                                  "matrix file's batches, seq_lens)")
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
        if not self.paddings or any(not 0 <= p < 1 for p in self.paddings):
            raise MatrixError(f"padding fractions must lie in [0, 1) (every row keeps at least one position), got "
                              f"{self.paddings}; use e.g. --padding 0,0.25")
        cells = list(dict.fromkeys(cell for source in sources.values()
                                   for cell in self._with_threads(source.cells(self.axes_for(source.name)))))
        if any(self.paddings) and not any(cell.padding for cell in cells):
            raise MatrixError(f"padding {[p for p in self.paddings if p]} applies to generate cells (--scenario "
                              "generate) and to the prefill cells of --onnx files; no cell of this matrix takes it")
        if "generate" not in self.scenarios and self.new_tokens != MatrixSpec().new_tokens:
            raise MatrixError(f"new_tokens {self.new_tokens} applies to generate cells and this matrix has none; "
                              "add --scenario generate (or prefill,generate) or leave --new-tokens out")
        other_paths = [p for p in self.export_paths if p != DEFAULT_EXPORT_PATH]
        if other_paths and not any(cell.export_path != DEFAULT_EXPORT_PATH for cell in cells):
            raise MatrixError(f"export paths {other_paths} apply to presets and checkpoints (--models, --checkpoint); "
                              "an ONNX file (--onnx) is run as it is given")
        if self.shard is not None:
            cells = shard_cells(cells, self.shard)
        return Matrix(self, sources, cells)

    def axes_for(self, model: str) -> CellAxes:
        """The axes ``model``'s source expands its cells from: the matrix's, with ``[shapes.MODEL]`` applied and
        each scenario's own key fields (:meth:`onnxbench.benchmarks.scenarios.Scenario.axes`) listed."""
        batches, seq_lens = self.shape_axes(model)
        scenarios = tuple(ScenarioAxes(name, scenario_registry.get(name).decoder,
                                       tuple(scenario_registry.get(name).axes(self))) for name in self.scenarios)
        return CellAxes(tuple(self.attention), tuple(self.precisions), tuple(self.opsets), tuple(self.runtimes),
                        tuple(self.parts), tuple(batches), tuple(seq_lens), scenarios, tuple(self.paddings),
                        tuple(self.export_paths))

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
            if all(VARIANTS[a].opset_reason(self.exporter, VARIANTS[a].resolve_opset(opset)) for a in self.attention):
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
        """A spec from a mapping shaped like :meth:`to_dict` (a TOML table, a run header's ``matrix``, or the
        command line's overrides); keys absent from ``data`` keep ``base``'s values (default: the dataclass
        defaults). A single value for a list axis means a list of one (``models = "tiny"``); keys of older
        files and headers are read under their current names (:data:`LEGACY_KEYS`, the flat ONNX-file keys).

        Raises:
            MatrixError: (a ValueError) for an unknown key (naming the known ones) or a value of the wrong type
                (naming the key and the type expected).
        """
        spec = dataclasses.replace(base) if base is not None else cls()
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        legacy_onnx = {OnnxFiles.LEGACY_KEYS[k]: data.pop(k) for k in list(data) if k in OnnxFiles.LEGACY_KEYS}
        if legacy_onnx:
            data["onnx"] = {**legacy_onnx, **_as_table(data.get("onnx", {}))}
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MatrixError(f"unknown matrix keys {unknown}; known: {', '.join(sorted(known))}")
        for key, value in data.items():
            if key == "timing":
                value = _timing(spec.timing, value)
            elif key == "shapes":
                value = _shapes(value)
            elif key == "onnx":
                value = OnnxFiles.from_dict(value)
            else:
                value = _typed(key, known[key].type, value)
            setattr(spec, key, value)
        return spec

    def with_overrides(self, overrides: dict) -> tuple[MatrixSpec, list[str]]:
        """This spec with ``overrides`` (the command line's flags, as a mapping shaped like :meth:`to_dict`) applied
        by :meth:`from_dict`, the code that reads matrix files. A ``batches`` or ``seq_lens`` override applies to
        every model: it replaces the axis in the per-model ``[shapes.MODEL]`` tables too (what was asked is what
        runs), and each replaced entry is named in the notes returned.

        Returns:
            (the new spec, one note per per-model shape the overrides replaced).

        Raises:
            MatrixError: as :meth:`from_dict`.
        """
        spec = MatrixSpec.from_dict(overrides, self)
        notes, shapes = [], {m: dict(axes) for m, axes in spec.shapes.items()}
        for axis in ("batches", "seq_lens"):
            if axis not in overrides:
                continue
            for model, axes in shapes.items():
                if axis in axes and list(axes[axis]) != list(getattr(spec, axis)):
                    notes.append(f"{axis} = {getattr(spec, axis)} applies to {model} too, in place of its "
                                 f"[shapes.{model}] {axis} = {list(axes[axis])}")
                axes.pop(axis, None)
        spec.shapes = {m: axes for m, axes in shapes.items() if axes}
        return spec, notes


def _as_table(value) -> dict:
    return value if isinstance(value, dict) else {"files": value}


def _typed(key: str, annotation: str, value):
    """``value`` checked against the field's annotation (``list[int]``, ``float``, ``str | None``, ...): a list
    field takes a list of that element type (a single value: a list of one), an int field no bool, a float field
    an int too.

    Raises:
        MatrixError: naming the key, the value and the type expected.
    """
    annotation = str(annotation).replace(" ", "")
    is_list = annotation.startswith("list[")
    kind = annotation[5:-1] if is_list else annotation.split("|")[0]
    optional = "None" in annotation.split("|")
    values = (value if isinstance(value, list) else [value]) if is_list else [value]
    checked = []
    for v in values:
        if v is None and optional:
            checked.append(v)
        elif kind == "int" and isinstance(v, int) and not isinstance(v, bool):
            checked.append(v)
        elif kind == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
            checked.append(float(v))
        elif kind in ("str", "bool") and type(v).__name__ == kind:
            checked.append(v)
        else:
            expected = {"int": "integers", "float": "numbers", "str": "strings", "bool": "true or false"}[kind]
            raise MatrixError(f"matrix key {key!r}: {v!r} is not {'a list of ' if is_list else ''}{expected}"
                              f"{'' if is_list else ' (one value)'}; e.g. {_EXAMPLES.get(key, key + ' = ...')}")
    return checked if is_list else checked[0]


_EXAMPLES = {"batches": "batches = [1, 4]", "seq_lens": "seq_lens = [32, 128]", "opsets": "opsets = [18]",
             "threads": "threads = [1, 2]", "new_tokens": "new_tokens = [64]", "paddings": "paddings = [0, 0.25]",
             "export_paths": 'export_paths = ["onnxbench", "builder"]',
             "models": 'models = ["tiny"]', "runtimes": 'runtimes = ["torch", "ort-cpu"]', "seed": "seed = 0",
             "cell_timeout_s": "cell_timeout_s = 600", "noise_limit": "noise_limit = 0.1"}


def _timing(base: TimingConfig, value) -> TimingConfig:
    """The ``[timing]`` table over ``base``.

    Raises:
        MatrixError: for a key that is not a timing setting, or a value of the wrong type or range.
    """
    if not isinstance(value, dict):
        raise MatrixError(f"[timing] must be a table of {', '.join(f.name for f in dataclasses.fields(TimingConfig))}"
                          f"; got {value!r}")
    known = {f.name: f for f in dataclasses.fields(TimingConfig)}
    bad = sorted(set(value) - set(known))
    if bad:
        raise MatrixError(f"unknown [timing] keys {bad}; known: {', '.join(sorted(known))}")
    try:
        return dataclasses.replace(base, **{k: _typed(f"timing.{k}", known[k].type, v) for k, v in value.items()})
    except ValueError as exc:
        raise MatrixError(f"[timing]: {exc}") from None


def _shapes(value) -> dict[str, dict[str, list[int]]]:
    """The ``[shapes.MODEL]`` tables: per model, ``batches`` and/or ``seq_lens``.

    Raises:
        MatrixError: for anything else.
    """
    if not isinstance(value, dict) or not all(isinstance(axes, dict) for axes in value.values()):
        raise MatrixError(f"shapes must be tables [shapes.MODEL] with batches and/or seq_lens; got {value!r}")
    out = {}
    for model, axes in value.items():
        bad = sorted(set(axes) - {"batches", "seq_lens"})
        if bad:
            raise MatrixError(f"[shapes.{model}] keys {bad}: only batches and seq_lens can be set per model")
        out[model] = {k: _typed(f"shapes.{model}.{k}", "list[int]", v) for k, v in axes.items()}
    return out


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
        (:meth:`ModelSource.unrunnable_reason`), a scenario the runtime does not run
        (:meth:`onnxbench.runtimes.Runtime.scenario_reason`), or a precision the runtime does not run
        (:meth:`onnxbench.runtimes.Runtime.precision_reason`)."""
        from ... import runtimes

        why = self.source(cell).unrunnable_reason(cell)
        if why:
            return why
        why = runtimes.runtime_class(cell.runtime).scenario_reason(cell.scenario)
        if why:
            return why
        why = runtimes.runtime_class(cell.runtime).precision_reason(cell.precision)
        if why:
            able = [n for n, cls in runtimes.registry().items() if cell.precision in cls.quantized_precisions]
            return f"{why}; runtimes that run it: {', '.join(able) or 'none registered'}"
        return None

    def plan_notes(self) -> list[str]:
        """What the run will feed other than asked, said before it starts: padding is whole tokens, so a cell whose
        ``padding · seq_len`` is not whole is fed less (its row's ``reason`` says so too;
        :func:`~onnxbench.benchmarks.inputs.padding_tokens`). One line per (seq_len, padding)."""
        lines = {}
        for cell in self.cells:
            if not cell.padding:
                continue
            length = self.source(cell).padding_length(cell)
            fed = fed_padding(cell.padding, length)
            if abs(fed - cell.padding) > 1e-9:
                pads = round(fed * length)
                lines[(length, cell.padding)] = (
                    f"padding {cell.padding:g} at seq_len {length} feeds {pads} of {length} positions in the last "
                    f"row ({fed:.4g}): padding is whole tokens; the rows say so")
        return [lines[key] for key in sorted(lines)]


def names_of(limits: dict[str, int]) -> str:
    """``"tiny's max_positions=128, ..."`` for error messages."""
    return ", ".join(f"{m}'s max_positions={n}" for m, n in limits.items())


#: Keys renamed since runs were first recorded -> their current name (old headers and matrix files still load).
LEGACY_KEYS = {"cov_warn": "noise_limit"}


def load_matrix(path: str | Path, base: MatrixSpec | None = None) -> MatrixSpec:
    """Read a matrix spec from a TOML file (format: ``examples/matrix.toml``, docs/usage.md "Matrix files"); keys the
    file leaves out keep ``base``'s values (default :func:`default_matrix`). A file's own ``batches`` or
    ``seq_lens`` applies to every model unless the file's own ``[shapes.MODEL]`` tables say otherwise: ``base``'s
    per-model tables (the default's ``gpt2-small`` at B = 1) do not outrank what the file asks for.

    Raises:
        MatrixError: (a ValueError) for a path that is not a file, invalid TOML (with the parser's line and
            column) or an unknown key.
    """
    path = Path(path)
    if not path.is_file():
        raise MatrixError(f"matrix file {path} does not exist" if not path.exists() else
                          f"matrix file {path} is not a file; give a TOML file (format: examples/matrix.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path} is not valid TOML: {exc}") from None
    base = base if base is not None else default_matrix()
    axes = [a for a in ("batches", "seq_lens") if a in data]
    if axes and "shapes" not in data:
        shapes = {m: {k: v for k, v in table.items() if k not in axes} for m, table in base.shapes.items()}
        base = dataclasses.replace(base, shapes={m: table for m, table in shapes.items() if table})
    try:
        return MatrixSpec.from_dict(data, base)
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
