"""ONNX Runtime with the TensorRT execution provider (``ort-trt``), CUDA EP behind it for unsupported nodes.

The EP builds TensorRT engines for the subgraphs it takes, cached on disk (``trt_engine_cache_enable``,
``trt_timing_cache_enable``) under ``$ONNXBENCH_CACHE/ort-trt/<model sha256[:16]>``, with explicit optimization
profile shapes (``trt_profile_{min,opt,max}_shapes``) from the matrix so that a new shape inside the range does
not trigger a silent engine rebuild. ``trt_fp16_enable`` stays off: the graph's own types decide precision.

The EP links one TensorRT major version (ORT 1.31: ``libnvinfer.so.10``); the row records the library and
version it found (``tensorrt_linked``). TF32: the EP sets TensorRT's TF32 builder flag and ORT 1.31 has no option
to clear it (https://github.com/microsoft/onnxruntime/issues/26029); only ``NVIDIA_TF32_OVERRIDE=0`` in the
environment turns it off, so the row records ``tf32`` from that variable.

Docs: https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html
"""

from __future__ import annotations

import os

from ..export import ExportArtifact, default_cache_dir
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, Session
from .ort_cuda import CudaEpOptions, cuda_provider_options, open_device_session, tuning_grid
from .trt_profiles import input_profile, resolve_ranges, trt_shape_strings


def tensorrt_provider_options(artifact: ExportArtifact, options: RuntimeOptions, device_id: int) -> dict[str, str]:
    """TensorRT EP options: engine and timing caches on disk, explicit profile shapes, fp16 flag off.

    Raises:
        ValueError: if an input has a dynamic axis without a range.
    """
    ranges = resolve_ranges(options.axis_ranges, artifact.config.max_positions if artifact.config else None)
    cache = default_cache_dir() / "ort-trt" / artifact.sha256[:16]
    return {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": "False",
        **trt_shape_strings(input_profile(artifact.inputs, ranges)),
    }


class OrtTrt(Runtime):
    """ONNX Runtime's TensorRT execution provider with its engine cache."""

    name = "ort-trt"
    device = "cuda"
    options_type = CudaEpOptions
    tolerances = CUDA_BANDS

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        probe = probes.ort_tensorrt_ep()
        return probe.ok, probe.detail

    @classmethod
    def tuning_grid(cls) -> dict[str, RuntimeOptions]:
        return tuning_grid()

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: CudaEpOptions) -> Session:
        cuda = cuda_provider_options(typed)
        device_id = typed.device_id
        trt_options = tensorrt_provider_options(artifact, options, device_id)
        os.makedirs(trt_options["trt_engine_cache_path"], exist_ok=True)
        linked = probes.nvinfer(probes.ort_tensorrt_major() or 10).detail
        session = open_device_session(
            self.name, artifact,
            [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"],
            options, typed)
        session.options.update({
            "tensorrt_linked": linked,
            "tf32": os.environ.get("NVIDIA_TF32_OVERRIDE") != "0",
            "engine_cache": trt_options["trt_engine_cache_path"],
            "profile_min": trt_options["trt_profile_min_shapes"],
            "profile_opt": trt_options["trt_profile_opt_shapes"],
            "profile_max": trt_options["trt_profile_max_shapes"],
            "device_id": device_id,
            "gpu": probes.gpu_name(device_id),
            "iobinding": "cuda",
        })
        return session
