"""ONNX Runtime with the CUDA execution provider (``ort-cuda``).

Inputs and outputs are bound on the device with IOBinding (OrtValues in CUDA memory), so the timed call is
``run_with_iobinding`` alone; :meth:`OrtDeviceSession.prepare_stages` adds the host-to-device / compute /
device-to-host split. Options (``RuntimeOptions.extra``):

* ``tf32`` (default False): CUDA EP ``use_tf32``; ORT enables TF32 for fp32 GEMMs by default on SM >= 80
  (https://github.com/microsoft/onnxruntime/pull/19357), which gives fp32 graphs fp16-like rounding, so "fp32"
  here means TF32 off unless asked (docs/design.md, "Tolerances"). The value in force is read back from
  ``get_provider_options()`` and recorded in the row.
* ``cuda_graph`` (default False): CUDA EP ``enable_cuda_graph``; each timed shape gets its own graph through the
  ``gpu_graph_id`` run option and outputs preallocated at fixed device addresses (as
  ``onnxruntime.transformers.io_binding_helper.GpuBindingManager`` does).
* ``device_id`` (default 0), ``cudnn_conv_algo_search`` (``EXHAUSTIVE`` | ``HEURISTIC`` | ``DEFAULT``).

The EP runs on a stream created here through the CUDA driver (``user_compute_stream``, supported by the Python
API since onnxruntime 1.17), so that ``compute_ms`` is CUDA-event device time on that stream and the H2D / D2H
copies (page-locked host buffers, asynchronous on the same stream) compare with the native TensorRT runtime's.
Nodes that ONNX Runtime places on the CPU EP are counted from the profiling twin by the worker
(:mod:`onnxbench.runtimes.ort_placement`); shape computations are expected there, float compute nodes are
reported.

Docs: https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html,
https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding. A session that falls back to the CPU raises
:class:`~onnxbench.runtimes.base.RuntimeUnavailable` (see :class:`~onnxbench.runtimes.ort.OrtSession`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ..errors import OptionError
from ..export import ExportArtifact
from ..tolerance import CUDA_BANDS
from . import cuda_driver, probes
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session
from .ort import OrtOptions, OrtSession


@dataclass(frozen=True)
class CudaEpOptions(OrtOptions):
    """ORT session options plus the CUDA EP's (see the module docstring): ``tf32``, ``device_id`` (>= 0),
    ``cudnn_conv_algo_search``."""

    tf32: bool = False
    device_id: int = 0
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device_id < 0:
            raise OptionError(f"device_id must be >= 0, got {self.device_id}")


@dataclass(frozen=True)
class OrtCudaOptions(CudaEpOptions):
    """:class:`CudaEpOptions` plus ``cuda_graph`` (CUDA EP ``enable_cuda_graph``)."""

    cuda_graph: bool = False


def cuda_provider_options(typed: CudaEpOptions) -> dict[str, str]:
    """CUDA EP provider options from the checked options (strings, as ORT's Python API takes them)."""
    return {
        "device_id": str(typed.device_id),
        "use_tf32": "1" if typed.tf32 else "0",
        "enable_cuda_graph": "1" if getattr(typed, "cuda_graph", False) else "0",
        "cudnn_conv_algo_search": typed.cudnn_conv_algo_search,
    }


def tuning_grid() -> dict[str, RuntimeOptions]:
    """The GPU EPs' grid: either offline fusion (:mod:`.ort_transformers`) on; CPU threading does not apply."""
    return {"fused": RuntimeOptions(extra={"transformer_optimizer": True}),
            "attn-fused": RuntimeOptions(extra={"attention_fusion": True})}


#: Bytes per element of the ONNX element types (``OrtValue.element_type()``) a model output may have.
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
#: numpy dtype in which the host copy of an output is read (bfloat16 as its raw 16 bits, widened later).
ELEMENT_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "uint16"}


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values held as their raw uint16 bits to float32, exactly: a bfloat16 is the upper half of
    an IEEE 754 binary32 (Google Brain bfloat16 format), so shifting the bits left by 16 gives the same value."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass
class _Bound:
    """One shape's device-resident binding: inputs and outputs at fixed device addresses (what a CUDA graph
    replays), its run options (graph id), and page-locked host buffers for the H2D / D2H stages."""

    binding: Any
    run_options: Any
    inputs: dict[str, Any]
    outputs: list[Any]
    host_in: dict[str, tuple[Any, np.ndarray]] = field(default_factory=dict)
    host_out: list[Any] = field(default_factory=list)


