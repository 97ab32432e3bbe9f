"""Markdown and self-contained HTML reports built from a run directory alone.

The report depends only on the result schema (:mod:`onnxbench.schema`) and the run's ``header.json``. Sections
for columns that other parts of the suite fill (GPU copy/compute split, roofline, execution providers, tuned
configurations) appear only when some row carries them. Rendering is deterministic: no generation time, stable
ordering (the run's order, then sorted keys) and fixed number formats (:mod:`.format`).
"""

from __future__ import annotations

import html
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import noise
from . import export_paths, generation, plots, tables
from .format import ABOVE_PEAK, BUSY_MARK, MISSING, NOISE_MARK, Spec, ms, rate, sig3, spec_for, speedup
from .load import load, load_header
from .markup import Table, html_figure, html_page, html_table, md_table, save_png
from .tables import summary_table

__all__ = ["PLOTS", "Plot", "Section", "Table", "build_sections", "ceiling_rows", "env_rows", "make_plots",
           "render_html", "render_markdown", "summary_table", "warnings", "write_report"]


@dataclass
class Plot:
    """A figure: its section, title, file name next to the Markdown report, PNG bytes."""

    section: str
    title: str
    filename: str
    png: bytes


@dataclass
class Section:
    anchor: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


#: (section anchor, title, file name, function(df) -> PNG bytes or None). Other report parts append here.
PLOTS: list[tuple[str, str, str, Callable[[pd.DataFrame], bytes | None]]] = [
    ("throughput", "Throughput vs sequence length, one line per runtime (log-log axes; bars: 95 % CI of the "
     "median)", "plot_throughput.png", plots.throughput_vs_seq_len),
    ("throughput", "Throughput by attention variant (log-log axes; bars: 95 % CI of the median)",
     "plot_throughput_attention.png", plots.throughput_by_attention),
    ("roofline", "Roofline: achieved GFLOP/s vs operational intensity (log-log; colour: runtime, marker: shape)",
     "plot_roofline.png", plots.roofline),
    ("generation", "Decode step latency vs context length (bandwidth bound dashed)", "plot_decode.png",
     generation.decode_latency_plot),
    ("threads", "Throughput vs intra-op threads (linear axes; bars: 95 % CI of the median; dotted: perfect "
     "scaling)", "plot_threads.png", plots.thread_scaling),
]
#: Plots over every scenario's rows; the others see prefill rows only.
ALL_SCENARIOS = {"plot_decode.png"}


def make_plots(df: pd.DataFrame, header: dict | None = None) -> list[Plot]:
    """Every plot of :data:`PLOTS` that has data in ``df``. When ``header`` says the run was measured on a busy
    machine (:func:`onnxbench.noise.busy_note`), each figure carries that note, above its panels (functions that
    can return their figure, ``as_figure=True``) and in its title."""
    out = []
    prefill = generation.split(df)[0]
    busy = noise.busy_note(header)
    for section, title, filename, fn in PLOTS:
        data = df if filename in ALL_SCENARIOS else prefill
        if busy and "as_figure" in inspect.signature(fn).parameters:
            fig = fn(data, as_figure=True)
            png = None if fig is None else save_png(plots.stamp(fig, f"{BUSY_MARK.strip()} {busy}: timings "
                                                                     "unreliable"))
        else:
            png = fn(data)
        if png:
            out.append(Plot(section, title + (f" {BUSY_MARK.strip()} measured while {busy}" if busy else ""),
                            filename, png))
    return out


def _group_title(group: dict) -> str:
    return " · ".join(f"{v}" for v in group.values())


def _grid_specs(frame: pd.DataFrame) -> dict[str, Spec]:
    specs = {}
    for col in frame.columns:
        if "|" in col:
            label, stat = col.rsplit("|", 1)
            if stat == "speedup":
                specs[col] = Spec(label, speedup, numeric=True)
            else:
                specs[col] = Spec(f"{label} {stat.removeprefix('latency_ms_')} (ms)", ms, numeric=True)
    return specs


def _grids(df: pd.DataFrame, stats: tuple[str, ...]) -> list[Table]:
    grids = tables.latency_grid(df, stats)
    return [Table(frame, subtitle=_group_title(group), specs=_grid_specs(frame))
            for group, frame in grids]


