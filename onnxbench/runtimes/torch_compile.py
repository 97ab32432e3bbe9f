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
from typing import Literal

import numpy as np
import torch

from ..export import PRECISIONS, ExportArtifact, TensorSpec
from ..models import build
from .base import Runtime, RuntimeOptions, Session, TypedOptions
from .torch_eager import require_torch_module


@dataclass(frozen=True)
class TorchCompileOptions(TypedOptions):
    """``mode``: ``torch.compile``'s mode."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"


class TorchCompileSession(Session):
    """The reference transformer compiled with TorchInductor, run under ``torch.inference_mode()``.

    ``run({"input_ids": int64 (B, T)}) -> {"logits": float32 (B, T, vocab_size)}``. Options: see
    :class:`TorchCompileOptions`.

    Attributes:
        compile_s: seconds spent compiling, per (B, T) shape.
    """

    runtime = "torch-compile"
    provider_requested = "cpu"
    provider_actual = "cpu"
    device = "cpu"

    def __init__(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCompileOptions) -> None:
        super().__init__()
        mode = typed.mode
        start = time.perf_counter()
        dtype = PRECISIONS[artifact.precision]
        self.model = build(artifact.config, artifact.seed or 0, dtype=dtype)
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = torch.from_numpy(np.ascontiguousarray(feeds["input_ids"]))
        self._ensure_compiled(ids)
        return {"logits": self._forward(ids).float().numpy()}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], torch.Tensor]:
        ids = torch.from_numpy(np.ascontiguousarray(feeds["input_ids"]))
        self._ensure_compiled(ids)
        return lambda: self._forward(ids)

    def close(self) -> None:
        self.model = self.compiled = None
        torch._dynamo.reset()  # drop this module's guards and graphs so the next session starts clean
        torch.set_num_threads(self._threads_before)


class TorchCompile(Runtime):
    """``torch.compile(backend="inductor")`` on the CPU. Not in the embedded default matrix (compiling
    gpt2-small takes minutes on 2 cores); add it with ``--runtimes torch,torch-compile,ort-cpu``. No tuning grid:
    each configuration would cost a full compile per shape."""

    name = "torch-compile"
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
