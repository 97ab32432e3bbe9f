"""The model-source contract: everything the matrix, the runner and the worker need to know about one model.

A :class:`ModelSource` is one model of a matrix (a preset, a local checkpoint, a user's ONNX file, ...). It owns
its name (the ``model`` column), its validation, its sequence-length limit, the cells it contributes for the
matrix's axes, the ONNX artifact of a cell, the runtime that is its reference and the artifact that runtime
opens, the inputs of a cell, its parameter count and work model, and its torch config where it has one.
Nothing outside a source asks which kind of model it is: a new kind is one more subclass registered in
:data:`onnxbench.benchmarks.plan.sources.SOURCE_KINDS`.

Sources are built once per matrix (:meth:`onnxbench.benchmarks.plan.matrix.MatrixSpec.build`) from their own
options (the matrix field :attr:`ModelSource.spec_field` names) and the :class:`SourceSettings`, list their cells
from the :class:`~onnxbench.benchmarks.cells.CellAxes` the matrix gives each model, are immutable, and are pickled
into worker processes together with the group of cells they measure. None of them sees the whole matrix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ....export import ExportArtifact, TensorSpec
from ....export.quantize import INT4_WEIGHT, INT8_DYNAMIC, quantize_int8_dynamic
from ....export.quantize_int4 import quantize_int4_weight
from ...cells import Cell, CellAxes
from ...inputs import padding_tokens

if TYPE_CHECKING:
    from ....models import TransformerConfig
    from ...measure.footprint import Footprint
    from ...measure.workmodel import Work
    from ...verify.positions import RealPositions
    from ...verify.reference import Reference


def left_padded_prompts(seed: int, batch: int, seq_len: int, padding: float, low: int, high: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The prompts of a generate cell (docs/generation.md, "The generate scenario"): ``(input_ids,
    attention_mask)``, both int64 (batch, seq_len); ids uniform in [low, high) from ``seed``, row b left-padded by
    ``floor(padding * seq_len * (b + 1) / batch)`` tokens (id 0, mask 0) so that rows differ in length
    (:func:`~onnxbench.benchmarks.inputs.padding_tokens`: whole tokens, so a short prompt may be fed less padding
    than asked; its row says so)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(low, high, (batch, seq_len), dtype=np.int64)
    mask = np.ones_like(ids)
    for row in range(batch):
        pad = padding_tokens(padding, seq_len, row, batch)
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def quantized_artifact(source: ExportArtifact | str | Path, precision: str,
                       cache_dir: str | Path | None = None) -> ExportArtifact:
    """The fp32 graph ``source`` quantized to ``precision`` (``int8-dynamic``: ONNX Runtime's dynamic
    quantization; ``int4-weight``: its MatMulNBits quantizer; docs/quantization.md), cached by content.

    Raises:
        KeyError: for a precision that is not a quantized one.
        ValueError / FileNotFoundError: from the quantizer (a source that is not fp32, no MatMul weight, ...).
    """
    make = {INT8_DYNAMIC: quantize_int8_dynamic, INT4_WEIGHT: quantize_int4_weight}[precision]
    return make(source, cache_dir=cache_dir)


@dataclass(frozen=True)
class SourceSettings:
    """What every source of a matrix shares: the weight and input ``seed`` and the ``exporter`` (``dynamo`` or
    ``torchscript``) of the sources that export."""

    seed: int = 0
    exporter: str = "dynamo"


class ModelSource(ABC):
    """One model of the matrix. Subclasses are frozen dataclasses with a ``name`` field.

    Class attributes:
        spec_field: the :class:`~onnxbench.benchmarks.plan.matrix.MatrixSpec` field holding this kind's options
            (also the TOML key); :meth:`from_options` reads them.
        reference_runtime: registry name of the runtime whose outputs this model's cells are compared with
            (:meth:`reference` says in which configuration).
        exported: whether :meth:`artifact` exports the model (True) or reads a file as given (False); only
            exports have an export time and count in the run's export summary.
    """

    name: str
    spec_field: ClassVar[str] = ""
    reference_runtime: ClassVar[str] = "torch"
    exported: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_options(cls, options: Any, settings: SourceSettings) -> list[ModelSource]:
        """The sources of this kind that ``options`` (the value of the matrix's :attr:`spec_field`) lists, in
        order.

        Raises:
            ValueError / FileNotFoundError: for an entry that does not name a usable model of this kind
                (names the entry and the fix).
        """

    @abstractmethod
    def describe(self) -> str:
        """A short phrase naming the model for error messages, e.g. ``"preset 'tiny'"``."""

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model accepts (tokens), or None where it has no such limit."""
        return None

    def validate(self) -> None:
        """Check the model and its options before anything runs (the default checks nothing).

        Raises:
            ValueError: naming the model, the problem and the fix.
        """

    @abstractmethod
    def cells(self, axes: CellAxes) -> list[Cell]:
        """This model's cells for the matrix's ``axes`` (which axes apply is the source's business), in matrix
        order: cells sharing an artifact and a runtime adjacent. A cell that cannot run is listed all the same
        and named by :meth:`unrunnable_reason` (it becomes a ``skipped`` row): nothing asked for is dropped."""

    def unrunnable_reason(self, cell: Cell) -> str | None:
        """Why ``cell`` cannot run (it becomes a ``skipped`` row), or None if it can. The default: a sequence
        length above :attr:`max_positions`."""
        limit = self.max_positions
        if limit is not None and cell.seq_len > limit:
            return f"seq_len {cell.seq_len} exceeds {self.name}'s max_positions={limit}"
        return None

    @abstractmethod
    def artifact(self, cell: Cell, cache_dir: str | Path | None = None) -> ExportArtifact:
        """The ONNX artifact ``cell`` runs (exported and cached, or read).

        Raises:
            Exception: whatever the export raises; the runner turns it into ``failed`` rows.
        """

    @abstractmethod
    def reference(self, artifact: ExportArtifact, cache_dir: str | Path | None = None) -> Reference:
        """What the cells of ``artifact`` are compared with (:mod:`onnxbench.benchmarks.verify.reference`): its
        expected outputs per feeds, its float64 outputs and noise floor where it has them, and whether a row is
        the reference itself. ``cache_dir`` is the export cache (float64 results are cached under it)."""

    @abstractmethod
    def feeds(self, specs: tuple[TensorSpec, ...], batch: int, seq_len: int) -> dict[str, np.ndarray]:
        """Deterministic inputs for a session with input ``specs`` at (batch, seq_len), the same for every
        runtime (see :func:`onnxbench.benchmarks.inputs.make_feeds`).

        Raises:
            ValueError: for an input the source cannot generate (names it and the fix).
        """

    def cell_feeds(self, specs: tuple[TensorSpec, ...], cell: Cell) -> dict[str, np.ndarray]:
        """The inputs of a prefill ``cell``: :meth:`feeds` at its (batch, seq_len); a source whose prefill cells
        take padding (:attr:`Cell.padding`) applies it here.

        Raises:
            ValueError: as :meth:`feeds`.
        """
        return self.feeds(specs, cell.batch, cell.seq_len)

    def real_positions(self, cell: Cell, feeds: dict[str, np.ndarray]) -> RealPositions | None:
        """Where the real (unpadded) positions of ``feeds`` are and which outputs are judged there only
        (:mod:`onnxbench.benchmarks.verify.positions`); None (the default) when every position is real."""
        return None

    def padding_length(self, cell: Cell) -> int:
        """The number of positions a padded row of ``cell`` has (what ``padding`` is a fraction of): its
        ``seq_len`` by default."""
        return cell.seq_len

    def prompt(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        """The prompts of a ``generate`` cell, the same for every runtime: ``(input_ids, attention_mask)``, int64
        (batch, seq_len), 0 in the mask on left padding (docs/generation.md).

        Raises:
            NotImplementedError: for a source without the generate scenario (the default; it contributes no
                generate cells).
        """
        raise NotImplementedError(f"{self.describe()} has no generate scenario")

    def decoder_layout(self, cell: Cell) -> str | None:
        """The KV-cache layout of the graph ``cell`` runs as a decoder (the ``decoder_layout`` column:
        ``onnxbench``, ``optimum`` or ``builder``, :mod:`onnxbench.export.decoder_layout`), or None where the cell
        does not feed a cache (the default)."""
        return None

    def dim_ranges(self) -> dict[str, tuple[int, int, int]]:
        """``{axis name: (min, opt, max)}`` the source binds itself (beyond the matrix's batch and sequence
        axes), for optimization profiles (:mod:`onnxbench.runtimes.trt_profiles`); default none."""
        return {}

    @property
    @abstractmethod
    def n_params(self) -> int | None:
        """Parameters of the model (the ``n_params`` column), or None where unknown."""

    def work(self, cell: Cell, artifact: ExportArtifact | None = None) -> Work | None:
        """FLOPs and bytes moved of one inference of ``cell`` (:mod:`onnxbench.benchmarks.measure.workmodel`), or None
        where the source has no work model for it (the work columns then stay empty). ``artifact`` is the graph
        the cell ran, for sources that count the graph itself (:mod:`onnxbench.benchmarks.measure.graph_work`)."""
        return None

    def footprint(self, cell: Cell) -> Footprint | None:
        """The estimated peak memory of ``cell`` (:mod:`onnxbench.benchmarks.measure.footprint`), checked against
        the memory available before the cell runs; None (the default) where the source has no estimate, and the
        cell is never refused for memory."""
        return None

    def work_gap(self, cell: Cell, artifact: ExportArtifact | None = None) -> str:
        """Why :meth:`work` gives nothing for ``cell`` (an ok row's ``reason`` says it, so that empty work columns
        are never silent), "" where it counts the work; the default has no work model to be missing."""
        return ""

    def config(self, attention: str) -> TransformerConfig | None:
        """The reference transformer's config for attention variant ``attention``, or None where the model is
        not one."""
        return None