def _agree_fail(frame: pd.DataFrame) -> list[bool]:
    return [v is False or v == False for v in frame["agree"].astype("object").fillna(True)]  # noqa: E712


def _marked(values: pd.Series, flags, fmt) -> list:
    """``values`` formatted with ``fmt``, :data:`~.format.NOISE_MARK` appended where ``flags`` is true."""
    return [v if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v))
            else fmt(v) + (NOISE_MARK if f is True else "") for v, f in zip(values, flags, strict=True)]


def _summary(df: pd.DataFrame, header: dict, ref: str) -> Table:
    """The summary table; figures from a noisy timing carry :data:`~.format.NOISE_MARK`."""
    matrix = header.get("matrix") or {}
    why = (f"shard {matrix['shard']}: `onnxbench merge` the shards to compare" if matrix.get("shard")
           else "incomplete run")
    summary = summary_table(df, ref, matrix.get("runtimes"), noise.run_limit(header), why)
    gpu = tables.has_gpu_rows(df)
    # One baseline for every row (a CPU-only run): it is named in the headings, the column would repeat it.
    summary = summary.drop(columns=[c for c in ("faster_but_disagreeing",) if summary[c].isna().all()]
                           + ([] if gpu else ["baseline"]))
    base = "baseline" if gpu else ref  # what the speed-up columns are against
    fastest, reference = summary.pop("noisy").tolist(), summary.pop("reference_noisy").tolist()
    either = [a is True or b is True for a, b in zip(fastest, reference, strict=True)]
    specs = {}
    for col, flags, fmt, label in (("latency_ms_p50", fastest, ms, spec_for("latency_ms_p50").label),
                                   ("throughput_tok_s", fastest, rate, spec_for("throughput_tok_s").label),
                                   ("reference_p50", reference, ms, f"{base} p50 (ms)"),
                                   ("speedup", either, speedup, f"speed-up vs {base}")):
        summary[col] = _marked(summary[col].astype("object"), flags, fmt)
        specs[col] = Spec(label, numeric=True)
    why = summary.pop("no_baseline")
    summary["speedup"] = [w if isinstance(w, str) and not isinstance(v, str) else v
                          for v, w in zip(summary["speedup"], why, strict=True)]
    return Table(summary, specs=specs)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def warnings(df: pd.DataFrame, header: dict) -> list[str]:
    """The report's first lines: what makes its figures less than they look. An incomplete run (interrupted,
    matrix cells without a row, requested runtimes without any row), a busy CPU at run start, noisy cells
    (:func:`onnxbench.noise.is_noisy`), fractions of a measured ceiling above 1, lines of ``results.jsonl``
    that are not whole rows (``df.attrs["read_problems"]``, :meth:`onnxbench.rundir.RunDir.scan_rows`). Empty
    for a clean run."""
    lines = [f"Rows left out: {problem}." for problem in df.attrs.get("read_problems") or []]
    df = tables.latest(df)
    done = tables.run_completeness(df, header)
    if done["interrupted"] or done["missing"] or done["runtimes_without_rows"]:
        parts = ["Incomplete run" + (" (interrupted; `onnxbench run --resume` continues it)"
                                     if done["interrupted"] else "")]
        if done["missing"] is not None:
            parts.append(f"{done['missing']} of the matrix's {done['expected']} cells did not run")
        if done["runtimes_without_rows"]:
            parts.append(f"no row at all for the requested runtime(s) {', '.join(done['runtimes_without_rows'])}")
        lines.append(": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if parts[1:] else "")
                     + ". The summary names no winner where a requested runtime has no row.")
    busy = noise.busy_note(header)
    if busy:
        lines.append(f"Busy machine: {busy}; every timing, torch's above all, is unreliable (a cell slowed "
                     f"throughout has a narrow CI and no noise mark), and each is marked{BUSY_MARK}: rerun on a "
                     "quiet machine.")
    ok = tables.ok_rows(df)
    limit = noise.run_limit(header)
    n_noisy = int(tables.noisy_mask(ok, limit).sum()) if len(ok) else 0
    if n_noisy:
        lines.append(f"Noisy timings: {n_noisy} of {len(ok)} measured cells have a 95 % CI of the median wider "
                     f"than {_pct(limit)} of p50 (summary figures from them are marked{NOISE_MARK}; see \"Noisy "
                     "timings\"); differences smaller than that interval are not meaningful.")
    above = [c for c in ("frac_peak_flops", "frac_peak_bw") if c in ok and (ok[c] > 1).any()]
    if above:
        n = int(ok[above].gt(1).any(axis=1).sum())
        lines.append(f"Measurement problem: {n} cell(s) exceed a measured ceiling ({ABOVE_PEAK} in the roofline "
                     "table): the ceiling did not bound them (a GEMM peak probed under contention, or bytes that "
                     "stayed in the caches, which the DRAM copy bandwidth does not bound); those fractions of peak "
                     "are not results.")
    return lines


