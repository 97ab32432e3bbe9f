import numpy as np
import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import TOLERANCES, TimingConfig, Tolerance, measure
from onnxbench.benchmarks.measure.timing import median_ci95, summarize
from onnxbench.benchmarks.rows import Throughput
from onnxbench.benchmarks.verify.agreement import check
from onnxbench.tolerance import CPU_BANDS, band


def _logits(seed=0, shape=(2, 5, 50)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 10


def test_identical_outputs_agree_exactly():
    y = _logits()
    result = check(y, y.copy(), TOLERANCES["fp32"])
    assert result.agree and result.max_abs_err == 0 and result.cosine == pytest.approx(1.0)
    assert result.top1_agree == 1.0 and result.nan_count == 0


def test_one_perturbed_element_fails_fp32_but_passes_fp16_band():
    y = _logits()
    bad = y.copy()
    bad[1, 2, 3] += 0.02
    assert not check(bad, y, TOLERANCES["fp32"]).agree
    assert check(bad, y, TOLERANCES["fp16"]).agree


def test_nan_always_fails_and_is_counted():
    y = _logits()
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    bad[0, 1, 0] = np.inf
    result = check(bad, y, Tolerance(atol=1e9, rtol=1e9, min_cosine=-1))
    assert not result.agree and result.nan_count == 2


def test_top1_agreement_counts_changed_argmax():
    y = np.zeros((1, 4, 3), dtype=np.float32)
    y[..., 0] = 1
    other = y.copy()
    other[0, 1, 2] = 5  # position 1 now prefers token 2
    assert check(other, y, TOLERANCES["fp32"]).top1_agree == pytest.approx(0.75)


def test_relative_error_uses_a_floor():
    ref = np.array([[0.0, 1.0]])
    result = check(ref + 1e-4, ref, TOLERANCES["fp32"], rel_floor=1e-3)
    assert result.max_rel_err == pytest.approx(0.1)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differs from the reference"):
        check(np.zeros((1, 2)), np.zeros((2, 1)), TOLERANCES["fp32"])


def test_tf32_widens_the_fp32_band():
    assert runtimes.runtime_class("ort-cuda").tolerance("fp32", tf32=True).atol > band(CPU_BANDS, "fp32").atol


def test_measure_respects_min_iters_and_min_time():
    calls = []
    timing, raw = measure(lambda: calls.append(1), config=TimingConfig(warmup_iters=2, min_iters=7, min_time_s=0))
    assert timing.iters == 7 == len(raw) and len(calls) == 9
    import time

    timing, raw = measure(lambda: time.sleep(0.001),
                          config=TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.02))
    assert raw.sum() >= 0.02e9 and timing.iters < 30
    timing, raw = measure(lambda: None, config=TimingConfig(warmup_iters=0, min_iters=1, min_time_s=5,
                                                            max_iters=50))
    assert timing.iters == 50, "max_iters caps a cell that would otherwise run for min_time_s"


def test_synchronize_is_inside_the_timed_region():
    import time

    timing, _ = measure(lambda: None, lambda: time.sleep(0.002),
                        TimingConfig(warmup_iters=0, min_iters=5, min_time_s=0))
    assert timing.latency_ms_min >= 2.0


def test_summary_statistics():
    samples = np.arange(1, 101, dtype=np.int64) * 1_000_000  # 1..100 ms
    t = summarize(samples, warmup_iters=0)
    assert t.latency_ms_p50 == pytest.approx(50.5)
    assert t.latency_ms_min == 1.0 and t.iters == 100
    assert t.ci95_p50_lo_ms < 50.5 < t.ci95_p50_hi_ms
    assert t.latency_ms_p90 < t.latency_ms_p99


def test_median_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    small = median_ci95(rng.normal(10, 1, 30))
    large = median_ci95(rng.normal(10, 1, 3000))
    assert (large[1] - large[0]) < (small[1] - small[0])


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = sum(lo <= 10 <= hi for lo, hi in (median_ci95(rng.normal(10, 1, 101)) for _ in range(400)))
    assert 0.91 <= hits / 400 <= 0.99


def test_throughput_units():
    t = Throughput.of(4, 128, 100.0)
    assert (t.throughput_seq_s, t.throughput_tok_s) == pytest.approx((40.0, 5120.0))
