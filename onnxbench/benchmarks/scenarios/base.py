"""The scenario contract: what one cell measures, declared in one module per scenario.

A scenario is a :class:`Scenario` subclass in a module of its own, registered by one line in
:data:`onnxbench.benchmarks.scenarios.SCENARIOS` (or with :func:`onnxbench.benchmarks.scenarios.register`). It
declares

- ``name``: the ``scenario`` column and the value of the matrix's ``scenarios`` axis;
- ``key_fields``: the key columns it adds to a cell beyond the common ones (generate: ``new_tokens``, ``padding``),
  whose values :meth:`Scenario.axes` expands from the matrix;
- ``columns``: the result columns that show it, in the end-of-run table and the report (prefill: latency and
  tokens/s; generate: padding, TTFT, TPOT, decode tokens/s);
- ``decoder``: whether its cells run the model exported with its KV cache (part ``decoder-with-past``) rather than
  the matrix's parts;
- :meth:`Scenario.validate`: bad values of its axes are refused before anything runs;
- :meth:`Scenario.measure` ``(cell, session, context) -> Measurement``: one cell on an open session.

The worker (:mod:`onnxbench.benchmarks.run.worker`) opens the session, builds the :class:`CellContext` and calls
``measure`` the same way for every scenario; what every measurement ends with (the heap trimmed and the peak
memory reset before the measured part, the resources read after it, the session's notes and the noise warning in
the reason) is the context's :meth:`CellContext.start_peak` and :meth:`CellContext.ok`. docs/design.md, "Life of
a cell", shows where a scenario sits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...noise import noise_reason
from ..measure.load import OtherLoad
from ..measure.memory import device_mem_mb, peak_rss_mb, reset_peak_rss, trim_heap
from ..measure.timing import TimingConfig
from ..rows import Load, Measurement, Outcome, Resources

if TYPE_CHECKING:
    from ...export import ExportArtifact
    from ...runtimes import RuntimeOptions, Session
    from ..cells import Cell
    from ..plan.matrix import MatrixSpec
    from ..plan.sources import ModelSource
    from ..verify.reference import Reference


@dataclass
class CellContext:
    """What a scenario's :meth:`Scenario.measure` may use besides the cell and the open session.

    Attributes:
        source: the cell's model (its inputs, prompts and work model).
        reference: what the outputs are compared with (its expected outputs per feeds are cached per shape).
        artifact: the ONNX artifact the session runs.
        options: the options the session was opened with.
        timing: the timing harness's settings.
        noise_limit: the noise rule's limit (:func:`onnxbench.noise.is_noisy`).
        locate_divergence: name the first diverging block of every row, not only of failing ones.
        cache_dir: the export cache (float64 references and block-boundary graphs are cached under it).
        mem_baseline: bytes in use on the session's GPU before it was opened (None on the CPU).
        harness_s: seconds spent in the timing harness so far (a scenario adds its own; the run's wall-time
            summary reads it).
    """

    source: ModelSource
    reference: Reference
    artifact: ExportArtifact | None = None
    options: RuntimeOptions | None = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    noise_limit: float = 0.1
    locate_divergence: bool = False
    cache_dir: Path | None = None
    mem_baseline: int | None = None
    harness_s: float = 0.0
    _load: OtherLoad | None = field(default=None, repr=False)
    _busy_pct: float | None = field(default=None, repr=False)

    def start_peak(self) -> None:
        """Start the window that ``peak_rss_mb`` covers: memory freed earlier goes back to the OS first
        (``malloc_trim``), then the peak is reset, so that the peak is this cell's measured part alone
        (docs/schema.md). The other processes' CPU load (``cpu_busy_pct``) is measured over the same window."""
        trim_heap()
        reset_peak_rss()
        self._load, self._busy_pct = OtherLoad.start(), None

    def resources(self, session: Session) -> Resources:
        """Peak resident memory since :meth:`start_peak` and the device memory the session holds (MiB); ends the
        window of the CPU load :meth:`ok` records."""
        self._busy_pct = self._load.stop() if self._load is not None else None
        self._load = None
        return Resources(peak_rss_mb(), device_mem_mb(session, self.mem_baseline))

    def ok(self, session: Session, timing_row: dict[str, Any] | None, notes: list[str],
           **parts: Any) -> Measurement:
        """The ``ok`` measurement of a cell: its ``reason`` holds the session's notes (e.g. nodes that left the
        requested execution provider), ``notes``, and the noise warning of ``timing_row`` (the statistics the
        row's latency columns hold; None: not judged); ``parts`` are :class:`Measurement`'s fields."""
        reasons = [*session.notes, *notes]
        noisy = (noise_reason({**timing_row, "cpu_busy_pct": self._busy_pct}, self.noise_limit) if timing_row
                 else "")
        if noisy:
            reasons.append(noisy)
        return Measurement(Outcome("ok", "; ".join(reasons)), load=Load(self._busy_pct), **parts)


class Scenario:
    """One way of measuring a cell (see the module docstring for what a subclass declares)."""

    name: ClassVar[str] = ""
    key_fields: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[str, ...]] = ()
    decoder: ClassVar[bool] = False

    def axes(self, spec: MatrixSpec) -> list[dict[str, Any]]:
        """The values of :attr:`key_fields` for ``spec``: one dict (cell field -> value) per combination; the
        default, one cell with none."""
        return [{}]

    def validate(self, spec: MatrixSpec) -> None:
        """Refuse values of this scenario's axes that no cell can run (the default checks nothing).

        Raises:
            MatrixError: naming the value and the allowed range.
        """

    def measure(self, cell: Cell, session: Session, context: CellContext) -> Measurement:
        """Measure ``cell`` on ``session`` (an open session of ``context.artifact``).

        Raises:
            Exception: whatever the runtime raises; the worker turns it into a ``failed`` row.
        """
        raise NotImplementedError
