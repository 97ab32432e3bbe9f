"""matplotlib figures over the result schema, returned as PNG bytes.

PNGs are written without a software/version stamp, so the same run gives the same bytes on one machine.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402

from .markup import save_png  # noqa: E402
from .tables import ok_rows, runtime_labels, varying  # noqa: E402

_LINESTYLES = ("-", "--", ":", "-.")
#: Filled marker shapes, told apart in print and by readers who cannot tell the colours apart.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
#: Axis scales of each figure family (stated in the report's captions): throughput against sequence length on
#: log-log axes (sequence lengths double along the matrix, throughputs of runtimes differ by factors, and equal
#: vertical distances are equal ratios in every panel); thread scaling on linear axes (perfect scaling is then a
#: straight line through the origin).
SEQ_LEN_SCALES = ("log", "log")
THREAD_SCALES = ("linear", "linear")


def _title(keys: list[str], values: tuple) -> str:
    names = {"batch": "batch", "opset": "opset"}
    parts = [f"{names[k]} {v}" if k in names else str(v) for k, v in zip(keys, values, strict=True)]
    return ", ".join(parts)


def _rate_label(value: float, _pos=None) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _log_y(ax) -> None:
    """A log y axis with plain-number tick labels: at 1, 2 and 5 per decade, or, where the data span less than
    a factor 20 (too few of those), at round values spaced evenly in value."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi / lo < 20:
        ticks = [t for t in MaxNLocator(nbins=5).tick_values(lo, hi) if lo <= t <= hi and t > 0]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_rate_label))
    ax.yaxis.set_minor_locator(NullLocator())