def build_sections(df: pd.DataFrame, header: dict, plot_list: list[Plot]) -> list[Section]:
    """The report's sections in order; optional ones only when the data has them. Generate rows have their own
    section; every other section is about prefill rows (the skipped/failed list is about all)."""
    everything = tables.latest(df)
    df, gen = generation.split(everything)
    ref = tables.reference_runtime(df)
    by_section: dict[str, list[Plot]] = {}
    for p in plot_list:
        by_section.setdefault(p.section, []).append(p)
    gpu = tables.has_gpu_rows(df)
    vs = f"its baseline ({ref} for CPU runtimes, {tables.GPU_BASELINE} for GPU runtimes)" if gpu else ref
    base = "baseline" if gpu else ref  # what the speed-up columns are against
    agreement = tables.agreement_table(df)
    not_ok = tables.not_ok_table(everything)
    limit = noise.run_limit(header)
    summary = _summary(df, header, ref)
    tuned_baseline = not tables.config_table(df[df["runtime"].isin([ref, tables.GPU_BASELINE])]).empty
    out = [
        Section("summary", "Summary",
                f"Per model, precision and shape: the fastest runtime whose outputs agreed with the reference "
                f"({ref}), its p50 latency and throughput, and its speed-up over {vs} "
                f"({'baseline' if gpu else 'reference'} p50 / p50)."
                + (f" A figure marked{NOISE_MARK} comes from a noisy timing (95 % CI of the median wider than "
                   f"{_pct(limit)} of p50)." if summary.frame.map(lambda v: NOISE_MARK in str(v)).any().any()
                   else ""),
                [summary]),
        Section("latency", "Latency", "Milliseconds per inference (one forward pass over batch × seq len "
                "tokens): median (p50) and 99th percentile (p99) of the timed iterations.",
                _grids(df, ("latency_ms_p50", "latency_ms_p99"))),
        Section("speedup", f"Speed-up vs {base}",
                f"{base} p50 / runtime p50 at the same cell; above 1 is faster."
                + (f" The baseline runs in its default configuration; a tuned row of {base} is read against it "
                   "too." if tuned_baseline else "")
                + (f" The baseline is {ref} for CPU runtimes and {tables.GPU_BASELINE} (PyTorch eager on the same "
                   "GPU) for GPU runtimes, chosen by each row's device." if gpu else ""),
                _grids(df, ("speedup",))),
    ]
    if df.empty and not gen.empty:  # a run of generations only: no prefill tables to show empty
        out = []
    if "throughput" in by_section:
        out.append(Section("throughput", "Throughput", "Tokens/s = batch × seq len / p50.",
                           plots=by_section.pop("throughput")))
    if not gen.empty:
        out.append(Section(
            "generation", "Generation", "Greedy decoding after a prompt (seq len = prompt tokens, a fraction "
            "'padding' of them left padding in the batch's last row). TTFT: prefill of the prompt and choice of "
            "the first token; TPOT: one decode step (the step, its KV-cache update and the greedy choice); decode "
            "tokens/s = batch / TPOT p50. Bandwidth bound: the step's bytes (weights once, the KV cache read) at "
            "the measured copy bandwidth. A generation agrees when every step's logits pass against the float64 "
            "reference recomputing the whole sequence without a cache and every greedy token equals the "
            "reference's; the first step where a token differs is named (docs/generation.md).",
            [Table(generation.generation_summary(gen), specs=generation.SPECS,
                   subtitle="Lowest TTFT and TPOT per model and batch (and prompt, new tokens, padding where they "
                   "vary)"),
             Table(generation.generation_table(gen), specs=generation.SPECS,
                   fail=[v == "FAIL" for v in generation.generation_table(gen)["verdict"]])],
            plots=by_section.pop("generation", [])))
    paths = export_paths.paths_table(everything)
    if not paths.empty:
        out.append(Section(
            "export-paths", "Export paths", "The same weights made into a graph by each export path (onnxbench's "
            "own export, Hugging Face Optimum's exporter, that export after ONNX Runtime's transformer optimizer, "
            "ONNX Runtime GenAI's model builder; docs/export.md), per runtime and shape: the prefill's p50 and "
            "verdict beside the generation's TTFT, TPOT p50, TPOT over the step's bandwidth bound and verdict, all "
            "judged against the same float64 reference. A path whose cells did not run says why (a tool not "
            "installed, a layout without a decode loop).",
            [Table(paths, specs=export_paths.SPECS, fail=export_paths.failing(paths))]))
    if "threads" in by_section:
        out.append(Section("threads", "Thread scaling", "Tokens/s of each runtime at each intra-op thread count of "
                           "the matrix's threads axis (cells at a runtime's default count are left out); the dotted "
                           "line continues the fewest-threads figure linearly. On a machine shared with other work, "
                           "more threads than idle cores lose.", plots=by_section.pop("threads")))
    diverging = tables.divergence_table(df)
    agreement_tables = [Table(agreement, fail=[v == "FAIL" for v in agreement["verdict"]])]
    if len(diverging):
        agreement_tables.append(Table(diverging, subtitle="First diverging block", fail=[
            v == "FAIL" for v in diverging["verdict"]]))
    if not df.empty or gen.empty:
        out.append(Section(
            "agreement", "Agreement", f"Outputs compared with the reference ({ref}; our models in float64, a user's "
            "ONNX file on ONNX Runtime CPU without graph optimizations) on the same inputs. A cell passes when "
            "|y − y_ref| ≤ atol + rtol·|y_ref| (numpy.allclose's rule) wherever both are finite, no NaN/Inf appears "
            "where the reference is finite, the cosine is high enough, and its error against float64 is at most the "
            "allowed multiple of the precision's noise floor (the reference at that precision against float64; "
            "docs/agreement.md). Required atol: the smallest atol that would have passed. A 'reference' row ran the "
            "reference's own configuration and a 'floor' row is the noise floor itself (torch at the cell's "
            "precision): neither is counted as a pass; failures are marked, with the first block "
            "whose residual stream left the floor.", agreement_tables))
    quantized = tables.quantized_table(df)
    if len(quantized):
        out.append(Section(
            "quantized", "Quantized vs float", "Each quantized cell beside the float cell it was made from (same "
            "model, runtime and shape): p50 of both, the speed-up (float p50 / quantized p50), and what it costs "
            "in accuracy against the float reference: KL(p_ref ‖ p) of the next-token distribution (mean and max "
            "over positions, nats) and top-1 agreement (vocabulary logits only), cosine and the relative RMS error "
            "(every output; it sees a wrong scale), judged by the limits of docs/quantization.md.",
            [Table(quantized, fail=[v == "FAIL" for v in quantized["verdict"]])]))
    optional = [
        ("hosts", "Hosts", "This run's cells were measured on more than one machine (a distributed executor or "
         "merged shards; docs/scaling.md): the cells each host (and GPU) measured. The latency and speed-up tables "
         "are split by machine, since figures from different machines are not comparable.",
         tables.host_table(df)),
        ("attention", "Attention variants", "Each attention variant (decomposed, sdpa, ONNX Attention, ONNX "
         "Runtime fused) at the same model, part, precision, runtime and shape: p50 latency, agreement with the "
         "reference and the execution provider that ran the attention nodes.", tables.attention_variant_table(df)),
        ("providers", "Execution providers", "The execution provider asked for, the one read back from the "
         "session, and the provider that executed the attention nodes (from ONNX Runtime profiling).",
         tables.provider_table(df)),
        ("gpu-split", "GPU time split", "Per inference (ms): host→device copy, device compute and device→host "
         "copy, timed with device events, next to the end-to-end p50.", tables.stage_table(df)),
        ("roofline", "Roofline", "Work per inference from the analytic work model and the rate achieved at p50, "
         "as a fraction of the peaks measured on the run's machine.", tables.roofline_table(df)),
        ("configs", "Tuned configurations", "Which configuration won where: per cell, the configuration of "
         "the tuned row (chosen per shape; `default` where no candidate was distinguishably faster than the "
         "default), its p50 next to the default's, and the options in force (JSON).", tables.config_table(df)),
        ("resources", "Build time and memory", "Largest value over the shapes of each runtime: export (s), "
         "session creation or engine build (s), peak resident memory and device memory (MiB).",
         tables.resources_table(df)),
    ]
    optional.append(
        ("noise", "Noisy timings", f"Cells whose 95 % confidence interval of the median is wider than {_pct(limit)} "
         "of p50 (a busy or throttling machine; the rule is in docs/measurement.md); differences smaller than the "
         "interval are not meaningful; a generate row's figures are its decode step's (TPOT), or its prefill's "
         "(TTFT) where it generated one token (new tokens 1: no decode step).",
         tables.noisy_table(everything, limit)))
    for anchor, title, intro, frame in optional:
        if not frame.empty:
            fail = _agree_fail(frame) if "agree" in frame else None
            out.append(Section(anchor, title, intro, [Table(frame, fail=fail)], plots=by_section.pop(anchor, [])))
    fails = [s == "failed" for s in not_ok["status"]]
    out.append(Section("not-ok", "Skipped and failed cells", "Cells that did not produce a measurement, with the "
                       "reason (failed cells first).",
                       [Table(not_ok, fail=fails, empty="none: every cell ran")]))
    for anchor, plot_group in by_section.items():  # plots of sections this renderer does not know
        out.append(Section(anchor, plot_group[0].title, plots=plot_group))
    ceilings = pd.DataFrame(ceiling_rows(header.get("ceilings")))
    busy = noise.busy_note(header)
    if not ceilings.empty:
        out.append(Section("ceilings", "Machine ceilings", "The peaks the fractions of peak are read against, "
                           "measured on the run's machine: each the fastest iteration of its probe, probed at the "
                           "start and the end of the run (and of every resume) with the highest kept, so that "
                           "each bounds what the machine did (docs/measurement.md)."
                           + (f" Measured under load{BUSY_MARK}: {busy}, so the start probe ran beside other work; "
                              "a ceiling probed under load is low and the fractions of peak read against it high, "
                              "unless the end-of-run probe found the machine quieter." if busy else ""),
                           [Table(ceilings)]))
    env = pd.DataFrame(env_rows(header), columns=["field", "value"])
    out.append(Section("environment", "Environment", "From the run's header.json.", [Table(env)]))
    if busy:
        _mark_busy(out, busy)
    return out


