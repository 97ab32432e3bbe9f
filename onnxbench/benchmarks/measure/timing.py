"""The timing harness: the only place in onnxbench that reads a clock around an inference.

Method: warm up at the shape being timed (allocators, kernel selection and engine tactics are per shape),
then time single iterations with ``time.perf_counter_ns`` until both a minimum count and a minimum total
duration are reached, calling the session's ``synchronize`` inside every timed region so that asynchronous
devices are measured to completion.

Two clocks: the latency columns are host time (``perf_counter_ns`` around launch + synchronize, what a caller
waits). Where a session offers a device clock (CUDA events on its stream, ``Session.device_timer``), the GPU
split (``h2d_ms``, ``compute_ms``, ``d2h_ms``) and the CUDA ceilings are device time between two events, as
trtexec reports "GPU Compute Time" and its H2D / D2H latencies
(https://docs.nvidia.com/deeplearning/tensorrt/latest/performance/best-practices.html).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..rows import Timing


@dataclass(frozen=True)
class TimingConfig:
    """How long to time one cell.

    Attributes:
        warmup_iters: untimed iterations at the timed shape.
        min_iters: at least this many timed iterations...
        min_time_s: ...and at least this much timed wall time (seconds).
        max_iters: hard cap on timed iterations.
        max_time_s: stop after this much timed wall time even if ``min_iters`` is not reached (seconds);
            a very slow cell then reports fewer iterations rather than blocking the matrix.
    """

    warmup_iters: int = 3
    min_iters: int = 10
    min_time_s: float = 1.0
    max_iters: int = 10_000
    max_time_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_iters < 1 or self.max_iters < self.min_iters:
            raise ValueError(f"need 1 <= min_iters (--min-iters) <= max_iters, got {self.min_iters}, "
                             f"{self.max_iters}")
        bad = [f"{name} = {value}" for name, value, ok in (
            ("warmup_iters", self.warmup_iters, self.warmup_iters >= 0),
            ("min_time_s (--min-time)", self.min_time_s, self.min_time_s >= 0),
            ("max_time_s", self.max_time_s, self.max_time_s > 0)) if not ok]
        if bad:
            raise ValueError(f"{', '.join(bad)}: warmup_iters and min_time_s must be >= 0, max_time_s > 0")


def median_ci95(samples: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median from order statistics.

    Ranks ``n/2 -+ 1.96 * sqrt(n)/2`` (normal approximation to the Binomial(n, 1/2) count of samples below
    the median; Conover, *Practical Nonparametric Statistics*, 3rd ed., §3.2). For n < 6 the interval is
    the sample range. Returns (lo, hi) in the samples' unit.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    if n < 6:
        return float(x[0]), float(x[-1])
    half = 1.96 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(x[lo]), float(x[hi])


def summarize(samples_ns: np.ndarray, warmup_iters: int) -> Timing:
    """Statistics of per-iteration durations given in nanoseconds.

    Raises:
        ValueError: if there are no samples.
    """
    if len(samples_ns) == 0:
        raise ValueError("no timed iterations")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    lo, hi = median_ci95(ms)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Timing(warmup_iters, len(ms), mean, p50, p90, p99, float(ms.min()), std, lo, hi,
                  std / mean if mean > 0 else float("nan"))


def _timed_ns(fn: Callable[[], object], synchronize: Callable[[], None], device_timer) -> int:
    """One timed region in ns: host ``perf_counter_ns`` around ``fn(); synchronize()``, or with ``device_timer``
    the device time between events recorded before and after ``fn`` (read after ``synchronize``)."""
    if device_timer is None:
        t0 = time.perf_counter_ns()
        fn()
        synchronize()
        return time.perf_counter_ns() - t0
    device_timer.start()
    fn()
    device_timer.stop()
    synchronize()
    return int(device_timer.elapsed_ms() * 1e6)


def measure(fn: Callable[[], object], synchronize: Callable[[], None] = lambda: None,
            config: TimingConfig | None = None, device_timer=None) -> tuple[Timing, np.ndarray]:
    """Time ``fn`` (one inference on already-bound inputs).

    Each timed region is ``fn(); synchronize()`` on the host clock, or, with ``device_timer`` (a
    :class:`onnxbench.runtimes.base.DeviceTimer`), the device time between CUDA events around ``fn`` (used for
    the GPU ceilings). Returns the statistics and the raw per-iteration durations in nanoseconds (int64 array).
    """
    config = config or TimingConfig()
    for _ in range(config.warmup_iters):
        fn()
        synchronize()
    samples: list[int] = []
    total = 0
    min_ns, max_ns = int(config.min_time_s * 1e9), int(config.max_time_s * 1e9)
    while len(samples) < config.max_iters:
        dt = _timed_ns(fn, synchronize, device_timer)
        samples.append(dt)
        total += dt
        if (len(samples) >= config.min_iters and total >= min_ns) or total >= max_ns:
            break
    raw = np.asarray(samples, dtype=np.int64)
    return summarize(raw, config.warmup_iters), raw


def measure_stages(stages: dict[str, Callable[[], object]], synchronize: Callable[[], None] = lambda: None,
                   config: TimingConfig | None = None, device_timer=None) -> dict[str, float]:
    """Median milliseconds of each stage of an inference, the split trtexec reports (H2D latency, GPU compute
    time, D2H latency; https://docs.nvidia.com/deeplearning/tensorrt/latest/performance/best-practices.html).

    ``stages`` run in their order once per iteration; each stage is its own timed region
    ``stage(); synchronize()``, so device work is measured to completion and stages do not overlap (unlike
    trtexec's default, which overlaps copies of one iteration with compute of the next). Warm-up runs every
    stage ``config.warmup_iters`` times; then ``config.min_iters`` iterations (or until ``config.max_time_s``).
    With ``device_timer`` (CUDA events on the session's stream) each stage's time is the device time between an
    event recorded before and one after it, as trtexec measures; without, host time around it.

    Returns ``{stage name: median ms}``.

    Raises:
        ValueError: for no stages.
    """
    if not stages:
        raise ValueError("no stages to time")
    config = config or TimingConfig()
    for _ in range(config.warmup_iters):
        for fn in stages.values():
            fn()
            synchronize()
    samples: dict[str, list[int]] = {name: [] for name in stages}
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(config.min_iters):
        for name, fn in stages.items():
            samples[name].append(_timed_ns(fn, synchronize, device_timer))
        if clock() - start >= config.max_time_s * 1e9:
            break
    return {name: float(np.median(ns)) / 1e6 for name, ns in samples.items()}


@dataclass(frozen=True)
class GenerationTiming:
    """Timing of greedy generations (:func:`measure_generation`), in milliseconds.

    Attributes:
        ttft: time to first token: the prefill of the prompt and the choice of token 0, one sample per generation.
        tpot: time per output token: one decode step (the step, its cache update and the greedy choice), one
            sample per step of every generation.
        e2e_ms: median end-to-end time of one generation (prefill + N - 1 steps, host clock around the whole).
        generations: timed generations.
    """

    ttft: Timing
    tpot: Timing
    e2e_ms: float
    generations: int


def measure_generation(reset: Callable[[], object], prefill: Callable[[], object], step: Callable[[], object],
                       steps: int, synchronize: Callable[[], None] = lambda: None,
                       config: TimingConfig | None = None) -> GenerationTiming:
    """Time whole greedy generations: ``reset()`` (untimed), then ``prefill()`` as one timed region (TTFT) and each
    of the ``steps`` calls of ``step()`` as its own timed region (TPOT), ``synchronize()`` inside each, as
    :func:`measure` does; the host clock also runs around the whole generation (end-to-end).

    ``config``'s counts are generations: ``warmup_iters`` untimed generations, then at least ``min_iters`` and
    ``min_time_s`` of them, at most ``max_iters`` or ``max_time_s``. ``steps`` may be 0 (one new token: the
    prefill alone), in which case the TPOT statistics are NaN.

    Raises:
        ValueError: for ``steps`` < 0.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    config = config or TimingConfig()

    def generate() -> None:
        reset()
        prefill()
        for _ in range(steps):
            step()
        synchronize()

    for _ in range(config.warmup_iters):
        generate()
    first, per_step, whole = [], [], []
    total = 0
    min_ns, max_ns = int(config.min_time_s * 1e9), int(config.max_time_s * 1e9)
    while len(first) < config.max_iters:
        reset()
        t0 = time.perf_counter_ns()
        first.append(_timed_ns(prefill, synchronize, None))
        per_step.extend(_timed_ns(step, synchronize, None) for _ in range(steps))
        whole.append(time.perf_counter_ns() - t0)
        total += whole[-1]
        if (len(first) >= config.min_iters and total >= min_ns) or total >= max_ns:
            break
    nan = Timing(config.warmup_iters, 0, *([float("nan")] * 9))
    tpot = summarize(np.asarray(per_step, dtype=np.int64), config.warmup_iters) if per_step else nan
    return GenerationTiming(summarize(np.asarray(first, dtype=np.int64), config.warmup_iters), tpot,
                            float(np.median(whole)) / 1e6, len(first))


def harness_overhead_ms(config: TimingConfig | None = None) -> float:
    """Median cost in ms of one timed iteration around a no-op: what ``measure`` adds to every sample."""
    cfg = config or TimingConfig(warmup_iters=10, min_iters=1000, min_time_s=0.05, max_time_s=1.0)
    timing, _ = measure(lambda: None, lambda: None, cfg)
    return timing.latency_ms_p50
