"""Run-to-run comparison: join two runs on their cell keys, flag p50 regressions beyond a threshold.

A cell is compared when both runs measured it (``status == "ok"``). With relative change
``(p50_B − p50_A) / p50_A``, a change beyond ``±threshold`` is judged only if it is also statistically
distinguishable: the two medians' 95 % confidence intervals (the harness's distribution-free intervals,
``ci95_p50_lo_ms``/``ci95_p50_hi_ms``) do not overlap. Then above ``+threshold`` is a *regression*, below
``−threshold`` an *improvement*; a change beyond the threshold whose intervals overlap is *within noise* and does
not fail the gate; anything smaller is *unchanged*. Where either run recorded no interval the threshold alone
decides (and the table says the intervals are unknown). Non-overlap of two 95 % intervals is a conservative test
of a difference (Schenker & Gentleman, *On judging the significance of differences by examining the overlap
between confidence intervals*, The American Statistician 55(3), 2001): it calls fewer regressions than a test on
the raw samples would, which runs do not keep. A cell that was ok in A and failed in B, or whose outputs agreed
in A and not in B, is a regression whatever the timings (it gates CI like a slowdown). Cells skipped or missing
in one run are listed, not judged: they usually mean a different machine, which the environment check reports.
The rule is documented for users in docs/usage.md ("Comparing two runs") and docs/measurement.md.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..noise import busy_note
from ..schema import KEY_COLUMNS, cell_label
from . import tables
from .format import Spec
from .load import load, load_header
from .markup import Table, html_figure, html_page, html_table, md_table, save_png

#: Header env fields whose difference makes timings hard to compare (label, path in header["env"]).
ENV_FIELDS = (("CPU", ("cpu",)), ("logical CPUs", ("cpu_count_logical",)), ("CPU affinity", ("cpu_affinity",)),
              ("memory (GB)", ("memory_gb",)), ("torch threads", ("torch_threads",)), ("host", ("host",)),
              ("platform", ("platform",)), ("Python", ("python",)), ("git sha", ("git_sha",)))

REGRESSION, IMPROVEMENT, UNCHANGED, NOISE = "regression", "improvement", "unchanged", "within noise"
#: Exit status of a comparison in which no cell was measured in both runs.
NOTHING_COMPARED = 2


def parse_threshold(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05: the size of a p50 change, in either direction, that counts.

    Raises:
        ValueError: for anything else: a negative or zero threshold (naming the positive form), a bare number
            >= 1 (ambiguous: write "5%" or "0.05"), text that is not a number.
    """
    m = re.fullmatch(r"\s*([-+]?)\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not m:
        raise ValueError(f"threshold {text!r} is not a number; write e.g. 5% or 0.05")
    sign, number, percent = m.groups()
    value = float(number)
    if sign == "-" or value == 0:
        example = f"{number}{percent}" if value else "5%"
        raise ValueError(f"threshold {text!r} must be positive: it is the size of a p50 change in either direction "
                         f"(growth beyond it is a regression, a drop beyond it an improvement); write e.g. {example}")
    if percent:
        return value / 100
    if value >= 1:
        raise ValueError(f"threshold {text!r} is ambiguous; write {number}% or a fraction such as 0.05")
    return value


@dataclass
class Comparison:
    """Result of :func:`compare`.

    Attributes:
        cells: one row per cell key in either run: the key columns, status_a/b, p50_a/b (ms), p50_change
            (fraction), tok_s_a/b (tokens/s), tok_s_change (fraction), ci_overlap ("yes" when the two 95 % CIs
            of p50 overlap, i.e. the change is within noise; NA without CIs), verdict (regression,
            improvement, within noise, unchanged, not compared; see the module docstring).
        env_diffs: (field, value in A, value in B) for each environment field that differs (a field recorded
            by one run only is not a difference).
        threshold: fraction, e.g. 0.05.
        hardware_diffs: (cell, machine in A, machine in B) for each cell measured in both runs on different
            hardware (``host`` / ``gpu_name``; a run that did not record them is not a difference): a run spanning
            several machines can differ cell by cell where its header's environment is one machine's.
        busy: "A" and/or "B" -> why that run's timings are unreliable, for each run measured on a busy machine
            (:func:`onnxbench.noise.busy_note`, the one rule).
    """

    cells: pd.DataFrame
    env_diffs: list[tuple[str, str, str]]
    threshold: float
    run_a: str = "A"
    run_b: str = "B"
    counts: dict[str, int] = field(default_factory=dict)
    hardware_diffs: list[tuple[str, str, str]] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)

    def busy_lines(self) -> list[str]:
        """A warning naming the run(s) measured on a busy machine (``busy``: "A"/"B" -> the note of
        :func:`onnxbench.noise.busy_note`); [] when neither was. The gate still judges their cells: the warning
        says that its verdicts rest on unreliable timings."""
        if not self.busy:
            return []
        if len(self.busy) == 2:
            which = f"both runs were measured on a busy machine (A: {self.busy['A']}; B: {self.busy['B']})"
        else:
            name = next(iter(self.busy))
            run = self.run_a if name == "A" else self.run_b
            which = f"run {name} ({run}) was measured on a busy machine: {self.busy[name]}"
        return [f"{which}; timings taken under load are unreliable (a cell slowed "
                "throughout has a narrow CI), so the changes and the gate's verdicts read from them are too: rerun "
                "on a quiet machine before acting on them."]

    @property
    def regressions(self) -> pd.DataFrame:
        return self.cells[self.cells["verdict"].str.startswith(REGRESSION)]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.cells[self.cells["verdict"] == IMPROVEMENT]

    @property
    def compared(self) -> int:
        """How many cells were judged (measured ok in both runs, or ok in A and failed in B)."""
        return int((self.cells["verdict"] != "not compared").sum())

    @property
    def exit_code(self) -> int:
        """The status ``onnxbench compare`` exits with: 2 when no cell was compared (the runs share no measured
        cell: a gate that compared nothing must not pass), 1 when any regression exceeds the threshold (so CI
        fails), else 0."""
        if not self.compared:
            return NOTHING_COMPARED
        return 1 if len(self.regressions) else 0