def _mark_busy(sections: list[Section], busy: str) -> None:
    """Mark every timing figure of a run measured on a busy machine (:data:`~.format.BUSY_MARK` on each value of
    a timing column) and say what the mark means in each section that has one; the summary says it in full."""
    for section in sections:
        marked = [t for t in section.tables if t.timed]
        for table in marked:
            table.busy_mark = BUSY_MARK
        if section.anchor == "summary":
            section.intro += (f" Every timing figure of this run is marked{BUSY_MARK}: it was measured while {busy}, "
                              "so each is unreliable, even where its CI is narrow (a cell slowed throughout is "
                              "consistently slow).")
        elif marked or section.plots:
            section.intro += f" {BUSY_MARK.strip()}: measured on a busy machine ({busy}; see the warning above)."


def ceiling_rows(ceilings: dict | None) -> list[dict]:
    """One row per device of a run's ``header["ceilings"]`` (:mod:`onnxbench.benchmarks.measure.ceilings`): GEMM peak
    (GFLOP/s) with the backend that set it and each backend's figure, fp16/bf16 GEMM peaks where measured,
    copy bandwidth (GB/s), the probe sizes and how many probes the figures are the best of. [] without
    ceilings."""
    rows = []
    for device, entry in (ceilings or {}).items():
        if not isinstance(entry, dict) or device == "probe":
            continue
        backends = entry.get("gemm_gflops_by_backend") or {}
        probes = [p for p in (ceilings.get("probes") or []) if device in p]
        gemm = entry.get("gemm_gflops")
        row = {"device": device + (f" ({entry['name']})" if entry.get("name") else ""),
               "GEMM peak (GFLOP/s)": MISSING if gemm is None else sig3(gemm) + (
                   f" ({entry['gemm_source']})" if entry.get("gemm_source") else ""),
               "GEMM by backend (GFLOP/s)": ", ".join(f"{k} {sig3(v)}" for k, v in backends.items()) or MISSING}
        for precision in ("fp16", "bf16"):
            if entry.get(f"gemm_gflops_{precision}") is not None:
                row[f"GEMM {precision} (GFLOP/s)"] = sig3(entry[f"gemm_gflops_{precision}"])
        bw = entry.get("mem_bw_gbs")
        row["copy bandwidth (GB/s)"] = MISSING if bw is None else sig3(bw)
        sizes = [f"GEMM n={entry['gemm_n']}" if entry.get("gemm_n") else "",
                 f"copy {entry['copy_bytes'] / 2**20:.0f} MiB" if entry.get("copy_bytes") else "",
                 f"{entry['threads']} threads" if entry.get("threads") else ""]
        row["probe"] = ", ".join(x for x in sizes if x) or MISSING
        row["best of"] = f"{len(probes)} probe(s)" if probes else "given"
        if entry.get("errors"):
            row["errors"] = "; ".join(f"{k}: {v}" for k, v in entry["errors"].items())
        rows.append(row)
    return rows


