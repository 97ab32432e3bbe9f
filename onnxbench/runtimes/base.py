"""The runtime contract, in the spirit of ``onnx.backend`` (prepare/run) and Polygraphy's runners.

A :class:`Runtime` describes itself (name, device, typed options, tolerance bands, tuning grid), says whether it
can run here (:meth:`Runtime.availability`, which never raises) and opens a :class:`Session` on an
:class:`~onnxbench.export.ExportArtifact`. A session runs feeds to outputs
(:meth:`Session.run`, host numpy in and out) and offers a device-resident fast path for timing
(:meth:`Session.prepare` binds the inputs once and returns a zero-argument callable that launches one
inference; :meth:`Session.synchronize` waits for the device). Timing never lives here: the harness in
``onnxbench.benchmarks.measure.timing`` owns the clock.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from ..env import cpu_counts
from ..errors import OptionError
from ..export import ExportArtifact, TensorSpec
from ..tolerance import CPU_BANDS, Bands, Tolerance, band
from .decode import DecodeLoop


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
            ``{"cuda_graph": True}``, ``{"tf32": False}``), checked against the runtime's
            :attr:`Runtime.options_type` in :meth:`Runtime.open`: an unknown key or a wrong type raises
            :class:`~onnxbench.errors.OptionError`.
        profile_ranges: ``{"batch": (min, opt, max), "sequence": (min, opt, max)}`` of the shapes the session
            will see (from the matrix, ``onnxbench.runtimes.trt_profiles.profile_ranges``); runtimes that build for a
            shape range (TensorRT optimization profiles) use it, others ignore it. Empty: runtime default.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    profile_ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TypedOptions:
    """Base of a runtime's typed options: a frozen dataclass whose fields are the keys of
    ``RuntimeOptions.extra`` it understands, with their defaults. Fields may be ``bool``, ``int``, ``float``,
    ``str``, a ``Literal[...]`` of allowed values, or one of these ``| None``; subclasses check value ranges in
    ``__post_init__`` (raising :class:`~onnxbench.errors.OptionError`)."""

    @classmethod
    def from_dict(cls, runtime: str, extra: Mapping[str, Any]) -> TypedOptions:
        """The typed options of ``extra`` (keys absent keep their defaults).

        Raises:
            OptionError: for an unknown key (names the runtime and its known keys) or a value of the wrong type
                (names the key, the expected type and the value).
        """
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(extra) - set(known))
        if unknown:
            raise OptionError(f"unknown {runtime} option(s) {unknown}; known: {', '.join(known) or 'none'}")
        for key, value in extra.items():
            if not _matches(value, hints[key]):
                raise OptionError(f"{runtime} option {key!r} must be {_describe(hints[key])}, got {value!r}")
        return cls(**extra)

    def as_dict(self) -> dict[str, Any]:
        """The options in force, flat key -> value (as recorded in a row's ``options`` column)."""
        return dataclasses.asdict(self)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(value == allowed and type(value) is type(allowed) for allowed in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class NoOptions(TypedOptions):
    """A runtime without runtime-specific options: any key in ``RuntimeOptions.extra`` is an error."""


def thread_counts(default: int) -> list[int]:
    """Thread counts worth a tuning candidate: 1, the physical and the logical core count, minus ``default``.

    1 thread too: on a shared machine a single thread can beat a team whose barriers wait on descheduled peers.
    """
    counts = {1, *(n or 0 for n in cpu_counts())}
    return sorted(c for c in counts if c > 0 and c != default)


class Session(ABC):
    """An opened model on one runtime. Use as a context manager; ``close()`` frees it.

    Attributes (set by subclasses in ``__init__``):
        runtime: registry name, e.g. ``"ort-cpu"``.
        provider_requested: the execution provider / device asked for (``"CPUExecutionProvider"``, ``"cpu"``).
        provider_actual: the one that really runs, read back from the library after opening.
        device: ``"cpu"`` or ``"cuda:N"``.
        options: the settings in force, flat str -> JSON-able values (recorded in the result row).
        notes: warnings recorded in every row's ``reason``.
        build_s: seconds spent creating the session (engine build, graph optimisation).
    """

    runtime: str = ""
    provider_requested: str = ""
    provider_actual: str = ""
    device: str = "cpu"
    build_s: float = 0.0

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        #: warnings about the session that every row of it carries in ``reason`` (e.g. compute nodes that left
        #: the requested execution provider, found by :meth:`attention_placement`'s profiled inference)
        self.notes: list[str] = []

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

    def release_memory(self, feeds: dict[str, np.ndarray]) -> None:
        """Give back host memory the session keeps from earlier shapes (memory pools, bound outputs) before a
        cell at ``feeds``' shape is measured, so that the cell's ``peak_rss_mb`` does not depend on the cells
        run before it (docs/schema.md). The default keeps nothing and does nothing."""

    def attention_placement(self, feeds: dict[str, np.ndarray]) -> str | None:
        """Where the attention cores ran for one inference on ``feeds``, as the ``attention_provider`` column
        shows it (e.g. ``"CPUExecutionProvider"``, or ``"EP_A:n,EP_B:m"`` when split). None (the default): the
        runtime has no such notion (it runs the whole model on one device).

        Raises:
            Exception: whatever the runtime's profiler raises; the caller records it, the cell is kept.
        """
        return None

    def device_timer(self) -> DeviceTimer | None:
        """A device clock on the stream the session's work runs on (CUDA events), for the harness to time device
        work as trtexec's "GPU Compute Time" does; None (the default) where there is none (CPU runtimes)."""
        return None

    def fetch_outputs(self) -> dict[str, np.ndarray] | None:
        """Host copies (float32 where bfloat16) of the outputs of the last call made through :meth:`prepare`'s
        callable, so that the fast path itself (IOBinding, a replayed CUDA graph) is checked for agreement, not
        only :meth:`run`. None (the default): the fast path is :meth:`run` itself or cannot be read back."""
        return None

    def decoder(self, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int) -> DecodeLoop:
        """A greedy decode loop (:class:`onnxbench.runtimes.decode.DecodeLoop`) of ``new_tokens`` tokens after the
        prompts ``input_ids`` int64 (B, T0), left-padded where ``attention_mask`` int64 (B, T0) is 0, on a session
        of a decoder-with-past artifact (docs/generation.md). The loop's buffers (cache, mask, tokens) are
        allocated here, before any timing.

        Raises:
            onnxbench.models.generation.GenerationError: (a ValueError) for a request that cannot run (empty
                prompt, no new tokens, prompt + new tokens over ``max_positions``, a mask of the wrong shape),
                before any work.
            RuntimeUnavailable: for a runtime without a decode loop (the default): the generate cell is
                ``skipped`` with this reason, never run under another runtime's name.
        """
        raise RuntimeUnavailable(f"{self.runtime} has no decode loop (generate scenario); runtimes with one: "
                                 "torch, torch-cuda, ort-cpu, ort-cuda, ort-trt, tensorrt, ort-genai")

    def eager_module(self) -> Any:
        """The eager torch module this session runs as it is, so that forward hooks observe what it computes
        (locating the first diverging block, docs/agreement.md); None (the default) for a session that runs an
        ONNX graph or a compiled module."""
        return None

    def close(self) -> None:
        """Free the session's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DeviceTimer(Protocol):
    """Device time of the work queued between ``start()`` and ``stop()`` on a session's stream, in ms, read by
    ``elapsed_ms()`` after the stream is synchronised (CUDA events: ``torch.cuda.Event`` or
    :class:`onnxbench.runtimes.cuda_driver.EventTimer`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def elapsed_ms(self) -> float: ...


class Runtime(ABC):
    """A way of running an artifact, and what the rest of the suite needs to know about it.

    A subclass sets the class attributes and implements :meth:`availability` and :meth:`_open`; registering it
    (``onnxbench.runtimes.register``) makes it a value of the matrix's ``runtimes`` axis.

    Class attributes:
        name: registry name, e.g. ``"ort-cpu"`` (the ``runtime`` column).
        device: ``"cpu"`` or ``"cuda"``: where the runtime computes.
        options_type: the :class:`TypedOptions` subclass that ``RuntimeOptions.extra`` is checked against.
        tolerances: agreement bands keyed by (graph precision, TF32 allowed), from :mod:`onnxbench.tolerance`.
        in_default_matrix: False keeps a slow-to-build runtime out of the embedded default matrix (it stays
            selectable by name).
        thread_axis: whether the runtime honours ``RuntimeOptions.intra_op_threads``, so that the matrix's
            ``threads`` axis applies to it (CPU runtimes); the others get one cell at their default.
        quantized_precisions: the quantized precisions (:data:`onnxbench.export.quantize.QUANTIZED_PRECISIONS`)
            whose graphs the runtime runs; a cell of another one is a ``skipped`` row
            (:meth:`precision_reason`).
        runs_onnx: whether the runtime runs the ONNX graph it is given. False for the torch runtimes, which
            rebuild the torch module from the artifact's onnxbench metadata: a user's ONNX file is never run by
            them (its cells are ``skipped`` rows), even one onnxbench exported, whose metadata names a module.
        scenarios: the scenarios the runtime measures (None: every one); a cell of another is a ``skipped`` row
            (:meth:`scenario_reason`). ``ort-genai`` runs ``generate`` only: its Generator owns the inputs.
    """

    name: ClassVar[str] = ""
    device: ClassVar[Literal["cpu", "cuda"]] = "cpu"
    options_type: ClassVar[type[TypedOptions]] = NoOptions
    tolerances: ClassVar[Bands] = CPU_BANDS
    in_default_matrix: ClassVar[bool] = True
    thread_axis: ClassVar[bool] = False
    quantized_precisions: ClassVar[tuple[str, ...]] = ()
    runs_onnx: ClassVar[bool] = True
    scenarios: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def scenario_reason(cls, scenario: str) -> str | None:
        """Why this runtime cannot run a cell of ``scenario`` (one it does not list in :attr:`scenarios`), or
        None if it can."""
        if cls.scenarios is None or scenario in cls.scenarios:
            return None
        return (f"{cls.name} runs the {', '.join(cls.scenarios)} scenario only, not {scenario} "
                "(docs/generation.md, \"ONNX Runtime GenAI\")")

    @classmethod
    def precision_reason(cls, precision: str) -> str | None:
        """Why this runtime cannot run a graph of ``precision`` (a quantized precision it does not declare in
        :attr:`quantized_precisions`), or None if it can."""
        from ..export.quantize import QUANTIZED_OPS, QUANTIZED_PRECISIONS

        if precision in QUANTIZED_PRECISIONS and precision not in cls.quantized_precisions:
            return (f"{cls.name} does not run {precision} graphs (their weights are in {QUANTIZED_OPS[precision]}; "
                    "its runtime class declares no such kernels)")
        return None

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

    @classmethod
    def parse_options(cls, extra: Mapping[str, Any]) -> TypedOptions:
        """``extra`` checked against :attr:`options_type`.

        Raises:
            OptionError: for an unknown key, a wrong type or a bad value (names the known keys).
        """
        return cls.options_type.from_dict(cls.name, extra)

    @classmethod
    def tolerance(cls, precision: str, tf32: bool = False) -> Tolerance:
        """The agreement band for a graph of ``precision`` run with TF32 allowed or not.

        Raises:
            KeyError: for a precision :attr:`tolerances` has no band for.
        """
        return band(cls.tolerances, precision, tf32)

    @classmethod
    def tuning_grid(cls) -> dict[str, RuntimeOptions]:
        """Candidate configurations ``{config name: RuntimeOptions}`` for ``onnxbench run --tune``, besides the
        defaults (which are always a candidate). Empty (the default): nothing to tune."""
        return {}

    def open(self, artifact: ExportArtifact, options: RuntimeOptions | None = None) -> Session:
        """Open ``artifact``: check the options, then the availability, then :meth:`_open`.

        Raises:
            OptionError: for an unknown or mistyped option (before anything is loaded).
            RuntimeUnavailable: if the runtime cannot run here, or opened on a different provider than
                requested (a silent fallback is reported, never hidden).
            ValueError: for an unsupported artifact.
        """
        options = options or RuntimeOptions()
        typed = self.parse_options(options.extra)
        self.require_available()
        return self._open(artifact, options, typed)

    @abstractmethod
    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TypedOptions) -> Session:
        """Open ``artifact`` with ``options`` whose ``extra`` is already checked and given as ``typed``
        (an instance of :attr:`options_type`). Raises as :meth:`open` does."""
