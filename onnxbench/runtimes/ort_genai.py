"""ONNX Runtime GenAI: a model of ONNX Runtime's model builder run by the library's own Generator.

The ORT model builder (``python -m onnxruntime_genai.models.builder``) writes a folder: ``model.onnx`` (its
``GroupQueryAttention`` reads one past/present buffer shared in place, docs/generation.md "ONNX decoders you
bring") and ``genai_config.json``. ``onnxruntime_genai.Generator`` runs that folder's greedy loop itself: it owns
the KV cache, the attention mask and the positions. The harness times it through the Generator's step API
(https://onnxruntime.ai/docs/genai/api/python.html): ``append_tokens`` (the prompt's forward) and the first
``generate_next_token`` (the greedy pick of token 0) are the prefill; every later ``generate_next_token`` is one
decode step, the forward of the token picked last **and** the pick of the next. That the forward runs inside
``generate_next_token`` and not in ``append_tokens`` or ``get_logits`` was measured, not assumed
(docs/generation.md, "ONNX Runtime GenAI": what each call covers).

The logits each token was chosen from are read with ``Generator.get_logits()`` before the pick, in the recorded
(untimed) generation only: there ``get_logits`` runs the pending forward and ``generate_next_token`` only picks.

Two runtimes: ``ort-genai`` (CPU) and ``ort-genai-cuda`` (CUDA). The device the model runs on is read back from
``Model.device_type``; a model asked for CUDA that runs elsewhere is refused (:class:`RuntimeUnavailable`), never
reported under the CUDA name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..export import ExportArtifact, TensorSpec
from ..export.decoder_layout import left_to_right
from ..tolerance import CUDA_BANDS
from . import probes
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, TypedOptions
from .decode import DecodeLoop

#: The file the builder writes beside its model, and which the Generator reads.
GENAI_CONFIG = "genai_config.json"
#: What to install: onnxruntime-genai-cuda runs on the CPU too and depends on onnxruntime-gpu only; the CPU wheel
#: onnxruntime-genai pulls in onnxruntime, which must never sit beside onnxruntime-gpu (pyproject.toml).
INSTALL_HINT = ("pip install 'onnxbench[genai]' (onnxruntime-genai-cuda; never onnxruntime-genai, whose "
                "onnxruntime dependency must not sit beside onnxruntime-gpu)")


def _genai():
    import onnxruntime_genai

    return onnxruntime_genai


def genai_folder(path: str | Path) -> Path:
    """The builder folder of the ONNX file ``path``: the folder holding it (symlinks resolved) with a
    ``genai_config.json`` whose decoder ``filename`` is that file.

    Raises:
        RuntimeUnavailable: when there is no ``genai_config.json`` beside the file, it cannot be read, or it names
            another file (the reason says how to make one).
    """
    real = Path(path).resolve()
    config = real.parent / GENAI_CONFIG
    if not config.is_file():
        raise RuntimeUnavailable(
            f"ort-genai runs the ORT model builder's models (a folder with {GENAI_CONFIG} beside the ONNX file); "
            f"{path} has none: build one with `python -m onnxruntime_genai.models.builder -i CHECKPOINT_DIR -o OUT "
            "-p fp32 -e cpu` and pass --onnx OUT/model.onnx (docs/generation.md)")
    try:
        named = json.loads(config.read_text())["model"]["decoder"]["filename"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeUnavailable(f"{config} has no model.decoder.filename ({type(exc).__name__}: {exc})") from None
    if named != real.name:
        raise RuntimeUnavailable(f"{config} runs {named}, not {real.name}: ort-genai would time another file")
    return real.parent


def pad_token_for(input_ids: np.ndarray, attention_mask: np.ndarray, preferred: int, vocab_size: int) -> int:
    """The pad token id to give the Generator for these prompts: ``preferred`` (the config's) unless a real prompt
    token has that id, else the smallest id no real token has.

    The Generator builds the attention mask from the ids (a token equal to ``pad_token_id`` is masked out), so a
    real token with the pad id would silently lose its place in attention.

    Args:
        input_ids: int (B, T0); attention_mask: int (B, T0), 0 on left padding.
        preferred: the config's ``pad_token_id``; vocab_size: V.

    Raises:
        RuntimeUnavailable: when the real tokens use every id of the vocabulary (no id is free to mark padding).
    """
    used = np.unique(input_ids[np.asarray(attention_mask) != 0])
    if 0 <= preferred < vocab_size and preferred not in used:
        return int(preferred)
    free = np.setdiff1d(np.arange(vocab_size), used, assume_unique=True)
    if not free.size:
        raise RuntimeUnavailable("the prompts use every token id of the vocabulary; the Generator marks padding by "
                                 "a pad token id, and none is free")
    return int(free[0])


class GenaiDecodeLoop(DecodeLoop):
    """Greedy decoding of one request by ``onnxruntime_genai.Generator`` (module docstring).

    A new Generator per generation (:meth:`reset`, untimed): the Generator allocates its cache buffer of
    ``max_length`` = T0 + N positions when it is made. :meth:`prefill` is ``append_tokens`` (the prompt's
    forward) and the pick of token 0; :meth:`step` is one ``generate_next_token`` (the previous token's forward and
    the next pick). Tokens are read back from ``get_sequence`` after the generation.

    Args:
        model: an ``onnxruntime_genai.Model`` whose ``pad_token_id`` is ``pad_id`` and that has no end-of-sequence
            token (a random model may pick one; the Generator would stop there).
        input_ids: int64 (B, T0); attention_mask: int64 (B, T0), 0 on left padding; new_tokens: N >= 1.
        pad_id: the id the Generator reads as padding (:func:`pad_token_for`); the prompts are fed right-padded
            with it (each row's tokens first), the new tokens follow position T0 in every row.
        vocab_size: V.
    """

    def __init__(self, model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int, pad_id: int,
                 vocab_size: int) -> None:
        og = _genai()
        self.batch, self.prompt_len = input_ids.shape
        self.new_tokens, self.vocab_size = new_tokens, vocab_size
        # GroupQueryAttention counts a row's valid keys from position 0 (docs/generation.md, "ONNX decoders you
        # bring"), and so does the Generator: a left-padded row diverges at token 0, the same row right-padded
        # gives the unpadded row's logits (measured: docs/generation.md, "ONNX Runtime GenAI")
        ids, _ = left_to_right(np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64), pad_id)
        self.prompt = ids.astype(np.int32)
        self.params = og.GeneratorParams(model)
        self.params.set_search_options(max_length=self.prompt_len + new_tokens, do_sample=False,
                                       batch_size=self.batch)
        self._og, self._model = og, model
        self.generator = None
        self.reset()

    def reset(self, record: bool = False) -> None:
        self.generator = None  # the old cache buffer goes before the new one is allocated
        self.generator = self._og.Generator(self._model, self.params)
        self.s = -1
        self._record = np.empty((self.batch, self.new_tokens, self.vocab_size), np.float32) if record else None

    def _choose(self) -> None:
        if self._record is not None:
            # the pending forward runs here (get_logits), so generate_next_token below only picks
            self._record[:, self.s + 1] = np.asarray(self.generator.get_logits())[:, -1]
        self.generator.generate_next_token()
        self.s += 1

    def prefill(self) -> None:
        if self.s != -1:
            raise IndexError("the prefill ran already; reset() first")
        self.generator.append_tokens(self.prompt)
        self._choose()

    def step(self) -> None:
        if self.s < 0 or self.s + 1 >= self.new_tokens:
            raise IndexError(f"all {self.new_tokens} tokens are chosen (or no prefill ran); reset() first")
        self._choose()

    def tokens(self) -> np.ndarray:
        out = np.zeros((self.batch, self.new_tokens), np.int64)
        for b in range(self.batch):
            chosen = np.asarray(self.generator.get_sequence(b))[self.prompt_len:self.prompt_len + self.s + 1]
            out[b, :len(chosen)] = chosen
        return out

    def logits(self) -> np.ndarray:
        if self._record is None:
            raise RuntimeError("this generation was not recorded; reset(record=True) before the prefill")
        return self._record


class GenaiSession(Session):
    """A builder folder opened with ``onnxruntime_genai`` on one device (module docstring).

    Models are made per pad token id (:func:`pad_token_for`; the config's own first), each once: the Generator
    reads ``pad_token_id`` from the model's config.

    Raises:
        RuntimeUnavailable: for a file without its builder folder (:func:`genai_folder`), or a model that runs on
            another device than asked.
    """

    def __init__(self, runtime: str, artifact: ExportArtifact, device: Literal["cpu", "cuda"],
                 options: RuntimeOptions) -> None:
        super().__init__()
        og = _genai()
        self.runtime, self.device = runtime, "cuda:0" if device == "cuda" else "cpu"
        self.provider_requested = device
        self.folder = genai_folder(artifact.path)
        self._artifact_path = artifact.path
        self._threads = options.intra_op_threads, options.inter_op_threads
        config = json.loads((self.folder / GENAI_CONFIG).read_text())["model"]
        self._config_pad = int(config.get("pad_token_id", 0))
        self._models: dict[int, Any] = {}
        start = time.perf_counter()
        try:
            model = self.model_for(self._config_pad)
        except RuntimeError as exc:
            if device != "cuda":
                raise
            # e.g. "Cuda interface not available: Failed to load library: libcublasLt.so.13" (no GPU libraries)
            raise RuntimeUnavailable(f"onnxruntime-genai cannot open the model on cuda: {exc}") from None
        self.build_s = time.perf_counter() - start
        self.provider_actual = str(model.device_type).lower()
        if self.provider_actual != device:
            raise RuntimeUnavailable(f"onnxruntime-genai fell back: asked for {device}, the model runs on "
                                     f"{model.device_type} (onnxruntime-genai {og.__version__})")
        self.options = {"provider": self.provider_actual, "intra_op_threads": self._threads[0],
                        "inter_op_threads": self._threads[1], "onnxruntime_genai": og.__version__,
                        **({"tf32": False} if device == "cuda" else {})}
        import onnx

        graph = onnx.load(str(artifact.path), load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        self._inputs = tuple(
            TensorSpec(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                       tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim))
            for v in graph.input if v.name not in initializers)

    def model_for(self, pad_id: int) -> Any:
        """The ``onnxruntime_genai.Model`` of the folder with ``pad_token_id`` = ``pad_id``, no end-of-sequence
        token and this session's device and threads (``Config.overlay`` of ``genai_config.json``), made once."""
        if pad_id not in self._models:
            og = _genai()
            config = og.Config(str(self.folder))
            config.clear_providers()
            if self.provider_requested == "cuda":
                config.append_provider("cuda")
                # ORT's CUDA EP allows TF32 by default on SM >= 80; "fp32" means fp32 here (docs/design.md)
                config.set_provider_option("cuda", "use_tf32", "0")
            session = {k: v for k, v in zip(("intra_op_num_threads", "inter_op_num_threads"), self._threads,
                                            strict=True) if v}
            # an empty eos list: a random model may pick the config's eos token, and the Generator would stop
            overlay = {"model": {"pad_token_id": pad_id, "eos_token_id": [],
                                 **({"decoder": {"session_options": session}} if session else {})}}
            config.overlay(json.dumps(overlay))
            self._models[pad_id] = og.Model(config)
        return self._models[pad_id]

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Not offered: the Generator owns the model's inputs (cache, mask), so one forward pass on given feeds is
        not its to run; :attr:`OrtGenai.scenarios` keeps prefill cells away.

        Raises:
            RuntimeUnavailable: always.
        """
        raise RuntimeUnavailable(f"{self.runtime} runs the generate scenario only: its Generator owns the inputs")

    def decoder(self, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int) -> GenaiDecodeLoop:
        """The Generator's greedy loop (:class:`GenaiDecodeLoop`) for the prompts ``input_ids`` int64 (B, T0),
        left-padded where ``attention_mask`` int64 (B, T0) is 0, and ``new_tokens`` tokens.

        Raises:
            GenerationError: for a request that cannot run (prompt + new tokens over the context length, ...),
                before any work.
            RuntimeUnavailable: for a graph whose layout cannot be read, a vocabulary size nothing gives, a padded
                batch of one row, or prompts that leave no token id free to mark padding.
        """
        import torch

        from ..export.decoder_layout import LayoutError, detect_layout
        from ..models import check_generation

        try:
            layout = detect_layout(self._artifact_path)
        except LayoutError as exc:
            raise RuntimeUnavailable(f"{self.runtime} cannot generate with this graph: {exc}") from None
        if layout.vocab_size is None:
            raise RuntimeUnavailable(f"{self._artifact_path}: no vocabulary size in the graph or {GENAI_CONFIG}")
        check_generation(layout, torch.from_numpy(np.ascontiguousarray(input_ids)), new_tokens,
                         torch.from_numpy(np.ascontiguousarray(attention_mask)))
        if input_ids.shape[0] == 1 and not np.all(attention_mask):
            raise RuntimeUnavailable(
                f"{self.runtime} does not run a padded batch of one row: the Generator keeps a single row's padding "
                "for the prefill only (measured with onnxruntime-genai 0.18: its decode steps then diverge; "
                "docs/generation.md, \"ONNX Runtime GenAI\"); padded batches of two rows or more run")
        pad_id = pad_token_for(input_ids, attention_mask, self._config_pad, layout.vocab_size)
        return GenaiDecodeLoop(self.model_for(pad_id), input_ids, attention_mask, new_tokens, pad_id,
                               layout.vocab_size)

    def synchronize(self) -> None:
        """On CUDA, wait for the device (the Generator's stream is its own): ``torch.cuda.synchronize``."""
        if self.provider_requested == "cuda":
            import torch

            torch.cuda.synchronize()

    def close(self) -> None:
        self._models.clear()


class OrtGenai(Runtime):
    """``ort-genai``: the ORT model builder's models run by ``onnxruntime_genai``'s Generator on the CPU
    (module docstring; docs/generation.md, "ONNX Runtime GenAI").

    Only the ``generate`` scenario (:attr:`scenarios`); only builder folders (other artifacts' generate cells are
    ``skipped`` naming the builder); of the quantized precisions ``int4-weight`` (:attr:`quantized_precisions`),
    which is the builder's own int4 model (MatMulNBits weights) on the ``builder`` export path.
    ``RuntimeOptions.intra_op_threads`` / ``inter_op_threads`` go to the model's session options.
    """

    name = "ort-genai"
    device = "cpu"
    in_default_matrix = False  # the default matrix's presets are not builder folders: every cell would be skipped
    thread_axis = True
    scenarios: ClassVar[tuple[str, ...] | None] = ("generate",)
    quantized_precisions = ("int4-weight",)  # the Generator runs the builder's MatMulNBits models

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            og = _genai()
        except Exception as exc:  # an absent or broken install must not crash `doctor`
            return False, f"onnxruntime_genai cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        return True, f"onnxruntime-genai {og.__version__}"

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: TypedOptions) -> Session:
        return GenaiSession(self.name, artifact, self.device, options)


class OrtGenaiCuda(OrtGenai):
    """``ort-genai-cuda``: as ``ort-genai`` with the Generator's CUDA provider, TF32 off; a model that runs on
    another device is refused. Not run on a GPU yet."""

    name = "ort-genai-cuda"
    device = "cuda"
    tolerances = CUDA_BANDS
    thread_axis = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, detail = OrtGenai.availability()
        if not ok:
            return ok, detail
        if not _genai().is_cuda_available():
            return False, f"{detail} has no CUDA provider here (onnxruntime_genai.is_cuda_available() is False)"
        probe = probes.ort_cuda_ep()
        return (True, f"{detail}, {probe.detail}") if probe.ok else (False, probe.detail)
