"""The report's "Export paths" section: the same model's graphs from several tools (the ``export_path`` key
column) side by side per runtime and shape, prefill and generation together (result schema columns only).

Shown only for a run with more than one export path. The TPOT bandwidth bound is the generation section's
(:mod:`.generation`: ``tpot_ms_p50 × frac_peak_bw``); a path whose cells did not run shows their status and
reason, so that a missing package is seen beside the paths that ran.
"""

from __future__ import annotations

import pandas as pd

from .format import Spec, integer, ms, sig3
from .generation import split
from .tables import runtime_labels, verdicts

#: The rows of one cell of the section, apart from the path, the runtime and the scenario's own fields.
KEYS = ["model", "precision", "batch", "seq_len"]

SPECS = {
    "export_path": Spec("export path"),
    "prefill_ms": Spec("prefill p50 (ms)", ms, True),
    "prefill_verdict": Spec("prefill verdict"),
    "ttft_ms": Spec("TTFT (ms)", ms, True),
    "tpot_ms_p50": Spec("TPOT p50 (ms)", ms, True),
    "tpot_over_bound": Spec("TPOT / bound", sig3, True),
    "generate_verdict": Spec("generate verdict"),
    "first_divergent_step": Spec("first diverging step", integer, True),
    "new_tokens": Spec("new tokens", integer, True),
    "padding": Spec("padding", sig3, True),
    "seq_len": Spec("prompt / seq len", integer, True),
    "decoder_layout": Spec("decoder layout"),
    "note": Spec("not run"),
}


def has_paths(df: pd.DataFrame) -> bool:
    """Whether the run's rows hold more than one export path (runs before the column hold one)."""
    return "export_path" in df and df["export_path"].dropna().nunique() > 1


def _outcome(rows: pd.DataFrame) -> pd.Series:
    """The verdict of ok rows; ``skipped`` / ``failed`` for the others."""
    return verdicts(rows).astype("object").where(rows["status"] == "ok", rows["status"])


def paths_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, precision, batch, prompt length), export path (and attention variant, where onnxbench's own
    export has several) and runtime: the prefill's p50 and verdict beside the generation's TTFT, TPOT p50, TPOT
    over the step's bandwidth bound, verdict and first diverging step (one row per generation's new tokens and
    padding), and for a cell that did not run its status and reason; a scenario the run did not measure has no
    columns. Empty unless :func:`has_paths`."""
    if not has_paths(df):
        return pd.DataFrame()
    frame = df.copy()
    frame["runtime"] = runtime_labels(frame)
    path = frame["export_path"].astype("object").fillna("onnxbench")
    several = frame[path == "onnxbench"]["attention"].nunique() > 1
    frame["export_path"] = path + (" " + frame["attention"].astype("object")).where(
        (path == "onnxbench") & several, "")
    frame["_outcome"] = _outcome(frame)
    frame["_note"] = frame["reason"].astype("object").where(frame["status"] != "ok", None)
    keys = KEYS + ["export_path", "runtime"]
    prefill, gen = split(frame)
    pre = prefill[keys + ["latency_ms_p50", "_outcome", "_note", "decoder_layout"]].rename(columns={
        "latency_ms_p50": "prefill_ms", "_outcome": "prefill_verdict", "_note": "prefill_note"})
    gen = gen.assign(tpot_over_bound=1 / pd.to_numeric(gen["frac_peak_bw"], errors="coerce").astype(float))
    post = gen[keys + ["new_tokens", "padding", "ttft_ms", "tpot_ms_p50", "tpot_over_bound", "_outcome",
                       "first_divergent_step", "_note", "decoder_layout"]].rename(columns={
        "_outcome": "generate_verdict", "_note": "generate_note", "decoder_layout": "generate_layout"})
    out = pre.merge(post, on=keys, how="outer")
    out["decoder_layout"] = out["decoder_layout"].astype("object").where(out["decoder_layout"].notna(),
                                                                         out["generate_layout"])
    notes = [" / ".join(dict.fromkeys(str(n) for n in pair if isinstance(n, str) and n))
             for pair in zip(out["prefill_note"], out["generate_note"], strict=True)]
    out["note"] = notes
    columns = keys + ["decoder_layout"] + (["prefill_ms", "prefill_verdict"] if not pre.empty else [])
    if not post.empty:
        columns += ["new_tokens", "padding", "ttft_ms", "tpot_ms_p50", "tpot_over_bound", "generate_verdict",
                    "first_divergent_step"]
    if any(notes):
        columns.append("note")
    return out[columns].sort_values(keys, kind="stable").reset_index(drop=True)


def failing(table: pd.DataFrame) -> list[bool]:
    """Per row of :func:`paths_table`: whether its prefill or its generation failed the agreement check."""
    return [any(row.get(c) == "FAIL" for c in ("prefill_verdict", "generate_verdict"))
            for row in table.to_dict("records")]
