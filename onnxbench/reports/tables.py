"""Tables over the result schema (numeric values; :mod:`.format` turns them into text).

Every function takes the DataFrame of :func:`onnxbench.reports.load` and uses schema columns only
(:data:`onnxbench.schema.COLUMNS`). Latencies are ms per inference, throughput tokens/s.
"""

from __future__ import annotations

import json

import pandas as pd

from ..noise import NOISE_LIMIT, ci95_width, is_noisy
from ..schema import KEY_COLUMNS

SHAPE = ["batch", "seq_len"]
GROUP = ["model", "part", "attention", "precision"]
#: Key columns that describe *what* was run (shown as a note when constant over a table).
DESCRIPTIVE = ["model", "part", "attention", "precision", "opset", "config_id"]
DEFAULT_REFERENCE = "torch"
#: Columns naming the machine that measured a row (a run can span several: docs/scaling.md).
HARDWARE = ("host", "gpu_name")
#: Speed-up baseline of rows that ran on a CUDA device: PyTorch eager on the same GPU, so that a GPU runtime's
#: ratio answers "how much faster than PyTorch on this GPU" (CPU rows keep the CPU reference).
GPU_BASELINE = "torch-cuda"


def on_gpu(device) -> bool:
    """Whether a row's ``device`` column names a CUDA device (``"cuda:N"``)."""
    return isinstance(device, str) and device.startswith("cuda")


def baseline_for(device, reference: str = DEFAULT_REFERENCE) -> str:
    """The runtime a row's speed-up is computed against, chosen by the row's ``device`` column alone:
    :data:`GPU_BASELINE` for CUDA rows, ``reference`` (the run's CPU reference, torch) otherwise."""
    return GPU_BASELINE if on_gpu(device) else reference


def has_gpu_rows(df: pd.DataFrame) -> bool:
    """Whether any ok row ran on a CUDA device."""
    return any(on_gpu(d) for d in ok_rows(df)["device"]) if len(df) else False


def _device(rows: pd.DataFrame):
    devices = rows["device"].dropna()
    return devices.mode().iloc[0] if len(devices) else None


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell key (:data:`onnxbench.schema.KEY_COLUMNS`): the last written wins, as when a run was
    resumed and a cell measured again."""
    return df.drop_duplicates(subset=list(KEY_COLUMNS), keep="last")


def reference_runtime(df: pd.DataFrame) -> str:
    """The runtime the run compared outputs with (column ``reference_runtime``), default ``torch``."""
    refs = df["reference_runtime"].dropna()
    return str(refs.mode().iloc[0]) if len(refs) else DEFAULT_REFERENCE


def shape_columns(df: pd.DataFrame) -> list[str]:
    """The shape columns of prefill tables: batch and seq_len, and ``padding`` where the rows' paddings differ (an
    ONNX file's padded and unpadded batches of one shape are different cells; a run without padding keeps its
    tables as they were); and ``export_path`` where several paths ran (two tools' graphs of one model and shape
    are different cells, both with attention ``external``)."""
    return SHAPE + varying(df, ["padding", "export_path"])


def varying(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns of ``columns`` that take more than one value (NA counted as a value) in ``df``."""
    return [c for c in columns if c in df and df[c].astype("object").fillna("<NA>").nunique() > 1]


def _na_text(value) -> object:
    return "<NA>" if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else value


def _is_default_config(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) or value == "default"


def _threads(value) -> int:
    return 0 if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else int(value)


def runtime_labels(df: pd.DataFrame) -> pd.Series:
    """``runtime``, with `` ×N threads`` where the cell asked for N intra-op threads (the threads axis) and
    `` [config_id]`` for a tuned (non-default) configuration."""
    threads = df["threads"] if "threads" in df else pd.Series(0, index=df.index)
    labels = []
    for r, c, t in zip(df["runtime"], df["config_id"], threads, strict=True):
        label = r + (f" ×{_threads(t)} threads" if _threads(t) else "")
        labels.append(label if _is_default_config(c) else f"{label} [{c}]")
    return pd.Series(labels, index=df.index, dtype="object")


