"""Markdown and self-contained HTML reports built from a run directory alone."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from . import plots, tables
from .load import load, load_header

FLOAT_FORMAT = "{:.4g}".format


def _md(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    if isinstance(frame.index, pd.MultiIndex) or frame.index.name:
        frame = frame.reset_index()
    return frame.to_markdown(floatfmt=".4g", index=False) + "\n"


def summary_table(df: pd.DataFrame, baseline: str = "torch") -> pd.DataFrame:
    """Per (model, part, attention, precision, batch, seq_len): the fastest runtime whose agreement passed,
    its p50 (ms) and its speed-up over ``baseline``."""
    ok = tables.ok_rows(df)
    ok = ok[ok["agree"].fillna(False).astype(bool)]
    if ok.empty:
        return pd.DataFrame()
    keys = tables.GROUP + tables.SHAPE
    best = ok.loc[ok.groupby(keys)["latency_ms_p50"].idxmin()]
    base = ok[ok["runtime"] == baseline].set_index(keys)["latency_ms_p50"]
    out = best.set_index(keys)[["runtime", "latency_ms_p50"]].rename(
        columns={"runtime": "fastest", "latency_ms_p50": "p50_ms"})
    out[f"speedup_vs_{baseline}"] = base.reindex(out.index) / out["p50_ms"]
    return out


def sections(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The report's tables, in order, as (title, frame)."""
    return [
        ("Summary: fastest runtime that passed agreement", summary_table(df)),
        ("Latency p50 (ms)", tables.latency_table(df, "latency_ms_p50")),
        ("Latency p99 (ms)", tables.latency_table(df, "latency_ms_p99")),
        ("Speed-up vs torch eager (p50 ratio, > 1 is faster)", tables.speedup_table(df)),
        ("Agreement with the torch fp32 reference", tables.agreement_table(df)),
        ("Skipped and failed cells", tables.not_ok_table(df)),
    ]


def env_lines(header: dict) -> list[str]:
    e = header.get("env", {})
    lines = [
        f"run {header.get('run_id', '?')}, started {header.get('started', '?')}",
        f"host {e.get('host', '?')}: {e.get('cpu', '?')}, {e.get('cpu_count_logical', '?')} logical CPUs, "
        f"{e.get('memory_gb', '?')} GB, torch threads {e.get('torch_threads', '?')}",
        "GPUs: " + (", ".join(g["name"] for g in e.get("gpus", [])) or "none"),
        "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(e.get("versions", {}).items())),
        f"git {e.get('git_sha') or 'unknown'}; harness overhead {header.get('harness_overhead_ms', float('nan')):.4g}"
        " ms per timed iteration",
    ]
    return lines


def render_markdown(df: pd.DataFrame, header: dict, plot_files: dict[str, str]) -> str:
    """The Markdown report; ``plot_files`` maps titles to image paths relative to the report."""
    out = ["# onnxbench report", ""]
    out += ["## Environment", ""] + [f"- {line}" for line in env_lines(header)] + [""]
    counts = df["status"].value_counts().to_dict()
    out += [f"{len(df)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    for title, frame in sections(df):
        out += [f"## {title}", "", _md(frame)]
    for title, path in plot_files.items():
        out += [f"## {title}", "", f"![{title}]({path})", ""]
    return "\n".join(out)


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    styled = frame.reset_index() if isinstance(frame.index, pd.MultiIndex) or frame.index.name else frame.copy()
    if "agree" in styled.columns:
        styled["agree"] = styled["agree"].map({True: "pass", False: "FAIL"}).fillna("")
    table = styled.to_html(float_format=FLOAT_FORMAT, na_rep="", border=0, classes="tbl", escape=True,
                            index=False)
    return table.replace("<td>FAIL</td>", '<td class="fail">FAIL</td>')


def render_html(df: pd.DataFrame, header: dict, images: dict[str, bytes]) -> str:
    """A single self-contained HTML page (images inlined as base64 PNG)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>onnxbench report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table.tbl{border-collapse:collapse;font-size:13px;margin-bottom:1em}"
        "table.tbl td,table.tbl th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td.fail{background:#fbb;font-weight:bold}img{max-width:100%}",
        "</style></head><body><h1>onnxbench report</h1><h2>Environment</h2><ul>",
    ]
    parts += [f"<li>{html.escape(line)}</li>" for line in env_lines(header)]
    parts.append("</ul>")
    for title, frame in sections(df):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(frame)]
    for title, png in images.items():
        data = base64.b64encode(png).decode()
        parts += [f"<h2>{html.escape(title)}</h2>",
                  f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the plot PNGs for ``run_dir`` (into ``out_dir``, default the run
    directory). Returns {kind: path}.

    Raises:
        FileNotFoundError: if ``run_dir`` holds no results (see :func:`onnxbench.reports.load`).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load(run_dir)
    header = load_header(run_dir)
    images: dict[str, bytes] = {}
    png = plots.throughput_vs_seq_len(df)
    if png:
        images["Throughput vs sequence length"] = png
    plot_files = {}
    for i, (title, data) in enumerate(images.items()):
        name = f"plot_{i}_throughput.png"
        (out_dir / name).write_bytes(data)
        plot_files[title] = name
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(render_markdown(df, header, plot_files), encoding="utf-8")
    paths["html"].write_text(render_html(df, header, images), encoding="utf-8")
    return paths
