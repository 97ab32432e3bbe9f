"""Display labels and number formats for report tables.

Reports show the same strings in Markdown and HTML: :func:`display` turns a frame of schema columns (plus the
derived ones named in :data:`SPECS`) into flat string columns with readable headers and units. Formats are fixed
(no locale, no timestamp), so a report rendered twice from the same run is byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

MISSING = "—"


def _is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def ms(value: float) -> str:
    """Milliseconds with about microsecond resolution: 0.052, 1.340, 12.34, 355.2."""
    v = float(value)
    if abs(v) >= 100:
        return f"{v:,.1f}"
    if abs(v) >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def integer(value) -> str:
    return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))


def rate(value: float) -> str:
    """Large rates (tokens/s, sequences/s) with thousands separators."""
    v = float(value)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def error(value: float) -> str:
    """Errors in scientific notation; an exact 0 stays 0."""
    v = float(value)
    if v == 0:
        return "0"
    return "inf" if math.isinf(v) else f"{v:.2e}"


def cosine(value: float) -> str:
    return f"{float(value):.6f}"


def percent(value: float) -> str:
    return f"{float(value):.1%}"


#: Shown instead of a fraction of a measured ceiling above 1: the ceiling was not an upper bound.
ABOVE_PEAK = "> peak (measurement problem)"
#: Appended to a summary figure whose timing is noisy (onnxbench.noise.is_noisy).
NOISE_MARK = " †"
#: Appended to every timing figure of a run measured on a busy machine (onnxbench.noise.busy_pct).
BUSY_MARK = " ‡"
#: Columns whose values are timings or figures computed from them (latencies, throughputs, speed-ups, achieved
#: rates and fractions of a probed ceiling): the figures :data:`BUSY_MARK` marks. Latency grid columns
#: ("label|stat") are timings too (:func:`is_timed`).
TIMED = frozenset({
    "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_min", "latency_ms_std",
    "ci95_p50_lo_ms", "ci95_p50_hi_ms", "h2d_ms", "compute_ms", "d2h_ms", "throughput_seq_s", "throughput_tok_s",
    "achieved_gflops", "achieved_gbs", "frac_peak_flops", "frac_peak_bw", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90",
    "tpot_ms_p99", "decode_tok_s", "e2e_ms", "bound_ms", "tpot_over_bound", "reference_p50", "speedup",
    "default_p50", "tuned_p50", "float_p50", "quantized_p50", "quant_speedup", "lowest_ttft", "lowest_tpot",
    "prefill_ms"})


def is_timed(column: str) -> bool:
    """Whether a table column holds timing figures (:data:`TIMED`, or a latency grid's "label|stat")."""
    return column in TIMED or "|" in str(column)


def fraction_of_peak(value: float) -> str:
    """A fraction of a measured ceiling as a percentage; above 1 it is a measurement problem, not a figure."""
    v = float(value)
    return ABOVE_PEAK if v > 1 else f"{v:.1%}"


def change(value: float) -> str:
    """A relative change, signed: +12.3%, -4.0%."""
    return f"{float(value):+.1%}"


def speedup(value: float) -> str:
    return f"{float(value):.2f}×"


def seconds(value: float) -> str:
    v = float(value)
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def mib(value: float) -> str:
    return f"{float(value):,.0f}"


def sig3(value: float) -> str:
    v = float(value)
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"


def boolean(value) -> str:
    return "pass" if bool(value) else "FAIL"


def text(value) -> str:
    return str(value)


@dataclass(frozen=True)
class Spec:
    """How one column is shown: header label (with unit), value formatter, right-aligned or not."""

    label: str
    fmt: Callable[[object], str] = text
    numeric: bool = False


def _n(label: str, fmt: Callable) -> Spec:
    return Spec(label, fmt, numeric=True)


#: Column name (schema column or a derived name used by the report tables) -> display spec.
SPECS: dict[str, Spec] = {
    "model": Spec("model"),
    "part": Spec("part"),
    "attention": Spec("attention"),
    "export_path": Spec("export path"),
    "precision": Spec("precision"),
    "opset": _n("opset", integer),
    "runtime": Spec("runtime"),
    "config_id": Spec("config"),
    "provider_requested": Spec("EP requested"),
    "provider_actual": Spec("EP that ran"),
    "attention_provider": Spec("attention ran on"),
    "device": Spec("device"),
    "batch": _n("batch", integer),
    "seq_len": _n("seq len", integer),
    "scenario": Spec("scenario"),
    "new_tokens": _n("new tokens", integer),
    "padding": _n("padding", sig3),
    "status": Spec("status"),
    "reason": Spec("reason"),
    "iters": _n("iterations", integer),
    "latency_ms_mean": _n("mean (ms)", ms),
    "latency_ms_p50": _n("p50 (ms)", ms),
    "latency_ms_p90": _n("p90 (ms)", ms),
    "latency_ms_p99": _n("p99 (ms)", ms),
    "latency_ms_min": _n("min (ms)", ms),
    "cov": _n("CoV", percent),
    "ci95_p50_lo_ms": _n("p50 CI95 low (ms)", ms),
    "ci95_p50_hi_ms": _n("p50 CI95 high (ms)", ms),
    "ci95_width": _n("CI95 width / p50", percent),
    "h2d_ms": _n("host→device (ms)", ms),
    "compute_ms": _n("compute (ms)", ms),
    "d2h_ms": _n("device→host (ms)", ms),
    "throughput_seq_s": _n("sequences/s", rate),
    "throughput_tok_s": _n("tokens/s", rate),
    "max_abs_err": _n("max abs err", error),
    "max_rel_err": _n("max rel err", error),
    "cosine": _n("cosine", cosine),
    "top1_agree": _n("top-1 agree", percent),
    "nan_count": _n("NaN/Inf", integer),
    "kl_mean": _n("KL mean (nats)", error),
    "kl_max": _n("KL max (nats)", error),
    "rel_rms_err": _n("rel RMS err", error),
    "atol": _n("atol", error),
    "rtol": _n("rtol", error),
    "agree": Spec("agreement", boolean),
    "required_atol": _n("required atol", error),
    "err_fp64": _n("error vs float64", error),
    "noise_floor": _n("noise floor", error),
    "floor_ratio": _n("× noise floor", sig3),
    "floor_factor": _n("allowed × floor", sig3),
    "ref_nonfinite": _n("NaN/Inf in reference", integer),
    "nonfinite_matched": _n("NaN/Inf matched", integer),
    "first_divergent_block": _n("first diverging block", integer),
    "flops": _n("GFLOP", lambda v: sig3(float(v) / 1e9)),
    "bytes_moved": _n("MB moved", lambda v: sig3(float(v) / 1e6)),
    "achieved_gflops": _n("GFLOP/s", sig3),
    "achieved_gbs": _n("GB/s", sig3),
    "frac_peak_flops": _n("% of peak FLOP/s", fraction_of_peak),
    "frac_peak_bw": _n("% of peak bandwidth", fraction_of_peak),
    "peak_rss_mb": _n("peak RSS (MiB)", mib),
    "device_mem_mb": _n("device memory (MiB)", mib),
    "export_s": _n("export (s)", seconds),
    "build_s": _n("session build (s)", seconds),
    # derived columns of the report tables
    "tolerance": Spec("tolerance"),
    "cells": _n("cells", integer),
    "shapes": Spec("shapes (batch×seq len)"),
    "fastest": Spec("fastest (agreeing)"),
    "reference_p50": _n("reference p50 (ms)", ms),
    "speedup": _n("speed-up", speedup),
    "faster_but_disagreeing": Spec("faster but failed agreement"),
    "tune_config": Spec("configuration"),
    "default_p50": _n("default p50 (ms)", ms),
    "tuned_p50": _n("tuned p50 (ms)", ms),
    "p50_a": _n("p50 A (ms)", ms),
    "p50_b": _n("p50 B (ms)", ms),
    "p50_change": _n("p50 change", change),
    "tok_s_a": _n("tokens/s A", rate),
    "tok_s_b": _n("tokens/s B", rate),
    "tok_s_change": _n("tokens/s change", change),
    "status_a": Spec("status A"),
    "status_b": Spec("status B"),
    "ci_overlap": Spec("CI95s overlap"),
    "verdict": Spec("verdict"),
    "failed_on": Spec("failed on"),
    "float_precision": Spec("float precision"),
    "float_p50": _n("float p50 (ms)", ms),
    "quantized_p50": _n("quantized p50 (ms)", ms),
    "quant_speedup": _n("speed-up vs float", speedup),
}


def spec_for(column: str) -> Spec:
    """The display spec of ``column``; unknown columns show as their name with plain text values."""
    return SPECS.get(column, Spec(column))


def display(frame: pd.DataFrame, specs: dict[str, Spec] | None = None) -> tuple[pd.DataFrame, list[bool]]:
    """Format every cell of ``frame`` (flat columns, index ignored) as text under its display label.

    Args:
        frame: columns are schema or derived column names (or arbitrary labels, shown as they are).
        specs: overrides of :data:`SPECS` for this table (e.g. per-runtime latency columns).

    Returns:
        (frame of str with relabelled columns, per column whether it is numeric/right-aligned).
    """
    specs = specs or {}
    out = {}
    numeric = []
    for col in frame.columns:
        spec = specs.get(col) or spec_for(col)
        out[spec.label] = [MISSING if _is_missing(v) else spec.fmt(v) for v in frame[col].tolist()]
        numeric.append(spec.numeric)
    return pd.DataFrame(out, columns=list(out)), numeric
