"""ONNX Runtime with the TensorRT execution provider (``ort-trt``), CUDA EP behind it for unsupported nodes.

The EP builds TensorRT engines for the subgraphs it takes, cached on disk (``trt_engine_cache_enable``,
``trt_timing_cache_enable``) under ``$ONNXBENCH_CACHE/ort-trt/<model sha256[:16]>/<build key>``, where the build
key (:func:`engine_cache_key`) hashes every option that changes the engine: the provider options (profile
shapes, fp16 flag, ...), whether TF32 was allowed, the TensorRT library the EP links, the onnxruntime version
and the GPU. An engine built with TF32 is therefore never reused, and labelled, for a run without it.

Profiles: with explicit profile shapes (``trt_profile_{min,opt,max}_shapes``, from the matrix) a new shape
inside the range does not trigger a silent engine rebuild. They name graph inputs only, so they cannot describe
a graph that TensorRT takes in pieces: a graph with nodes outside the ONNX standard domains (e.g. ``ort-fused``'s
``com.microsoft`` Attention, which TensorRT's ONNX parser does not know) is partitioned between TensorRT and the
CUDA EP, and the EP then refuses explicit profiles. For such graphs (:func:`partitioned_reason`) the profiles are
left out and the row's ``options`` says why (``profile``). ``trt_fp16_enable`` stays off: the graph's own types
decide precision.

The EP links one TensorRT major version (ORT 1.31: ``libnvinfer.so.10``); the row records the library and
version it found (``tensorrt_linked``). TF32: the EP sets TensorRT's TF32 builder flag and ORT 1.31 has no option
to clear it (https://github.com/microsoft/onnxruntime/issues/26029); only ``NVIDIA_TF32_OVERRIDE=0`` in the
environment turns it off, so the row records ``tf32`` from that variable.

Docs: https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

import onnx
import onnxruntime as ort

from ..export import ExportArtifact, default_cache_dir
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, Session
from .ort_cuda import CudaEpOptions, cuda_provider_options, device_session_labels, open_device_session, tuning_grid
from .trt_profiles import input_profile, resolve_ranges, trt_shape_strings

#: Operator domains TensorRT's ONNX parser reads (the ONNX standard ones); anything else is left to another EP.
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


def partitioned_reason(model_path) -> str | None:
    """Why TensorRT cannot take the whole graph at ``model_path``, or None when every node is in a standard
    ONNX domain: e.g. ``"3 com.microsoft node(s) (Attention) that TensorRT's ONNX parser does not know"``."""
    model = onnx.load(str(model_path), load_external_data=False)
    foreign = collections.Counter((n.domain, n.op_type) for n in model.graph.node if n.domain not in STANDARD_DOMAINS)
    if not foreign:
        return None
    domains = collections.Counter(domain for domain, _ in foreign.elements())
    ops = ", ".join(sorted({op for _, op in foreign}))
    return (", ".join(f"{n} {d} node(s)" for d, n in domains.items())
            + f" ({ops}) that TensorRT's ONNX parser does not know")


def tf32_allowed() -> bool:
    """Whether TensorRT may use TF32 under the EP: its builder flag is always set, so only
    ``NVIDIA_TF32_OVERRIDE=0`` turns TF32 off."""
    return os.environ.get("NVIDIA_TF32_OVERRIDE") != "0"


def engine_cache_key(artifact_sha256: str, provider_options: dict[str, str], tf32: bool, linked: str,
                     gpu_name: str, ort_version: str = ort.__version__) -> str:
    """Hex key of the EP's engine cache folder: every build input except the cache paths themselves (provider
    options incl. profile shapes and fp16, TF32, the TensorRT library linked, onnxruntime version, GPU, model)."""
    build = {k: v for k, v in provider_options.items() if not k.endswith("_cache_path") and k != "user_compute_stream"}
    payload = json.dumps({"model": artifact_sha256, "options": build, "tf32": tf32, "tensorrt": linked,
                          "onnxruntime": ort_version, "gpu": gpu_name, "format": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tensorrt_provider_options(artifact: ExportArtifact, options: RuntimeOptions, device_id: int,
                              linked: str = "", gpu_name: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """TensorRT EP options (engine and timing caches on disk keyed by :func:`engine_cache_key`, explicit profile
    shapes unless the graph is partitioned, fp16 flag off) and the labels recorded in the row.

    Raises:
        ValueError: if an input has a dynamic axis without a range.
    """
    trt = {"device_id": str(device_id), "trt_engine_cache_enable": "True", "trt_timing_cache_enable": "True",
           "trt_fp16_enable": "False"}
    partitioned = partitioned_reason(artifact.path)
    if partitioned:
        labels = {"profile": f"implicit: the graph is partitioned ({partitioned}), and ONNX Runtime refuses "
                             "explicit profile shapes for partitioned graphs"}
    else:
        ranges = resolve_ranges(options.profile_ranges, artifact.config.max_positions if artifact.config else None)
        trt.update(trt_shape_strings(input_profile(artifact.inputs, ranges)))
        labels = {"profile_min": trt["trt_profile_min_shapes"], "profile_opt": trt["trt_profile_opt_shapes"],
                  "profile_max": trt["trt_profile_max_shapes"]}
    key = engine_cache_key(artifact.sha256, trt, tf32_allowed(), linked, gpu_name)
    cache = default_cache_dir() / "ort-trt" / artifact.sha256[:16] / key
    trt.update(trt_engine_cache_path=str(cache), trt_timing_cache_path=str(cache))
    return trt, {**labels, "engine_cache": str(cache)}


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
        linked = probes.nvinfer(probes.ort_tensorrt_major() or 10).detail
        gpu_name = probes.gpu_name(device_id)
        trt_options, labels = tensorrt_provider_options(artifact, options, device_id, linked, gpu_name)
        os.makedirs(trt_options["trt_engine_cache_path"], exist_ok=True)
        session = open_device_session(
            self.name, artifact,
            [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"],
            options, typed)
        session.options.update({
            "tensorrt_linked": linked,
            "tf32": tf32_allowed(),
            **labels,
            "device_id": device_id,
            "gpu": gpu_name,
            "iobinding": "cuda",
            **device_session_labels(session),
        })
        return session