def _fmt_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_fmt_value(v) for v in value) or "none"
    return "unknown" if value is None else str(value)


def env_rows(header: dict) -> list[tuple[str, str]]:
    """(field, value) lines describing where and how the run was measured: run id and times, host, CPU,
    memory, GPUs, library versions, git sha, harness overhead, the matrix; fields the header adds later are
    listed too."""
    env = dict(header.get("env", {}))
    rows = [("run id", _fmt_value(header.get("run_id"))),
            ("started / finished", f"{_fmt_value(header.get('started'))} / {_fmt_value(header.get('finished'))}")]
    cpu = env.pop("cpu", None)
    logical, physical = env.pop("cpu_count_logical", None), env.pop("cpu_count_physical", None)
    rows.append(("CPU", f"{_fmt_value(cpu)}, {_fmt_value(logical)} logical / {_fmt_value(physical)} physical "
                        f"cores, affinity {_fmt_value(env.pop('cpu_affinity', None))}"))
    gpus = env.pop("gpus", [])
    rows.append(("GPUs", "; ".join(", ".join(f"{v}" for v in g.values()) for g in gpus) or "none"))
    for key, label in (("host", "host"), ("platform", "platform"), ("python", "Python"),
                       ("memory_gb", "memory (GB)"), ("torch_threads", "torch threads"), ("git_sha", "git sha")):
        if key in env:
            rows.append((label, _fmt_value(env.pop(key))))
    versions = env.pop("versions", {})
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    rows += [(k, _fmt_value(v)) for k, v in sorted(env.items())]
    overhead = header.get("harness_overhead_ms")
    if overhead is not None:
        rows.append(("harness overhead", f"{overhead:.3g} ms per timed iteration"))
    if header.get("matrix") is None and header.get("merged_from"):
        # `onnxbench merge` records no matrix when its sources ran different ones (docs/scaling.md)
        rows.append(("matrix", "none: merged runs of different matrices (each source's is in its own "
                               "header.json)"))
    for key, value in (header.get("matrix") or {}).items():
        rows.append((f"matrix: {key}", "none" if value is None else _fmt_value(value)))  # None: axis not set
    if header.get("n_cells") is not None:
        rows.append(("matrix cells", str(header["n_cells"])))
    for source in header.get("merged_from") or []:
        rows.append(("merged from", f"{source.get('path')}: run {source.get('run_id')}"
                     + (f", shard {source['shard']}" if source.get("shard") else "")
                     + f", host {source.get('host')}" + (f" ({', '.join(source['gpus'])})" if source.get("gpus")
                                                         else "")
                     + f", {source.get('rows_kept')} of {source.get('rows')} rows kept"))
    known = {"run_id", "started", "finished", "env", "harness_overhead_ms", "matrix", "ceilings", "n_cells",
             "merged_from"}
    rows += [(k, _fmt_value(v) if not isinstance(v, dict) else json.dumps(v, sort_keys=True))
             for k, v in sorted(header.items()) if k not in known]
    return rows


