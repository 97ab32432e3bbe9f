"""What a cell's outputs are compared with (docs/agreement.md).

- **Our own models** (presets, checkpoints, and an ONNX file run with ``--reference-model``): the torch module in
  **float64** on the CPU (:class:`TorchFloat64Reference`). The noise floor of the cell's precision is the same
  module at that precision against float64.
- **A user's ONNX file**: ONNX Runtime's CPU EP with **every graph optimization disabled**
  (``GraphOptimizationLevel.ORT_DISABLE_ALL``), so that optimizer and fusion faults of the optimized sessions
  show up (:class:`OnnxFileReference`); where the graph is small enough, also a float64 evaluation of it
  (``onnx.reference.ReferenceEvaluator`` on a float64 copy), against which the unoptimized session's error is the
  noise floor. A generation is checked by the same session recomputing the whole sequence from an empty cache
  (:meth:`OnnxFileReference.generation_expected`).

A quantized cell (``int8-dynamic``) is compared with the same float reference (float64 torch, or the float file on
ONNX Runtime without graph optimizations) but judged on the criteria of :mod:`onnxbench.benchmarks.verify.quantized`
(docs/quantization.md): it has no noise floor, since quantization error is not rounding error of a float
precision.

A row whose runtime and configuration are the reference's own (:meth:`Reference.is_self`) compares the reference
with itself: its verdict is ``reference``, never a pass. A prefill row that *is* the noise floor
(:meth:`Reference.is_floor`: torch eager at the cell's precision against the float64 torch reference) has the
verdict ``floor``, likewise neither a pass nor a fail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...export import ExportArtifact
from ...export.quantize import QUANTIZED_PRECISIONS
from ...models import TransformerConfig
from .fp64 import ForwardResult, TorchForwards, noise_floor, onnx_float64


@dataclass
class Expected:
    """What one set of feeds should produce.

    Attributes:
        outputs: output name -> the reference's values (the absolute band is applied against these).
        fp64: output name -> (float64 values, noise floor of the cell's precision); empty without a float64
            reference.
        fp64_blocks / floor_blocks: residual stream after each block in float64, and its noise floor per block
            (for locating the first diverging block); empty where unknown.
        note: why there is no float64 reference or floor (empty when there is one).
    """

    outputs: dict[str, np.ndarray]
    fp64: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    fp64_blocks: list[np.ndarray] = field(default_factory=list)
    floor_blocks: list[float] = field(default_factory=list)
    note: str = ""


class Reference:
    """A reference: what it is (:attr:`runtime`, :attr:`config`, :attr:`label`), whether a row is itself, and
    the expected outputs of feeds at a precision (:meth:`expected`, cached per feeds in memory)."""

    runtime: str = ""
    #: Session options that make a row of :attr:`runtime` *this* reference.
    config: dict = {}
    #: Blocks of the reference transformer, for locating divergence (0: not a block-structured model).
    n_layers: int = 0
    #: The vocabulary of the language model the reference is (a reference transformer's, a decoder file's), else
    #: None: the bound of generated token ids, and which outputs are vocabulary logits
    #: (:func:`onnxbench.benchmarks.verify.quantized.output_kind`).
    vocab_size: int | None = None

    def __init__(self) -> None:
        self._cache: dict[tuple, Expected] = {}
        self.seconds = 0.0

    @property
    def label(self) -> str:
        """What the reference is, as written in the ``reference_config`` column."""
        raise NotImplementedError

    def is_self(self, runtime: str, options: dict) -> bool:
        """Whether a row of ``runtime`` whose session reports ``options`` is this reference comparing itself."""
        return runtime == self.runtime and all(options.get(k) == v for k, v in self.config.items())

    def is_floor(self, runtime: str, options: dict) -> bool:
        """Whether a prefill row of ``runtime`` whose session reports ``options`` computes the noise floor itself,
        so that its floor ratio is 1 by construction (the default: no runtime does)."""
        return False

    def expected(self, feeds: dict[str, np.ndarray], precision: str) -> Expected:
        """The expected outputs of ``feeds`` for a cell of ``precision``. Only the latest feeds' are kept: a group
        measures each shape once, and older ones would count in later cells' ``peak_rss_mb``."""
        from .fp64 import feeds_digest

        key = (feeds_digest(feeds), precision)
        for other in [k for k in self._cache if k != key]:
            del self._cache[other]
        if key not in self._cache:
            t0 = time.perf_counter()
            self._cache[key] = self._expected(feeds, precision)
            self.seconds += time.perf_counter() - t0
        return self._cache[key]

    def _expected(self, feeds: dict[str, np.ndarray], precision: str) -> Expected:
        raise NotImplementedError

    def generation_expected(self, input_ids: np.ndarray, attention_mask: np.ndarray, tokens: np.ndarray,
                            precision: str) -> Expected:
        """What each step of a greedy generation should produce: the logits every token was chosen from, by the
        reference recomputing the whole sequence without a cache (docs/generation.md, "Agreement of a
        generation").

        Args:
            input_ids / attention_mask: int64 (B, T0), the prompts.
            tokens: int64 (B, N), the tokens the runtime chose.
            precision: the cell's precision (its noise floor).

        Returns:
            ``Expected`` with ``outputs["logits"]`` (B, N, vocab_size).

        Raises:
            NotImplementedError: for a reference that cannot recompute a sequence (a foreign ONNX file's).
        """
        raise NotImplementedError(f"the {self.label} reference has no generation reference")

    def close(self) -> None:
        self._cache.clear()


class TorchFloat64Reference(Reference):
    """The reference transformer in float64 (torch, CPU); its noise floor is the module at the cell's precision.

    Args:
        reference: the model (:class:`onnxbench.benchmarks.verify.fp64.TorchForwards`, which caches float64 results);
            its output is ``logits`` (``attention_output`` for the attention part), matched by name.
    """

    runtime = "torch"
    config = {"dtype": "float64"}

    def __init__(self, reference: TorchForwards) -> None:
        super().__init__()
        self.torch = reference
        self.n_layers = reference.model_config.n_layers if reference.part == "model" else 0
        self.vocab_size = reference.model_config.vocab_size

    @classmethod
    def of_artifact(cls, artifact: ExportArtifact, cache_dir: str | Path | None = None) -> TorchFloat64Reference:
        return cls(TorchForwards.of_artifact(artifact, cache_dir))

    @property
    def label(self) -> str:
        return "torch float64"

    def is_floor(self, runtime: str, options: dict) -> bool:
        """torch eager (``torch``, CPU) at any float precision p runs the module this reference runs at p for
        the noise floor: same weights, same attention implementation, same inputs (docs/agreement.md, "Floor
        rows")."""
        return runtime == "torch" and options.get("dtype") != "float64"

    def _expected(self, feeds: dict[str, np.ndarray], precision: str) -> Expected:
        ref64: ForwardResult = self.torch.float64(feeds)
        if precision in QUANTIZED_PRECISIONS:
            return Expected(dict(ref64.outputs))
        at_p = self.torch.at_precision(feeds, precision, keep=False)
        fp64 = {name: (y64, noise_floor(at_p.outputs[name], y64, precision)) for name, y64 in ref64.outputs.items()}
        floor_blocks = [noise_floor(h, h64, precision) for h, h64 in zip(at_p.blocks, ref64.blocks, strict=True)]
        return Expected(dict(ref64.outputs), fp64, ref64.blocks, floor_blocks)

    def generation_expected(self, input_ids: np.ndarray, attention_mask: np.ndarray, tokens: np.ndarray,
                            precision: str) -> Expected:
        """Teacher-forced: one float64 forward without a cache over the prompt followed by the runtime's own
        tokens (all but the last), whose positions T0 - 1 .. T0 + N - 2 are the logits of steps 0 .. N - 1 given
        exactly the runtime's inputs; the same forward at the cell's precision gives the noise floor. Step s's
        greedy token is then the argmax of step s's reference logits, and as long as the runtime's tokens equal
        these, its sequence is the reference's own greedy sequence. A quantized precision has no noise floor (no
        torch module runs its graph): the float64 logits only."""
        B, T0 = input_ids.shape
        n = tokens.shape[1]
        sequence = np.concatenate([input_ids, tokens[:, :n - 1]], axis=1)
        mask = np.concatenate([attention_mask, np.ones((B, n - 1), dtype=np.int64)], axis=1)
        t0 = time.perf_counter()
        y64 = self.torch.sequence_logits(sequence, mask, "fp64")[:, T0 - 1:]
        if precision in QUANTIZED_PRECISIONS:
            self.seconds += time.perf_counter() - t0
            return Expected({"logits": y64})
        y_p = self.torch.sequence_logits(sequence, mask, precision)[:, T0 - 1:]
        self.seconds += time.perf_counter() - t0
        return Expected({"logits": y64}, {"logits": (y64, noise_floor(y_p, y64, precision))})

    def close(self) -> None:
        super().close()
        self.torch.close()


class OnnxFileReference(Reference):
    """A foreign ONNX file's reference: ONNX Runtime CPU with every graph optimization disabled, and where the
    graph is small enough (:func:`onnxbench.benchmarks.verify.fp64.float64_size_problem`) a float64 evaluation of it
    whose error against the unoptimized session is the noise floor."""

    runtime = "ort-cpu"
    config = {"graph_optimization_level": "disable"}

    def __init__(self, artifact: ExportArtifact, vocab_size: int | None = None) -> None:
        super().__init__()
        self.artifact = artifact
        self.vocab_size = vocab_size
        self._session = None
        self._model = None

    @property
    def label(self) -> str:
        return "ort-cpu graph_optimization_level=disable"

    def _expected(self, feeds: dict[str, np.ndarray], precision: str) -> Expected:
        import onnx

        outputs = self._open().run(feeds)
        if precision in QUANTIZED_PRECISIONS:
            return Expected(outputs)
        try:
            if self._model is None:
                self._model = onnx.load(str(self.artifact.path))
            values = onnx_float64(self._model, feeds)
        except Exception as exc:  # too large, an operator the evaluator lacks, or its own error: no floor
            return Expected(outputs, note=f"no float64 evaluation of the graph: {type(exc).__name__}: {exc}")
        fp64 = {}
        for name, y in outputs.items():
            if np.issubdtype(y.dtype, np.floating) and name in values:
                fp64[name] = (values[name], noise_floor(y, values[name], precision))
        return Expected(outputs, fp64)

    def _open(self):
        from ... import runtimes
        from ...runtimes import RuntimeOptions

        if self._session is None:
            self._session = runtimes.get(self.runtime).open(self.artifact, RuntimeOptions(extra=dict(self.config)))
        return self._session

    def generation_expected(self, input_ids: np.ndarray, attention_mask: np.ndarray, tokens: np.ndarray,
                            precision: str) -> Expected:
        """Teacher-forced, as :meth:`TorchFloat64Reference.generation_expected` but with the file itself: one
        forward of the file on ONNX Runtime CPU without graph optimizations, from an empty cache, over the prompt
        followed by the runtime's own tokens (all but the last), fed as the file's decoder layout takes them
        (:meth:`DecoderLayout.forward_feeds <onnxbench.export.decoder_layout.DecoderLayout.forward_feeds>`:
        position ids for Optimum's, right padding for the ORT model builder's); positions T0 - 1 .. T0 + N - 2
        are the logits of steps 0 .. N - 1. Where the graph is small enough and has no contrib operators, the same
        forward in float64 (onnx's reference evaluator) gives the noise floor; else ``note`` says why not.

        Raises:
            LayoutError: for a file that is not a decoder with a KV cache in a known layout.
        """
        from ...export.decoder_layout import detect_layout

        layout = detect_layout(self.artifact.path)
        B, T0 = input_ids.shape
        n = tokens.shape[1]
        sequence = np.concatenate([input_ids, tokens[:, :n - 1]], axis=1).astype(np.int64)
        mask = np.concatenate([attention_mask, np.ones((B, n - 1), dtype=np.int64)], axis=1).astype(np.int64)
        feeds = layout.forward_feeds(sequence, mask)
        t0 = time.perf_counter()
        logits = self._open().run(feeds)["logits"]
        y = layout.logits_as_left_padded(logits, mask)[:, T0 - 1:]
        try:
            import onnx

            if self._model is None:
                self._model = onnx.load(str(self.artifact.path))
            # a padded query of the prompt has every key masked: its softmax row is NaN in the evaluator (never
            # compared: steps read real tokens' positions only), so numpy's warning is silenced, not the values
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                y64 = onnx_float64(self._model, feeds)["logits"]
        except Exception as exc:  # too large, an operator the evaluator lacks, or its own error: no floor
            self.seconds += time.perf_counter() - t0
            return Expected({"logits": y}, note=f"no float64 evaluation of the graph: {type(exc).__name__}: {exc}")
        self.seconds += time.perf_counter() - t0
        y64 = layout.logits_as_left_padded(y64, mask)[:, T0 - 1:]
        return Expected({"logits": y}, {"logits": (y64, noise_floor(y, y64, precision))})

    def close(self) -> None:
        super().close()
        if self._session is not None:
            self._session.close()
        self._session = self._model = None


def model_reference(model: str, seed: int, checkpoints: list[str] = (), part: str = "model",
                    cache_dir: str | Path | None = None) -> TorchFloat64Reference:
    """The float64 reference of a preset name or a checkpoint directory (``--reference-model``).

    Raises:
        KeyError: for a name that is neither a preset nor an existing checkpoint directory (lists the presets).
    """
    from ...models import PRESETS, checkpoint_config, checkpoint_sha256

    if model in PRESETS:
        return TorchFloat64Reference(TorchForwards(PRESETS[model], seed, part=part, cache_dir=cache_dir))
    path = Path(model)
    if path.is_dir():
        config: TransformerConfig = checkpoint_config(path)
        return TorchFloat64Reference(TorchForwards(config, None, str(path.resolve()), checkpoint_sha256(path),
                                                    part, cache_dir))
    raise KeyError(f"reference model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint "
                   "directory (config.json + model.safetensors)")
