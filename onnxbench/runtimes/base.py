"""The runtime contract, in the spirit of ``onnx.backend`` (prepare/run) and Polygraphy's runners.

A :class:`Runtime` says whether it can run here (:meth:`Runtime.availability`, which never raises) and opens a
:class:`Session` on an :class:`~onnxbench.export.ExportArtifact`. A session runs feeds to outputs
(:meth:`Session.run`, host numpy in and out) and offers a device-resident fast path for timing
(:meth:`Session.prepare` binds the inputs once and returns a zero-argument callable that launches one
inference; :meth:`Session.synchronize` waits for the device). Timing never lives here: the harness in
``onnxbench.benchmarks.timing`` owns the clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..export import ExportArtifact, TensorSpec


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here (library or device missing) or fell back to another device.

    The message is the reason recorded in a ``skipped`` result row; it names the cause and, where there is
    one, the fix.
    """


class ShapeOutOfRange(ValueError):
    """A feed's shape lies outside what the session was built for (e.g. a TensorRT optimization profile)."""


@dataclass
class RuntimeOptions:
    """Options a runtime may honour; every runtime records the ones it used in ``Session.options``.

    Attributes:
        intra_op_threads: threads inside one operator (0 = the runtime's default).
        inter_op_threads: threads across operators (0 = the runtime's default).
        extra: runtime-specific settings (e.g. ``{"graph_optimization_level": "all"}`` for ONNX Runtime,
            ``{"cuda_graph": True}``, ``{"tf32": False}``); unknown keys raise ``ValueError`` in ``open``.
        axis_ranges: ``{"batch": (min, opt, max), "sequence": (min, opt, max)}`` of the shapes the session
            will see (from the matrix, ``onnxbench.runtimes.profile.axis_ranges``); runtimes that build for a
            shape range (TensorRT optimization profiles) use it, others ignore it. Empty: runtime default.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    axis_ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)


class Session(ABC):
    """An opened model on one runtime. Use as a context manager; ``close()`` frees it.

    Attributes (set by subclasses in ``__init__``):
        runtime: registry name, e.g. ``"ort-cpu"``.
        provider_requested: the execution provider / device asked for (``"CPUExecutionProvider"``, ``"cpu"``).
        provider_actual: the one that really runs, read back from the library after opening.
        device: ``"cpu"`` or ``"cuda:N"``.
        options: the settings in force, flat str -> JSON-able values (recorded in the result row).
        build_s: seconds spent creating the session (engine build, graph optimisation).
    """

    runtime: str = ""
    provider_requested: str = ""
    provider_actual: str = ""
    device: str = "cpu"
    build_s: float = 0.0

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs (name, numpy dtype name, shape with str for dynamic axes)."""

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; ``feeds`` and the returned outputs are host numpy arrays keyed by name.

        Raises:
            ShapeOutOfRange: if a feed's shape is outside what the session supports.
        """

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        """Bind ``feeds`` once (device-resident where the runtime has a device) and return a callable that
        launches one inference on them. The default calls :meth:`run`; runtimes override it with their fast
        path (IOBinding, bound device buffers) so that host copies stay out of the timed region."""
        return lambda: self.run(feeds)

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]] | None:
        """For device runtimes: callables ``{"h2d", "compute", "d2h"}`` that copy ``feeds`` host-to-device,
        run one inference on the device buffers and copy the outputs device-to-host, so that the harness can
        report trtexec's split (H2D latency, GPU compute time, D2H latency). None (the default): no split."""
        return None

    def synchronize(self) -> None:
        """Wait until work launched by this session has finished (no-op on the CPU)."""

    def close(self) -> None:
        """Free the session's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runtime(ABC):
    """A way of running an artifact. Subclasses set ``name`` and implement the two methods."""

    name: ClassVar[str] = ""
    #: "onnx" runtimes take any ONNX file; "reference" ones rebuild the torch module from the artifact.
    kind: ClassVar[str] = "onnx"
    #: False keeps a slow-to-build runtime out of the embedded default matrix (it stays selectable by name).
    in_default_matrix: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """``(True, detail)`` if this runtime can run here, else ``(False, reason)``. Never raises."""

    @classmethod
    def require_available(cls) -> None:
        """Raise :class:`RuntimeUnavailable` with :meth:`availability`'s reason when the runtime cannot run here."""
        ok, why = cls.availability()
        if not ok:
            raise RuntimeUnavailable(why)

    @abstractmethod
    def open(self, artifact: ExportArtifact, options: RuntimeOptions | None = None) -> Session:
        """Open ``artifact``.

        Raises:
            RuntimeUnavailable: if the runtime cannot run here, or opened on a different provider than
                requested (a silent fallback is reported, never hidden).
            ValueError: for an unsupported artifact or option.
        """
