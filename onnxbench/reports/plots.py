"""matplotlib figures over the result schema, returned as PNG bytes.

PNGs are written without a software/version stamp, so the same run gives the same bytes on one machine.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import StrMethodFormatter  # noqa: E402

from .markup import save_png  # noqa: E402
from .tables import ok_rows, runtime_labels, varying  # noqa: E402

_LINESTYLES = ("-", "--", ":", "-.")
#: A panel whose largest throughput exceeds its smallest by more than this gets a log y axis.
LOG_Y_SPREAD = 30


def _title(keys: list[str], values: tuple) -> str:
    names = {"batch": "batch", "opset": "opset"}
    parts = [f"{names[k]} {v}" if k in names else str(v) for k, v in zip(keys, values, strict=True)]
    return ", ".join(parts)


def _panels(ok: pd.DataFrame, panel_keys: list[str], draw) -> bytes:
    panels = list(ok.groupby(panel_keys, sort=True, dropna=False))
    ncols = min(len(panels), 3)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (values, sub) in zip(axes.flat, panels, strict=False):
        values = values if isinstance(values, tuple) else (values,)
        draw(ax, sub)
        seqs = sorted(int(s) for s in sub["seq_len"].unique())
        ax.set_title(_title(panel_keys, values), fontsize=10)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("throughput (tokens/s)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqs, [str(s) for s in seqs])
        ax.minorticks_off()
        y = sub["throughput_tok_s"]
        if y.min() > 0 and y.max() / y.min() > LOG_Y_SPREAD:
            ax.set_yscale("log")  # lines an order of magnitude apart would sit flat on a linear axis
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, handlelength=3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_png(fig)


def _ok_throughput(df: pd.DataFrame) -> pd.DataFrame:
    ok = ok_rows(df).dropna(subset=["throughput_tok_s"]).copy()
    ok["_label"] = runtime_labels(ok)
    return ok


def throughput_vs_seq_len(df: pd.DataFrame) -> bytes | None:
    """Tokens/s against sequence length (log2 axis), one line per runtime, one panel per batch and per value of
    whichever of (model, part, precision, attention, opset) vary. None when no ok cell has a throughput."""
    ok = _ok_throughput(df)
    if ok.empty:
        return None
    labels = list(dict.fromkeys(ok["_label"]))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}

    def draw(ax, sub):
        for label in labels:
            g = sub[sub["_label"] == label].sort_values("seq_len")
            if len(g):
                ax.plot(g["seq_len"], g["throughput_tok_s"], marker="o", color=colors[label], label=label)

    return _panels(ok, varying(ok, ["model", "part", "precision", "attention", "opset"]) + ["batch"], draw)


def throughput_by_attention(df: pd.DataFrame) -> bytes | None:
    """Tokens/s against sequence length, one panel per runtime (and per varying model, part, precision), one
    colour per attention variant, one line style per batch. None unless the run has several attention
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
                    ax.plot(g["seq_len"], g["throughput_tok_s"], marker="o", color=f"C{i % 10}",
                            linestyle=_LINESTYLES[j % len(_LINESTYLES)], label=f"{variant}, batch {batch}")

    ok = ok.rename(columns={"_label": "runtime_label"})
    ok["_label"] = ok["runtime_label"]
    return _panels(ok, varying(ok, ["model", "part", "precision", "opset"]) + ["runtime_label"], draw)


def roofline(df: pd.DataFrame) -> bytes | None:
    """Roofline plot (Williams, Waterman & Patterson, CACM 52(4), 2009): achieved GFLOP/s against operational
    intensity (``flops / bytes_moved``, FLOP per byte) per ok cell, one colour per runtime label, under the roofs
    ``min(GEMM peak, bandwidth x intensity)`` of each device. The roofs are read back from the schema alone
    (peak = ``achieved_gflops / frac_peak_flops``, bandwidth = ``achieved_gbs / frac_peak_bw``), so a run without
    ceilings gets the points only. None when no ok row has work-model columns."""
    ok = ok_rows(df).dropna(subset=["flops", "bytes_moved", "achieved_gflops"]).copy()
    if ok.empty:
        return None
    ok["_intensity"] = ok["flops"].astype(float) / ok["bytes_moved"].astype(float)
    ok["_label"] = runtime_labels(ok)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
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
    for i, (label, g) in enumerate(ok.groupby("_label", sort=False)):
        ax.scatter(g["_intensity"], g["achieved_gflops"].astype(float), label=label, s=18, color=f"C{i % 10}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (FLOP / byte moved, lower-bound bytes)")
    ax.set_ylabel("achieved GFLOP/s (flops / p50)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig)


def thread_scaling(df: pd.DataFrame) -> bytes | None:
    """Tokens/s against intra-op threads (the ``threads`` axis), one line per runtime (and tuned configuration),
    one panel per shape and per value of whichever of (model, part, precision, attention, opset) vary; a dotted
    line is perfect scaling from the line's fewest threads. Cells at the runtime's default thread count
    (``threads`` 0) are left out: their count is the runtime's choice. None unless some runtime ran at two or
    more thread counts."""
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
            ax.plot(g["threads"], g["throughput_tok_s"], marker="o", color=f"C{i % 10}", label=label)
            t0, y0 = g["threads"].iloc[0], g["throughput_tok_s"].iloc[0]
            ax.plot(g["threads"], y0 * g["threads"] / t0, linestyle=":", color=f"C{i % 10}", alpha=0.6)
        ax.set_title(", ".join(str(v) for v in values[:-2]) + (", " if len(values) > 2 else "")
                     + f"batch {values[-2]}, seq len {values[-1]}", fontsize=10)
        ticks = sorted(sub["threads"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("intra-op threads")
        ax.set_ylabel("throughput (tokens/s)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_png(fig)
