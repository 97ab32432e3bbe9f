"""Tuned runtime configurations: a small grid of the options that matter per runtime, searched per
(artifact, runtime) and chosen **per shape**, so that no runtime is understated because it ran with a poor
configuration.

``onnxbench run --tune`` runs every cell with the runtime's defaults (``config_id = "default"``) and adds one
``config_id = "tuned"`` row per cell, whose ``options`` name the configuration that won at that cell's shape
(``tune_config``). The search (:func:`search`) times each candidate at every shape of the group with a short run of
the timing harness. At each shape the fastest candidate (lowest p50) wins only if it is **distinguishably** faster
than the default: its 95% confidence interval of the median lies wholly below the default's (the rule of
``onnxbench compare``); otherwise the default configuration is the shape's tuned one. The runner then measures the
tuned cells with the matrix's timing and keeps each tuned row no slower than the default beyond the cell's CI
(:func:`onnxbench.benchmarks.run.runner.run_matrix`; why per shape and the rules: docs/measurement.md "Tuning").

Each runtime declares its own grid (``Runtime.tuning_grid``, documented on the runtime class); the runtime's
defaults are always a candidate, named ``"default"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ... import runtimes
from ...export import ExportArtifact, TensorSpec
from ...runtimes import RuntimeOptions
from ..inputs import make_feeds
from .timing import TimingConfig, measure

#: Short timing for the search (the chosen configuration is then timed with the matrix's own settings): at least 8
#: iterations, the fewest for which the order-statistics CI of the median (:func:`.timing.median_ci95`) is
#: narrower than the samples' range, unless 10 s are spent first.
SEARCH_TIMING = TimingConfig(warmup_iters=1, min_iters=8, min_time_s=0.3, max_iters=200, max_time_s=10.0)

#: The name of the runtime's default configuration among the candidates.
DEFAULT = "default"


def grid(runtime: str) -> dict[str, RuntimeOptions]:
    """Candidate configurations ``{config name: RuntimeOptions}`` for ``runtime`` (empty: nothing to tune): the
    defaults (named ``"default"``, so the tuned configuration is never worse than the default as measured by the
    search) and the runtime's :meth:`~onnxbench.runtimes.Runtime.tuning_grid`.

    Raises:
        KeyError: for an unknown runtime.
    """
    candidates = runtimes.runtime_class(runtime).tuning_grid()
    return {DEFAULT: RuntimeOptions(), **candidates} if candidates else {}


def shape_key(batch: int, seq_len: int) -> str:
    """``"BxT"``, the key of a shape in :class:`TuneResult`."""
    return f"{batch}x{seq_len}"


@dataclass
class TuneResult:
    """Outcome of :func:`search`.

    Attributes:
        best: ``{"BxT": config name}``, the configuration chosen at each shape (:func:`choose`); a shape where no
            candidate ran is absent.
        candidates: ``{config name: RuntimeOptions}`` searched.
        p50_ms: ``{config name: {"BxT": p50 ms}}`` of every candidate that ran.
        ci95_ms: ``{config name: {"BxT": [lo, hi]}}``, the 95% CI of each p50 (ms).
        why: ``{"BxT": sentence}``, why the shape's configuration won (or why the default was kept).
        errors: ``{config name: "ExcType: message"}`` for candidates that failed to open or run.
    """

    best: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, RuntimeOptions] = field(default_factory=dict)
    p50_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    ci95_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def options(self, name: str) -> RuntimeOptions:
        """The :class:`RuntimeOptions` of candidate ``name``."""
        return self.candidates[name]

    def as_dict(self) -> dict:
        return {"best": self.best, "p50_ms": self.p50_ms, "ci95_ms": self.ci95_ms, "why": self.why,
                "errors": self.errors}


def choose(p50_ms: dict[str, float], ci95_ms: dict[str, tuple[float, float]]) -> tuple[str, str]:
    """The configuration for one shape and why, from each candidate's p50 and its 95% CI (ms) at that shape.

    The fastest candidate wins if the default did not run, or if its CI lies wholly below the default's
    (``hi < default's lo``: distinguishably faster, the rule of docs/measurement.md); otherwise the default is kept.

    Raises:
        ValueError: for no candidates.
    """
    if not p50_ms:
        raise ValueError("no candidate ran at this shape")
    fastest = min(p50_ms, key=p50_ms.get)
    if fastest == DEFAULT:
        return DEFAULT, "the default was the fastest"
    if DEFAULT not in p50_ms:
        return fastest, "the fastest; the default did not run"
    lo, hi = ci95_ms[fastest]
    d_lo, d_hi = ci95_ms[DEFAULT]
    ratio = p50_ms[fastest] / p50_ms[DEFAULT]
    if hi < d_lo:
        return fastest, f"{ratio:.2f}x the default's p50, CI95 [{lo:.3g}, {hi:.3g}] ms below [{d_lo:.3g}, {d_hi:.3g}]"
    return DEFAULT, (f"default kept: the fastest, {fastest} ({ratio:.2f}x), is not distinguishably faster "
                     f"(CI95 [{lo:.3g}, {hi:.3g}] ms overlaps the default's [{d_lo:.3g}, {d_hi:.3g}])")


def search(runtime: str, artifact: ExportArtifact, shapes: list[tuple[int, int]], *, seed: int = 0,
           timing: TimingConfig = SEARCH_TIMING, candidates: dict[str, RuntimeOptions] | None = None,
           profile_ranges: dict[str, tuple[int, int, int]] | None = None,
           feeds: Callable[[tuple[TensorSpec, ...], int, int], dict[str, np.ndarray]] | None = None) -> TuneResult:
    """Time every candidate configuration of ``runtime`` on ``artifact`` at each (batch, seq_len) in ``shapes``
    and choose one per shape (:func:`choose`). Candidates that fail are recorded, not raised.

    Args:
        runtime: registry name.
        artifact: the exported model.
        shapes: (batch, seq_len) pairs.
        seed: input seed of the default ``feeds``.
        timing: timing-harness settings for each candidate and shape.
        candidates: override :func:`grid` (tests).
        profile_ranges: the shape ranges sessions must accept (``RuntimeOptions.profile_ranges``; TensorRT profiles).
        feeds: ``feeds(input specs, batch, seq_len)`` -> inputs, e.g. the model source's
            (:meth:`onnxbench.benchmarks.plan.sources.ModelSource.feeds`); default: ``input_ids`` int64 (B, T) below the
            artifact's ``vocab_size``.
    """
    candidates = grid(runtime) if candidates is None else candidates
    result = TuneResult(candidates=dict(candidates))
    if feeds is None:
        vocab = artifact.config.vocab_size if artifact.config else 2

        def feeds(specs, batch, seq_len):
            return make_feeds(specs, batch, seq_len, seed=seed, int_high=vocab)
    for name, options in candidates.items():
        per_shape, ci = {}, {}
        try:
            opened = dataclasses.replace(options, profile_ranges=profile_ranges or options.profile_ranges)
            with runtimes.get(runtime).open(artifact, opened) as session:
                for batch, seq_len in shapes:
                    inputs = feeds(session.inputs(), batch, seq_len)
                    session.run(inputs)  # the first call at a shape (allocator, compilation) is not timed
                    stats, _ = measure(session.prepare(inputs), session.synchronize, timing)
                    per_shape[shape_key(batch, seq_len)] = stats.latency_ms_p50
                    ci[shape_key(batch, seq_len)] = [stats.ci95_p50_lo_ms, stats.ci95_p50_hi_ms]
        except Exception as exc:  # a candidate the runtime rejects must not end the search
            result.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        result.p50_ms[name] = per_shape
        result.ci95_ms[name] = ci
    for batch, seq_len in shapes:
        key = shape_key(batch, seq_len)
        ran = {name: p50[key] for name, p50 in result.p50_ms.items() if key in p50}
        if ran:
            result.best[key], result.why[key] = choose(ran, {n: tuple(result.ci95_ms[n][key]) for n in ran})
    return result
