"""Which execution provider (EP) ran the attention: read from ONNX Runtime's profiler.

ONNX Runtime's profiler (``SessionOptions.enable_profiling``) writes a Chrome-trace JSON in which every kernel
launch is an event with ``"cat": "Node"`` and ``args`` holding ``op_name`` and ``provider``
(https://onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html). After graph optimisation the
nodes that ran may differ from the file's (fusions, EP partitioning), so the profile, not the ONNX file, says
where attention ran. A fused or ONNX ``Attention`` node that the requested EP does not implement runs on another
EP (usually the CPU EP); the summary names every EP seen, so the row shows it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Op types (any domain) that are an attention core: a fused attention kernel, or the Softmax of the
#: decomposed form (each block has exactly one).
ATTENTION_CORE_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                                "PackedMultiHeadAttention", "Softmax"})


@dataclass(frozen=True)
class AttentionPlacement:
    """Where the attention cores ran in one profiled inference.

    Attributes:
        by_provider: EP name -> number of attention-core kernel launches it ran.
        by_op: ``"op_type@EP"`` -> launches (e.g. ``{"MultiHeadAttention@CPUExecutionProvider": 2}``).
    """

    by_provider: dict[str, int]
    by_op: dict[str, int]
    nodes_by_provider: dict[str, int] = dataclasses.field(default_factory=dict)
    cpu_compute_ops: dict[str, int] = dataclasses.field(default_factory=dict)

    def left_ep(self, requested: str) -> str | None:
        """A warning naming the float compute nodes that ran on the CPU EP although ``requested`` (a GPU EP)
        was asked for, or None. Shape computations (integer outputs) on the CPU EP are expected: ONNX Runtime
        places them there on purpose (``GetCpuPreferredNodes``)."""
        if requested == "CPUExecutionProvider" or not self.cpu_compute_ops:
            return None
        n = sum(self.cpu_compute_ops.values())
        ops = ", ".join(f"{op}×{k}" for op, k in sorted(self.cpu_compute_ops.items()))
        return f"warning: {n} compute node(s) left {requested} for the CPU EP ({ops})"

    @property
    def summary(self) -> str:
        """One EP name when a single EP ran every core; else ``"EP_A:n,EP_B:m"``; ``"none"`` if none ran."""
        if not self.by_provider:
            return "none"
        if len(self.by_provider) == 1:
            return next(iter(self.by_provider))
        return ",".join(f"{ep}:{n}" for ep, n in sorted(self.by_provider.items()))


def parse_profile(path: str | Path, ops: frozenset[str] = ATTENTION_CORE_OPS) -> AttentionPlacement:
    """Read an ONNX Runtime profile JSON and count the kernel launches of ``ops`` per EP.

    Raises:
        ValueError: if the file is not an ONNX Runtime profile (not a JSON list of trace events).
    """
    events = json.loads(Path(path).read_text())
    if not isinstance(events, list):
        raise ValueError(f"{path} is not an ONNX Runtime profile (expected a JSON list of trace events)")
    kernels = [e["args"] for e in events
               if e.get("cat") == "Node" and "provider" in (e.get("args") or {})
               # fence_before / fence_after events repeat the node
               and str(e.get("name", "")).endswith("_kernel_time")]
    cores = [(a["op_name"], a["provider"]) for a in kernels if a.get("op_name") in ops]
    if not cores:
        # An EP without a kernel for the dtype (e.g. fp16 Softmax on the CPU EP) runs the op's ONNX function
        # body instead: ReduceMax, Sub, Exp, ReduceSum, Div under generic names. Exp occurs in this model's
        # graphs only inside softmax (GELU uses Tanh or Erf), so it marks the expanded softmax.
        cores = [("Softmax(expanded)", a["provider"]) for a in kernels if a.get("op_name") == "Exp"]
    providers = collections.Counter(ep for _, ep in cores)
    by_op = collections.Counter(f"{op}@{ep}" for op, ep in cores)
    nodes = collections.Counter(a["provider"] for a in kernels)
    cpu_compute = collections.Counter(a.get("op_name", "?") for a in kernels
                                      if a["provider"] == "CPUExecutionProvider" and _float_output(a))
    return AttentionPlacement(dict(providers), dict(by_op), dict(nodes), dict(cpu_compute))


FLOAT_TYPES = frozenset({"float", "float16", "bfloat16", "double"})


def _float_output(args: dict) -> bool:
    """Whether a profiled node produced a floating-point tensor (``output_type_shape``: [{"float": [2, 3]}])."""
    return any(t in FLOAT_TYPES for shape in args.get("output_type_shape") or [] for t in shape)


def profile_attention(session, feeds: dict[str, np.ndarray]) -> AttentionPlacement:
    """Open a profiling twin of ``session`` (an :class:`onnxbench.runtimes.ort.OrtSession`: same file, session
    options, providers and provider options *as the session was created with*, not as read back), run ``feeds``
    once and return where the attention cores and the float compute nodes ran. The twin keeps profiling out of
    the timed session.

    Args:
        session: the session to mirror.
        feeds: one inference's inputs (host numpy arrays keyed by input name).

    Raises:
        onnxruntime exceptions if the twin cannot be created or run.
    """
    with tempfile.TemporaryDirectory(prefix="onnxbench-prof-") as tmp:
        twin = session.profiling_twin(os.path.join(tmp, "ort"))
        twin.run_with_ort_values(None, {k: _ortvalue(v) for k, v in feeds.items()})
        return parse_profile(twin.end_profiling())


def _ortvalue(value: np.ndarray):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
