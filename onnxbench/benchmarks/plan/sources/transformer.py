"""Sources of the reference transformer: a named preset, or a local GPT-2, Llama or Qwen2 checkpoint.

Both export the reference transformer (:mod:`onnxbench.export`) for every (part, attention variant, precision,
opset) of the matrix and compare it with the torch module running the same weights in float64, whose error at
the cell's precision is the noise floor (:class:`onnxbench.benchmarks.verify.reference.TorchFloat64Reference`). They
differ only in where the config and the weights come from: :class:`PresetSource` takes a preset's config and the
matrix's seed, :class:`CheckpointSource` reads ``config.json`` and ``model.safetensors`` from a directory
(:mod:`onnxbench.models.checkpoint`).

Besides onnxbench's own export, a model's graph can come from another tool on the same weights (the matrix's
``export_path`` axis, :mod:`onnxbench.export.paths`): Hugging Face Optimum's exporter, with or without ONNX
Runtime's transformer optimizer, or ONNX Runtime GenAI's model builder. Such a graph is a decoder with a KV cache
in its tool's layout; its cells have ``attention`` = ``external`` (the attention variants are onnxbench's
export's), run on the runtimes that read ONNX, and are compared with the same float64 torch reference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ....errors import MatrixError
from ....export import ExportArtifact, TensorSpec, to_onnx
from ....export.decoder_layout import detect_layout, position_ids
from ....export.decoder_with_past import DECODER_WITH_PAST, empty_past
from ....export.paths import DEFAULT_EXPORT_PATH, EXPORT_PATHS, EXTERNAL_ATTENTION, export_with
from ....export.quantize import QUANTIZED_PRECISIONS
from ....export.variants import VARIANTS
from ....models import PRESETS, TransformerConfig
from ...cells import Cell, CellAxes
from ...inputs import make_feeds
from ...measure.footprint import Footprint, footprint
from ...measure.graph_work import GraphWork, counted_work
from ...measure.workmodel import Work, decode_step_work, work
from .base import ModelSource, SourceSettings, left_padded_prompts, quantized_artifact

if TYPE_CHECKING:
    from ...verify.reference import Reference


@dataclass(frozen=True)
class TransformerSource(ModelSource):
    """The reference transformer with ``base_config``'s shape (its ``attention`` is set per cell).

    Attributes:
        name: the ``model`` column.
        base_config: the model's config.
        seed: weight seed (unused when the weights come from a checkpoint) and input seed.
        exporter: ``dynamo`` or ``torchscript``.
        checkpoint: directory the weights come from (None: from ``seed``).
    """

    name: str
    base_config: TransformerConfig
    seed: int = 0
    exporter: str = "dynamo"
    checkpoint: str | None = None
    reference_runtime: ClassVar[str] = "torch"
    exported: ClassVar[bool] = True

    @property
    def max_positions(self) -> int:
        return self.base_config.max_positions

    @property
    def n_params(self) -> int:
        return self.base_config.n_params

    def config(self, attention: str) -> TransformerConfig:
        """``base_config`` with the module implementation that attention variant ``attention`` is exported from
        (``external``, another tool's export: ``base_config`` as it is).

        Raises:
            KeyError: for an unknown variant.
        """
        if attention == EXTERNAL_ATTENTION:
            return self.base_config
        return self.base_config.replace(attention=VARIANTS[attention].implementation)

    def cells(self, axes: CellAxes) -> list[Cell]:
        """Per scenario and export path: the parts (a scenario that decodes: the full model exported with its KV
        cache, part ``decoder-with-past``) x attention variants x precisions x opsets x runtimes x batches x
        sequence lengths x the scenario's own fields (generate: new tokens x paddings). A variant that dictates
        its opset gets that opset (so some cells may coincide: the matrix keeps them once). Another tool's export
        path has one attention label, ``external``, and opset 0 where the tool chooses its own (the row's
        ``opset`` is then the file's)."""
        cells = []
        for scenario in axes.scenarios:
            parts = [DECODER_WITH_PAST] if scenario.decoder else axes.parts
            for path in axes.export_paths:
                ours = path == DEFAULT_EXPORT_PATH
                variants = axes.attention if ours else (EXTERNAL_ATTENTION,)
                opsets = axes.opsets if EXPORT_PATHS[path].uses_opset else (0,)
                extra = {} if ours else {"export_path": path}
                for part, att, prec, opset, rt in itertools.product(parts, variants, axes.precisions, opsets,
                                                                    axes.runtimes):
                    opset = VARIANTS[att].resolve_opset(opset) if ours else opset
                    for b, t, fields in itertools.product(axes.batches, axes.seq_lens, scenario.fields):
                        cells.append(Cell(self.name, att, prec, opset, rt, b, t, part=part, scenario=scenario.name,
                                          **fields, **extra))
        return cells

    def unrunnable_reason(self, cell: Cell) -> str | None:
        """A sequence length (generate: prompt + new tokens) above ``max_positions``, an attention variant not
        available for the model's family (``ort-fused`` for the llama family) or the cell's part
        (``ort-gqa-inplace``: decoder-with-past only, fp32 or fp16), or an opset the exporter cannot
        produce for the cell's attention variant (measured: :mod:`onnxbench.export.opsets`, docs/export.md).
        Another tool's export path: a runtime that does not read ONNX (the torch runtimes rebuild the module),
        or what the path cannot make (a family, precision or part it does not write, its package not installed:
        :meth:`onnxbench.export.paths.ExportPath.reason`)."""
        total = cell.seq_len + cell.new_tokens
        if cell.new_tokens and total > self.max_positions:
            return (f"prompt length {cell.seq_len} + {cell.new_tokens} new tokens = {total} exceeds {self.name}'s "
                    f"max_positions={self.max_positions}")
        if cell.export_path != DEFAULT_EXPORT_PATH:
            from .... import runtimes

            if not runtimes.runtime_class(cell.runtime).runs_onnx:
                takers = [name for name, cls in runtimes.registry().items() if cls.runs_onnx]
                return (f"{cell.runtime} runs the torch module rebuilt from {self.name}'s config, not export path "
                        f"{cell.export_path}'s graph; its cells run on the runtimes that read ONNX "
                        f"({', '.join(takers)})")
            return super().unrunnable_reason(cell) or EXPORT_PATHS[cell.export_path].reason(
                self.base_config, cell.precision, cell.part)
        variant = VARIANTS[cell.attention]
        return (super().unrunnable_reason(cell) or variant.family_reason(self.base_config.family)
                or variant.part_reason(cell.part) or variant.opset_reason(self.exporter, cell.opset)
                or (variant.precision_reason(cell.precision) if cell.precision not in QUANTIZED_PRECISIONS else None))

    def prompt(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        """The prompts of a generate cell, the same for every runtime: ``(input_ids, attention_mask)``, both int64
        (batch, seq_len); ids uniform in [0, vocab_size) from the matrix's seed, row b left-padded by
        ``floor(padding * seq_len * (b + 1) / batch)`` tokens (id 0, mask 0) so that rows differ in length
        (:func:`~onnxbench.benchmarks.inputs.padding_tokens`: whole tokens, so a short prompt may be fed less
        padding than asked; its row says so)."""
        return left_padded_prompts(self.seed, cell.batch, cell.seq_len, cell.padding, 0, self.base_config.vocab_size)

    def decoder_layout(self, cell: Cell) -> str | None:
        """``onnxbench`` for the cells of the decoder-with-past export; another tool's export path: its layout
        (its graph is a decoder with a KV cache in both scenarios)."""
        if cell.export_path != DEFAULT_EXPORT_PATH:
            return EXPORT_PATHS[cell.export_path].layout
        return "onnxbench" if cell.part == DECODER_WITH_PAST else None

    def export(self, attention: str = "decomposed", precision: str = "fp32", opset: int | None = None,
               part: str = "model", cache_dir: str | Path | None = None, force: bool = False) -> ExportArtifact:
        """Export (or take from the cache) this model with attention variant ``attention``; see
        :func:`onnxbench.export.to_onnx` for the arguments and the errors raised."""
        kwargs = {} if opset is None else {"opset": opset}
        return to_onnx(self.config(attention), seed=self.seed, precision=precision, exporter=self.exporter,
                       cache_dir=cache_dir, model_name=self.name, force=force, checkpoint=self.checkpoint,
                       variant=attention, part=part, **kwargs)

    def artifact(self, cell: Cell, cache_dir: str | Path | None = None) -> ExportArtifact:
        """The export at the cell's precision; for a quantized one (``int8-dynamic``, ``int4-weight``) the fp32
        export quantized (:func:`~onnxbench.benchmarks.plan.sources.base.quantized_artifact`), both cached; another
        tool's export path: its graph of the same weights (:func:`onnxbench.export.paths.export_with`), cached."""
        if cell.export_path != DEFAULT_EXPORT_PATH:
            return export_with(cell.export_path, self.name, self.base_config, self.seed, self.checkpoint,
                               cell.precision, cell.opset or None, cache_dir)
        if cell.precision in QUANTIZED_PRECISIONS:
            fp32 = self.export(cell.attention, "fp32", cell.opset, cell.part, cache_dir)
            return quantized_artifact(fp32, cell.precision, cache_dir)
        return self.export(cell.attention, cell.precision, cell.opset, cell.part, cache_dir)

    def reference(self, artifact: ExportArtifact, cache_dir: str | Path | None = None) -> Reference:
        """The float64 torch module of the artifact's config, weights and part, whatever the graph's precision;
        the module at the graph's precision gives the noise floor."""
        from ...verify.reference import TorchFloat64Reference

        return TorchFloat64Reference.of_artifact(artifact, cache_dir)

    def feeds(self, specs: tuple[TensorSpec, ...], batch: int, seq_len: int) -> dict[str, np.ndarray]:
        """``input_ids`` int64 (batch, seq_len) uniform in [0, vocab_size) (the attention part: hidden states
        float (batch, seq_len, d_model) from N(0, 1)); a decoder-with-past graph gets a prefill: an all-ones
        ``attention_mask``, an empty cache and, where the graph takes them (Optimum's layout), ``position_ids``
        0 .. seq_len - 1."""
        names = {spec.name: spec for spec in specs}
        if "past_key_values.0.key" in names:
            ids = make_feeds((names["input_ids"],), batch, seq_len, seed=self.seed,
                             int_high=self.base_config.vocab_size)["input_ids"]
            dtype = np.dtype(names["past_key_values.0.key"].dtype)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                     **empty_past(self.base_config, batch, dtype)}
            if "position_ids" in names:
                feeds["position_ids"] = position_ids(feeds["attention_mask"])
            return feeds
        return make_feeds(specs, batch, seq_len, seed=self.seed, int_high=self.base_config.vocab_size)

    def work(self, cell: Cell, artifact: ExportArtifact | None = None) -> Work | None:
        """Per inference (prefill), or per decode step at the mean context (generate:
        :func:`onnxbench.benchmarks.measure.workmodel.decode_step_work`; a generation of one token has no decode step,
        and its latency columns are the prefill's, so its work is the prefill's too). Analytic, except for a
        quantized graph, whose work is counted from the graph that ran (its weights are int8 or 4-bit blocks:
        :mod:`onnxbench.benchmarks.measure.graph_work`; the FLOPs agree with the analytic ones exactly,
        tests/benchmarks/measure/test_graph_work.py), for a generate cell at the same decode step. Another tool's
        export path computes the same model: its fp32 work is the analytic one, its quantized graph's is counted
        from its decoder graph in the same way (a prefill: the prompt's forward from an empty cache)."""
        if cell.export_path != DEFAULT_EXPORT_PATH and cell.precision != "fp32":
            counted = self._counted_path(cell, artifact) if artifact is not None else None
            return counted.work if counted is not None and counted.complete else None
        if cell.precision in QUANTIZED_PRECISIONS:
            if artifact is None:
                return None
            counted = self._counted(cell, artifact)
            return counted.work if counted.complete else None
        config = self.config(cell.attention)
        if cell.new_tokens > 1:
            return decode_step_work(config, cell.batch, cell.seq_len, cell.new_tokens, cell.precision)
        return work(config, "model" if cell.new_tokens else cell.part, cell.batch, cell.seq_len, cell.precision)

    def footprint(self, cell: Cell) -> Footprint:
        """The analytic estimate of :func:`onnxbench.benchmarks.measure.footprint.footprint` for the cell's part,
        shape and precision (a generate cell: the decoder with its KV cache over prompt + new tokens)."""
        return footprint(self.base_config, cell.part, cell.batch, cell.seq_len, cell.precision, cell.new_tokens)

    def work_gap(self, cell: Cell, artifact: ExportArtifact | None = None) -> str:
        """Why :meth:`work` is None: only a quantized graph's count can be incomplete (the rest is analytic)."""
        if cell.export_path != DEFAULT_EXPORT_PATH and cell.precision != "fp32":
            return "" if artifact is None else self._counted_path(cell, artifact).why_incomplete
        if cell.precision not in QUANTIZED_PRECISIONS or artifact is None:
            return ""
        return self._counted(cell, artifact).why_incomplete

    @staticmethod
    def _counted_path(cell: Cell, artifact: ExportArtifact) -> GraphWork:
        """Another tool's decoder graph counted at the step :meth:`work` describes (a prefill: the prompt's forward
        from an empty cache), its cache sizes bound from its layout (the builder leaves d_head symbolic)."""
        layout = detect_layout(artifact.path)
        _, _, past_axis, total_axis = layout.axes
        keys, seq_len = (cell.seq_len + cell.new_tokens // 2, 1) if cell.new_tokens > 1 else (cell.seq_len,
                                                                                              cell.seq_len)
        dims = {past_axis: keys - seq_len, **({total_axis: keys} if total_axis else {})}
        cache = next(spec for spec in artifact.inputs if spec.name == "past_key_values.0.key")
        for axis, size in ((cache.shape[1], layout.n_kv_heads), (cache.shape[3], layout.d_head)):
            if isinstance(axis, str):
                dims.setdefault(axis, size)
        return counted_work(artifact.path, cell.batch, seq_len, dims)

    @staticmethod
    def _counted(cell: Cell, artifact: ExportArtifact) -> GraphWork:
        """The graph's count at the cell's shape; a decoder-with-past graph at the step :meth:`work` describes:
        one token per row at the mean context (T0 + N // 2 keys) when there are decode steps, else the prompt's
        forward from an empty cache."""
        if cell.part != DECODER_WITH_PAST:
            return counted_work(artifact.path, cell.batch, cell.seq_len)
        # the file's own layout names the cache axes (the in-place variant's buffer axis is not the concatenating
        # graphs' past axis)
        return TransformerSource._counted_path(cell, artifact)


@dataclass(frozen=True)
class PresetSource(TransformerSource):
    """A named preset (:data:`onnxbench.models.PRESETS`) with weights drawn from the matrix's seed."""

    spec_field: ClassVar[str] = "models"

    @classmethod
    def named(cls, name: str, seed: int = 0, exporter: str = "dynamo") -> PresetSource:
        """The preset ``name``.

        Raises:
            MatrixError: (a ValueError) for an unknown preset (lists the known ones).
        """
        if name not in PRESETS:
            raise MatrixError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return cls(name, PRESETS[name], seed=seed, exporter=exporter)

    @classmethod
    def from_options(cls, options: list[str], settings: SourceSettings) -> list[PresetSource]:
        """The presets named in ``options`` (the matrix's ``models``)."""
        return [cls.named(name, settings.seed, settings.exporter) for name in options]

    def describe(self) -> str:
        return f"preset {self.name!r}"


@dataclass(frozen=True)
class CheckpointSource(TransformerSource):
    """A local GPT-2, Llama or Qwen2 checkpoint directory (``config.json`` + ``model.safetensors``), named after the
    directory; torch eager, the reference, loads the same weights."""

    spec_field: ClassVar[str] = "checkpoints"

    @classmethod
    def at(cls, directory: str | Path, seed: int = 0, exporter: str = "dynamo") -> CheckpointSource:
        """The checkpoint in ``directory``.

        Raises:
            FileNotFoundError: for a missing directory or file.
            ValueError: for an unsupported config.
        """
        from ....models import checkpoint_config

        return cls(Path(directory).resolve().name, checkpoint_config(directory), seed=seed, exporter=exporter,
                   checkpoint=str(directory))

    @classmethod
    def from_options(cls, options: list[str], settings: SourceSettings) -> list[CheckpointSource]:
        """The checkpoint directories of ``options`` (the matrix's ``checkpoints``)."""
        return [cls.at(directory, settings.seed, settings.exporter) for directory in options]

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint}"