def render_markdown(df: pd.DataFrame, header: dict, plot_list: list[Plot]) -> str:
    """The Markdown report; plot images are referenced by ``Plot.filename``, next to the report."""
    lines = [f"# onnxbench report: run {header.get('run_id', 'unknown')}", ""]
    for line in warnings(df, header):
        lines += [f"**Warning — {line}**", ""]
    lines += [_counts_line(df), ""]
    for section in build_sections(df, header, plot_list):
        lines += [f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        for table in section.tables:
            if table.subtitle:
                lines += [f"### {table.subtitle}", ""]
            lines += md_table(table)
        for p in section.plots:
            lines += [f"![{p.title}]({p.filename})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _counts_line(df: pd.DataFrame) -> str:
    df = tables.latest(df)
    counts = df["status"].value_counts()
    verdicts = tables.verdicts(tables.ok_rows(df)).value_counts()
    self_rows, floor_rows = int(verdicts.get("reference", 0)), int(verdicts.get("floor", 0))
    return (f"{len(df)} cells: " + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "skipped", "failed"))
            + f"; agreement of the ok cells: {int(verdicts.get('pass', 0))} pass, {int(verdicts.get('FAIL', 0))} FAIL"
            + (f", {self_rows} reference (compared with itself, not a pass)" if self_rows else "")
            + (f", {floor_rows} floor (the noise floor itself, not a pass)" if floor_rows else "")
            + f"; reference runtime {tables.reference_runtime(df)}.")


