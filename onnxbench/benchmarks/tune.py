"""Tuned runtime configurations: a small grid of the options that matter per runtime, searched per
(artifact, runtime) so that no runtime is understated because it ran with a poor configuration.

``onnxbench run --tune`` runs every cell with the runtime's defaults (``config_id = "default"``) and again with
the best configuration of the grid (``config_id = "tuned"``, its options in the ``options`` column). The search
times each candidate at every shape of the group with a short run of the timing harness and picks the lowest
geometric mean of the p50 latencies (one configuration for all shapes, as a deployment would use).

Each runtime declares its own grid (``Runtime.tuning_grid``, documented on the runtime class); the runtime's
defaults are always a candidate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import runtimes
from ..export import ExportArtifact, TensorSpec
from ..runtimes import RuntimeOptions
from .inputs import make_feeds
from .timing import TimingConfig, measure

#: Short timing for the search; the chosen configuration is then timed with the matrix's own settings.
SEARCH_TIMING = TimingConfig(warmup_iters=0, min_iters=2, min_time_s=0.2, max_iters=50, max_time_s=10.0)


def grid(runtime: str) -> dict[str, RuntimeOptions]:
    """Candidate configurations ``{config name: RuntimeOptions}`` for ``runtime`` (empty: nothing to tune): the
    defaults (named ``"default"``, so the tuned configuration is never worse than the default as measured by the
    search) and the runtime's :meth:`~onnxbench.runtimes.Runtime.tuning_grid`.

    Raises:
        KeyError: for an unknown runtime.
    """
    candidates = runtimes.runtime_class(runtime).tuning_grid()
    return {"default": RuntimeOptions(), **candidates} if candidates else {}


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
           axis_ranges: dict[str, tuple[int, int, int]] | None = None,
           feeds: Callable[[tuple[TensorSpec, ...], int, int], dict[str, np.ndarray]] | None = None) -> TuneResult:
    """Time every candidate configuration of ``runtime`` on ``artifact`` at each (batch, seq_len) in ``shapes``
    and return the best (lowest geometric-mean p50). Candidates that fail are recorded, not raised.

    Args:
        runtime: registry name.
        artifact: the exported model.
        shapes: (batch, seq_len) pairs.
        seed: input seed of the default ``feeds``.
        timing: timing-harness settings for each candidate and shape.
        candidates: override :func:`grid` (tests).
        axis_ranges: the shape ranges sessions must accept (``RuntimeOptions.axis_ranges``; TensorRT profiles).
        feeds: ``feeds(input specs, batch, seq_len)`` -> inputs, e.g. the model source's
            (:meth:`onnxbench.benchmarks.sources.ModelSource.feeds`); default: ``input_ids`` int64 (B, T) below the
            artifact's ``vocab_size``.
    """
    result = TuneResult()
    candidates = grid(runtime) if candidates is None else candidates
    if feeds is None:
        vocab = artifact.config.vocab_size if artifact.config else 2

        def feeds(specs, batch, seq_len):
            return make_feeds(specs, batch, seq_len, seed=seed, int_high=vocab)
    for name, options in candidates.items():
        try:
            opened = dataclasses.replace(options, axis_ranges=axis_ranges or options.axis_ranges)
            with runtimes.get(runtime).open(artifact, opened) as session:
                per_shape = {}
                for batch, seq_len in shapes:
                    inputs = feeds(session.inputs(), batch, seq_len)
                    session.run(inputs)  # the warm-up: first call at a shape (allocator, compilation)
                    stats, _ = measure(session.prepare(inputs), session.synchronize, timing)
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
