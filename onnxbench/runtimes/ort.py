"""ONNX Runtime: one session class for every execution provider (EP).

After a session is created the provider list is read back with ``InferenceSession.get_providers()``: ONNX
Runtime silently drops an EP it cannot load (onnxruntime-gpu on a machine without CUDA runs on the CPU EP and
only logs it), so a session whose first provider is not the requested one raises
:class:`~onnxbench.runtimes.base.RuntimeUnavailable` instead of producing numbers under the wrong name.

Sessions are created with the Python API's retry disabled (``enable_fallback=0``): otherwise a session whose
creation *raises* (a graph the EP cannot partition, an engine build failure, a bad provider option) is
silently re-created on ``['CPUExecutionProvider']`` (``onnxruntime_inference_collection.py``,
``InferenceSession.__init__``), and the real error would read as "libraries missing". With the retry off the
error propagates and becomes a ``failed`` row quoting it.

Outputs come back as OrtValues (``run_with_ort_values``) and are converted to numpy here, bfloat16 ones through
DLPack into torch and widened to float32 (numpy has no bfloat16, and ``InferenceSession.run`` raises "No
corresponding Numpy type" for them).

Docs: https://onnxruntime.ai/docs/api/python/api_summary.html (InferenceSession, SessionOptions, IOBinding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ..env import cpu_counts
from ..errors import OptionError
from ..export import ExportArtifact, TensorSpec
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, TypedOptions, thread_counts
from .decode import DecodeLoop

GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}


@dataclass(frozen=True)
class OrtOptions(TypedOptions):
    """Session options every ONNX Runtime EP takes (``RuntimeOptions.extra`` keys).

    Attributes:
        graph_optimization_level: ``SessionOptions.graph_optimization_level``.
        execution_mode: ``SessionOptions.execution_mode``.
        enable_profiling / profile_prefix: write ORT's profiler trace with this file prefix.
        log_severity_level: ORT's log level (0 verbose .. 4 fatal).
        allow_spinning: ``session.intra_op.allow_spinning``; None leaves ORT's default (spinning on).
        transformer_optimizer: run ``onnxruntime.transformers``' fusions first (:mod:`.ort_transformers`).
        attention_fusion: run onnxscript's ONNX Runtime fusions first (MultiHeadAttention where the graph's
            attention matches; :func:`.ort_transformers.attention_fused_path`). Not with ``transformer_optimizer``.
        enable_cpu_mem_arena: ``SessionOptions.enable_cpu_mem_arena``. Off by default: the arena keeps the largest
            shape's buffers for the session's lifetime (arena shrinkage did not give them back, measured with
            onnxruntime 1.31), so a cell's ``peak_rss_mb`` would depend on the cells run before it
            (docs/schema.md); with it off, freed buffers go back to the OS.
    """

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    enable_profiling: bool = False
    profile_prefix: str = "ort_profile"
    log_severity_level: int = 3
    allow_spinning: bool | None = None
    transformer_optimizer: bool = False
    attention_fusion: bool = False
    enable_cpu_mem_arena: bool = False

    def __post_init__(self) -> None:
        if self.transformer_optimizer and self.attention_fusion:
            raise OptionError("transformer_optimizer and attention_fusion are two rewrites of the same graph; "
                              "set one of them")


def session_options(options: RuntimeOptions, typed: OrtOptions) -> tuple[ort.SessionOptions, dict[str, Any]]:
    """Translate :class:`RuntimeOptions` (threads) and the checked ``typed`` options into ``ort.SessionOptions``
    and the flat record of what was set."""
    so = ort.SessionOptions()
    so.graph_optimization_level = GRAPH_OPT_LEVELS[typed.graph_optimization_level]
    so.execution_mode = EXECUTION_MODES[typed.execution_mode]
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.log_severity_level = typed.log_severity_level
    so.enable_cpu_mem_arena = typed.enable_cpu_mem_arena
    record_extra = {}
    if typed.enable_cpu_mem_arena:
        record_extra["enable_cpu_mem_arena"] = True
    if typed.allow_spinning is not None:
        # Busy-waiting intra-op threads help on an idle machine and hurt on a shared one (ORT threading docs).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if typed.allow_spinning else "0")
        record_extra["allow_spinning"] = typed.allow_spinning
    if typed.enable_profiling:
        so.enable_profiling = True
        so.profile_file_prefix = typed.profile_prefix
    record = {"graph_optimization_level": typed.graph_optimization_level, "execution_mode": typed.execution_mode,
              "intra_op_threads": options.intra_op_threads, "inter_op_threads": options.inter_op_threads,
              **record_extra}
    return so, record


class OrtSession(Session):
    """An ``onnxruntime.InferenceSession`` on one EP.

    ``run`` takes and returns host numpy arrays keyed by graph input/output names; ``prepare`` binds the
    inputs once through IOBinding (on the EP's device) so that the timed call is ``run_with_iobinding``.
    """

    def __init__(self, runtime: str, artifact: ExportArtifact, providers: list, device: str,
                 options: RuntimeOptions, device_id: int = 0, typed: OrtOptions | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        self.device = device
        self.device_id = device_id
        requested = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        self.provider_requested = requested
        typed = typed if typed is not None else OrtOptions.from_dict(runtime, options.extra)
        so, record = session_options(options, typed)
        start = time.perf_counter()
        path = artifact.path
        if typed.transformer_optimizer:
            from .ort_transformers import optimized_path

            path = optimized_path(artifact)
            record["transformer_optimizer"] = True
        elif typed.attention_fusion:
            from .ort_transformers import attention_fused_path

            path = attention_fused_path(artifact)
            record["attention_fusion"] = True
        #: what the session was created from, so that a twin (the profiling one) is created identically
        self.creation = {"path": str(path), "options": options, "typed": typed, "providers": providers}
        self.session = create_session(str(path), so, providers)
        self.build_s = time.perf_counter() - start
        actual = self.session.get_providers()
        self.provider_actual = actual[0] if actual else "none"
        if self.provider_actual != requested:
            raise RuntimeUnavailable(
                f"ONNX Runtime fell back: asked for {requested}, session runs on {actual} "
                f"(onnxruntime {ort.__version__}; get_device()={ort.get_device()}); "
                "the EP's libraries or device are missing"
            )
        self.options = {**record, "providers": actual}
        self._inputs = tuple(
            TensorSpec(i.name, _np_dtype(i.type), tuple(d if isinstance(d, int) else str(d) for d in i.shape))
            for i in self.session.get_inputs()
        )
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._artifact_path = artifact.path  # the decode loop reads its cache layout from the file's graph

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _host_run_options(self) -> ort.RunOptions | None:
        """Run options of :meth:`run` (host feeds); subclasses keep CUDA graphs out of it."""
        return None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run_with_ort_values(self._output_names, ort_values(feeds), self._host_run_options())
        return {name: to_numpy(value) for name, value in zip(self._output_names, values, strict=True)}

    def profiling_twin(self, prefix: str) -> ort.InferenceSession:
        """A new session created exactly as this one was (same file, :class:`RuntimeOptions`, providers and
        provider options as passed, not as read back) with ORT's profiler on, writing to ``prefix``*.json."""
        so, _ = session_options(self.creation["options"], self.creation["typed"])
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        return create_session(self.creation["path"], so, self.creation["providers"])

    def prepare(self, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
        binding = self.session.io_binding()
        ort_device = "cuda" if self.device.startswith("cuda") else "cpu"
        for name, value in feeds.items():
            ortvalue = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), ort_device, self.device_id)
            binding.bind_ortvalue_input(name, ortvalue)
        for name in self._output_names:
            binding.bind_output(name, ort_device, self.device_id)
        self._binding = binding  # keep the bound OrtValues alive while the callable is in use
        return lambda: self.session.run_with_iobinding(binding)

    def decoder(self, input_ids: np.ndarray, attention_mask: np.ndarray, new_tokens: int) -> DecodeLoop:
        """Greedy decoding with every buffer bound once through IOBinding on the session's device, for the cache
        layout read from the graph (:func:`onnxbench.export.decoder_layout.detect_layout`; docs/generation.md):
        a concatenating cache (onnxbench's decoder-with-past export, or Hugging Face Optimum's with
        ``position_ids``) runs :class:`onnxbench.runtimes.ort_decode.OrtDecodeLoop` (ping-pong buffers); a cache
        updated in place (GroupQueryAttention over a shared buffer: ``ort-gqa-inplace``, the ORT model builder's
        files) runs :class:`onnxbench.runtimes.ort_decode.OrtInPlaceDecodeLoop`.

        Raises:
            GenerationError: for a request that cannot run, before any work.
            RuntimeUnavailable: for a graph that is not a decoder with a KV cache in a known layout, a bfloat16 cache, a
                vocabulary size the graph does not give, or CUDA graphs on (a captured graph replays fixed
                addresses; the loop binds other buffers per step).
        """
        from ..export.decoder_layout import LayoutError, detect_layout
        from .ort_decode import OrtDecodeLoop, OrtInPlaceDecodeLoop

        if self.options.get("cuda_graph"):
            raise RuntimeUnavailable("the decode loop binds different buffers per step, which a captured CUDA "
                                     "graph cannot replay; run the generate scenario with cuda_graph off")
        try:
            layout = detect_layout(self._artifact_path)
        except LayoutError as exc:
            raise RuntimeUnavailable(f"{self.runtime} cannot generate with this graph: {exc}") from None
        if layout.vocab_size is None:
            raise RuntimeUnavailable(f"{self._artifact_path}: the logits' vocabulary axis is symbolic and no "
                                     "config beside the file gives vocab_size, so the logits buffers cannot be "
                                     "allocated")
        if layout.shared_buffer:
            return OrtInPlaceDecodeLoop(self.session, layout, input_ids, attention_mask, new_tokens, self.device)
        return OrtDecodeLoop(self.session, layout, input_ids, attention_mask, new_tokens, self.device)

    def release_memory(self, feeds: dict[str, np.ndarray]) -> None:
        """Drop the previous cell's IOBinding (its bound inputs and outputs); with the CPU arena off
        (:class:`OrtOptions`) nothing else of an earlier shape stays resident."""
        self._binding = None

    def end_profiling(self) -> str | None:
        """Stop ORT's profiler and return the JSON trace path (None when profiling was off)."""
        path = self.session.end_profiling()
        return path or None

    def attention_placement(self, feeds: dict[str, np.ndarray]) -> str:
        """The EP(s) that ran the attention cores, from one inference of a profiling twin of this session
        (:func:`onnxbench.runtimes.ort_placement.profile_attention`). The same profile counts the nodes per EP
        (``options["nodes_by_provider"]``) and adds a note when float compute nodes left a GPU EP for the CPU EP."""
        from .ort_placement import profile_attention

        placement = profile_attention(self, feeds)
        self.options["nodes_by_provider"] = placement.nodes_by_provider
        left = placement.left_ep(self.provider_requested)
        if left and left not in self.notes:
            self.notes.append(left)
        return placement.summary

    def close(self) -> None:
        self._binding = None
        self.session = None


