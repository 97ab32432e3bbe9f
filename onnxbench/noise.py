"""The one noise criterion of onnxbench: when a cell's median latency is too uncertain to compare.

A cell is **noisy** when the 95 % confidence interval of its median (the timing harness's distribution-free
order-statistic interval, :func:`onnxbench.benchmarks.measure.timing.median_ci95`) is wider than :data:`NOISE_LIMIT`
times the median; a row without a recorded interval is judged by its coefficient of variation (std / mean)
instead. The interval decides where it exists because a few outliers inflate the CoV while the median stays well
determined. The worker's warning in a row's ``reason``, the CLI's end-of-run warning and the report's banner,
markers and "Noisy timings" section all call :func:`is_noisy`; docs/measurement.md ("Noise") explains the rule.

This module imports nothing heavy, so that the CLI and the reports can use it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Default limit on the width of the median's 95 % CI, as a fraction of the median (docs/measurement.md).
NOISE_LIMIT = 0.10
#: CPU load (percent, all cores) at run start above which the timings are flagged as unreliable: other processes
#: on the cores slow every timing, and a cell slowed consistently has a narrow CI, so the noise rule does not see
#: it; the report marks every timing figure of such a run and ``compare`` names it (docs/measurement.md).
BUSY_LIMIT_PCT = 20.0


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def ci95_width(row: Mapping) -> float | None:
    """Width of the 95 % CI of the median as a fraction of the median: ``(ci95_p50_hi_ms − ci95_p50_lo_ms) /
    latency_ms_p50`` (unitless), or None when the row records no interval or no positive median."""
    p50, lo, hi = (_number(row.get(k)) for k in ("latency_ms_p50", "ci95_p50_lo_ms", "ci95_p50_hi_ms"))
    if p50 is None or lo is None or hi is None or p50 <= 0:
        return None
    return (hi - lo) / p50


def is_noisy(row: Mapping, limit: float = NOISE_LIMIT) -> bool:
    """Whether a measured row's median is too uncertain: its relative CI95 width (:func:`ci95_width`) above
    ``limit``, or, without an interval, its ``cov`` above ``limit``. Rows that are not ``ok`` are never noisy.

    Args:
        row: a result row (mapping of schema columns: latency_ms_p50, ci95_p50_lo_ms, ci95_p50_hi_ms, cov,
            status).
        limit: fraction of the median (default :data:`NOISE_LIMIT`, or the run's ``noise_limit``).
    """
    if row.get("status", "ok") != "ok":
        return False
    width = ci95_width(row)
    if width is not None:
        return width > limit
    cov = _number(row.get("cov"))
    return cov is not None and cov > limit


def noise_reason(row: Mapping, limit: float = NOISE_LIMIT) -> str:
    """The warning a noisy row carries in its ``reason`` ("" when the row is not noisy), with the remedy its
    ``cpu_busy_pct`` points to: a quiet machine when other processes used more than :data:`BUSY_LIMIT_PCT` of the
    CPUs, more timed iterations (``iters``; ``--min-time``, ``--min-iters``) when the machine was quiet, either
    when the cell has no load reading."""
    if not is_noisy(row, limit):
        return ""
    width = ci95_width(row)
    what = (f"95% CI of p50 {width:.0%} of p50" if width is not None
            else f"cov {float(row['cov']):.2f} (no CI recorded)")
    busy, iters = _number(row.get("cpu_busy_pct")), _number(row.get("iters"))
    more = (f"more than its {iters:.0f} timed iterations" if iters is not None else "more timed iterations")
    if busy is not None and busy > BUSY_LIMIT_PCT:
        advice = f"other processes used {busy:.0f}% of the CPUs: rerun on a quiet machine"
    elif busy is not None:
        advice = f"the machine was quiet ({busy:.0f}% busy): {more} (--min-time, --min-iters) narrow it"
    else:
        advice = f"a contended machine, or too few iterations: rerun on a quiet one, or time {more} (--min-time)"
    return f"warning: noisy timing, {what} > noise_limit {limit:.0%} ({advice})"


def run_limit(header: Mapping | None) -> float:
    """The noise limit a run was measured with: its matrix's ``noise_limit`` (``cov_warn`` in runs written before
    the key was renamed), else :data:`NOISE_LIMIT`."""
    matrix = (header or {}).get("matrix") or {}
    value = _number(matrix.get("noise_limit", matrix.get("cov_warn")))
    return value if value is not None and value > 0 else NOISE_LIMIT


def _loads(header: Mapping | None) -> tuple[float | None, float | None]:
    """(load at start, highest load of other processes while cells were measured) recorded in ``header``."""
    header = header or {}
    return _number(header.get("cpu_busy_pct_at_start")), _number(header.get("cpu_busy_pct_during"))


def busy_pct(header: Mapping | None) -> float | None:
    """The CPU load (percent of all cores used by other work) of a run measured on a busy machine: the higher of
    the load recorded before the run (``cpu_busy_pct_at_start``) and the highest load of other processes while its
    cells were measured (``cpu_busy_pct_during``, the rows' ``cpu_busy_pct``), when it is above
    :data:`BUSY_LIMIT_PCT`; else None."""
    busy = max((v for v in _loads(header) if v is not None), default=None)
    return busy if busy is not None and busy > BUSY_LIMIT_PCT else None


def busy_note(header: Mapping | None) -> str:
    """The sentence the report, its figures, ``compare`` and the CLI give a run measured on a busy machine
    (:func:`busy_pct`): "the CPUs were N % busy with other work when the run started[, and up to M % while cells
    were measured], above the L % limit" (or "other processes kept the CPUs up to M % busy while cells were
    measured, ..." when the start was quiet); "" for a run that was not (or did not record its load)."""
    if busy_pct(header) is None:
        return ""
    start, during = _loads(header)
    limit = f"above the {BUSY_LIMIT_PCT:.0f} % limit"
    if start is not None and start > BUSY_LIMIT_PCT:
        also = f", and up to {during:.0f} % while cells were measured" if during and during > BUSY_LIMIT_PCT else ""
        return f"the CPUs were {start:.0f} % busy with other work when the run started{also}, {limit}"
    return f"other processes kept the CPUs up to {during:.0f} % busy while cells were measured, {limit}"
