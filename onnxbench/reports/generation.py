"""The report's generation part: tables, summary and plot of ``generate`` rows (result schema columns only).

The bandwidth bound of a decode step is the time the step's bytes (``bytes_moved``: weights once, the KV cache
read, the new keys/values and logits written) take at the run's measured copy bandwidth. From the row alone it
is ``tpot_ms_p50 × frac_peak_bw`` (``frac_peak_bw`` = achieved GB/s / bandwidth = bound / TPOT), so a row
without ceilings has no bound. See docs/generation.md.
"""

from __future__ import annotations

import pandas as pd

from .format import Spec, integer, ms, rate, sig3
from .markup import save_png
from .tables import ok_rows, runtime_labels, varying, verdicts

GENERATE = "generate"
#: Keys of a generation's shape in the tables.
SHAPE = ["model", "precision", "attention", "batch", "seq_len", "new_tokens", "padding"]

SPECS = {
    "ttft_ms": Spec("TTFT (ms)", ms, True),
    "tpot_ms_p50": Spec("TPOT p50 (ms)", ms, True),
    "tpot_ms_p90": Spec("TPOT p90 (ms)", ms, True),
    "tpot_ms_p99": Spec("TPOT p99 (ms)", ms, True),
    "decode_tok_s": Spec("decode tokens/s", rate, True),
    "e2e_ms": Spec("end to end (ms)", ms, True),
    "bound_ms": Spec("bandwidth bound (ms)", ms, True),
    "tpot_over_bound": Spec("TPOT / bound", sig3, True),
    "first_divergent_step": Spec("first diverging step", integer, True),
    "new_tokens": Spec("new tokens", integer, True),
    "padding": Spec("padding", sig3, True),
    "seq_len": Spec("prompt", integer, True),
    "decoder_layout": Spec("decoder layout"),
    "lowest_ttft": Spec("lowest TTFT (passing rows)"),
    "lowest_tpot": Spec("lowest TPOT p50 (passing rows)"),
}


def split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prefill rows, generate rows) of ``df``; rows without a scenario are prefill rows."""
    generate = df["scenario"].astype("object").eq(GENERATE).fillna(False).astype(bool)
    return df[~generate], df[generate]


def _ok(gen: pd.DataFrame) -> pd.DataFrame:
    ok = ok_rows(gen).copy()
    ok["runtime"] = runtime_labels(ok)
    if "export_path" in ok and ok["export_path"].nunique() > 1:  # several tools' graphs: name the path
        ok["runtime"] = ok["runtime"] + " via " + ok["export_path"].astype("object")
    ok["verdict"] = verdicts(ok)
    ok["bound_ms"] = ok["tpot_ms_p50"] * ok["frac_peak_bw"]
    ok["tpot_over_bound"] = ok["tpot_ms_p50"] / ok["bound_ms"]
    return ok


def generation_table(gen: pd.DataFrame) -> pd.DataFrame:
    """Per generation shape and runtime: the decoder layout the graph was read as (onnxbench, optimum, builder),
    TTFT, TPOT p50/p90/p99, decode tokens/s, end to end, the bandwidth bound and TPOT / bound, the verdict and
    the first diverging step (ok rows)."""
    ok = _ok(gen)
    columns = SHAPE + ["decoder_layout", "runtime", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
                       "decode_tok_s", "e2e_ms", "bound_ms", "tpot_over_bound", "verdict", "first_divergent_step"]
    return ok[columns].sort_values(SHAPE + ["runtime"], kind="stable").reset_index(drop=True)


#: Keys of a generation's shape in the summary: rows of one group measured the same work, so their timings compare.
SUMMARY_SHAPE = ["model", "batch", "seq_len", "new_tokens", "padding"]


def _winner(row: pd.Series, column: str) -> str:
    """The row's runtime (with its export path where several ran), attention variant and precision, and ``column``."""
    what = [] if row["attention"] == "external" else [f"{row['attention']} attention"]
    return f"{row['runtime']} ({', '.join(what + [str(row['precision'])])}): {row[column]:.3g} ms"


def generation_summary(gen: pd.DataFrame) -> pd.DataFrame:
    """Per generation shape (model, batch, and prompt, new tokens, padding where they vary): the row
    with the lowest TTFT and the row with the lowest TPOT p50 among the rows whose generation passed the agreement
    check (every step's logits and tokens), over runtimes, attention variants, export paths and precisions, each
    named with its runtime, export path (where several ran), attention variant and precision; a figure a row has,
    not a median over variants. "none agreed" where no row passed, and for TPOT "no decode step (new tokens 1)"
    where no row had one (one new token is the prefill's alone)."""
    ok = _ok(gen)
    rows = []
    for key, g in ok.groupby(SUMMARY_SHAPE, sort=True, dropna=False):
        agreeing = g[g["verdict"] == "pass"]
        row = dict(zip(SUMMARY_SHAPE, key, strict=True))
        for column, name in (("ttft_ms", "lowest_ttft"), ("tpot_ms_p50", "lowest_tpot")):
            measured = agreeing.dropna(subset=[column])
            if len(measured):
                row[name] = _winner(measured.loc[measured[column].idxmin()], column)
            elif g[column].isna().all():  # nothing was measured, so nothing can have disagreed
                row[name] = ("no decode step (new tokens 1)" if column == "tpot_ms_p50" and (g["new_tokens"] == 1).all()
                             else "not measured")
            else:
                row[name] = "none agreed"
        rows.append(row)
    out = pd.DataFrame(rows, columns=SUMMARY_SHAPE + ["lowest_ttft", "lowest_tpot"])
    constant = [c for c in SUMMARY_SHAPE[2:] if c not in varying(out, [c]) and len(out)]
    return out.drop(columns=constant)


def decode_latency_plot(df: pd.DataFrame, as_figure: bool = False):
    """Decode step latency (TPOT p50, ms) against context length (mean keys per step: prompt + new tokens / 2),
    one panel per (model, precision), one line per (runtime, batch), with each batch's bandwidth bound as a
    dashed black line. PNG bytes (the matplotlib figure with ``as_figure``); None without ok generate rows."""
    import matplotlib.pyplot as plt

    ok = _ok(split(df)[1]).dropna(subset=["tpot_ms_p50"])
    if ok.empty:
        return None
    ok["context"] = ok["seq_len"] + ok["new_tokens"] / 2
    panels = list(ok.groupby(["model", "precision"], sort=True, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, ((model, precision), sub) in zip(axes.flat, panels, strict=True):
        for (runtime, batch), line in sub.groupby(["runtime", "batch"], sort=True):
            line = line.groupby("context")["tpot_ms_p50"].median()
            ax.plot(line.index, line.values, marker="o", label=f"{runtime}, B={batch}")
        for batch, line in sub.dropna(subset=["bound_ms"]).groupby("batch", sort=True):
            bound = line.groupby("context")["bound_ms"].median()
            ax.plot(bound.index, bound.values, "k--", linewidth=1, label=f"bandwidth bound, B={batch}")
        ax.set_title(f"{model}, {precision}", fontsize=10)
        ax.set_xlabel("context length (tokens, mean over the decode steps)")
        ax.set_ylabel("decode step p50 (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig if as_figure else save_png(fig)
