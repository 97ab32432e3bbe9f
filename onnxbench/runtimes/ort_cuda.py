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

Docs: https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html,
https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding. A session that falls back to the CPU raises
:class:`~onnxbench.runtimes.base.RuntimeUnavailable` (see :class:`~onnxbench.runtimes.ort.OrtSession`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ..errors import OptionError
from ..export import ExportArtifact
from ..tolerance import CUDA_BANDS
from . import probes
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
    """The GPU EPs' grid: the transformer optimizer's fusions on (CPU threading does not apply)."""
    return {"fused": RuntimeOptions(extra={"transformer_optimizer": True})}


class OrtDeviceSession(OrtSession):
    """An ONNX Runtime session whose EP runs on a CUDA device (CUDA EP, or TensorRT EP with CUDA behind it).

    ``run`` is host numpy in and out (for agreement); ``prepare`` binds device-resident OrtValues once and
    returns the ``run_with_iobinding`` call to time; ``prepare_stages`` returns H2D / compute / D2H callables.
    """

    def __init__(self, runtime: str, artifact: ExportArtifact, providers: list, options: RuntimeOptions,
                 typed: CudaEpOptions, cuda_graph: bool = False) -> None:
        super().__init__(runtime, artifact, providers, f"cuda:{typed.device_id}", options, typed.device_id, typed)
        self.cuda_graph = cuda_graph
        self._graphs = 0
        self._binding = None
        self._inputs_dev: dict[str, ort.OrtValue] = {}
        self._run_options = ort.RunOptions()

    def provider_options(self, provider: str) -> dict[str, str]:
        """The options ORT really applied to ``provider`` (read back, not what was asked)."""
        return dict(self.session.get_provider_options().get(provider, {}))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.cuda_graph:
            return super().run(feeds)
        # Host feeds land at new device addresses on every call: never capture or replay a graph for them.
        no_graph = ort.RunOptions()
        no_graph.add_run_config_entry("gpu_graph_id", "-1")
        values = self.session.run(self._output_names, feeds, no_graph)
        return dict(zip(self._output_names, values, strict=True))

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
        binding = self.session.io_binding()
        self._inputs_dev = {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", self.device_id)
            for name, value in feeds.items()
        }
        for name, value in self._inputs_dev.items():
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, "cuda", self.device_id)
        run_options = ort.RunOptions()
        if self.cuda_graph:
            # A graph replays fixed addresses: learn the output shapes in one graph-less run (id -1), then bind
            # preallocated outputs and give this shape its own graph id.
            run_options.add_run_config_entry("gpu_graph_id", "-1")
            self.session.run_with_iobinding(binding, run_options)
            shaped = binding.get_outputs()
            binding.clear_binding_outputs()
            outputs = [ort.OrtValue.ortvalue_from_shape_and_type(v.shape(), v.element_type(), "cuda", self.device_id)
                       for v in shaped]
            for name, value in zip(self._output_names, outputs, strict=True):
                binding.bind_ortvalue_output(name, value)
            self._outputs_dev = outputs  # keep the fixed-address outputs alive
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(self._graphs))
            self._graphs += 1
        self._binding = binding
        self._run_options = run_options
        return lambda: self.session.run_with_iobinding(binding, run_options)

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
        compute = self.prepare(feeds)
        host = {name: np.ascontiguousarray(value) for name, value in feeds.items()}
        binding, inputs = self._binding, self._inputs_dev

        def h2d() -> None:
            for name, value in inputs.items():
                value.update_inplace(host[name])

        return {"h2d": h2d, "compute": compute, "d2h": binding.copy_outputs_to_cpu}

    def synchronize(self) -> None:
        # Run() already waits for the EP's stream unless disable_synchronize_execution_providers is set;
        # this makes the wait explicit for the outputs' device.
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def close(self) -> None:
        self._inputs_dev = {}
        self._outputs_dev = []
        super().close()


def open_device_session(runtime: str, artifact: ExportArtifact, providers: list, options: RuntimeOptions,
                        typed: CudaEpOptions, cuda_graph: bool = False) -> OrtDeviceSession:
    """Open an :class:`OrtDeviceSession` after ``onnxruntime.preload_dlls()``; a fallback's
    :class:`RuntimeUnavailable` quotes what the preload could not find (e.g. ``libcublasLt.so.13``).

    Raises:
        RuntimeUnavailable: if ONNX Runtime did not run the first requested EP.
    """
    preload = probes.preload_cuda_libraries()
    try:
        return OrtDeviceSession(runtime, artifact, providers, options, typed, cuda_graph)
    except RuntimeUnavailable as exc:
        if preload:
            raise RuntimeUnavailable(f"{exc}; onnxruntime.preload_dlls() said: {' '.join(preload.split())}") from exc
        raise


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
        })
        return session
