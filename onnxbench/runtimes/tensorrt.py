"""Native TensorRT (``tensorrt``): an engine built from the exported ONNX, run with device buffers bound by name.

Build (TensorRT Python API, https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/
python-api-docs.html): ``trt.Builder`` -> ``create_network`` with the ``STRONGLY_TYPED`` flag (TensorRT 10.x opts
in with it; 11.x is always strongly typed and ignores it), so precision is the ONNX graph's own (fp32 / fp16 /
bf16 export) and never a builder flag -> ``trt.OnnxParser.parse_from_file`` -> one optimization profile from
the matrix's batch / sequence ranges (:mod:`onnxbench.runtimes.trt_profiles`) -> a timing cache loaded from and saved
to disk -> ``build_serialized_network``. TF32 is a builder flag that TensorRT sets by default; it is cleared
unless ``tf32=True`` is asked, and recorded.

Caches under ``$ONNXBENCH_CACHE/tensorrt/``: the serialized engine keyed by :func:`engine_cache_key` (model
sha256, TensorRT version, GPU name, build options including the profile), and the timing cache keyed by
:func:`timing_cache_key` (TensorRT version and GPU only: TensorRT documents the timing cache as shareable across
networks built on the same device and version). ``build_s`` is the build (or cached-engine load) time.

Run: ``Runtime.deserialize_cuda_engine`` -> ``create_execution_context``; each input's dtype and shape are
checked against the engine (``get_tensor_dtype``, ``get_tensor_profile_shape``) before ``set_input_shape`` /
``set_tensor_address``; buffers are torch CUDA tensors; ``execute_async_v3`` on a torch CUDA stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError
from ..export import ExportArtifact, TensorSpec, default_cache_dir
from ..export.decoder_layout import DecoderLayout, LayoutError, detect_layout
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, TypedOptions
from .decode import BufferedDecodeLoop
from .trt_profiles import ShapeRange, check_binding, input_profile, resolve_ranges

#: TensorRT DataType name -> torch / numpy dtype name.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
              "BOOL": "bool", "INT8": "int8", "UINT8": "uint8"}


@dataclass(frozen=True)
class TensorrtOptions(TypedOptions):
    """``RuntimeOptions.extra`` of the native runtime.

    Attributes:
        tf32: set the TF32 builder flag (cleared by default).
        device_id: CUDA device index (>= 0).
        workspace_gb: workspace memory pool limit in GiB (0: TensorRT's default).
        builder_optimization_level: 0..5 (TensorRT's default 3).
    """

    tf32: bool = False
    device_id: int = 0
    workspace_gb: float = 0.0
    builder_optimization_level: int = 3

    def __post_init__(self) -> None:
        if self.device_id < 0 or self.workspace_gb < 0 or not 0 <= self.builder_optimization_level <= 5:
            raise OptionError(f"tensorrt options out of range: {self}; need device_id >= 0, workspace_gb >= 0 and "
                              "builder_optimization_level in 0..5")


def build_options(typed: TensorrtOptions, profile: dict[str, ShapeRange]) -> dict[str, Any]:
    """The options an engine is built with (all of them enter the engine cache key)."""
    return {
        "strongly_typed": True,
        "tf32": typed.tf32,
        # NVIDIA_TF32_OVERRIDE=0 forbids TF32 in TensorRT whatever the builder flag says: part of the engine.
        "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"),
        "workspace_gb": float(typed.workspace_gb) or None,
        "builder_optimization_level": typed.builder_optimization_level,
        "profile": {name: [list(r.min), list(r.opt), list(r.max)] for name, r in sorted(profile.items())},
    }


def engine_cache_key(model_sha256: str, trt_version: str, gpu_name: str, options: dict[str, Any]) -> str:
    """Hex key of a serialized engine: any change of the model's content hash (``ExportArtifact.sha256``: the
    graph and its external data), TensorRT version, GPU or build options (profile, TF32, ...) gives a new key, so
    a stale engine is never loaded."""
    payload = json.dumps({"model": model_sha256, "tensorrt": trt_version, "gpu": gpu_name, "options": options,
                          "format": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def timing_cache_key(trt_version: str, gpu_name: str) -> str:
    """Hex key of a timing cache (tactic timings): valid for one TensorRT version on one GPU model."""
    return hashlib.sha256(json.dumps([trt_version, gpu_name]).encode()).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_engine(trt, logger, onnx_path: Path, profile: dict[str, ShapeRange], options: dict[str, Any],
                 timing_cache_path: Path) -> bytes:
    """Build a serialized engine (strongly typed, one optimization profile) and update the timing cache.

    Raises:
        RuntimeError: if the ONNX parser rejects the model (its errors quoted) or the build fails.
    """
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if options["tf32"]:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options["workspace_gb"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options["workspace_gb"] * 2**30))
    config.builder_optimization_level = options["builder_optimization_level"]
    opt_profile = builder.create_optimization_profile()
    for name, r in profile.items():
        opt_profile.set_shape(name, r.min, r.opt, r.max)
    config.add_optimization_profile(opt_profile)
    cached = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    # set_timing_cache returns False when the cache does not match this TensorRT / device (ignore_mismatch=False)
    if not config.set_timing_cache(config.create_timing_cache(cached), False):
        raise RuntimeError(f"TensorRT refused the timing cache {timing_cache_path} (made by another TensorRT "
                           "version or GPU?); delete it to rebuild")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    _atomic_write(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


class TrtDecodeLoop(BufferedDecodeLoop):
    """Greedy decoding on a TensorRT execution context: :class:`~onnxbench.runtimes.decode.BufferedDecodeLoop`'s
    device buffers, and per step the input shapes and the tensor addresses of :meth:`step_io` set on the context
    (``IExecutionContext.set_input_shape`` / ``set_tensor_address``) before ``execute_async_v3`` on the session's
    stream, where the greedy choice is queued too; a context holds one set of addresses, so they are set each step
    (host calls only, no copy). Untested: written against the TensorRT 10 Python API
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html).

    Raises:
        GenerationError: for a request that cannot run.
        ShapeOutOfRange / TypeError: for a step whose shapes lie outside the profile or a dtype the engine does
            not take (checked for the first and the last step before anything runs).
    """

    def __init__(self, session: TensorrtSession, layout: DecoderLayout, input_ids: np.ndarray,
                 attention_mask: np.ndarray, new_tokens: int) -> None:
        import torch

        dtype = getattr(torch, session._dtypes["past_key_values.0.key"])
        super().__init__(layout, input_ids, attention_mask, new_tokens, dtype, session.device,
                         stream=session.stream)
        self.context = session.context
        self._io = [self.step_io(s) for s in range(new_tokens)]
        for s in {0, new_tokens - 1}:
            for name, (buffer, shape) in self._io[s][0].items():
                session._check(name, str(buffer.dtype), shape)

    def _run(self, s: int) -> None:
        inputs, outputs = self._io[s]
        for name, (buffer, shape) in inputs.items():
            if not (self.context.set_input_shape(name, shape) and self.context.set_tensor_address(
                    name, buffer.data_ptr())):
                raise RuntimeError(f"TensorRT rejected input {name!r} at shape {shape} (see the TensorRT log)")
        for name, (buffer, _shape) in outputs.items():
            if not self.context.set_tensor_address(name, buffer.data_ptr()):
                raise RuntimeError(f"TensorRT set_tensor_address({name!r}) failed (see the TensorRT log)")
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")


class TensorrtSession(Session):
    """A TensorRT engine and execution context on one CUDA device, with torch CUDA tensors as I/O buffers.

    ``run`` takes host numpy feeds (dtype and shape checked against the engine) and returns host numpy outputs
    (bf16 upcast to float32, since numpy has no bfloat16).
    """

    runtime = "tensorrt"
    provider_requested = "TensorRT"

    def __init__(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TensorrtOptions) -> None:
        super().__init__()
        import tensorrt as trt
        import torch

        self._torch = torch
        device_id = typed.device_id
        self.device = f"cuda:{device_id}"
        torch.cuda.set_device(device_id)
        gpu_name = torch.cuda.get_device_name(device_id)
        ranges = resolve_ranges(options.profile_ranges, artifact.config.max_positions if artifact.config else None)
        profile = input_profile(artifact.inputs, ranges)
        build = build_options(typed, profile)
        key = engine_cache_key(artifact.sha256, trt.__version__, gpu_name, build)
        cache = default_cache_dir() / "tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        engine_path = cache / f"{key}.engine"
        timing_path = cache / f"timing-{timing_cache_key(trt.__version__, gpu_name)}.cache"
        self._logger = trt.Logger(trt.Logger.WARNING)
        start = time.perf_counter()
        hit = engine_path.exists()
        if hit:
            data = engine_path.read_bytes()
        else:
            data = build_engine(trt, self._logger, artifact.path, profile, build, timing_path)
            _atomic_write(engine_path, data)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {engine_path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.build_s = time.perf_counter() - start
        self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._input_names = [n for n in names if is_input[n]]
        self._output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: TRT_DTYPES.get(self.engine.get_tensor_dtype(n).name, self.engine.get_tensor_dtype(n).name)
                        for n in names}
        self._profile = {n: ShapeRange(*(tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)))
                         for n in self._input_names}
        specs = {s.name: s for s in artifact.inputs}
        self._inputs = tuple(TensorSpec(n, self._dtypes[n], specs[n].shape if n in specs else
                                        tuple(self.engine.get_tensor_shape(n))) for n in self._input_names)
        self.provider_actual = f"TensorRT {trt.__version__}"
        self.options = {"tensorrt": trt.__version__, "gpu": gpu_name, "device_id": device_id,
                        "engine_cache": "hit" if hit else "miss", "engine": str(engine_path),
                        "timing_cache": str(timing_path),
                        "tf32": build["tf32"] and build["tf32_override"] != "0",
                        "copies": "pinned-async", "compute_clock": "cuda-events",
                        "strongly_typed": True, "builder_optimization_level": build["builder_optimization_level"],
                        "profile": {n: r.describe() for n, r in self._profile.items()}}
        self._keep: list = []
        self._artifact_path = artifact.path  # the decode loop reads its cache layout from the file's graph

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def decoder(self, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int) -> TrtDecodeLoop:
        """Greedy decoding on the engine's device buffers (:class:`TrtDecodeLoop`), every step's shapes checked
        against the optimization profile before anything runs.

        Raises:
            GenerationError: for a request that cannot run, before any work.
            RuntimeUnavailable: for an engine that is not a decoder with a KV cache in onnxbench's or Optimum's
                layout (:func:`onnxbench.export.decoder_layout.detect_layout`), or a vocabulary size the graph
                does not give.
            ShapeOutOfRange: for a step outside the engine's profile (the matrix's generation ranges,
                :func:`onnxbench.runtimes.trt_profiles.generation_ranges`, cover its own cells).
        """
        try:
            layout = detect_layout(self._artifact_path)
        except LayoutError as exc:
            raise RuntimeUnavailable(f"tensorrt cannot generate with this graph: {exc}") from None
        if layout.right_padding or layout.vocab_size is None:
            raise RuntimeUnavailable(f"tensorrt has no decode loop for the {layout.kind} layout"
                                     + (" (shared GroupQueryAttention buffer, right padding)" if layout.right_padding
                                        else " without a static vocabulary size"))
        return TrtDecodeLoop(self, layout, input_ids, attention_mask, new_tokens)

    def _check(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        if name not in self._profile:
            raise KeyError(f"{name!r} is not an engine input; inputs: {self._input_names}")
        check_binding(name, dtype, shape, self._dtypes[name], self._profile[name])

    def _bind(self, device_inputs: dict[str, Any]) -> dict[str, Any]:
        """Set shapes and addresses of ``device_inputs`` (checked) and allocate the outputs; returns them."""
        torch = self._torch
        missing = set(self._input_names) - set(device_inputs)
        if missing:
            raise KeyError(f"missing engine inputs {sorted(missing)}")
        for name in self._input_names:
            tensor = device_inputs[name]
            self._check(name, str(tensor.dtype), tuple(tensor.shape))
            # Both return False (and log) on a shape outside the profile or a bad address; never run on that.
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise RuntimeError(f"TensorRT set_input_shape({name!r}, {tuple(tensor.shape)}) failed "
                                   f"(profile {self._profile[name].describe()}; see the TensorRT log)")
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise RuntimeError(f"TensorRT set_tensor_address({name!r}) failed (see the TensorRT log)")
        outputs = {}
        for name in self._output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"TensorRT left output {name!r} with unresolved shape {shape}")
            outputs[name] = torch.empty(shape, dtype=getattr(torch, self._dtypes[name]), device=self.device)
            if not self.context.set_tensor_address(name, outputs[name].data_ptr()):
                raise RuntimeError(f"TensorRT set_tensor_address({name!r}) failed (see the TensorRT log)")
        return outputs

    def _to_device(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        for name, value in feeds.items():  # check before any copy so a wrong feed costs nothing
            self._check(name, str(value.dtype), tuple(value.shape))
        with self._torch.cuda.stream(self.stream):
            return {n: self._torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=False)
                    for n, v in feeds.items()}

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def _host(self, outputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {n: (t.float() if t.dtype == self._torch.bfloat16 else t).cpu().numpy() for n, t in outputs.items()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        device_inputs = self._to_device(feeds)
        outputs = self._bind(device_inputs)
        self._execute()
        self.stream.synchronize()
        self._keep = []  # the addresses bound for a prepared call are gone now
        return self._host(outputs)

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
        device_inputs = self._to_device(feeds)
        outputs = self._bind(device_inputs)
        self._keep = [device_inputs, outputs]  # the bound addresses must stay alive
        return self._execute

    def fetch_outputs(self) -> dict[str, np.ndarray] | None:
        if not self._keep:
            return None
        self.stream.synchronize()
        return self._host(self._keep[1])

    def device_timer(self):
        from .torch_cuda import TorchEventTimer

        return TorchEventTimer(self.stream)

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
        torch = self._torch
        device_inputs = self._to_device(feeds)
        outputs = self._bind(device_inputs)
        # Pinned host buffers, as trtexec uses, so that copies are DMA transfers rather than staged ones.
        host_in = {n: torch.from_numpy(np.ascontiguousarray(v)).pin_memory() for n, v in feeds.items()}
        host_out = {n: torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for n, t in outputs.items()}
        self._keep = [device_inputs, outputs, host_in, host_out]

        def h2d() -> None:
            with torch.cuda.stream(self.stream):
                for n, t in device_inputs.items():
                    t.copy_(host_in[n], non_blocking=True)

        def d2h() -> None:
            with torch.cuda.stream(self.stream):
                for n, t in outputs.items():
                    host_out[n].copy_(t, non_blocking=True)

        return {"h2d": h2d, "compute": self._execute, "d2h": d2h}

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._keep = []
        self.context = None
        self.engine = None


class Tensorrt(Runtime):
    """Native TensorRT: engine build with an optimization profile from the matrix, engine and timing caches."""

    name = "tensorrt"
    device = "cuda"
    options_type = TensorrtOptions
    tolerances = CUDA_BANDS

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        probe = probes.native_tensorrt()
        return probe.ok, probe.detail

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TensorrtOptions) -> Session:
        return TensorrtSession(artifact, options, typed)