def render_html(df: pd.DataFrame, header: dict, plot_list: list[Plot]) -> str:
    """A single self-contained HTML page (inline CSS, images inlined as base64 PNG, no scripts)."""
    sections = build_sections(df, header, plot_list)
    run_id = str(header.get("run_id", "unknown"))
    parts = [f"<h1>onnxbench report: run {html.escape(run_id)}</h1>",
             *(f"<p class='warn'>Warning — {html.escape(line)}</p>" for line in warnings(df, header)),
             f"<p class='meta'>{html.escape(_counts_line(df))}</p>",
             "<nav><ul>" + "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in sections)
             + "</ul></nav>"]
    for s in sections:
        parts.append(f"<section id='{s.anchor}'><h2>{html.escape(s.title)}</h2>")
        if s.intro:
            parts.append(f"<p class='intro'>{html.escape(s.intro)}</p>")
        for table in s.tables:
            if table.subtitle:
                parts.append(f"<h3>{html.escape(table.subtitle)}</h3>")
            parts.append(html_table(table))
        for p in s.plots:
            parts.append(html_figure(p.png, p.title))
        parts.append("</section>")
    return html_page(f"onnxbench report: run {run_id}", parts)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the plot PNGs for ``run_dir`` (into ``out_dir``, default the run
    directory). Returns {kind: path}: "markdown", "html", and "plot:<file name>" per plot.

    Raises:
        FileNotFoundError: if ``run_dir`` holds no results (see :func:`onnxbench.reports.load`).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else (run_dir.parent if run_dir.is_file() else run_dir)  # bench.json
    df = load(run_dir)  # before creating out_dir: a mistyped run directory must not leave an empty folder
    out_dir.mkdir(parents=True, exist_ok=True)
    header = load_header(run_dir)
    plot_list = make_plots(tables.latest(df), header)
    paths: dict[str, Path] = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    for p in plot_list:
        paths[f"plot:{p.filename}"] = out_dir / p.filename
        paths[f"plot:{p.filename}"].write_bytes(p.png)
    paths["markdown"].write_text(render_markdown(df, header, plot_list), encoding="utf-8")
    paths["html"].write_text(render_html(df, header, plot_list), encoding="utf-8")
    return paths