def _env_value(header: dict, path: tuple[str, ...]):
    value = header.get("env", {})
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _same(label: str, a, b) -> bool:
    """Whether two recorded values of a field agree: a value absent on either side is not a difference, and git
    shas agree when one is a prefix of the other (short and full forms of one commit)."""
    if a is None or b is None:
        return True
    if label == "git sha":
        a, b = str(a).lower(), str(b).lower()
        return a.startswith(b) or b.startswith(a)
    return a == b


def env_differences(header_a: dict, header_b: dict) -> list[tuple[str, str, str]]:
    """Environment fields (CPU, cores, memory, threads, host, GPUs, library versions, git sha) that differ.

    A field recorded by one run only (e.g. a pytest-benchmark JSON has no thread count) is not a difference, and
    git shas are compared by prefix."""
    diffs = []
    for label, path in ENV_FIELDS:
        a, b = _env_value(header_a, path), _env_value(header_b, path)
        if not _same(label, a, b):
            diffs.append((label, str(a), str(b)))
    env_a, env_b = header_a.get("env", {}), header_b.get("env", {})
    if "gpus" in env_a and "gpus" in env_b:
        gpus = [", ".join(" ".join(str(v) for v in g.values()) for g in env["gpus"]) or "none"
                for env in (env_a, env_b)]
        if gpus[0] != gpus[1]:
            diffs.append(("GPUs", gpus[0], gpus[1]))
    va, vb = env_a.get("versions") or {}, env_b.get("versions") or {}
    for lib in sorted(set(va) & set(vb)):
        if not _same(lib, va[lib], vb[lib]):
            diffs.append((f"{lib} version", str(va[lib]), str(vb[lib])))
    return diffs


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    df = tables.latest(df).copy()
    for col in KEY_COLUMNS:
        # NA never equals NA in a join; runs written before a key column existed leave it empty
        df[col] = df[col].astype("object").where(df[col].notna(), "")
    df.loc[df["config_id"] == "", "config_id"] = "default"
    return df


def _disagrees(agree) -> bool:
    """Whether an ``agree`` value says the row disagreed (False); empty (None, NA, NaN) says nothing."""
    return agree is not None and agree is not pd.NA and agree == agree and not bool(agree)