class OrtDeviceSession(OrtSession):
    """An ONNX Runtime session whose EP runs on a CUDA device (CUDA EP, or TensorRT EP with CUDA behind it).

    ``run`` is host numpy in and out (for agreement). ``prepare`` binds device-resident OrtValues once per
    input shape (inputs, and outputs preallocated at fixed addresses) and returns the ``run_with_iobinding``
    call to time; with CUDA graphs each shape's binding gets its own ``gpu_graph_id``, captured once and
    replayed by every later call at that shape (latency, stages and :meth:`fetch_outputs` share it).
    ``prepare_stages`` returns H2D / compute / D2H callables whose copies go through page-locked host buffers
    asynchronously on the session's stream, as the native TensorRT runtime's do, so that the split is
    comparable. The EPs run on a stream of our own (``user_compute_stream``), so :meth:`device_timer` can bracket
    their work with CUDA events.
    """

    def __init__(self, runtime: str, artifact: ExportArtifact, providers: list, options: RuntimeOptions,
                 typed: CudaEpOptions, cuda_graph: bool = False, stream: cuda_driver.Stream | None = None) -> None:
        super().__init__(runtime, artifact, providers, f"cuda:{typed.device_id}", options, typed.device_id, typed)
        self.cuda_graph = cuda_graph
        self.stream = stream
        self._graphs = 0
        self._bound: dict[tuple, _Bound] = {}
        self._current: _Bound | None = None

    def provider_options(self, provider: str) -> dict[str, str]:
        """The options ORT really applied to ``provider`` (read back, not what was asked)."""
        return dict(self.session.get_provider_options().get(provider, {}))

    def _host_run_options(self) -> ort.RunOptions | None:
        # Host feeds land at new device addresses on every call: never capture or replay a graph for them.
        if not self.cuda_graph:
            return None
        no_graph = ort.RunOptions()
        no_graph.add_run_config_entry("gpu_graph_id", "-1")
        return no_graph

    def _bind(self, feeds: dict[str, np.ndarray]) -> _Bound:
        binding = self.session.io_binding()
        inputs = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", self.device_id)
                  for name, value in feeds.items()}
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, "cuda", self.device_id)
        # One graph-less run (id -1) lets ORT allocate the outputs; binding those OrtValues keeps their device
        # addresses fixed for every later run, which a CUDA graph replay needs and the D2H stage reads.
        learn = ort.RunOptions()
        if self.cuda_graph:
            learn.add_run_config_entry("gpu_graph_id", "-1")
        self.session.run_with_iobinding(binding, learn)
        outputs = binding.get_outputs()
        binding.clear_binding_outputs()
        for name, value in zip(self._output_names, outputs, strict=True):
            binding.bind_ortvalue_output(name, value)
        run_options = ort.RunOptions()
        if self.cuda_graph:
            run_options.add_run_config_entry("gpu_graph_id", str(self._graphs))
            self._graphs += 1
        return _Bound(binding, run_options, inputs, outputs)

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
        key = tuple((name, value.shape, value.dtype.str) for name, value in sorted(feeds.items()))
        if key in self._bound:
            bound = self._bound[key]
            for name, value in bound.inputs.items():  # same shape, maybe new values: same addresses, same graph
                value.update_inplace(np.ascontiguousarray(feeds[name]))
        else:
            bound = self._bound[key] = self._bind(feeds)
        self._current = bound
        return lambda: self.session.run_with_iobinding(bound.binding, bound.run_options)

    def _host_buffers(self, bound: _Bound, feeds: dict[str, np.ndarray]) -> None:
        if not bound.host_in:
            for name in bound.inputs:
                host = np.ascontiguousarray(feeds[name])
                buf = cuda_driver.PinnedBuffer(host.nbytes, self.device_id)
                bound.host_in[name] = (buf, np.frombuffer(buf.view(), dtype=host.dtype).reshape(host.shape))
            bound.host_out = [cuda_driver.PinnedBuffer(_nbytes(v), self.device_id) for v in bound.outputs]
        for name, (_, view) in bound.host_in.items():
            view[...] = feeds[name]

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]] | None:
        if self.stream is None:  # no driver stream: no comparable split
            return None
        compute = self.prepare(feeds)
        bound, stream = self._current, self.stream
        self._host_buffers(bound, feeds)

        def h2d() -> None:
            for name, value in bound.inputs.items():
                buf, view = bound.host_in[name]
                stream.copy_to_device(value.data_ptr(), buf.ptr, view.nbytes)

        def d2h() -> None:
            for value, buf in zip(bound.outputs, bound.host_out, strict=True):
                stream.copy_to_host(buf.ptr, value.data_ptr(), buf.nbytes)

        return {"h2d": h2d, "compute": compute, "d2h": d2h}

    def fetch_outputs(self) -> dict[str, np.ndarray] | None:
        """Host copies of the outputs of the last prepared call (the replayed CUDA graph's, when there is one),
        as float32 where the output is bfloat16; None before :meth:`prepare`."""
        bound = self._current
        if bound is None:
            return None
        self.synchronize()
        out = {}
        for name, value in zip(self._output_names, bound.outputs, strict=True):
            host = np.empty(value.shape(), dtype=ELEMENT_NUMPY[value.element_type()])
            if self.stream is not None:
                self.stream.copy_to_host(host.ctypes.data, value.data_ptr(), host.nbytes)
                self.stream.synchronize()
            else:
                host = value.numpy()
            out[name] = bfloat16_bits_to_float32(host) if value.element_type() == 16 else host
        return out

    def device_timer(self) -> cuda_driver.EventTimer | None:
        return cuda_driver.EventTimer(self.stream) if self.stream is not None else None

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        elif self._current is not None:
            self._current.binding.synchronize_outputs()

    def close(self) -> None:
        for bound in self._bound.values():
            for buf, _ in bound.host_in.values():
                buf.close()
            for buf in bound.host_out:
                buf.close()
        self._bound, self._current = {}, None
        super().close()
        if self.stream is not None:
            self.stream.close()