def throughput_ci(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The 95 % CI of the median latency (``ci95_p50_lo_ms``/``ci95_p50_hi_ms``) as tokens/s bounds:
    throughput is inversely proportional to latency at a fixed shape, so the bounds are ``throughput_tok_s ×
    latency_ms_p50 / ci95_p50_hi_ms`` (low) and ``… / ci95_p50_lo_ms`` (high). NaN where no CI was recorded."""
    tok, p50 = rows["throughput_tok_s"].astype(float), rows["latency_ms_p50"].astype(float)
    lo_ms, hi_ms = rows["ci95_p50_lo_ms"].astype(float), rows["ci95_p50_hi_ms"].astype(float)
    return tok * p50 / hi_ms, tok * p50 / lo_ms


def _line(ax, x, rows: pd.DataFrame, **style) -> None:
    """Throughput of ``rows`` against ``x`` with the CI of each point as an error bar (none where unknown)."""
    y = rows["throughput_tok_s"].astype(float).to_numpy()
    lo, hi = (v.to_numpy() for v in throughput_ci(rows))
    err = np.vstack([np.nan_to_num(y - lo, nan=0.0), np.nan_to_num(hi - y, nan=0.0)]).clip(min=0)
    ax.errorbar(x, y, yerr=err, capsize=3, elinewidth=1, **style)


def _panels(ok: pd.DataFrame, panel_keys: list[str], draw):
    panels = list(ok.groupby(panel_keys, sort=True, dropna=False))
    ncols = min(len(panels), 3)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (values, sub) in zip(axes.flat, panels, strict=False):
        values = values if isinstance(values, tuple) else (values,)
        draw(ax, sub)
        seqs = sorted(int(s) for s in sub["seq_len"].unique())
        ax.set_title(_title(panel_keys, values), fontsize=10)
        ax.set_xlabel("sequence length (tokens, log scale)")
        ax.set_ylabel("throughput (tokens/s, log scale)")
        ax.set_xscale(SEQ_LEN_SCALES[0], base=2)
        ax.set_xticks(seqs, [str(s) for s in seqs])
        ax.xaxis.set_minor_locator(NullLocator())
        _log_y(ax)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, handlelength=3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _ok_throughput(df: pd.DataFrame) -> pd.DataFrame:
    ok = ok_rows(df).dropna(subset=["throughput_tok_s"]).copy()
    ok = ok[ok["throughput_tok_s"].astype(float) > 0]  # a log axis has no room for 0
    ok["_label"] = runtime_labels(ok)
    return ok


def _out(fig, as_figure: bool):
    return fig if as_figure else save_png(fig)


def stamp(fig, note: str):
    """Write ``note`` across the top of ``fig`` (in the colour of the report's warnings), making room for it;
    returns ``fig``. Used to say on the figure itself that its timings were taken on a busy machine."""
    fig.subplots_adjust(top=min(fig.subplotpars.top, 1 - 0.35 / fig.get_figheight()))
    fig.text(0.5, 1 - 0.08 / fig.get_figheight(), note, ha="center", va="top", fontsize=8, color="#a11",
             wrap=True)
    return fig


def throughput_vs_seq_len(df: pd.DataFrame, as_figure: bool = False):
    """Tokens/s against sequence length on log-log axes (:data:`SEQ_LEN_SCALES`), one line per runtime with the
    95 % CI of each median as error bars (:func:`throughput_ci`), one panel per batch and per value of whichever
    of (model, part, precision, attention, opset) vary. PNG bytes (the matplotlib figure with ``as_figure``);
    None when no ok cell has a throughput."""
    ok = _ok_throughput(df)
    if ok.empty:
        return None
    labels = list(dict.fromkeys(ok["_label"]))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}

    def draw(ax, sub):
        for i, label in enumerate(labels):
            g = sub[sub["_label"] == label].sort_values("seq_len")
            if len(g):
                _line(ax, g["seq_len"], g, marker=MARKERS[i % len(MARKERS)], color=colors[label], label=label)

    fig = _panels(ok, varying(ok, ["model", "part", "precision", "attention", "opset", "padding"]) + ["batch"], draw)
    return _out(fig, as_figure)


def throughput_by_attention(df: pd.DataFrame, as_figure: bool = False):
    """Tokens/s against sequence length on log-log axes (:data:`SEQ_LEN_SCALES`) with 95 % CI error bars, one
    panel per runtime (and per varying model, part, precision), one colour and marker per attention variant, one
    line style per batch. PNG bytes (the figure with ``as_figure``); None unless the run has several attention
    variants."""
    ok = _ok_throughput(df)
    if ok.empty or ok["attention"].nunique() < 2:
        return None
    variants = list(dict.fromkeys(ok["attention"]))
    batches = sorted(ok["batch"].unique())

    def draw(ax, sub):
        for i, variant in enumerate(variants):
            for j, batch in enumerate(batches):
                g = sub[(sub["attention"] == variant) & (sub["batch"] == batch)].sort_values("seq_len")
                if len(g):
                    _line(ax, g["seq_len"], g, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}",
                          linestyle=_LINESTYLES[j % len(_LINESTYLES)], label=f"{variant}, batch {batch}")

    ok = ok.rename(columns={"_label": "runtime_label"})
    ok["_label"] = ok["runtime_label"]
    fig = _panels(ok, varying(ok, ["model", "part", "precision", "opset"]) + ["runtime_label"], draw)
    return _out(fig, as_figure)


def roofline(df: pd.DataFrame, as_figure: bool = False):
    """Roofline plot (Williams, Waterman & Patterson, CACM 52(4), 2009): achieved GFLOP/s against operational
    intensity (``flops / bytes_moved``, FLOP per byte) per ok cell, one colour per runtime label and one marker
    shape per shape (batch × seq len; per batch where the run has more shapes than :data:`MARKERS`), with a
    legend for each, under the roofs ``min(GEMM peak, bandwidth x intensity)`` of each device. The roofs are read
    back from the schema alone (peak = ``achieved_gflops / frac_peak_flops``, bandwidth = ``achieved_gbs /
    frac_peak_bw``), so a run without ceilings gets the points only. PNG bytes (the figure with ``as_figure``);
    None when no ok row has work-model columns."""
    ok = ok_rows(df).dropna(subset=["flops", "bytes_moved", "achieved_gflops"]).copy()
    if ok.empty:
        return None
    ok["_intensity"] = ok["flops"].astype(float) / ok["bytes_moved"].astype(float)
    ok["_label"] = runtime_labels(ok)
    shapes = ok[["batch", "seq_len"]].drop_duplicates().sort_values(["batch", "seq_len"])
    by_shape = len(shapes) <= len(MARKERS)
    ok["_shape"] = ([f"{b}×{t}" for b, t in zip(ok["batch"], ok["seq_len"], strict=True)] if by_shape
                    else [f"batch {b}" for b in ok["batch"]])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lo, hi = ok["_intensity"].min() / 4, ok["_intensity"].max() * 4
    roofs = ok.dropna(subset=["frac_peak_flops", "frac_peak_bw"])
    drawn = set()
    for (device, precision), g in roofs.groupby(["device", "precision"], dropna=False):
        peak = float((g["achieved_gflops"].astype(float) / g["frac_peak_flops"].astype(float)).median())
        bw = float((g["achieved_gbs"].astype(float) / g["frac_peak_bw"].astype(float)).median())
        if (device, round(peak, 3), round(bw, 3)) in drawn:  # the CPU reads every precision against fp32
            continue
        drawn.add((device, round(peak, 3), round(bw, 3)))
        xs = sorted({lo, min(max(peak / bw, lo), hi), hi})
        ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", lw=1.2)
        ax.annotate(f"{device} {precision}: {peak:.0f} GFLOP/s, {bw:.1f} GB/s", (xs[-1], peak), ha="right",
                    va="bottom", fontsize=7)
    colors = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(ok["_label"]))}
    markers = {shape: MARKERS[i % len(MARKERS)] for i, shape in enumerate(dict.fromkeys(ok["_shape"]))}
    for (label, shape), g in ok.groupby(["_label", "_shape"], sort=False):
        ax.scatter(g["_intensity"], g["achieved_gflops"].astype(float), s=26, color=colors[label],
                   marker=markers[shape], edgecolors="black", linewidths=0.4)
    # one legend per channel: colour says the runtime, marker the shape (grey, so it names no runtime)
    runtimes = [Line2D([], [], color=c, marker="o", linestyle="", label=label) for label, c in colors.items()]
    shape_handles = [ax.scatter([], [], marker=m, color="0.6", edgecolors="black", linewidths=0.4, label=shape)
                     for shape, m in markers.items()]
    first = ax.legend(handles=runtimes, title="runtime (colour)", fontsize=7, title_fontsize=7,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    ax.legend(handles=shape_handles, fontsize=7, title_fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0),
              title="batch×seq len (marker)" if by_shape else "batch (marker)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (FLOP / byte moved, lower-bound bytes)")
    ax.set_ylabel("achieved GFLOP/s (flops / p50)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _out(fig, as_figure)


def thread_scaling(df: pd.DataFrame, as_figure: bool = False):
    """Tokens/s against intra-op threads (the ``threads`` axis) on linear axes (:data:`THREAD_SCALES`), one line
    per runtime (and tuned configuration) with the 95 % CI of each median as error bars, one panel per shape and
    per value of whichever of (model, part, precision, attention, opset) vary; a dotted line is perfect scaling
    from the line's fewest threads. Cells at the runtime's default thread count (``threads`` 0) are left out:
    their count is the runtime's choice. PNG bytes (the figure with ``as_figure``); None unless some runtime ran
    at two or more thread counts."""
    if "threads" not in df:
        return None
    ok = ok_rows(df).dropna(subset=["throughput_tok_s", "threads"])
    ok = ok[ok["threads"].astype(int) > 0].copy()
    if ok.empty:
        return None
    ok["threads"] = ok["threads"].astype(int)
    ok["_label"] = runtime_labels(ok.drop(columns=["threads"]))  # the runtime, not the thread count: one line
    if ok.groupby("_label")["threads"].nunique().max() < 2:
        return None
    labels = list(dict.fromkeys(ok["_label"]))
    panels = list(ok.groupby(varying(ok, ["model", "part", "precision", "attention", "opset"]) + ["batch", "seq_len"],
                             sort=True, dropna=False))
    ncols = min(len(panels), 3)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (values, sub) in zip(axes.flat, panels, strict=False):
        values = values if isinstance(values, tuple) else (values,)
        for i, label in enumerate(labels):
            g = sub[sub["_label"] == label].sort_values("threads")
            if g.empty:
                continue
            _line(ax, g["threads"], g, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", label=label)
            t0, y0 = g["threads"].iloc[0], g["throughput_tok_s"].iloc[0]
            ax.plot(g["threads"], y0 * g["threads"] / t0, linestyle=":", color=f"C{i % 10}", alpha=0.6)
        ax.set_title(", ".join(str(v) for v in values[:-2]) + (", " if len(values) > 2 else "")
                     + f"batch {values[-2]}, seq len {values[-1]}", fontsize=10)
        ticks = sorted(sub["threads"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("intra-op threads")
        ax.set_ylabel("throughput (tokens/s)")
        ax.set_xscale(THREAD_SCALES[0])
        ax.set_yscale(THREAD_SCALES[1])
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_rate_label))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _out(fig, as_figure)