def compare(df_a: pd.DataFrame, df_b: pd.DataFrame, header_a: dict | None = None, header_b: dict | None = None,
            threshold: float = 0.05) -> Comparison:
    """Join runs A (before) and B (after) on :data:`onnxbench.schema.KEY_COLUMNS` and judge each cell.

    Args:
        df_a, df_b: frames from :func:`onnxbench.reports.load`.
        header_a, header_b: the runs' headers (for the environment check).
        threshold: relative p50 change beyond which a cell counts as changed (fraction, > 0).

    Raises:
        ValueError: for a threshold that is not positive.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    header_a, header_b = header_a or {}, header_b or {}
    keys = list(KEY_COLUMNS)
    cols = ["status", "latency_ms_p50", "throughput_tok_s", "agree", "ci95_p50_lo_ms", "ci95_p50_hi_ms"]
    a, b = _keyed(df_a)[keys + cols], _keyed(df_b)[keys + cols]
    a["_pos_a"], b["_pos_b"] = range(len(a)), range(len(b))
    joined = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    # A's row order (the run's), then cells only B has, in B's order
    joined = joined.sort_values(["_pos_a", "_pos_b"], na_position="last", kind="stable").reset_index(drop=True)
    out = joined[keys].copy()
    out["status_a"] = joined["status_a"].astype("object").where(joined["_merge"] != "right_only", "absent")
    out["status_b"] = joined["status_b"].astype("object").where(joined["_merge"] != "left_only", "absent")
    out["p50_a"], out["p50_b"] = joined["latency_ms_p50_a"], joined["latency_ms_p50_b"]
    out["p50_change"] = out["p50_b"] / out["p50_a"] - 1
    out["tok_s_a"], out["tok_s_b"] = joined["throughput_tok_s_a"], joined["throughput_tok_s_b"]
    out["tok_s_change"] = out["tok_s_b"] / out["tok_s_a"] - 1
    overlap = (joined["ci95_p50_lo_ms_a"] <= joined["ci95_p50_hi_ms_b"]) & (
        joined["ci95_p50_lo_ms_b"] <= joined["ci95_p50_hi_ms_a"])
    known = joined[["ci95_p50_lo_ms_a", "ci95_p50_hi_ms_a", "ci95_p50_lo_ms_b", "ci95_p50_hi_ms_b"]].notna().all(
        axis=1)
    out["ci_overlap"] = [("yes" if o else "no") if k else pd.NA for o, k in zip(overlap, known, strict=True)]
    agree_a = joined["agree_a"].astype("object").fillna(False).astype(bool)
    # lost only where B disagrees: an empty agree ('reference' or 'floor' row, judged by neither) is not a loss
    agree_b = ~joined["agree_b"].astype("object").map(_disagrees).astype(bool)
    verdicts = []
    for i, row in out.iterrows():
        if row["status_a"] == "ok" and row["status_b"] == "failed":
            verdicts.append(f"{REGRESSION}: now fails")
        elif row["status_a"] != "ok" or row["status_b"] != "ok":
            verdicts.append("not compared")
        elif agree_a[i] and not agree_b[i]:
            verdicts.append(f"{REGRESSION}: agreement lost")
        elif abs(row["p50_change"]) <= threshold:
            verdicts.append(UNCHANGED)
        elif row["ci_overlap"] is not pd.NA and row["ci_overlap"] == "yes":
            verdicts.append(NOISE)
        else:
            verdicts.append(REGRESSION if row["p50_change"] > 0 else IMPROVEMENT)
    out["verdict"] = verdicts
    for col in ("opset", "batch", "seq_len"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("Int64")
    counts = out["verdict"].str.split(":").str[0].value_counts().to_dict()
    busy = {name: note for name, note in (("A", busy_note(header_a)), ("B", busy_note(header_b))) if note}
    return Comparison(out, env_differences(header_a, header_b), threshold,
                      str(header_a.get("run_id", "A")), str(header_b.get("run_id", "B")), counts,
                      hardware_differences(df_a, df_b), busy)


def _machine(host, gpu) -> str:
    return str(host) + (f" ({gpu})" if isinstance(gpu, str) and gpu else "")


def hardware_differences(df_a: pd.DataFrame, df_b: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(cell, machine in A, machine in B) for each cell both runs measured (ok) whose ``host`` or ``gpu_name``
    differs; a run without the columns (recorded before them) or a row without a host is not a difference."""
    if "host" not in df_a or "host" not in df_b:
        return []
    keys = list(KEY_COLUMNS)
    a, b = (_keyed(tables.ok_rows(df)) for df in (df_a, df_b))
    for frame in (a, b):
        if "gpu_name" not in frame:
            frame["gpu_name"] = None
    joined = a[keys + list(tables.HARDWARE)].merge(b[keys + list(tables.HARDWARE)], on=keys, suffixes=("_a", "_b"))
    diffs = []
    label = [k for k in KEY_COLUMNS if k in ("model", "runtime", "batch", "seq_len") or tables.varying(joined, [k])]
    for _, row in joined.iterrows():
        if pd.isna(row["host_a"]) or pd.isna(row["host_b"]):
            continue
        gpu_a = None if pd.isna(row["gpu_name_a"]) else row["gpu_name_a"]
        gpu_b = None if pd.isna(row["gpu_name_b"]) else row["gpu_name_b"]
        if (row["host_a"], gpu_a) != (row["host_b"], gpu_b):
            cell = cell_label(row, label)
            diffs.append((cell, _machine(row["host_a"], gpu_a), _machine(row["host_b"], gpu_b)))
    return diffs


