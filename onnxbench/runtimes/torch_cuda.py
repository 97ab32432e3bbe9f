"""PyTorch eager on a CUDA device (``torch-cuda``): the GPU baseline that the GPU runtimes' speed-ups compare with.

The same reference module as the CPU ``torch`` runtime (rebuilt from the artifact's config and seed, or its
checkpoint), moved to ``cuda:<device_id>`` at the cell's precision and run under ``torch.inference_mode()``.
Options (``RuntimeOptions.extra``, :class:`TorchCudaOptions`): ``tf32`` (default False), ``device_id`` (default 0),
``inference_mode``.

TF32: ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` are set to the option
for the session's life (process-wide, restored on close) and recorded, so that an fp32 cell is fp32 unless TF32
is asked for (https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices).
``NVIDIA_TF32_OVERRIDE=0`` in the environment also forbids it; the recorded value is what is in force.

Timing: kernels are queued on the current CUDA stream; :meth:`TorchCudaSession.synchronize` waits for it (the
harness calls it inside every timed region), :meth:`TorchCudaSession.device_timer` gives CUDA events on it, and
the H2D / D2H stages copy through page-locked host tensors asynchronously, as the native TensorRT runtime does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from ..export import ExportArtifact
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, Session
from .torch_eager import TorchEagerOptions, TorchEagerSession, require_torch_module


@dataclass(frozen=True)
class TorchCudaOptions(TorchEagerOptions):
    """:class:`~onnxbench.runtimes.torch_eager.TorchEagerOptions` plus ``tf32`` (allow TF32 in cuBLAS matmuls
    and cuDNN convolutions; default False) and ``device_id`` (>= 0)."""

    tf32: bool = False
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.device_id < 0:
            raise OptionError(f"device_id must be >= 0, got {self.device_id}")


class TorchEventTimer:
    """CUDA events (``torch.cuda.Event(enable_timing=True)``) recorded on ``stream``: device ms between
    ``start()`` and ``stop()``, read after the stream is synchronised."""

    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record(self.stream)

    def stop(self) -> None:
        self._stop.record(self.stream)

    def elapsed_ms(self) -> float:
        self._stop.synchronize()
        return float(self._start.elapsed_time(self._stop))


def set_tf32(allow: bool) -> tuple[bool, bool]:
    """Allow or forbid TF32 in cuBLAS matmuls and cuDNN convolutions; returns the previous pair to restore."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    return before


def tf32_in_force(asked: bool) -> bool:
    """TF32 as it really applies: asked for and not forbidden by ``NVIDIA_TF32_OVERRIDE=0``."""
    return asked and os.environ.get("NVIDIA_TF32_OVERRIDE") != "0"


def torch_stages(session: Session, feeds: dict[str, np.ndarray], to_device: Callable[[dict], Any],
                 forward: Callable[[Any], torch.Tensor], stream: torch.cuda.Stream) -> dict[str, Callable[[], Any]]:
    """H2D / compute / D2H callables of a torch CUDA session: page-locked host copies of ``feeds`` copied
    asynchronously into device tensors, ``forward`` on them, its output copied asynchronously into a page-locked
    host tensor; all on ``stream``. The last output stays in ``session._last`` for ``fetch_outputs``."""
    host_in = {k: torch.from_numpy(np.ascontiguousarray(v)).pin_memory() for k, v in feeds.items()}
    device_in = to_device(feeds)
    out = forward(device_in)
    host_out = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    session._last = out

    def h2d() -> None:
        with torch.cuda.stream(stream):
            for k, t in device_in.items():
                t.copy_(host_in[k], non_blocking=True)

    def compute() -> None:
        with torch.cuda.stream(stream):
            session._last = forward(device_in)

    def d2h() -> None:
        with torch.cuda.stream(stream):
            host_out.copy_(session._last, non_blocking=True)

    return {"h2d": h2d, "compute": compute, "d2h": d2h}


class TorchCudaSession(TorchEagerSession):
    """The reference transformer on a CUDA device, at the artifact's precision.

    ``run({"input_ids": int64 (B, T)}) -> {"logits": float32 (B, T, vocab_size)}`` (host numpy; fp16/bf16 logits
    upcast on the way out); ``prepare`` keeps the ids on the device so that the timed call is the forward alone.
    """

    runtime = "torch-cuda"
    provider_requested = "cuda"

    def __init__(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCudaOptions) -> None:
        device_id = typed.device_id
        self.device = f"cuda:{device_id}"
        self.provider_actual = f"cuda ({torch.cuda.get_device_name(device_id)})"
        self._tf32_before = set_tf32(typed.tf32)
        super().__init__(artifact, options, typed)
        self.model = self.model.to(self.device)
        self.stream = torch.cuda.current_stream(self.device)
        self._last: torch.Tensor | None = None
        self.options.update({"tf32": tf32_in_force(typed.tf32), "device_id": device_id,
                             "gpu": torch.cuda.get_device_name(device_id), "copies": "pinned-async",
                             "compute_clock": "cuda-events"})

    def _tensor(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        return super()._tensor(feeds).to(self.device)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        y = self._forward(self._tensor(feeds))
        return {self._output: y.float().cpu().numpy()}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], torch.Tensor]:
        x = self._tensor(feeds)

        def call() -> torch.Tensor:
            self._last = self._forward(x)
            return self._last

        return call

    def prepare_stages(self, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
        name = self._inputs[0].name
        return torch_stages(self, feeds, lambda f: {name: self._tensor(f)}, lambda d: self._forward(d[name]),
                            self.stream)

    def fetch_outputs(self) -> dict[str, np.ndarray] | None:
        if self._last is None:
            return None
        self.synchronize()
        return {self._output: self._last.float().cpu().numpy()}

    def device_timer(self) -> TorchEventTimer:
        return TorchEventTimer(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._last = None
        super().close()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._tf32_before


class TorchCuda(Runtime):
    """PyTorch eager on a CUDA GPU: the baseline of the GPU runtimes' speed-ups (as ``torch`` is on the CPU)."""

    name = "torch-cuda"
    runs_onnx = False  # rebuilds the module from the artifact's metadata
    device = "cuda"
    options_type = TorchCudaOptions
    tolerances = CUDA_BANDS

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        probe = probes.torch_cuda_runtime()
        return probe.ok, probe.detail

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchCudaOptions) -> Session:
        require_torch_module(artifact)
        return TorchCudaSession(artifact, options, typed)
