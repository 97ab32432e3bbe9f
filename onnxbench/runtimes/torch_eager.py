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
from ..models import build, check_generation
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, TypedOptions, thread_counts
from .decode import ChosenOnDevice


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

    def decoder(self, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int) -> TorchDecodeLoop:
        """Greedy decoding with the module's own cache (:class:`TorchDecodeLoop`), on the module's device.

        Raises:
            GenerationError: for a request that cannot run (see :func:`onnxbench.models.check_generation`).
            RuntimeUnavailable: for the attention part (no decoder to generate with).
        """
        if not hasattr(self.model, "blocks"):
            raise RuntimeUnavailable("the attention part cannot generate; the generate scenario runs the full model")
        grad_mode = torch.inference_mode if self.inference_mode else torch.no_grad
        return TorchDecodeLoop(self.model, input_ids, attention_mask, new_tokens, grad_mode)

    def eager_module(self) -> torch.nn.Module:
        return self.model

    def close(self) -> None:
        self.model = None
        torch.set_num_threads(self._threads_before)


class TorchDecodeLoop(ChosenOnDevice):
    """Greedy decoding with the reference module (:class:`onnxbench.models.Transformer`, ``use_cache=True``).

    Each step feeds the previous step's present keys/values as its past; the module concatenates the new ones
    onto them, as the exported graph does (docs/generation.md, "The decode loop"), so the cache is a new tensor
    per step rather than a buffer preallocated to the maximum length. Everything else a step touches is
    allocated here, once: the prompt, the mask for every step (views of one (B, T0 + N) tensor) and the
    (B, N) token buffer the greedy choice (argmax, SLP3 §10.2) is written into, all on the module's device, so
    that a step on a GPU never waits for the host.

    Args:
        model: the reference transformer in eval mode, on its device.
        input_ids: int64 (B, T0) prompts; attention_mask: int64 (B, T0), 0 on left padding.
        new_tokens: N >= 1.
        grad_mode: ``torch.inference_mode`` or ``torch.no_grad``.

    Raises:
        GenerationError: see :func:`onnxbench.models.check_generation` (before anything is allocated).
    """

    def __init__(self, model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int,
                 grad_mode=torch.inference_mode) -> None:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        check_generation(model.config, ids, new_tokens, mask)
        device = next(model.parameters()).device
        self.model, self.grad_mode = model, grad_mode
        self.batch, self.prompt_len = ids.shape
        self.new_tokens = new_tokens
        self.vocab_size = model.config.vocab_size
        self.ids = ids.to(device=device, dtype=torch.int64)
        full = torch.ones(self.batch, self.prompt_len + new_tokens, dtype=torch.int64, device=device)
        full[:, :self.prompt_len] = mask.to(torch.int64)
        #: the mask of step s covers T0 + s keys (step 0 is the prefill)
        self.masks = [full[:, :self.prompt_len + s] for s in range(new_tokens)]
        self._tokens = torch.zeros(self.batch, new_tokens, dtype=torch.int64, device=device)
        self.reset()

    def reset(self, record: bool = False) -> None:
        self.past, self.s = None, 0
        self._tokens.zero_()
        self._record = torch.empty(self.batch, self.new_tokens, self.vocab_size) if record else None

    def _choose(self, logits: torch.Tensor) -> None:
        last = logits[:, -1]  # (B, vocab_size)
        self._tokens[:, self.s] = last.argmax(-1)
        if self._record is not None:
            self._record[:, self.s] = last.float().cpu()

    def _run_and_choose(self) -> None:
        """Step 0 runs the prompt with no past; step s the token chosen at s - 1 with the cache so far."""
        ids, past = (self.ids, None) if self.s == 0 else (self._tokens[:, self.s - 1:self.s], self.past)
        with self.grad_mode():
            logits, self.past = self.model(ids, self.masks[self.s], past, use_cache=True)
            self._choose(logits)


def _load_checkpoint(artifact: ExportArtifact, dtype: torch.dtype) -> torch.nn.Module:
    from ..models import checkpoint_sha256, load_checkpoint

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
    runs_onnx = False  # rebuilds the module from the artifact's metadata
    options_type = TorchEagerOptions
    thread_axis = True  # torch.set_num_threads for the session's lifetime

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