def compare_runs(run_a: str | Path, run_b: str | Path, threshold: float = 0.05) -> Comparison:
    """:func:`compare` of two run directories.

    Raises:
        FileNotFoundError: if either directory holds no results.
    """
    return compare(load(run_a), load(run_b), load_header(run_a), load_header(run_b), threshold)


#: Key columns every cell table shows (where any cell has a value); the other key columns
#: (:data:`onnxbench.schema.KEY_COLUMNS`: export path, threads, scenario, new tokens, padding) only where they
#: vary over the cells, since a run without them keeps its tables as they were.
_ALWAYS = ("model", "part", "attention", "precision", "opset", "runtime", "config_id", "batch", "seq_len")


def _cell_columns(cells: pd.DataFrame, frame: pd.DataFrame) -> list[str]:
    """The key columns a table of ``frame`` (some of ``cells``) shows, in :data:`onnxbench.schema.KEY_COLUMNS`
    order: those of :data:`_ALWAYS` any cell has, and the others where they vary over ``frame``."""
    shown = [k for k in KEY_COLUMNS if k in _ALWAYS and cells[k].notna().any() and (cells[k] != "").any()]
    return [k for k in KEY_COLUMNS if k in shown or (k not in _ALWAYS and tables.varying(frame, [k]))]

_SPECS = {"verdict": Spec("verdict")}


def _tables(c: Comparison) -> list[tuple[str, str, Table]]:
    judged = ["p50_a", "p50_b", "p50_change", "tok_s_a", "tok_s_b", "tok_s_change", "ci_overlap", "verdict"]
    cells = c.cells.copy()
    cells.loc[cells["config_id"] == "default", "config_id"] = pd.NA
    compared = cells[~cells["verdict"].isin(["not compared"])]
    other = cells[cells["verdict"] == "not compared"]
    reg = compared[compared["verdict"].str.startswith(REGRESSION)]
    imp = compared[compared["verdict"] == IMPROVEMENT]
    noise = compared[compared["verdict"] == NOISE]

    def table(frame: pd.DataFrame, columns: list[str], empty: str) -> Table:
        frame = frame[_cell_columns(cells, frame) + columns].reset_index(drop=True)
        fail = [str(v).startswith(REGRESSION) for v in frame["verdict"]] if "verdict" in frame else None
        return Table(frame, specs=_SPECS, fail=fail, empty=empty)

    env = pd.DataFrame(c.env_diffs, columns=["field", "A", "B"])
    return [
        ("env", "Environment differences", Table(env, empty="none: same CPU, cores, memory, threads, GPUs, "
                                                        "library versions and git sha")),
        ("regressions", "Regressions", table(reg, judged, "none")),
        ("improvements", "Improvements", table(imp, judged, "none")),
        ("noise", "Changes beyond the threshold but within noise", table(noise, judged, "none")),
        ("all", "All compared cells", table(compared, judged, "no cell was measured in both runs")),
        ("not-compared", "Cells not measured in both runs", table(other, ["status_a", "status_b"], "none")),
    ]


