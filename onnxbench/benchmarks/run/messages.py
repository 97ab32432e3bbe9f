"""What flows between the runner, an executor and the worker: a :class:`Group` of cells to measure, and the
typed messages measuring it produces.

A worker measuring a group emits, in order::

    WorkerStarted(pid)                 imports done (process executors only)
    SessionOpened(session_s)           the session is open (absent when the group's cells are skipped or failed)
    CellStarted(cell_id)               about to measure this cell
    CellFinished(cell_id, measurement, timing_s, reference_s)
    ...                                (CellStarted, CellFinished) per cell
    GroupFinished()

Every cell of a group gets exactly one :class:`CellFinished`; an executor synthesises a ``failed`` one for a cell
whose worker died or went silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...export import ExportArtifact
from ...runtimes import RuntimeOptions
from ..cells import Cell
from ..plan.matrix import MatrixSpec
from ..plan.sources import ModelSource
from ..rows import Measurement
from ..scenarios import SCENARIOS, Scenario


@dataclass(frozen=True, eq=False)
class Group:
    """Cells that share one artifact and one runtime: one session measures them all.

    Attributes:
        source: the model the cells belong to (inputs, reference).
        artifact: the ONNX artifact every cell runs.
        cells: the cells, all of one runtime.
        spec: the matrix (timing settings, ``cov_warn``, ``cell_timeout_s``).
        options: runtime options to open the session with (None: the runtime's defaults), e.g. a tuned
            configuration.
        label: merged into the ``options`` column (e.g. ``{"tune_config": name}``).
        cache_dir: the export cache (None: the default); float64 references and block-boundary graphs are
            cached under it.
        scenarios: the scenarios of the cells (by name), which travel with the group into its worker (default:
            the registered ones).
    """

    source: ModelSource
    artifact: ExportArtifact
    cells: tuple[Cell, ...]
    spec: MatrixSpec
    options: RuntimeOptions | None = None
    label: dict = field(default_factory=dict)
    cache_dir: Path | None = None
    scenarios: Mapping[str, Scenario] = field(default_factory=lambda: dict(SCENARIOS))

    @property
    def runtime(self) -> str:
        """Registry name of the cells' runtime."""
        return self.cells[0].runtime


@dataclass(frozen=True)
class WorkerStarted:
    """A worker process finished its imports; ``startup_s`` is filled in by the executor that started it."""

    pid: int
    startup_s: float = 0.0


@dataclass(frozen=True)
class SessionOpened:
    """The group's session is open after ``session_s`` seconds."""

    session_s: float


@dataclass(frozen=True)
class CellStarted:
    """The worker is about to measure cell ``cell_id`` (a worker that dies now costs this cell)."""

    cell_id: str


@dataclass(frozen=True)
class CellFinished:
    """Cell ``cell_id`` is measured (or skipped, or failed): its :class:`Measurement`, the seconds spent in the
    timing harness and computing its reference outputs."""

    cell_id: str
    measurement: Measurement
    timing_s: float = 0.0
    reference_s: float = 0.0


@dataclass(frozen=True)
class GroupFinished:
    """Every cell of the group has its :class:`CellFinished`."""


Message = WorkerStarted | SessionOpened | CellStarted | CellFinished | GroupFinished
