"""matplotlib figures over the result schema, returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # reports are written headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import ok_rows  # noqa: E402


def throughput_vs_seq_len(df: pd.DataFrame) -> bytes | None:
    """Tokens/s against sequence length, one line per runtime, one panel per (model, batch). None when there
    is nothing to plot."""
    ok = ok_rows(df).dropna(subset=["throughput_tok_s"])
    if ok.empty:
        return None
    panels = ok.groupby(["model", "batch"]).size().index.tolist()
    ncols = min(len(panels), 3)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (model, batch) in zip(axes.flat, panels, strict=False):
        sub = ok[(ok["model"] == model) & (ok["batch"] == batch)]
        for (runtime, attention, precision), g in sub.groupby(["runtime", "attention", "precision"]):
            g = g.sort_values("seq_len")
            ax.plot(g["seq_len"], g["throughput_tok_s"], marker="o", label=f"{runtime} {attention} {precision}")
        ax.set_title(f"{model}, batch {batch}")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("throughput (tokens/s)")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