def baseline_rows(g: pd.DataFrame, base: str, threads=0) -> pd.DataFrame:
    """Rows of runtime ``base`` in ``g`` to read a speed-up against: its default configuration (``config_id``
    default; a run with ``--tune`` has tuned rows of the baseline too, and a speed-up is against what the
    baseline does untuned), at the same ``threads`` where the baseline has them, else at its default thread
    count, so that each cell key has one baseline row."""
    rows = g[g["runtime"] == base]
    default = rows[[_is_default_config(c) for c in rows["config_id"]]]
    rows = default if len(default) else rows
    if "threads" not in rows or rows.empty:
        return rows
    counts = rows["threads"].map(_threads)
    same = rows[counts == _threads(threads)]
    return same if len(same) else rows[counts == 0]


def _ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance (the run's order, which follows the matrix)."""
    return list(dict.fromkeys(values.tolist()))


def latency_table(df: pd.DataFrame, stat: str = "latency_ms_p50") -> pd.DataFrame:
    """``stat`` (ms) with rows (model, part, attention, precision, batch, seq_len) and one column per runtime."""
    ok = ok_rows(df)
    if ok.empty:
        return pd.DataFrame()
    return ok.pivot_table(index=GROUP + shape_columns(ok), columns="runtime", values=stat, aggfunc="first")


def speedup_table(df: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Speed-up of each runtime at equal cell keys: baseline p50 / runtime p50 (> 1 is faster). The baseline is
    ``baseline`` for every runtime when given, else chosen per runtime by its rows' ``device``
    (:func:`baseline_for`: torch-cuda for GPU runtimes, the CPU reference for CPU ones); a runtime whose baseline
    has no ok rows gets NaN. Empty when no baseline has ok rows."""
    lat = latency_table(df)
    if lat.empty:
        return pd.DataFrame()
    ok = ok_rows(df)
    reference = reference_runtime(df)
    out = {}
    for runtime in lat.columns:
        base = baseline or baseline_for(_device(ok[ok["runtime"] == runtime]), reference)
        if base in lat.columns:
            out[runtime] = lat[base] / lat[runtime]
    return pd.DataFrame(out, index=lat.index) if out else pd.DataFrame()


def latency_grid(df: pd.DataFrame, stats: tuple[str, ...] = ("latency_ms_p50", "latency_ms_p99"),
                 reference: str | None = None) -> list[tuple[dict, pd.DataFrame]]:
    """Latency of ok cells laid out runtime × (batch, seq_len), one table per (model, part, precision), and per
    host and GPU (:data:`HARDWARE`) when the run's rows were measured on several.

    Rows: the varying of (attention, opset), then batch and seq_len. Columns: ``(runtime label, stat)`` for each
    stat in ``stats`` (ms), or ``(runtime label, "speedup")`` when ``stats == ("speedup",)``: baseline p50 /
    runtime p50 at the same row (> 1 is faster), the baseline chosen by the runtime's ``device``
    (:func:`baseline_for`: ``reference`` for CPU runtimes, torch-cuda for GPU runtimes) in its default
    configuration (:func:`baseline_rows`).

    Returns:
        [(group as {column: value}, frame with flat MultiIndex-free columns named "label|stat")].
    """
    ok = ok_rows(df).copy()
    if ok.empty:
        return []
    reference = reference or reference_runtime(df)
    ok["_label"] = runtime_labels(ok)
    labels = _ordered(ok["_label"])
    row_keys = varying(ok, ["attention", "opset"]) + shape_columns(ok)
    # a run measured on several machines gets one table per machine: their figures are not comparable
    by = ["model", "part", "precision"] + varying(ok, list(HARDWARE))
    out = []
    for group, g in ok.groupby(by, sort=True, dropna=False):
        group_dict = {k: v for k, v in zip(by, group, strict=True) if not (k in HARDWARE and pd.isna(v))}
        index = g[row_keys].drop_duplicates().sort_values(row_keys, kind="stable")
        frame = index.reset_index(drop=True)
        for label in labels:
            sub = g[g["_label"] == label]
            if sub.empty:
                continue
            # one row per table row on either side of the joins, or the columns would not line up
            sub = sub.drop_duplicates(subset=row_keys, keep="last")
            merged = frame[row_keys].merge(sub, on=row_keys, how="left")
            if stats == ("speedup",):
                base = baseline_for(_device(sub), reference)
                threads = sub["threads"].iloc[0] if "threads" in sub else 0
                ref = frame[row_keys].merge(baseline_rows(g, base, threads).drop_duplicates(
                    subset=row_keys, keep="last"), on=row_keys, how="left")
                frame[f"{label}|speedup"] = ref["latency_ms_p50"].to_numpy() / merged["latency_ms_p50"].to_numpy()
            else:
                for stat in stats:
                    frame[f"{label}|{stat}"] = merged[stat].to_numpy()
        out.append((group_dict, frame))
    return out


def noisy_mask(df: pd.DataFrame, limit: float = NOISE_LIMIT) -> pd.Series:
    """Per row, whether its timing is noisy by the one criterion :func:`onnxbench.noise.is_noisy`."""
    return pd.Series([is_noisy(r, limit) for r in df.to_dict("records")], index=df.index, dtype=bool)


def summary_table(df: pd.DataFrame, reference: str | None = None, requested: list[str] | None = None,
                  noise_limit: float = NOISE_LIMIT, why_missing: str = "incomplete run") -> pd.DataFrame:
    """Per (model, part, precision, batch, seq_len): the fastest runtime (by p50) whose agreement passed.

    Columns: model, part, precision, batch, seq_len, ``fastest`` (runtime label), attention, latency_ms_p50,
    throughput_tok_s, ``baseline`` (the runtime the speed-up is against, chosen by the fastest row's ``device``:
    torch-cuda for a GPU row, ``reference`` for a CPU row), ``reference_p50`` (ms; that baseline's default
    configuration with the same attention variant, else its fastest), ``speedup`` (baseline p50 / fastest
    p50), ``faster_but_disagreeing`` (faster runtimes whose outputs failed the agreement check),
    ``noisy`` / ``reference_noisy`` (whether the fastest's / the baseline's timing is noisy,
    :func:`onnxbench.noise.is_noisy` with ``noise_limit``), and ``no_baseline`` (why there is no speed-up: the
    baseline has rows at the key but none of the fastest's graph and input, i.e. export path and padding; a
    ratio to another graph's time would not compare like with like). Where several export paths ran, ``fastest``
    names the path ("ort-cpu via builder").
    ``fastest`` is "none agreed" when no cell passed, and names no winner ("none: no row for X (incomplete
    run)") when a runtime of ``requested`` (the matrix's runtimes, ``header["matrix"]["runtimes"]``) has no row,
    of any status, at that key: a runtime that never ran cannot have lost. ``why_missing`` is the parenthesis
    (a shard's runtimes may be in another shard).
    """
    ok = ok_rows(df).copy()
    keys = ["model", "part", "precision", "batch", "seq_len"]
    columns = keys + ["fastest", "attention", "latency_ms_p50", "throughput_tok_s", "baseline", "reference_p50",
                      "speedup", "faster_but_disagreeing", "noisy", "reference_noisy", "no_baseline"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    reference = reference or reference_runtime(df)
    requested = list(requested or [])
    # keys as text: NA never equals NA, and a key with one must still find its group
    present = {tuple(map(str, key)): set(g["runtime"]) for key, g in df.groupby(keys, sort=False, dropna=False)}
    ok["_label"] = runtime_labels(ok)
    ok["_agree"] = verdicts(ok) == "pass"  # a "reference" or "floor" row compared a reference with itself
    ok["_fail"] = verdicts(ok) == "FAIL"  # ... and did not disagree either
    ok["_noisy"] = noisy_mask(ok, noise_limit)
    # rows of one key can be different graphs (export paths) or inputs (padding): a speed-up compares one graph
    # and one input with itself, and the winner names its export path where several ran
    graph = [c for c in ("export_path", "padding") if c in ok]
    if varying(ok, ["export_path"]):
        ok["_label"] = ok["_label"] + " via " + ok["export_path"].astype("object")
    rows = []
    for key, g in ok.groupby(keys, sort=True, dropna=False):
        g = g.sort_values("latency_ms_p50", kind="stable")
        agreeing = g[g["_agree"]]
        row = dict(zip(keys, key, strict=True))
        missing = [r for r in requested if r not in present.get(tuple(map(str, key)), set())]
        if missing:
            row.update(fastest=f"none: no row for {', '.join(missing)} ({why_missing})")
            rows.append(row)
            continue
        if agreeing.empty:
            row.update(fastest="none agreed", faster_but_disagreeing=", ".join(_ordered(g[g["_fail"]]["_label"]))
                       or pd.NA)
            rows.append(row)
            continue
        best = agreeing.iloc[0]
        base = baseline_for(best["device"], reference)
        refs = baseline_rows(g, base, best["threads"] if "threads" in best else 0)
        all_refs = refs
        for c in graph:
            refs = refs[refs[c].astype("object").fillna("<NA>") == _na_text(best[c])]
        same = refs[refs["attention"] == best["attention"]]
        ref_rows = (same if len(same) else refs).sort_values("latency_ms_p50", kind="stable")
        ref_p50 = ref_rows["latency_ms_p50"].iloc[0] if len(ref_rows) else float("nan")
        if ref_rows.empty and len(all_refs):  # the baseline measured other graphs only: no ratio across graphs
            what = [f"{c.replace('_', ' ')} {best[c]}" for c in graph if varying(g, [c])]
            row.update(no_baseline=f"no {base} row for this graph ({', '.join(what) or 'same key'})")
        worse = g[g["_fail"] & (g["latency_ms_p50"] < best["latency_ms_p50"])]
        row.update(fastest=best["_label"], attention=best["attention"], latency_ms_p50=best["latency_ms_p50"],
                   throughput_tok_s=best["throughput_tok_s"], baseline=base, reference_p50=ref_p50,
                   speedup=ref_p50 / best["latency_ms_p50"],
                   faster_but_disagreeing=", ".join(_ordered(worse["_label"])) or pd.NA,
                   noisy=bool(best["_noisy"]),
                   reference_noisy=bool(ref_rows["_noisy"].iloc[0]) if len(ref_rows) else False)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def run_completeness(df: pd.DataFrame, header: dict) -> dict:
    """How much of the run's matrix has rows: ``{"interrupted": bool, "expected": int | None, "missing":
    int | None, "runtimes_without_rows": [names]}``.

    ``expected`` is the header's ``n_cells`` (the matrix's cell count recorded by the runner; None for runs
    that did not record it); ``missing`` counts the matrix cells (``config_id`` default) without a row;
    ``runtimes_without_rows`` are runtimes the matrix requested (``header["matrix"]["runtimes"]``) with no row at
    all (none for a shard, which runs only some groups)."""
    rows = latest(df)
    default = rows[[_is_default_config(c) for c in rows["config_id"]]]
    expected = header.get("n_cells")
    matrix = header.get("matrix") or {}
    # a shard runs whole groups of some runtimes only: its own cell count (n_cells) says whether it is complete
    requested = [] if matrix.get("shard") else matrix.get("runtimes") or []
    have = set(rows["runtime"].dropna())
    return {"interrupted": bool(header.get("interrupted")),
            "expected": expected,
            "missing": max(int(expected) - len(default), 0) if expected is not None else None,
            "runtimes_without_rows": [r for r in requested if r not in have]}


#: Agreement columns that only runs with a float64 reference have; a table leaves them out when all are empty.
FLOOR_TABLE_COLUMNS = ("required_atol", "floor_ratio", "floor_factor")


def verdicts(df: pd.DataFrame) -> pd.Series:
    """Each row's agreement verdict: the ``verdict`` column (``pass`` | ``FAIL`` | ``reference`` | ``floor``), or
    for rows written before it existed, ``pass``/``FAIL`` from ``agree``; NA where neither is known."""
    derived = df["agree"].astype("object").map(lambda v: pd.NA if v is None or v is pd.NA else
                                               ("pass" if bool(v) else "FAIL"))
    return df["verdict"].astype("object").where(df["verdict"].notna(), derived)


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def failed_criteria(row) -> str:
    """Which agreement criteria a ``FAIL`` row failed, read from its columns by the rule of the ``agree`` column
    (:data:`onnxbench.schema.COLUMNS`, docs/agreement.md): NaN/Inf where the reference is finite (``nan_count``
    beyond ``nonfinite_matched``), the absolute band (``required_atol`` above ``atol``), the noise floor
    (``floor_ratio`` above ``floor_factor``); when none of these failed, the remaining criterion: the cosine
    (its minimum is the precision's, onnxbench.tolerance). A quantized row (:func:`is_quantized`) is judged by
    other limits (docs/quantization.md): its ``reason`` is shown, which names them. "" for a row that did not
    fail."""
    if row.get("verdict") != "FAIL":
        return ""
    if is_quantized(row):
        return str(row.get("reason") or "quantized limits (docs/quantization.md)")
    out = []
    nan, matched = _number(row.get("nan_count")), _number(row.get("nonfinite_matched")) or 0
    if nan is not None and nan > matched:
        out.append(f"NaN/Inf ({nan - matched:.0f})")
    need, atol = _number(row.get("required_atol")), _number(row.get("atol"))
    if need is not None and atol is not None and need > atol:
        out.append(f"band: needs atol {need:.2g} > {atol:.2g}")
    ratio, factor = _number(row.get("floor_ratio")), _number(row.get("floor_factor"))
    if ratio is not None and factor is not None and ratio > factor:
        out.append(f"floor: {ratio:.3g}× > {factor:.3g}×")
    if not out and _number(row.get("cosine")) is not None:
        out.append(f"cosine {float(row['cosine']):.6f}")
    return "; ".join(out) or str(row.get("reason") or "")


def is_quantized(row) -> bool:
    """Whether a row was judged by the quantized criteria: it records ``rel_rms_err`` (every quantized row) or,
    written before that column, ``kl_mean``."""
    return _number(row.get("rel_rms_err")) is not None or _number(row.get("kl_mean")) is not None


def agreement_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ok cell: the ``verdict`` (a ``reference`` row compared the reference with itself: not a pass) and,
    where some row failed, the criteria it failed (``failed_on``, :func:`failed_criteria`) first, so that a wide
    table shows them without scrolling; then the cell, max abs/rel error, cosine, top-1 agreement, NaN count,
    the atol that would have passed (``required_atol``) beside the configured atol/rtol, and the error against
    float64 as a multiple of the noise floor (``floor_ratio``) beside the factor allowed. ``runtime`` carries
    the tuned configuration's name where there is one."""
    ok = ok_rows(df).copy()
    ok["runtime"] = runtime_labels(ok)
    ok["verdict"] = verdicts(ok)
    ok["failed_on"] = [failed_criteria(r) for r in ok.to_dict("records")]
    first = ["verdict"] + (["failed_on"] if (ok["failed_on"] != "").any() else [])
    cols = first + ["model", "part", "attention", "precision", "opset", "runtime"] + shape_columns(ok) + [
        "max_abs_err", "max_rel_err", "cosine", "top1_agree", "nan_count", "required_atol", "atol", "rtol",
        "floor_ratio", "floor_factor"]
    cols = [c for c in cols if c not in FLOOR_TABLE_COLUMNS or ok[c].notna().any()]
    return ok[cols].reset_index(drop=True)


#: The float precision a quantized graph is made from (docs/quantization.md: int8-dynamic quantizes fp32 graphs).
QUANTIZED_FROM = "fp32"


def quantized_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ok quantized cell (:func:`is_quantized`): its p50 beside the p50 of the float cell it was made from
    (same key columns but precision :data:`QUANTIZED_FROM` and opset), the speed-up (float p50 / quantized p50,
    > 1 is faster) and its accuracy against the float reference: KL mean and max (nats), top-1 agreement (of
    vocabulary logits; empty for other outputs), cosine, the relative RMS error and the verdict. Empty when the
    run has no quantized row."""
    if "kl_mean" not in df and "rel_rms_err" not in df:
        return pd.DataFrame()
    ok = ok_rows(df)
    quantized = ok[[is_quantized(r) for r in ok.to_dict("records")]].copy()
    if "rel_rms_err" not in quantized:
        quantized["rel_rms_err"] = float("nan")
    if quantized.empty:
        return pd.DataFrame()
    keys = [c for c in KEY_COLUMNS if c not in ("precision", "opset") and c in df]
    floats = ok[ok["precision"] == QUANTIZED_FROM][keys + ["latency_ms_p50"]].rename(
        columns={"latency_ms_p50": "float_p50"})
    merged = quantized.merge(floats.drop_duplicates(subset=keys, keep="last"), on=keys, how="left")
    merged["runtime"] = runtime_labels(merged)
    merged["verdict"] = verdicts(merged)
    merged["float_precision"] = QUANTIZED_FROM
    merged["quantized_p50"] = merged["latency_ms_p50"]
    merged["quant_speedup"] = merged["float_p50"] / merged["quantized_p50"]
    return merged[["model", "part", "attention", "runtime"] + shape_columns(merged) + [
        "precision", "float_p50", "quantized_p50", "quant_speedup", "kl_mean", "kl_max", "top1_agree", "cosine",
        "rel_rms_err", "verdict"]].reset_index(drop=True)


def divergence_table(df: pd.DataFrame) -> pd.DataFrame:
    """Ok cells whose first diverging block was located (failing cells, or every cell of a run with
    ``--locate-divergence``): the block, the output's error as a multiple of the noise floor, and the verdict."""
    ok = ok_rows(df).copy()
    ok = ok[ok["first_divergent_block"].notna()]
    ok["runtime"] = runtime_labels(ok)
    ok["verdict"] = verdicts(ok)
    return ok[["model", "part", "attention", "precision", "runtime"] + shape_columns(ok) + [
        "first_divergent_block", "floor_ratio", "verdict"]].reset_index(drop=True)


def not_ok_table(df: pd.DataFrame) -> pd.DataFrame:
    """Skipped and failed cells grouped by (status, runtime, reason): the models, parts, attention variants and
    precisions concerned (distinct values, comma-separated), the number of cells and their shapes as
    "batch×seq_len". Failed cells come first."""
    keys = ["status", "runtime", "reason"]
    spread = ["model", "part", "attention", "precision"]
    bad = df[df["status"] != "ok"].copy()
    if bad.empty:
        return pd.DataFrame(columns=keys[:2] + spread + ["reason", "cells", "shapes"])
    bad["runtime"] = runtime_labels(bad)
    bad["reason"] = bad["reason"].fillna("(no reason recorded)")
    bad["_shape"] = [f"{b}×{t}" for b, t in zip(bad["batch"], bad["seq_len"], strict=True)]
    rows = []
    for key, g in bad.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        row.update({c: ", ".join(str(v) for v in _ordered(g[c].astype("object").fillna("—"))) for c in spread})
        row.update(cells=len(g), shapes=", ".join(_ordered(g["_shape"])))
        rows.append(row)
    out = pd.DataFrame(rows, columns=keys[:2] + spread + ["reason", "cells", "shapes"])
    # failed before skipped: failures need action, skips usually only a different machine
    return out.sort_values("status", kind="stable", key=lambda s: s.map({"failed": 0}).fillna(1)).reset_index(
        drop=True)


def noisy_table(df: pd.DataFrame, limit: float = NOISE_LIMIT) -> pd.DataFrame:
    """Ok cells whose median is uncertain by the one noise criterion (:func:`onnxbench.noise.is_noisy`: the
    95 % CI of p50 wider than ``limit`` × p50, or, where no CI was recorded, a coefficient of variation above
    ``limit``). Columns: cell description, shape, iters, latency_ms_p50, ci95_p50_lo_ms, ci95_p50_hi_ms,
    ``ci95_width`` (fraction of p50), cov."""
    ok = ok_rows(df).copy()
    if ok.empty:
        return pd.DataFrame()
    noisy = ok[noisy_mask(ok, limit)].copy()
    if noisy.empty:
        return pd.DataFrame()
    noisy["ci95_width"] = [ci95_width(r) for r in noisy.to_dict("records")]
    noisy["runtime"] = runtime_labels(noisy)
    # a generate row's latency columns are its decode step's (TPOT): name the scenario where there is one
    scenario = (["scenario", "new_tokens", "padding"]
                if noisy["scenario"].astype("object").eq("generate").any() else varying(noisy, ["padding"]))
    cols = ["model", "part", "attention", "precision", "opset", "runtime"] + SHAPE + scenario + [
        "iters", "latency_ms_p50", "ci95_p50_lo_ms", "ci95_p50_hi_ms", "ci95_width", "cov"]
    return noisy[cols].reset_index(drop=True)


def _present(df: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c in df and df[c].notna().any()]


def _cells(df: pd.DataFrame, measures: list[str], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Ok rows with a value in any of ``measures``: cell description, shape, ``extra`` and the measures
    present."""
    ok = ok_rows(df).copy()
    present = _present(ok, measures)
    if not present:
        return pd.DataFrame()
    ok = ok[ok[present].notna().any(axis=1)]
    ok["runtime"] = runtime_labels(ok)
    cols = ["model", "part", "attention", "precision", "opset", "runtime"] + shape_columns(ok) + list(extra) + present
    return ok[cols].reset_index(drop=True)


def stage_table(df: pd.DataFrame) -> pd.DataFrame:
    """GPU runtimes' per-inference split (ms): host→device copy, device compute, device→host copy, next to p50.
    Empty when no row has these columns (CPU-only runs)."""
    return _cells(df, ["h2d_ms", "compute_ms", "d2h_ms"], extra=("latency_ms_p50",))


def roofline_table(df: pd.DataFrame) -> pd.DataFrame:
    """Work and achieved rates per cell (FLOPs, GFLOP/s, fraction of the measured peak, GB/s, fraction of the
    measured bandwidth) where the run recorded them (roofline model: Williams et al., CACM 2009)."""
    return _cells(df, ["flops", "achieved_gflops", "frac_peak_flops", "bytes_moved", "achieved_gbs",
                       "frac_peak_bw"])


def provider_table(df: pd.DataFrame) -> pd.DataFrame:
    """Execution providers asked for and read back, and the EP that ran the attention nodes, per (runtime,
    model, part, attention, precision). Empty unless some row records ``attention_provider`` or an actual
    provider that differs from the requested one."""
    ok = ok_rows(df).copy()
    differs = (ok["provider_actual"].astype("object") != ok["provider_requested"].astype("object")).any()
    if ok.empty or not (ok["attention_provider"].notna().any() or differs):
        return pd.DataFrame()
    ok["runtime"] = runtime_labels(ok)
    cols = ["runtime", "model", "part", "attention", "precision", "provider_requested", "provider_actual",
            "attention_provider"]
    return ok[cols].astype("object").drop_duplicates().reset_index(drop=True)


def config_table(df: pd.DataFrame) -> pd.DataFrame:
    """Which configuration won where: one line per cell with a tuned (non-default ``config_id``) row, with the
    configuration it ran (``tune_config`` of its options, else its ``config_id``), its p50 next to the default
    row's p50 of the same cell (ms), and the options in force (JSON). ``--tune`` chooses per shape, and a shape
    where no candidate was distinguishably faster reports ``default`` (docs/measurement.md "Tuning")."""
    tuned = df[[not _is_default_config(c) for c in df["config_id"]]]
    if tuned.empty:
        return pd.DataFrame()
    key = [c for c in KEY_COLUMNS if c != "config_id" and c in df]
    defaults = df[[_is_default_config(c) for c in df["config_id"]]].drop_duplicates(key, keep="last")
    p50 = defaults.set_index(key)["latency_ms_p50"]
    out = tuned.copy()
    out["tune_config"] = [_tune_config(o, c) for o, c in zip(out["options"], out["config_id"], strict=True)]
    out["default_p50"] = [p50.get(k) for k in out[key].itertuples(index=False, name=None)]
    out["tuned_p50"] = out["latency_ms_p50"]
    cols = ["runtime", *varying(df, ["model", "attention", "precision"]), "batch", "seq_len", "tune_config",
            "default_p50", "tuned_p50", "options"]
    order = [c for c in ["runtime", "model", "attention", "precision", "batch", "seq_len"] if c in cols]
    return out[cols].sort_values(order, kind="stable").astype("object").reset_index(drop=True)


def _tune_config(options, config_id) -> str:
    try:
        return json.loads(options).get("tune_config", config_id)
    except (TypeError, ValueError, AttributeError):
        return config_id


def resources_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (runtime, model, part, attention, precision) of ok cells: the largest export time (s), session build
    time (s), peak RSS (MiB) and device memory (MiB) recorded; columns without data are left out."""
    ok = ok_rows(df).copy()
    measures = _present(ok, ["export_s", "build_s", "peak_rss_mb", "device_mem_mb"])
    if ok.empty or not measures:
        return pd.DataFrame()
    ok["runtime"] = runtime_labels(ok)
    keys = ["runtime", "model", "part", "attention", "precision"]
    return ok.groupby(keys, sort=False, dropna=False)[measures].max().reset_index()


def attention_variant_table(df: pd.DataFrame) -> pd.DataFrame:
    """Attention variants side by side: per (model, part, precision, runtime, batch, seq_len) and variant, the
    opset, p50 latency (ms), max abs error and cosine against the reference (pass/fail is marked in the
    agreement section), and the EP that ran the attention cores (``attention_provider``, from ONNX Runtime
    profiling). Empty unless the run holds several attention variants."""
    ok = ok_rows(df).copy()
    if ok.empty or ok["attention"].nunique() < 2:
        return pd.DataFrame()
    ok["runtime"] = runtime_labels(ok)
    keys = ["model", "part", "precision", "runtime"] + shape_columns(ok) + ["attention"]
    cols = ["opset", "latency_ms_p50", "max_abs_err", "cosine", "attention_provider"]
    return ok.sort_values(keys)[keys + cols].reset_index(drop=True)


def host_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per machine that measured cells (``host``, ``gpu_name``): how many cells, how many ok and failed, and which
    runtimes and models ran there. Empty unless the rows name more than one machine."""
    cols = [c for c in HARDWARE if c in df]
    rows = latest(df)
    if not cols or "host" not in cols or rows["host"].dropna().empty or not varying(rows.dropna(subset=["host"]),
                                                                                    cols):
        return pd.DataFrame()
    out = []
    for key, g in rows.dropna(subset=["host"]).groupby(cols, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(cols, key, strict=True)), "cells": len(g), "ok": int((g["status"] == "ok").sum()),
                    "failed": int((g["status"] == "failed").sum()),
                    "runtimes": ", ".join(_ordered(g["runtime"])), "models": ", ".join(_ordered(g["model"]))})
    return pd.DataFrame(out)
