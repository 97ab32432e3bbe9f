"""ONNX Runtime: one session class for every execution provider (EP).

After a session is created the provider list is read back with ``InferenceSession.get_providers()``: ONNX
Runtime silently drops an EP it cannot load (onnxruntime-gpu on a machine without CUDA runs on the CPU EP and
only logs it), so a session whose first provider is not the requested one raises
:class:`~onnxbench.runtimes.base.RuntimeUnavailable` instead of producing numbers under the wrong name.

Docs: https://onnxruntime.ai/docs/api/python/api_summary.html (InferenceSession, SessionOptions, IOBinding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from ..export import ExportArtifact, TensorSpec
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session

GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
SESSION_OPTION_KEYS = {"graph_optimization_level", "execution_mode", "enable_profiling", "profile_prefix",
                       "log_severity_level", "allow_spinning", "transformer_optimizer"}


def session_options(options: RuntimeOptions) -> tuple[ort.SessionOptions, dict[str, Any]]:
    """Translate :class:`RuntimeOptions` into ``ort.SessionOptions`` and the flat record of what was set.

    Raises:
        ValueError: for an unknown graph optimization level or execution mode (lists the allowed values).
    """
    so = ort.SessionOptions()
    level = options.extra.get("graph_optimization_level", "all")
    mode = options.extra.get("execution_mode", "sequential")
    if level not in GRAPH_OPT_LEVELS:
        raise ValueError(f"graph_optimization_level must be one of {list(GRAPH_OPT_LEVELS)}, got {level!r}")
    if mode not in EXECUTION_MODES:
        raise ValueError(f"execution_mode must be one of {list(EXECUTION_MODES)}, got {mode!r}")
    so.graph_optimization_level = GRAPH_OPT_LEVELS[level]
    so.execution_mode = EXECUTION_MODES[mode]
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.log_severity_level = int(options.extra.get("log_severity_level", 3))
    record_extra = {}
    if "allow_spinning" in options.extra:
        # Busy-waiting intra-op threads help on an idle machine and hurt on a shared one (ORT threading docs).
        spin = bool(options.extra["allow_spinning"])
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        record_extra["allow_spinning"] = spin
    if options.extra.get("enable_profiling"):
        so.enable_profiling = True
        so.profile_file_prefix = str(options.extra.get("profile_prefix", "ort_profile"))
    record = {"graph_optimization_level": level, "execution_mode": mode,
              "intra_op_threads": options.intra_op_threads, "inter_op_threads": options.inter_op_threads,
              **record_extra}
    return so, record


class OrtSession(Session):
    """An ``onnxruntime.InferenceSession`` on one EP.

    ``run`` takes and returns host numpy arrays keyed by graph input/output names; ``prepare`` binds the
    inputs once through IOBinding (on the EP's device) so that the timed call is ``run_with_iobinding``.
    """

    def __init__(self, runtime: str, artifact: ExportArtifact, providers: list, device: str,
                 options: RuntimeOptions, device_id: int = 0) -> None:
        super().__init__()
        self.runtime = runtime
        self.device = device
        self.device_id = device_id
        requested = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        self.provider_requested = requested
        so, record = session_options(options)
        start = time.perf_counter()
        path = artifact.path
        if options.extra.get("transformer_optimizer"):
            from .ort_transformers import optimized_path

            path = optimized_path(artifact)
            record["transformer_optimizer"] = True
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
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

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values, strict=True))

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

    def end_profiling(self) -> str | None:
        """Stop ORT's profiler and return the JSON trace path (None when profiling was off)."""
        path = self.session.end_profiling()
        return path or None

    def close(self) -> None:
        self._binding = None
        self.session = None


def _np_dtype(onnx_type: str) -> str:
    # "tensor(float16)" -> "float16"; ORT spells float32 as "float" and float64 as "double".
    name = onnx_type.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(name, name)


class OrtCpu(Runtime):
    """ONNX Runtime with the CPU execution provider."""

    name = "ort-cpu"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            providers = ort.get_available_providers()
        except Exception as exc:  # a broken install must not crash `doctor`
            return False, f"onnxruntime unusable: {exc}"
        if "CPUExecutionProvider" not in providers:
            return False, f"CPUExecutionProvider missing from {providers}"
        return True, f"onnxruntime {ort.__version__}"

    def open(self, artifact: ExportArtifact, options: RuntimeOptions | None = None) -> Session:
        return OrtSession(self.name, artifact, ["CPUExecutionProvider"], "cpu", options or RuntimeOptions())
