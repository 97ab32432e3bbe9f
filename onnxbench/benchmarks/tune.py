"""Tuned runtime configurations: a small grid of the options that matter per runtime, searched per
(artifact, runtime) so that no runtime is understated because it ran with a poor configuration.

``onnxbench run --tune`` runs every cell with the runtime's defaults (``config_id = "default"``) and again with
the best configuration of the grid (``config_id = "tuned"``, its options in the ``options`` column). The search
times each candidate at every shape of the group with a short run of the timing harness and picks the lowest
geometric mean of the p50 latencies (one configuration for all shapes, as a deployment would use).

Grids (ONNX Runtime threading and graph-optimisation docs:
https://onnxruntime.ai/docs/performance/tune-performance/threading.html,
https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html):

- ``ort-cpu``: the transformer optimizer's fusions (SkipLayerNorm, BiasGelu/FastGelu) on/off x intra-op spinning
  on/off, and intra-op threads = 1, physical and logical cores (where not the default). Left out after trying
  them: the parallel execution mode (100x slower on this sequential graph, tiny preset) and graph optimisation
  level ``extended`` (a subset of the default ``all``); other ``ort-*`` (GPU EPs): the fusions on/off;
- ``torch``: ``inference_mode`` vs ``no_grad``, and threads = 1, physical and logical cores;
- ``torch-compile``: no grid (each configuration costs a full compile per shape).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import psutil

from .. import runtimes
from ..export import ExportArtifact
from ..runtimes import RuntimeOptions
from .inputs import make_feeds
from .timing import TimingConfig, measure

#: Short timing for the search; the chosen configuration is then timed with the matrix's own settings.
SEARCH_TIMING = TimingConfig(warmup_iters=0, min_iters=2, min_time_s=0.2, max_iters=50, max_time_s=10.0)


def _thread_counts(default: int) -> list[int]:
    # 1 thread too: on a shared machine a single thread can beat a team whose barriers wait on descheduled peers.
    counts = {1, psutil.cpu_count(logical=False) or 0, psutil.cpu_count(logical=True) or 0}
    return sorted(c for c in counts if c > 0 and c != default)


def grid(runtime: str) -> dict[str, RuntimeOptions]:
    """Candidate configurations ``{config name: RuntimeOptions}`` for ``runtime`` (empty: nothing to tune).

    The runtime's defaults are always a candidate (named ``"default"``), so the tuned configuration is never
    worse than the default as measured by the search. Thread counts equal to the runtime's default are left out.
    """
    candidates: dict[str, RuntimeOptions] = {"default": RuntimeOptions()}
    if runtime.startswith("ort-") and runtime != "ort-cpu":  # GPU EPs: CPU threading does not apply
        candidates["fused"] = RuntimeOptions(extra={"transformer_optimizer": True})
    elif runtime == "ort-cpu":
        candidates["nospin"] = RuntimeOptions(extra={"allow_spinning": False})
        candidates["fused"] = RuntimeOptions(extra={"transformer_optimizer": True})
        candidates["fused-nospin"] = RuntimeOptions(extra={"transformer_optimizer": True, "allow_spinning": False})
        # ORT's default intra-op pool has one thread per physical core.
        for threads in _thread_counts(psutil.cpu_count(logical=False) or 0):
            candidates[f"fused-{threads}t"] = RuntimeOptions(intra_op_threads=threads,
                                                            extra={"transformer_optimizer": True})
    elif runtime == "torch":
        import torch

        candidates["no_grad"] = RuntimeOptions(extra={"inference_mode": False})
        for threads in _thread_counts(torch.get_num_threads()):
            candidates[f"{threads}t"] = RuntimeOptions(intra_op_threads=threads)
    else:
        return {}
    return candidates


@dataclass
class TuneResult:
    """Outcome of :func:`search`.

    Attributes:
        best: name of the winning configuration (None if every candidate failed).
        options: its :class:`RuntimeOptions`.
        p50_ms: ``{config name: {"BxT": p50 ms}}`` of every candidate that ran.
        score_ms: ``{config name: geometric mean p50 over the shapes}``.
        errors: ``{config name: "ExcType: message"}`` for candidates that failed to open or run.
    """

    best: str | None = None
    options: RuntimeOptions | None = None
    p50_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    score_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"best": self.best, "p50_ms": self.p50_ms, "score_ms": self.score_ms, "errors": self.errors}


def search(runtime: str, artifact: ExportArtifact, shapes: list[tuple[int, int]], *, seed: int = 0,
           timing: TimingConfig = SEARCH_TIMING, candidates: dict[str, RuntimeOptions] | None = None,
           axis_ranges: dict[str, tuple[int, int, int]] | None = None) -> TuneResult:
    """Time every candidate configuration of ``runtime`` on ``artifact`` at each (batch, seq_len) in ``shapes``
    and return the best (lowest geometric-mean p50). Candidates that fail are recorded, not raised.

    Args:
        runtime: registry name.
        artifact: the exported model.
        shapes: (batch, seq_len) pairs; ``input_ids`` int64 (B, T) drawn like the matrix's feeds.
        seed: input seed.
        timing: timing-harness settings for each candidate and shape.
        candidates: override :func:`grid` (tests).
        axis_ranges: the shape ranges sessions must accept (``RuntimeOptions.axis_ranges``; TensorRT profiles).
    """
    result = TuneResult()
    candidates = grid(runtime) if candidates is None else candidates
    vocab = artifact.config.vocab_size if artifact.config else 2
    for name, options in candidates.items():
        try:
            opened = dataclasses.replace(options, axis_ranges=axis_ranges or options.axis_ranges)
            with runtimes.get(runtime).open(artifact, opened) as session:
                per_shape = {}
                for batch, seq_len in shapes:
                    feeds = make_feeds(session.inputs(), batch, seq_len, seed=seed, int_high=vocab)
                    session.run(feeds)  # the warm-up: first call at a shape (allocator, compilation)
                    stats, _ = measure(session.prepare(feeds), session.synchronize, timing)
                    per_shape[f"{batch}x{seq_len}"] = stats.latency_ms_p50
        except Exception as exc:  # a candidate the runtime rejects must not end the search
            result.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        result.p50_ms[name] = per_shape
        result.score_ms[name] = math.exp(sum(math.log(v) for v in per_shape.values()) / len(per_shape))
    if result.score_ms:
        result.best = min(result.score_ms, key=result.score_ms.get)
        result.options = candidates[result.best]
    return result
