"""PyTorch with ``torch.compile`` (TorchInductor backend): the strongest PyTorch-side peer of the ONNX runtimes.

Like the eager reference it rebuilds the module from the artifact's (config, seed). The module is compiled with
``dynamic=False``, so TorchDynamo specialises on each input shape and Inductor generates kernels per shape
(https://pytorch.org/docs/stable/generated/torch.compile.html). Compilation happens on the first call at a new
shape, inside :meth:`TorchCompileSession.run` or :meth:`TorchCompileSession.prepare`, never inside a timed
iteration; its wall time is recorded in ``build_s`` (session creation + the compile at the current shape), apart
from the latency. On the CPU Inductor emits C++/OpenMP and needs a C++ compiler (``g++``) at run time.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..errors import OptionError
from ..export import PRECISIONS, ExportArtifact, TensorSpec
from ..models import build
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, Session, TypedOptions
from .torch_cuda import TorchEventTimer, set_tf32, tf32_in_force, torch_stages
from .torch_eager import require_torch_module


@dataclass(frozen=True)
class TorchCompileOptions(TypedOptions):
    """``mode``: ``torch.compile``'s mode."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"


@dataclass(frozen=True)
class TorchCompileCudaOptions(TorchCompileOptions):
    """:class:`TorchCompileOptions` plus ``tf32`` (allow TF32 in matmuls and convolutions) and ``device_id``."""

    tf32: bool = False
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.device_id < 0:
            raise OptionError(f"device_id must be >= 0, got {self.device_id}")


class TorchCompileSession(Session):
    """The reference transformer compiled with TorchInductor, run under ``torch.inference_mode()``.

    ``run({"input_ids": int64 (B, T)}) -> {"logits": float32 (B, T, vocab_size)}``. Options: see
    :class:`TorchCompileOptions` (CPU) and :class:`TorchCompileCudaOptions` (CUDA: also ``tf32``, ``device_id``).

    Attributes:
        compile_s: seconds spent compiling, per (B, T) shape.
    """

    runtime = "torch-compile"
    provider_requested = "cpu"
    provider_actual = "cpu"
    device = "cpu"

    def __init__(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCompileOptions) -> None:
        super().__init__()
        cuda = isinstance(typed, TorchCompileCudaOptions)
        if cuda:
            self.runtime = TorchCompileCuda.name
        mode = typed.mode
        start = time.perf_counter()
        dtype = PRECISIONS[artifact.precision]
        self.model = build(artifact.config, artifact.seed or 0, dtype=dtype)
        self._tf32_before = None
        if cuda:
            device_id = typed.device_id
            self.device = self.provider_requested = f"cuda:{device_id}"
            self.provider_actual = f"cuda ({torch.cuda.get_device_name(device_id)})"
            self._tf32_before = set_tf32(typed.tf32)
            self.model = self.model.to(self.device)
            self.stream = torch.cuda.current_stream(self.device)
        self._last: torch.Tensor | None = None
        self._threads_before = torch.get_num_threads()
        if options.intra_op_threads:
            torch.set_num_threads(options.intra_op_threads)  # process-wide: restored in close()
        # Past dynamo's recompile limit a new shape would silently run eager under this runtime's name: raise.
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.compiled = torch.compile(self.model, backend="inductor", mode=mode, dynamic=False)
        self._inputs = (TensorSpec("input_ids", "int64", ("batch", "sequence")),)
        self.options = {"threads": torch.get_num_threads(), "inference_mode": True, "backend": "inductor",
                        "mode": mode, "dynamic": False, "dtype": str(dtype).removeprefix("torch.")}
        if cuda:
            self.options.update({"tf32": tf32_in_force(typed.tf32),
                                 "device_id": device_id, "gpu": torch.cuda.get_device_name(device_id),
                                 "copies": "pinned-async", "compute_clock": "cuda-events"})
        self._open_s = time.perf_counter() - start
        self.build_s = self._open_s
        self.compile_s: dict[tuple[int, ...], float] = {}

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.compiled(ids)

    def _ensure_compiled(self, ids: torch.Tensor) -> None:
        # The first call at a shape traces and compiles; doing it here keeps it out of the timed iterations.
        shape = tuple(ids.shape)
        if shape not in self.compile_s:
            start = time.perf_counter()
            self._forward(ids)
            self.compile_s[shape] = time.perf_counter() - start
        self.build_s = self._open_s + self.compile_s[shape]

    def _ids(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(feeds["input_ids"])).to(self.device)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = self._ids(feeds)
        self._ensure_compiled(ids)
        return {"logits": self._forward(ids).float().cpu().numpy()}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], torch.Tensor]:
        ids = self._ids(feeds)
        self._ensure_compiled(ids)

        def call() -> torch.Tensor:
            # With mode="reduce-overhead" the output lives in a CUDA graph's pool that the next replay
            # overwrites: fetch_outputs reads the last one before any other call.
            self._last = self._forward(ids)
            return self._last

        return call

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]] | None:
        if not self.device.startswith("cuda"):
            return None
        self._ensure_compiled(self._ids(feeds))
        return torch_stages(self, feeds, lambda f: {"input_ids": self._ids(f)},
                            lambda d: self._forward(d["input_ids"]), self.stream)

    def fetch_outputs(self) -> dict[str, np.ndarray] | None:
        if self._last is None or not self.device.startswith("cuda"):
            return None  # on the CPU the timed path is run()'s own forward
        self.synchronize()
        return {"logits": self._last.float().cpu().numpy()}

    def device_timer(self) -> TorchEventTimer | None:
        return TorchEventTimer(self.stream) if self.device.startswith("cuda") else None

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.stream.synchronize()

    def close(self) -> None:
        self.model = self.compiled = self._last = None
        torch._dynamo.reset()  # drop this module's guards and graphs so the next session starts clean
        torch.set_num_threads(self._threads_before)
        if self._tf32_before is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._tf32_before


class TorchCompile(Runtime):
    """``torch.compile(backend="inductor")`` on the CPU. Not in the embedded default matrix (compiling
    gpt2-small takes minutes on 2 cores); add it with ``--runtimes torch,torch-compile,ort-cpu``. No tuning grid:
    each configuration would cost a full compile per shape."""

    name = "torch-compile"
    runs_onnx = False  # rebuilds the module from the artifact's metadata
    options_type = TorchCompileOptions
    in_default_matrix = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        if compiler is None:
            return False, "TorchInductor on the CPU needs a C++ compiler; install g++ (apt-get install g++)"
        return True, f"torch {torch.__version__}, inductor, {compiler}"

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCompileOptions) -> Session:
        require_torch_module(artifact)
        return TorchCompileSession(artifact, options, typed)


class TorchCompileCuda(Runtime):
    """``torch.compile(backend="inductor")`` on a CUDA GPU (Triton kernels): the compiled PyTorch peer of the GPU
    runtimes. Not in the embedded default matrix (compiling takes minutes); add it by name."""

    name = "torch-compile-cuda"
    runs_onnx = False  # rebuilds the module from the artifact's metadata
    device = "cuda"
    options_type = TorchCompileCudaOptions
    tolerances = CUDA_BANDS
    in_default_matrix = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        probe = probes.torch_cuda_runtime()
        if not probe.ok:
            return False, probe.detail
        try:
            import triton
        except ImportError:
            return False, "TorchInductor on CUDA needs Triton (pip install triton; CUDA builds of torch depend on it)"
        return True, f"{probe.detail}, inductor, triton {triton.__version__}"

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCompileCudaOptions) -> Session:
        require_torch_module(artifact)
        return TorchCompileSession(artifact, options, typed)