def ort_values(feeds: dict[str, np.ndarray]) -> dict[str, ort.OrtValue]:
    """Host numpy feeds as CPU OrtValues (for ``run_with_ort_values``)."""
    return {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)) for name, value in feeds.items()}


def create_session(path: str, so: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    """``ort.InferenceSession(path, so, providers)`` with the Python API's fallback retry disabled
    (``enable_fallback=0``), so that a creation error is raised rather than retried on the CPU EP.

    Raises:
        onnxruntime's exception (``Fail``, ``RuntimeException``, ``InvalidArgument``...) when creation fails.
    """
    return ort.InferenceSession(path, sess_options=so, providers=providers, enable_fallback=0)


#: ONNX TensorProto.BFLOAT16, as ``OrtValue.element_type()`` returns it.
_BFLOAT16 = 16


def to_numpy(value: ort.OrtValue) -> np.ndarray:
    """A host OrtValue as numpy; bfloat16 through DLPack into torch (CPU) and widened exactly to float32.

    Raises:
        RuntimeError: for an OrtValue that is not on the CPU (copy it to the host first).
    """
    if value.element_type() == _BFLOAT16:
        import torch

        return torch.from_dlpack(value).float().numpy()
    return value.numpy()


def _np_dtype(onnx_type: str) -> str:
    # "tensor(float16)" -> "float16"; ORT spells float32 as "float" and float64 as "double".
    name = onnx_type.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(name, name)


class OrtCpu(Runtime):
    """ONNX Runtime with the CPU execution provider.

    Tuning grid (ONNX Runtime threading and graph-optimisation docs:
    https://onnxruntime.ai/docs/performance/tune-performance/threading.html,
    https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html): the transformer
    optimizer's fusions (SkipLayerNorm, BiasGelu/FastGelu) on/off x intra-op spinning on/off; the attention
    fusion (onnxscript's ``optimize_for_ort``: MultiHeadAttention where the graph's attention matches, e.g. an
    ``sdpa`` export; https://onnxruntime.ai/docs/performance/transformers-optimization.html) x spinning on/off; and
    intra-op threads = 1, physical and logical cores (where not ORT's default of one per physical core). Left out after
    trying them: the parallel execution mode (100x slower on this sequential graph, tiny preset) and graph
    optimisation level ``extended`` (a subset of the default ``all``).
    """

    name = "ort-cpu"
    options_type = OrtOptions
    #: DynamicQuantizeLinear / MatMulInteger and their fused DynamicQuantizeMatMul / MatMulIntegerToFloat have CPU
    #: EP kernels, and so has MatMulNBits, int8 compute at accuracy_level 4 (docs/quantization.md)
    quantized_precisions = ("int8-dynamic", "int4-weight")
    thread_axis = True  # SessionOptions.intra_op_num_threads

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            providers = ort.get_available_providers()
        except Exception as exc:  # a broken install must not crash `doctor`
            return False, f"onnxruntime unusable: {exc}"
        if "CPUExecutionProvider" not in providers:
            return False, f"CPUExecutionProvider missing from {providers}"
        return True, f"onnxruntime {ort.__version__}"

    @classmethod
    def tuning_grid(cls) -> dict[str, RuntimeOptions]:
        fused, attention = {"transformer_optimizer": True}, {"attention_fusion": True}
        grid = {"nospin": RuntimeOptions(extra={"allow_spinning": False}),
                "fused": RuntimeOptions(extra=fused),
                "fused-nospin": RuntimeOptions(extra={**fused, "allow_spinning": False}),
                "attn-fused": RuntimeOptions(extra=attention),
                "attn-fused-nospin": RuntimeOptions(extra={**attention, "allow_spinning": False})}
        for threads in thread_counts(cpu_counts()[1] or cpu_counts()[0] or 0):
            grid[f"fused-{threads}t"] = RuntimeOptions(intra_op_threads=threads, extra=fused)
        return grid

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions, typed: OrtOptions) -> Session:
        return OrtSession(self.name, artifact, ["CPUExecutionProvider"], "cpu", options, typed=typed)
