"""PyTorch eager: the reference runtime. It rebuilds the module from the artifact's (config, seed), or loads the
checkpoint the artifact was exported from, rather than reading the ONNX file, so that it is an independent check
of the export."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..export import PRECISIONS, ExportArtifact, TensorSpec
from ..models import build
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, TypedOptions, thread_counts


@dataclass(frozen=True)
class TorchEagerOptions(TypedOptions):
    """``inference_mode``: run under ``torch.inference_mode()`` (True, the default) or ``torch.no_grad()``."""

    inference_mode: bool = True


class TorchEagerSession(Session):
    """The reference transformer under ``torch.inference_mode()`` (or ``torch.no_grad()`` with
    ``extra={"inference_mode": False}``) on the CPU.

    ``run({"input_ids": int64 (B, T)}) -> {"logits": (B, T, vocab_size)}`` as float32 numpy (fp16/bf16
    logits are upcast on the way out, since numpy has no bfloat16). For an artifact with ``part='attention'``
    the module is block 0's attention: ``{"hidden_states": float (B, T, d_model)} ->
    {"attention_output": float32 (B, T, d_model)}``.
    """

    runtime = "torch"
    provider_requested = "cpu"
    provider_actual = "cpu"
    device = "cpu"

    def __init__(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchEagerOptions) -> None:
        super().__init__()
        start = time.perf_counter()
        dtype = PRECISIONS[artifact.precision]
        self.dtype = dtype
        if artifact.checkpoint:
            self.model = _load_checkpoint(artifact, dtype)
        else:
            self.model = build(artifact.config, artifact.seed or 0, dtype=dtype)
        self._inputs = (TensorSpec("input_ids", "int64", ("batch", "sequence")),)
        self._threads_before = torch.get_num_threads()
        self._output = "logits"
        if artifact.part == "attention":
            # The standalone attention part is block 0's CausalSelfAttention on hidden states (B, T, d_model).
            self.model = self.model.blocks[0].attn
            self._inputs = (TensorSpec("hidden_states", str(dtype).removeprefix("torch."),
                                       ("batch", "sequence", artifact.config.d_model)),)
            self._output = "attention_output"
        if options.intra_op_threads:
            torch.set_num_threads(options.intra_op_threads)  # process-wide: restored in close()
        # inference_mode (default) also skips autograd's version-counter bookkeeping that no_grad keeps
        # (https://pytorch.org/docs/stable/generated/torch.autograd.grad_mode.inference_mode.html).
        self.inference_mode = typed.inference_mode
        self.options = {"threads": torch.get_num_threads(), "inference_mode": self.inference_mode,
                        "dtype": str(dtype).removeprefix("torch.")}
        self.build_s = time.perf_counter() - start

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            return self.model(ids)

    def _tensor(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        name = self._inputs[0].name
        x = torch.from_numpy(np.ascontiguousarray(feeds[name]))
        # Hidden states fed by another runtime's session may be fp16; the module computes in its own dtype.
        return x.to(self.dtype) if x.is_floating_point() else x

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        y = self._forward(self._tensor(feeds))
        return {self._output: y.float().numpy()}

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], torch.Tensor]:
        x = self._tensor(feeds)
        return lambda: self._forward(x)

    def eager_module(self) -> torch.nn.Module:
        return self.model

    def close(self) -> None:
        self.model = None
        torch.set_num_threads(self._threads_before)


def _load_checkpoint(artifact: ExportArtifact, dtype: torch.dtype) -> torch.nn.Module:
    from ..models.gpt2 import checkpoint_sha256, load_checkpoint

    # the ONNX file holds the weights hashed at export time; a checkpoint edited since must not be compared
    if artifact.checkpoint_sha256 and checkpoint_sha256(artifact.checkpoint) != artifact.checkpoint_sha256:
        raise ValueError(f"checkpoint {artifact.checkpoint} changed since {artifact.path} was exported from it; "
                         "export again (onnxbench export --checkpoint DIR --force)")
    return load_checkpoint(artifact.checkpoint, dtype=dtype, attention=artifact.config.attention)


def require_torch_module(artifact: ExportArtifact) -> None:
    """Torch runtimes rebuild the module from the artifact's onnxbench metadata; a foreign ONNX has none.

    Raises:
        RuntimeUnavailable: for an artifact without ``onnxbench.config`` metadata (names the fix).
    """
    if artifact.config is None:
        raise RuntimeUnavailable(
            f"{artifact.path} was not exported by onnxbench (no onnxbench.config metadata), "
            "so there is no torch module to rebuild; use ort-cpu as the reference for foreign models"
        )


class TorchEager(Runtime):
    """PyTorch eager mode on the CPU (the reference every other runtime is compared with).

    Tuning grid: ``inference_mode`` vs ``no_grad``, and threads = 1, physical and logical cores.
    """

    name = "torch"
    options_type = TorchEagerOptions

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, f"torch {torch.__version__}"

    @classmethod
    def tuning_grid(cls) -> dict[str, RuntimeOptions]:
        grid = {"no_grad": RuntimeOptions(extra={"inference_mode": False})}
        for threads in thread_counts(torch.get_num_threads()):
            grid[f"{threads}t"] = RuntimeOptions(intra_op_threads=threads)
        return grid

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TorchEagerOptions) -> Session:
        require_torch_module(artifact)
        return TorchEagerSession(artifact, options, typed)
