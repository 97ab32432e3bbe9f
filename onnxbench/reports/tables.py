"""Pivot tables over the result schema."""

from __future__ import annotations

import pandas as pd

SHAPE = ["batch", "seq_len"]
GROUP = ["model", "part", "attention", "precision"]


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def latency_table(df: pd.DataFrame, stat: str = "latency_ms_p50") -> pd.DataFrame:
    """``stat`` (ms) with rows (model, part, attention, precision, batch, seq_len) and one column per runtime."""
    ok = ok_rows(df)
    if ok.empty:
        return pd.DataFrame()
    return ok.pivot_table(index=GROUP + SHAPE, columns="runtime", values=stat, aggfunc="first")


def speedup_table(df: pd.DataFrame, baseline: str = "torch") -> pd.DataFrame:
    """Speed-up of each runtime over ``baseline`` at equal cell keys: baseline p50 / runtime p50 (> 1 is
    faster). Empty when the baseline has no ok rows."""
    lat = latency_table(df)
    if lat.empty or baseline not in lat.columns:
        return pd.DataFrame()
    return lat.rdiv(lat[baseline], axis=0)


def agreement_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ok cell: max abs/rel error, cosine, top-1 agreement, NaN count, atol/rtol and pass/fail."""
    cols = GROUP + ["runtime"] + SHAPE + ["max_abs_err", "max_rel_err", "cosine", "top1_agree", "nan_count",
                                          "atol", "rtol", "agree"]
    return ok_rows(df)[cols].reset_index(drop=True)


def not_ok_table(df: pd.DataFrame) -> pd.DataFrame:
    """Skipped and failed cells, one line per (model, runtime, status, reason) with the number of cells."""
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=["model", "runtime", "status", "reason", "cells"])
    return (bad.groupby(["model", "runtime", "status", "reason"], dropna=False).size()
            .rename("cells").reset_index())