def _headline(c: Comparison) -> list[str]:
    n = c.counts
    verdict = ", ".join(f"{k} {n.get(k, 0)}" for k in (REGRESSION, IMPROVEMENT, NOISE, UNCHANGED,
                                                          "not compared"))
    lines = [f"A = run {c.run_a} (before), B = run {c.run_b} (after). A cell regresses when its p50 grows by "
             f"more than {c.threshold:.1%} and the 95 % CIs of the two medians do not overlap (or it now fails, "
             f"or its outputs no longer agree); it improves when p50 shrinks by more than {c.threshold:.1%} "
             "and the CIs do not overlap. A change beyond the threshold whose CIs overlap is within the timing "
             "noise of the runs and does not fail the gate; where a run recorded no CI the threshold alone "
             "decides. Changes are relative: B / A − 1.",
             f"Result: {verdict}; exit status {c.exit_code}"
             + (" (no cell was measured in both runs: nothing was compared)." if c.exit_code == NOTHING_COMPARED
                else ".")]
    if c.env_diffs:
        lines.append(f"Warning: the environments differ in {len(c.env_diffs)} field(s) "
                     f"({', '.join(d[0] for d in c.env_diffs)}); timing changes may come from the machine or the "
                     "libraries rather than the code.")
    lines += [f"Warning: {line}" for line in c.busy_lines()]
    if c.hardware_diffs:
        cell, a, b = c.hardware_diffs[0]
        lines.append(f"Warning: {len(c.hardware_diffs)} cell(s) ran on different hardware in A and B (e.g. {cell}: "
                     f"{a} → {b}); their changes may come from the machines rather than the code.")
    return lines


def render_markdown(c: Comparison) -> str:
    """The comparison as Markdown (deterministic: same runs and threshold give the same text)."""
    lines = [f"# onnxbench compare: {c.run_a} → {c.run_b}", ""]
    for line in _headline(c):
        lines += [f"**{line}**" if line.startswith(("Result", "Warning")) else line, ""]
    for _, title, table in _tables(c):
        lines += [f"## {title}", ""] + md_table(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def change_plot(c: Comparison) -> bytes | None:
    """Horizontal bars of the p50 change per compared cell (red: regression, green: improvement), with the
    threshold as dashed lines. None when no cell was compared."""
    import matplotlib.pyplot as plt

    from . import plots  # noqa: F401  (selects the headless backend)

    cells = c.cells[c.cells["p50_change"].notna()]
    if cells.empty:
        return None
    described = [k for k in KEY_COLUMNS if k in ("runtime", "batch", "seq_len") or tables.varying(cells, [k])]
    labels = [cell_label(r, described) for _, r in cells.iterrows()]
    colors = ["#c0392b" if v.startswith(REGRESSION) else "#27ae60" if v == IMPROVEMENT else "#95a5a6"
              for v in cells["verdict"]]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(cells) + 1.2))
    ax.barh(range(len(cells)), cells["p50_change"] * 100, color=colors)
    ax.set_yticks(range(len(cells)), labels, fontsize=7)
    ax.invert_yaxis()
    for x in (c.threshold * 100, -c.threshold * 100):
        ax.axvline(x, color="k", linestyle="--", linewidth=0.8)
    ax.axvline(0, color="k", linewidth=0.5)
    ax.set_xlabel("p50 change B vs A (%)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return save_png(fig)


def render_html(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (inline CSS, the change plot inlined as PNG)."""
    title = f"onnxbench compare: {c.run_a} → {c.run_b}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for line in _headline(c):
        cls = "note" if not line.startswith(("Result", "Warning")) else "meta"
        style = " style='color:#a11;font-weight:600'" if line.startswith("Warning") or (
            line.startswith("Result") and c.exit_code) else ""
        parts.append(f"<p class='{cls}'{style}>{html.escape(line)}</p>")
    png = change_plot(c)
    for anchor, heading, table in _tables(c):
        parts.append(f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>{html_table(table)}</section>")
        if anchor == "improvements" and png:
            parts.append("<section id='plot'><h2>p50 change per cell</h2>"
                         f"{html_figure(png, 'p50 change per cell', caption=False)}</section>")
    return html_page(title, parts)


def write_comparison(c: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write ``compare.md`` and ``compare.html`` into ``out_dir``; returns {kind: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "compare.md", "html": out_dir / "compare.html"}
    paths["markdown"].write_text(render_markdown(c), encoding="utf-8")
    paths["html"].write_text(render_html(c), encoding="utf-8")
    return paths


__all__ = ["Comparison", "compare", "compare_runs", "env_differences", "parse_threshold",
           "render_html", "render_markdown", "write_comparison"]
