"""The end of a run on the console: one table per scenario (the columns its scenario declares, narrow enough for an
80-column terminal; every timing figure marked ‡ when the run was measured on a busy machine, the report's rule
and mark), the reasons of skipped and failed cells once each, warnings on ok rows, and where the wall time went."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .console import console, note, warn

#: How a column is shown: header and format of its value.
_SHOW = {
    "latency_ms_p50": ("p50 ms", "{:.3g}"), "throughput_tok_s": ("tok/s", "{:,.0f}"),
    "padding": ("pad", "{:g}"), "ttft_ms": ("TTFT ms", "{:.3g}"), "tpot_ms_p50": ("TPOT ms", "{:.3g}"),
    "decode_tok_s": ("tok/s", "{:,.1f}"), "new_tokens": ("N", "{:d}"), "frac_peak_flops": ("% peak", "{:.0%}"),
}
#: The columns whose figures are timings or computed from them: marked on a busy machine.
_TIMED = frozenset({"latency_ms_p50", "throughput_tok_s", "ttft_ms", "tpot_ms_p50", "decode_tok_s",
                    "frac_peak_flops"})
#: The report's mark of a timing figure taken on a busy machine (onnxbench.reports.format.BUSY_MARK).
BUSY_MARK = " ‡"


def busy_note(run_dir: Path) -> str:
    """The busy-machine sentence of the run in ``run_dir`` (:func:`onnxbench.noise.busy_note`, the one rule), ""
    when it was not busy or its header cannot be read."""
    from ..noise import busy_note as note_of
    from ..rundir import RunDir

    try:
        return note_of(RunDir(run_dir).read_header())
    except (OSError, ValueError):
        return ""


def print_summary(rows: list[dict], busy: str = "") -> None:
    """Print the ok rows (a table per scenario), then each skipped/failed reason once and each ok row's
    warning. ``busy`` (:func:`busy_note`): the run was measured on a busy machine, so every timing figure of the
    tables is marked ‡ and the tables say why."""
    from ..benchmarks import scenarios

    ok = [r for r in rows if r["status"] == "ok"]
    for name in dict.fromkeys(r.get("scenario") or "prefill" for r in ok):
        scenario = scenarios.SCENARIOS.get(name)
        mine = [r for r in ok if (r.get("scenario") or "prefill") == name]
        # padding is a column wherever it varies: generate prompts, and ONNX files' padded prefill batches
        columns = [c for c in (*(scenario.key_fields if scenario else ()), "padding",
                               *(scenario.columns if scenario else ()))
                   if c != "padding" or len({r.get("padding") for r in mine}) > 1]
        if any(r.get("frac_peak_flops") for r in mine):
            columns.append("frac_peak_flops")
        console.print(_table(mine, list(dict.fromkeys(columns)), name, busy))
    # skipped/failed reasons repeat over a runtime's cells: one line each
    for runtime, status, reason in sorted({(r["runtime"], r["status"], r["reason"]) for r in rows
                                           if r["status"] != "ok"}):
        console.print(escape(f"{status}: {runtime}: {reason}"), highlight=False, soft_wrap=True)
    for r in ok:  # a warning on an ok row concerns that cell alone, so it names the cell
        if r["reason"]:
            threads = f" {r['threads']} threads" if r.get("threads") else ""
            tokens = f" +{r['new_tokens']} tokens" if r.get("new_tokens") else ""
            console.print(escape(f"{r['model']} {r['runtime']}{threads} b{r['batch']} t{r['seq_len']}{tokens}: "
                                 f"{r['reason']}"), highlight=False, soft_wrap=True)


def _table(rows: list[dict], columns: list[str], scenario: str, busy: str = "") -> Table:
    # axes other than the shape that vary over the rows get a column, or rows look duplicated
    axes = [k for k in ("part", "attention", "export_path", "precision", "threads", "config_id")
            if len({r.get(k) for r in rows}) > 1]
    table = Table("model", *axes, "runtime", "B", "T", *(_SHOW.get(c, (c, ""))[0] for c in columns), "× floor",
                  "verdict", title=scenario, title_justify="left",
                  caption=f"{BUSY_MARK.strip()} measured on a busy machine: {busy}" if busy else None,
                  caption_justify="left")
    for r in rows:
        table.add_row(r["model"], *(str(r.get(k)) for k in axes), r["runtime"], str(r["batch"]), str(r["seq_len"]),
                      *(_cell(r.get(c), _SHOW.get(c, ("", "{}"))[1], busy and c in _TIMED) for c in columns),
                      _ratio(r.get("floor_ratio")), _verdict(r))
    return table


def _cell(value, fmt: str, busy: bool = False) -> str:
    if value is None or value != value:
        return "-"
    if fmt == "{:.0%}" and value > 1:  # a fraction of a ceiling above 1 is a measurement problem, not a figure
        return "[red]> peak (measurement problem)[/]"
    try:
        text = fmt.format(value)
    except (ValueError, TypeError):
        text = str(value)
    return text + BUSY_MARK if busy else text


def _ratio(value) -> str:
    return "" if value is None or value != value else f"{value:.3g}"


def _verdict(row: dict) -> str:
    verdict = row.get("verdict") or ("pass" if row.get("agree") else "FAIL")
    block = row.get("first_divergent_block")
    where = f" (block {block})" if block is not None and block == block else ""
    return "[red]FAIL[/]" + where if verdict == "FAIL" else verdict + where


def export_time(summary) -> str:
    """``export cached`` when every artifact came from the cache, else the export wall time (and how many of the
    artifacts were cached): a cached export is not a 0.0 s export."""
    if summary.exports and summary.exports_cached == summary.exports:
        return "export cached"
    cached = f" ({summary.exports_cached} of {summary.exports} artifacts cached)" if summary.exports_cached else ""
    return f"export {summary.export_s:.1f} s{cached}"


def warn_if_unreliable(run_dir: Path, rows: list[dict], limit: float) -> None:
    """End-of-run warnings about the timings: a busy machine (at start or while cells were measured), noisy cells
    (the report's banner applies the same rules, :mod:`onnxbench.noise`)."""
    from ..benchmarks.measure.load import MIN_WINDOW_S
    from ..noise import BUSY_LIMIT_PCT, is_noisy

    busy = busy_note(run_dir)
    if busy:
        measured = [r for r in rows if r["status"] == "ok" and r.get("cpu_busy_pct") is not None]
        over = [r for r in measured if r["cpu_busy_pct"] > BUSY_LIMIT_PCT]
        cells = (f"; {len(over)} of the {len(measured)} cells with a load reading (cells timed for under "
                 f"{MIN_WINDOW_S:g} s have none) were measured while other processes used more than "
                 f"{BUSY_LIMIT_PCT:.0f}% of the CPUs (cpu_busy_pct)" if over else "")
        warn(f"{busy} (cpu_busy_pct_at_start / cpu_busy_pct_during in header.json){cells}; every timing figure "
             f"is marked{BUSY_MARK}: these timings, torch's above all, are unreliable: rerun on a quiet machine")
    ok = [r for r in rows if r["status"] == "ok"]
    noisy = [r for r in ok if is_noisy(r, limit)]
    if noisy:
        remedy = ("" if busy else "; the machine was quiet, so more timed iterations narrow the intervals "
                  "(--min-time, --min-iters)")
        warn(f"{len(noisy)} of {len(ok)} measured cells have noisy timings (95% CI of p50 wider than {limit:.0%} of "
             f"p50; marked in the report): differences smaller than that are not meaningful{remedy}")
    if not rows:
        note("the run has no rows")