def _nbytes(value) -> int:
    return int(np.prod(value.shape(), dtype=np.int64)) * ELEMENT_BYTES[value.element_type()]


def open_device_session(runtime: str, artifact: ExportArtifact, providers: list, options: RuntimeOptions,
                        typed: CudaEpOptions, cuda_graph: bool = False) -> OrtDeviceSession:
    """Open an :class:`OrtDeviceSession` after ``onnxruntime.preload_dlls()``, its GPU EPs on a stream of our own
    (``user_compute_stream``, when the CUDA driver is there); a fallback's :class:`RuntimeUnavailable` quotes
    what the preload could not find (e.g. ``libcublasLt.so.13``).

    Raises:
        RuntimeUnavailable: if ONNX Runtime did not run the first requested EP.
        onnxruntime's exception: if creating the session failed (fallback disabled: the real error).
    """
    preload = probes.preload_cuda_libraries()
    stream = cuda_driver.Stream(typed.device_id) if cuda_driver.available() else None
    if stream is not None:
        providers = [(p[0], {**p[1], "user_compute_stream": str(stream.handle)})
                     if isinstance(p, tuple) and p[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                     else p for p in providers]
    try:
        return OrtDeviceSession(runtime, artifact, providers, options, typed, cuda_graph, stream)
    except RuntimeUnavailable as exc:
        if stream is not None:
            stream.close()
        if preload:
            raise RuntimeUnavailable(f"{exc}; onnxruntime.preload_dlls() said: {' '.join(preload.split())}") from exc
        raise
    except Exception:
        if stream is not None:
            stream.close()
        raise


def device_session_labels(session: OrtDeviceSession) -> dict[str, str]:
    """How the session's GPU split was measured, for the row's ``options``: the copies (page-locked, async on
    the session's stream) and the clock of ``compute_ms`` (CUDA events), or what replaced them without a
    driver stream."""
    if session.stream is None:
        return {"copies": "none (no CUDA driver stream)", "compute_clock": "host"}
    return {"copies": "pinned-async", "compute_clock": "cuda-events", "stream": "user_compute_stream"}


class OrtCuda(Runtime):
    """ONNX Runtime with the CUDA execution provider, IOBinding on the device, optional CUDA graphs."""

    name = "ort-cuda"
    device = "cuda"
    options_type = OrtCudaOptions
    tolerances = CUDA_BANDS

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        probe = probes.ort_cuda_ep()
        return probe.ok, probe.detail

    @classmethod
    def tuning_grid(cls) -> dict[str, RuntimeOptions]:
        return tuning_grid()

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: OrtCudaOptions) -> Session:
        cuda = cuda_provider_options(typed)
        session = open_device_session(self.name, artifact, [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"],
                                      options, typed, typed.cuda_graph)
        applied = session.provider_options("CUDAExecutionProvider")
        session.options.update({
            "tf32": applied.get("use_tf32", cuda["use_tf32"]) == "1",
            "cuda_graph": applied.get("enable_cuda_graph", cuda["enable_cuda_graph"]) == "1",
            "cudnn_conv_algo_search": applied.get("cudnn_conv_algo_search", cuda["cudnn_conv_algo_search"]),
            "device_id": typed.device_id,
            "gpu": probes.gpu_name(typed.device_id),
            "iobinding": "cuda",
            **device_session_labels(session),
        })
        return session
