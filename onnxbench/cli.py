"""Command line: ``onnxbench export | run | merge | report | compare | inspect | doctor``.

Every command turns bad input into one clear error line (exit code 2) instead of a traceback: the package's
own errors (:class:`onnxbench.errors.OnnxbenchError`) in one place, :class:`_Commands`; library errors where
they are raised.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from .errors import OnnxbenchError

# Piped output (CI logs) gets a wide console rather than rich's 80-column default, so tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 160)


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit with status ``code`` (2: bad input)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _Commands(TyperGroup):
    """The command group: an :class:`OnnxbenchError` from any command is one error line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxbenchError as exc:
            fail(str(exc.args[0]) if len(exc.args) == 1 else str(exc))


app = typer.Typer(cls=_Commands, help="ONNX export and cross-runtime benchmark suite.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _csv(values: str | None, cast=str) -> list | None:
    if values is None:
        return None
    try:
        return [cast(v.strip()) for v in values.split(",") if v.strip()]
    except ValueError:
        fail(f"could not read {values!r} as a comma-separated list of {cast.__name__}")


@app.command()
def export(
    preset: str = typer.Option("tiny", help="model preset (tiny, small, gpt2-small, ...)"),
    attention: str = typer.Option(
        "decomposed", help="attention variant: decomposed | sdpa | onnx-attention (opset 23) | ort-fused"),
    part: str = typer.Option("model", help="model (input_ids -> logits) | attention (block 0's attention)"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
    opset: int = typer.Option(18, help="ONNX opset (supported range per exporter and attention: docs/export.md)"),
    exporter: str = typer.Option("dynamo", help="dynamo | torchscript"),
    seed: int = typer.Option(0, help="weight seed"),
    out: Path | None = typer.Option(None, help="copy model.onnx (and its external data) to this file, or into "
                                    "this existing folder; its folder must exist (default: print the cache path)"),
    cache_dir: Path | None = typer.Option(None, help="artifact cache (default ~/.cache/onnxbench)"),
    force: bool = typer.Option(False, help="export again even if cached"),
    overwrite: bool = typer.Option(False, help="replace --out even if it is a file that is not an onnxbench "
                                   "artifact"),
    checkpoint: Path | None = typer.Option(
        None, help="local GPT-2-style checkpoint directory (config.json + model.safetensors) to take the shape "
        "and weights from instead of --preset/--seed"),
) -> None:
    """Export the reference transformer to ONNX (cached) and print where it is."""
    from .benchmarks.plan.matrix import ATTENTION_VARIANTS
    from .benchmarks.plan.sources import CheckpointSource, PresetSource
    from .export.onnx_export import check_copy_target, copy_artifact

    if attention not in ATTENTION_VARIANTS:
        fail(f"unknown attention variant {attention!r}; known: {', '.join(ATTENTION_VARIANTS)}")
    target = None
    if out is not None:  # checked before exporting: a bad --out must not cost an export
        target = out / "model.onnx" if out.is_dir() else out
        try:
            check_copy_target(target, overwrite)
        except (FileNotFoundError, FileExistsError) as exc:
            fail(str(exc))
    try:
        source = (CheckpointSource.at(checkpoint, seed, exporter) if checkpoint is not None
                  else PresetSource.named(preset, seed, exporter))
        artifact = source.export(attention, precision, opset, part, cache_dir, force)
    except OnnxbenchError:
        raise  # bad input: one line and exit 2, in _Commands
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))
    except Exception as exc:  # noqa: BLE001 - the exporter's own failure: one line (nothing was left in the cache)
        fail(f"export failed: {type(exc).__name__}: {_first_line(exc)}", code=1)
    path = artifact.path
    if target is not None:
        try:
            path = copy_artifact(artifact.path, target, overwrite)[0]
        except FileExistsError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot write {target}: {exc.strerror or exc}")
    how = "cached" if artifact.cached else f"exported in {artifact.export_s:.1f} s"
    console.print(f"{path}  ({source.name}, {part}, {attention}, {precision}, opset {artifact.opset}, {how})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


@app.command()
def run(
    out: Path = typer.Option(Path("runs/latest"), help="run directory to write"),
    models: str | None = typer.Option(None, help="comma-separated presets (default: tiny,gpt2-small)"),
    runtimes: str | None = typer.Option(None, help="comma-separated runtimes (default: all registered)"),
    attention: str | None = typer.Option(
        None, help="comma-separated attention variants (decomposed, sdpa, onnx-attention, ort-fused)"),
    parts: str | None = typer.Option(None, help="comma-separated parts: model, attention"),
    precisions: str | None = typer.Option(
        None, help="comma-separated precisions: fp32, fp16, bf16, int8-dynamic (the fp32 graph quantized; "
                   "runs on ort-cpu; --onnx files get it beside their own precision)"),
    opsets: str | None = typer.Option(None, help="comma-separated opsets"),
    threads: str | None = typer.Option(
        None, help="comma-separated intra-op thread counts (1 .. logical cores), an axis of the CPU runtimes "
                   "that take one (ort-cpu, torch); default: each runtime's own"),
    batches: str | None = typer.Option(None, help="comma-separated batch sizes"),
    seq_lens: str | None = typer.Option(None, help="comma-separated sequence lengths (generate: prompt lengths)"),
    scenario: str | None = typer.Option(None, help="comma-separated scenarios: prefill (one forward pass), "
                                        "generate (greedy decoding with the KV cache: TTFT, TPOT)"),
    new_tokens: str | None = typer.Option(None, help="generate: comma-separated numbers of new tokens (default 64)"),
    padding: str | None = typer.Option(None, help="generate: comma-separated fractions of left padding in [0, 1) "
                                       "(default 0)"),
    exporter: str | None = typer.Option(None, help="dynamo | torchscript"),
    min_time: float | None = typer.Option(None, help="minimum timed seconds per cell"),
    min_iters: int | None = typer.Option(None, help="minimum timed iterations per cell"),
    cache_dir: Path | None = typer.Option(None, help="artifact cache (default ~/.cache/onnxbench)"),
    report: bool = typer.Option(True, help="write report.md / report.html at the end"),
    checkpoint: list[Path] | None = typer.Option(
        None, help="GPT-2-style checkpoint directory to benchmark (repeatable; model name = directory name)"),
    onnx: list[Path] | None = typer.Option(
        None, help="any ONNX model to run on the ONNX runtimes, ORT CPU without graph optimizations as reference "
        "(repeatable; model = stem)"),
    dim: list[str] | None = typer.Option(
        None, help="NAME=SIZE or NAME=MIN:OPT:MAX for a dynamic axis of an --onnx model (repeatable; inputs are "
        "fed at OPT, TensorRT optimization profiles span MIN..MAX), e.g. --dim batch=4 --dim past=1:3:8"),
    shape: list[str] | None = typer.Option(
        None, help="NAME=d0,d1,... shape of an --onnx model's input (sizes or axis names; repeatable; needed "
        "where the graph declares no shape), e.g. --shape x=batch,16"),
    int_range: list[str] | None = typer.Option(
        None, help="[INPUT=]LO:HI range [LO, HI) of integer inputs of an --onnx model (repeatable), "
        "e.g. --int-range input_ids=0:30522"),
    ceilings: bool = typer.Option(True, help="measure the machine's GEMM peak and memory bandwidth first "
                                  "(a few seconds; fills the frac_peak_* columns)"),
    tune: bool = typer.Option(False, help="also search a small grid of runtime options per runtime and add the "
                              "best as config_id=tuned rows"),
    matrix: Path | None = typer.Option(None, help="TOML matrix file (examples/matrix.toml); flags override it"),
    resume: Path | None = typer.Option(None, help="continue the run in this directory: cells with a row are "
                                       "skipped, the matrix comes from its header.json"),
    retry_failed: bool = typer.Option(False, help="with --resume: run the `failed` cells again"),
    overwrite: bool = typer.Option(False, help="if --out already holds a run, move it aside to "
                                   "OUT.replaced-<run id> (nothing is deleted) and start a new run there"),
    cell_timeout: float | None = typer.Option(None, help="seconds a cell may run before its worker is killed"),
    reference_model: list[str] | None = typer.Option(
        None, help="compare an --onnx file with this preset's or checkpoint directory's float64 torch reference "
        "instead of ONNX Runtime (one for every --onnx file, or one per file in order); inputs/outputs matched "
        "by name and shape"),
    locate_divergence: bool = typer.Option(
        False, help="name the first diverging block of every row (failing rows always get it)"),
    executor: str = typer.Option("process", help="process: each (artifact, runtime) group in a worker process "
                                 "here | ray: each group a Ray task on a Ray cluster (pip install -e '.[ray]'; "
                                 "docs/scaling.md)"),
    ray_address: str | None = typer.Option(None, help="with --executor ray: the cluster to join (ray.init "
                                           "address, e.g. auto or ray://HOST:10001; default: start a local one)"),
    shard: str | None = typer.Option(None, help="K/N: run only the K-th of N deterministic parts of the matrix "
                                     "(whole artifact/runtime groups), e.g. one Slurm array task; join the "
                                     "parts with `onnxbench merge`"),
) -> None:
    """Run the benchmark matrix (embedded default or --matrix FILE, narrowed by the flags) and write a run
    directory. Each (artifact, runtime) group runs in a worker process; Ctrl-C leaves a valid run directory
    that --resume continues."""
    import dataclasses

    from .benchmarks import default_matrix, run_matrix
    from .benchmarks.plan.matrix import load_matrix
    from .benchmarks.run.resume import done_cell_ids, resume_spec
    from .reports import write_report
    from .rundir import check_writable, refuse_existing_run, set_aside

    spec = default_matrix()
    run_executor = _executor(executor, ray_address)
    axis_flags = (models, runtimes, attention, precisions, opsets, threads, batches, seq_lens, exporter, min_time,
                  min_iters, matrix, scenario, new_tokens, padding, shard)
    if resume is not None:
        if (any(v is not None for v in axis_flags) or checkpoint or onnx or dim or int_range or shape
                or reference_model):
            fail("--resume continues the matrix (and shard) recorded in RUN_DIR/header.json; drop --matrix and the "
                 "axis and timing flags and --shard (only --cell-timeout, --retry-failed, --cache-dir and the "
                 "executor flags apply)")
        if overwrite:
            fail("--overwrite starts a new run and --resume continues one; give one of them")
        if not resume.is_dir():
            fail(f"{resume} does not exist: nothing to resume (start a run with `onnxbench run --out {resume}`)")
        try:
            spec = resume_spec(resume)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        out = resume
    elif retry_failed:
        fail("--retry-failed only applies with --resume RUN_DIR")
    if matrix is not None:
        try:
            spec = load_matrix(matrix)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    if cell_timeout is not None:
        spec.cell_timeout_s = cell_timeout
    overrides = {
        "models": _csv(models), "runtimes": _csv(runtimes), "attention": _csv(attention),
        "precisions": _csv(precisions), "opsets": _csv(opsets, int), "batches": _csv(batches, int),
        "seq_lens": _csv(seq_lens, int), "exporter": exporter, "parts": _csv(parts), "threads": _csv(threads, int),
        "scenarios": _csv(scenario), "new_tokens": _csv(new_tokens, int), "paddings": _csv(padding, float),
    }
    if checkpoint or onnx:  # a user's own models replace the default presets unless --models names some
        spec.models = []
        spec.checkpoints = [str(p) for p in checkpoint or []]
        spec.onnx.files = [str(p) for p in onnx or []]
        spec.onnx.dims = _key_values(dim, "--dim", "NAME=SIZE or NAME=MIN:OPT:MAX", _dim)
        spec.onnx.input_shapes = _key_values(shape, "--shape", "NAME=d0,d1,... (sizes or axis names)", _shape)
        spec.onnx.int_ranges = _key_values(int_range, "--int-range", "[INPUT=]LO:HI", _range, default_key="*")
    if reference_model:
        spec.onnx.reference_models = _reference_models(onnx or [], reference_model)
    if locate_divergence:
        spec.locate_divergence = True
    if shard is not None:
        spec.shard = shard
    for key, value in overrides.items():
        if value is not None:
            setattr(spec, key, value)
    timing = {k: v for k, v in {"min_time_s": min_time, "min_iters": min_iters}.items() if v is not None}
    try:
        if timing:
            spec.timing = dataclasses.replace(spec.timing, **timing)
        built = spec.build()
        if resume is None and not overwrite:
            refuse_existing_run(out)
        check_writable(out)
    except (ValueError, PermissionError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
    if resume is None and overwrite:
        try:
            moved = set_aside(out)
        except PermissionError as exc:
            fail(str(exc))
        if moved is not None:
            console.print(f"--overwrite: moved the run that was in {out} to {moved} (nothing deleted)",
                          highlight=False, soft_wrap=True)
        check_writable(out)
    cells = built.cells
    done = done_cell_ids(out, retry_failed) if resume is not None else set()
    todo = [c for c in cells if c.cell_id not in done]
    shard_note = f" (shard {spec.shard})" if spec.shard else ""
    console.print(f"{len(cells)} cells{shard_note} -> {out}"
                  + (f" ({len(todo)} left to run)" if resume is not None else ""))
    if spec.shard and not cells:
        console.print(f"shard {spec.shard} has no cells: the matrix has fewer (artifact, runtime) groups than shards; "
                      "its run directory merges as an empty part", highlight=False, soft_wrap=True)
    # cells that differ only in an axis the line does not name (attention, precision, ...) share one line
    unrunnable = [(c, built.unrunnable_reason(c)) for c in todo]
    for line in dict.fromkeys(f"  cannot run, will be a skipped row: {c.model} {c.runtime} b{c.batch} "
                              f"t{c.seq_len}: {why}" for c, why in unrunnable if why):
        console.print(line, highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(todo))

        def on_cell(cell, row):
            label = f"{cell.model} {cell.runtime} b{cell.batch} t{cell.seq_len}: {row['status']}"
            progress.update(task, advance=1, description=label)

        try:
            summary = _interruptible(lambda: run_matrix(built, out, cache_dir=cache_dir, on_cell=on_cell,
                                                        resume=resume is not None, retry_failed=retry_failed,
                                                        ceilings=ceilings, tune=tune, executor=run_executor))
        except KeyboardInterrupt:
            progress.stop()
            console.print(f"interrupted: the rows so far are in {out} (results.jsonl/csv/parquet); continue with "
                          f"`onnxbench run --resume {out}`", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    _print_summary(summary.rows)
    console.print(f"wall time: {_export_time(summary)}, worker start-up {summary.worker_start_s:.1f} s, "
                  f"reference {summary.reference_s:.1f} s, sessions {summary.session_s:.1f} s, "
                  f"timing {summary.timing_s:.1f} s")
    _warn_if_unreliable(out, summary.rows, spec.noise_limit)
    if report:
        paths = write_report(out)
        console.print("report: " + ", ".join(str(p) for p in paths.values()))


def _executor(name: str, address: str | None):
    """The executor ``--executor`` names (None: the runner's default, a worker process per group)."""
    if name not in ("process", "ray"):
        fail(f"unknown --executor {name!r}; known: process, ray")
    if name != "ray":
        if address is not None:
            fail("--ray-address applies to --executor ray")
        return None
    from .benchmarks.run.ray_executor import RayExecutor, ray_module

    try:
        ray_module()
    except ImportError as exc:
        fail(str(exc))
    return RayExecutor(address)


def _export_time(summary) -> str:
    """``export cached`` when every artifact came from the cache, else the export wall time (and how many of the
    artifacts were cached): a cached export is not a 0.0 s export."""
    if summary.exports and summary.exports_cached == summary.exports:
        return "export cached"
    cached = f" ({summary.exports_cached} of {summary.exports} artifacts cached)" if summary.exports_cached else ""
    return f"export {summary.export_s:.1f} s{cached}"


def _warn_if_unreliable(run_dir: Path, rows: list[dict], limit: float) -> None:
    """End-of-run warnings about the timings: a busy machine at start, noisy cells (the report's banner applies
    the same rule, onnxbench.noise)."""
    from .noise import BUSY_LIMIT_PCT, busy_pct, is_noisy
    from .rundir import RunDir

    try:
        header = RunDir(run_dir).read_header()
    except (OSError, ValueError):
        header = {}
    busy = busy_pct(header)
    if busy is not None:
        console.print(f"[yellow]warning:[/] the CPUs were {busy:.0f}% busy with other work when the run started "
                      f"(above {BUSY_LIMIT_PCT:.0f}%; cpu_busy_pct_at_start in header.json); these timings, "
                      "torch's above all, are unreliable: rerun on a quiet machine", highlight=False, soft_wrap=True)
    ok = [r for r in rows if r["status"] == "ok"]
    noisy = [r for r in ok if is_noisy(r, limit)]
    if noisy:
        console.print(f"[yellow]warning:[/] {len(noisy)} of {len(ok)} measured cells have noisy timings (95% CI of "
                      f"p50 wider than {limit:.0%} of p50; marked in the report): differences smaller than that "
                      "are not meaningful", highlight=False, soft_wrap=True)


def _dim(text: str) -> int | list[int]:
    parts = [int(p) for p in text.split(":")]
    if len(parts) not in (1, 3):
        raise ValueError(text)
    return parts[0] if len(parts) == 1 else parts


def _shape(text: str) -> list[int | str]:
    dims = [int(d) if d.strip().lstrip("-").isdigit() else d.strip() for d in text.split(",")]
    if not text or any(d == "" for d in dims):
        raise ValueError(text)
    return dims


def _reference_models(onnx: list[Path], references: list[str]) -> dict[str, str]:
    """``--reference-model`` values paired with the ``--onnx`` files (by model name, the file's stem): one for
    all, or one per file in order."""
    if not onnx:
        fail("--reference-model applies to --onnx files; give the ONNX file to compare with --onnx FILE")
    if len(references) not in (1, len(onnx)):
        fail(f"{len(references)} --reference-model values for {len(onnx)} --onnx files; give one for all files "
             "or one per file, in the same order")
    pairs = zip(onnx, references * len(onnx) if len(references) == 1 else references, strict=True)
    return {Path(path).stem: reference for path, reference in pairs}


def _range(text: str) -> list[int]:
    lo, _, hi = text.partition(":")
    return [int(lo), int(hi)]


def _key_values(items: list[str] | None, flag: str, form: str, cast, default_key: str | None = None) -> dict:
    """Parse repeated ``KEY=VALUE`` flags (``VALUE`` alone is stored under ``default_key`` when given)."""
    out = {}
    for item in items or []:
        key, sep, value = item.rpartition("=")
        if not sep and default_key is not None:
            key = default_key
        try:
            if not key:
                raise ValueError
            out[key] = cast(value)
        except ValueError:
            fail(f"could not read {flag} {item!r}; expected {form}")
    return out


def _interruptible(fn):
    """Call ``fn`` with SIGTERM turned into KeyboardInterrupt, so that both leave a valid run directory."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ratio(value) -> str:
    return "" if value is None or value != value else f"{value:.3g}"


def _verdict(row: dict) -> str:
    verdict = row.get("verdict") or ("pass" if row.get("agree") else "FAIL")
    block = row.get("first_divergent_block")
    where = f" (from block {block})" if block is not None and block == block else ""
    return "[red]FAIL[/]" + where if verdict == "FAIL" else verdict + where


def _print_summary(rows: list[dict]) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    # axes other than the shape that vary over the rows get a column, or rows look duplicated
    axes = [k for k in ("part", "attention", "precision", "threads") if len({r.get(k) for r in ok}) > 1]
    table = Table("model", *axes, "runtime", "config", "B", "T", "status", "p50 ms", "tok/s", "GFLOP/s", "% peak",
                  "max abs err", "x floor", "verdict")
    for r in ok:
        frac = r.get("frac_peak_flops")
        table.add_row(r["model"], *(str(r.get(k)) for k in axes), r["runtime"], r["config_id"], str(r["batch"]),
                      str(r["seq_len"]), "ok", f"{r['latency_ms_p50']:.3f}", f"{r['throughput_tok_s']:.0f}",
                      f"{r['achieved_gflops']:.2f}" if r.get("achieved_gflops") else "",
                      ("[red]> peak (measurement problem)[/]" if frac > 1 else f"{100 * frac:.0f}") if frac else "",
                      f"{r['max_abs_err']:.2e}", _ratio(r.get("floor_ratio")), _verdict(r))
    console.print(table)
    # Skipped/failed reasons repeat over a runtime's cells: one line each. A warning on an ok row concerns
    # that cell alone, so it names the cell.
    skipped = {(r["runtime"], r["status"], r["reason"]) for r in rows if r["status"] != "ok"}
    for runtime, status, reason in sorted(skipped):
        console.print(f"{status}: {runtime}: {reason}", highlight=False)
    for r in rows:
        if r["status"] == "ok" and r["reason"]:
            threads = f" {r['threads']} threads" if r.get("threads") else ""
            console.print(f"{r['model']} {r['runtime']}{threads} b{r['batch']} t{r['seq_len']}: {r['reason']}",
                          highlight=False)


@app.command()
def merge(
    runs: list[Path] = typer.Argument(..., help="run directories to join (e.g. the shards of one matrix)"),
    out: Path = typer.Option(..., help="the merged run directory to write (must not hold a run)"),
    prefer: Path | None = typer.Option(None, help="one of RUNS whose row wins wherever a cell has rows in several "
                                       "runs, also when they were measured on different hardware"),
    report: bool = typer.Option(True, help="write report.md / report.html of the merged run"),
) -> None:
    """Join run directories into one (shards of a Slurm array or Kubernetes indexed job): every cell once,
    refusing cells measured in several runs on different hardware unless --prefer says which to keep."""
    from .benchmarks.run.merge import merge_runs
    from .reports import write_report

    try:
        summary = merge_runs(runs, out, prefer)
    except (FileExistsError, PermissionError) as exc:
        fail(str(exc))
    for source in summary.sources:
        console.print(f"  {source['path']}: run {source['run_id']}"
                      + (f", shard {source['shard']}" if source.get("shard") else "")
                      + f", host {source['host']}: {source['rows_kept']} of {source['rows']} rows kept",
                      highlight=False, soft_wrap=True)
    dropped = (f"; {summary.duplicates_dropped} duplicate row(s) of the same hardware dropped"
               if summary.duplicates_dropped else "")
    chosen = f"; {summary.preferred} overlap(s) settled by --prefer" if summary.preferred else ""
    console.print(f"merged {len(summary.sources)} runs -> {out}: {summary.rows} rows{dropped}{chosen}",
                  highlight=False, soft_wrap=True)
    if report:
        paths = write_report(out)
        console.print("report: " + ", ".join(str(p) for p in paths.values()))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run directory written by `onnxbench run`"),
    out: Path | None = typer.Option(None, help="where to write the report (default: the run directory)"),
    screenshot: bool = typer.Option(False, help="also write report.png of the HTML with headless Chromium"),
) -> None:
    """Write report.md and report.html (with plots) for a run directory."""
    from .reports import write_report

    try:
        paths = write_report(run_dir, out)
    except FileNotFoundError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
    if screenshot:
        from .reports import browser

        try:
            paths["screenshot"] = browser.screenshot(paths["html"], paths["html"].with_name("report.png"))
        except (FileNotFoundError, RuntimeError) as exc:
            fail(f"report written, but no screenshot: {exc}")
    console.print("report: " + ", ".join(str(p) for p in paths.values()))


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="the earlier run directory (before)"),
    run_b: Path = typer.Argument(..., help="the later run directory (after)"),
    threshold: str = typer.Option("5%", help="p50 change counted as a regression/improvement: 5% or 0.05"),
    out: Path | None = typer.Option(None, help="write compare.md and compare.html here (default: print Markdown)"),
) -> None:
    """Compare two runs cell by cell; exit status 1 when a p50 regression exceeds the threshold (CI gate)."""
    from .reports.compare import compare_runs, parse_threshold, render_markdown, write_comparison

    try:
        result = compare_runs(run_a, run_b, parse_threshold(threshold))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if out is None:
        typer.echo(render_markdown(result), nl=False)
    else:
        try:
            paths = write_comparison(result, out)
        except OSError as exc:
            fail(f"cannot write the comparison: {exc}")
        console.print("compare: " + ", ".join(str(p) for p in paths.values()), highlight=False)
    n = result.counts
    if not any(n.get(k, 0) for k in ("regression", "improvement", "within noise", "unchanged")):
        fail(f"{run_a} and {run_b} share no measured cell (cells are matched on model, part, attention, "
             "precision, opset, runtime, batch, seq_len, config_id); nothing was compared")
    status = Console(stderr=True)  # stdout may carry the Markdown
    for field, a, b in result.env_diffs:
        status.print(f"[yellow]warning:[/] environments differ: {field}: {a} -> {b}", highlight=False,
                     soft_wrap=True)
    if result.hardware_diffs:
        shown = "; ".join(f"{cell}: {a} -> {b}" for cell, a, b in result.hardware_diffs[:3])
        more = f" and {len(result.hardware_diffs) - 3} more" if len(result.hardware_diffs) > 3 else ""
        status.print(f"[yellow]warning:[/] {len(result.hardware_diffs)} cell(s) ran on different hardware: "
                     f"{shown}{more}; their changes may come from the machines, not the code", highlight=False,
                     soft_wrap=True)
    status.print(f"{n.get('regression', 0)} regression(s) beyond {result.threshold:.1%}, "
                 f"{n.get('improvement', 0)} improvement(s), {n.get('within noise', 0)} change(s) beyond the "
                 f"threshold but within noise, {n.get('unchanged', 0)} unchanged, "
                 f"{n.get('not compared', 0)} not compared", highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="an ONNX file"),
    seq_lens: str = typer.Option("1,32,128,512,1024", help="sequence lengths for FLOPs per token"),
    as_json: bool = typer.Option(False, "--json", help="print the inspection as JSON"),
) -> None:
    """Opset, op histogram, attention nodes per block, parameters and FLOPs per token of an ONNX model."""
    from .export.inspect import inspect_model

    if not model.is_file():
        fail(f"{model} does not exist (give the path of an .onnx file)")
    try:
        info = inspect_model(model, tuple(_csv(seq_lens, int)))
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(info.to_json())
        return
    domains = ", ".join(f"{k} {v}" for k, v in info.opsets.items())
    console.print(f"[bold]{info.path}[/]: opset {info.opset} ({domains}), "
                  f"IR {info.ir_version}, {info.n_nodes} nodes; variant {info.variant}, part {info.part}, "
                  f"precision {info.precision}", highlight=False)
    console.print(f"inputs {info.inputs}; outputs {info.outputs}", highlight=False)
    console.print(f"parameters (initializer elements): {info.n_params:,}  [dim]({info.n_params_note})[/]",
                  highlight=False)
    if info.n_params_config:
        console.print(f"parameters ({info.n_params_config_label}): {info.n_params_config:,}", highlight=False)
    ops = Table("op", "count", title="op histogram")
    for op, n in info.op_histogram.items():
        ops.add_row(op, str(n))
    console.print(ops)
    blocks = Table("block", "attention cores", "attention nodes", title=f"attention per block ({info.block_source})")
    for block, hist in info.attention_blocks.items():
        blocks.add_row(block, ", ".join(info.attention_cores.get(block, [])) or "-",
                       ", ".join(f"{op.split(':')[-1]} x{n}" for op, n in hist.items()))
    console.print(blocks)
    if info.flops_per_token:
        flops = Table("seq_len", "FLOPs per token", "GFLOPs per sequence", title="FLOPs (" + info.flops_note + ")")
        for t, f in info.flops_per_token.items():
            flops.add_row(str(t), f"{f:.4g}", f"{f * t / 1e9:.4g}")
        console.print(flops)
    else:
        console.print(f"FLOPs: not available ({info.flops_note})")


@app.command()
def doctor() -> None:
    """List every runtime with its device and whether it can run here, and why not; then the GPU components
    probed."""
    from rich.markup import escape

    from . import runtimes
    from .runtimes import probes

    table = Table("runtime", "device", "available", "detail")
    for name, cls in runtimes.registry().items():
        ok, why = cls.availability()
        table.add_row(name, cls.device, "[green]yes[/]" if ok else "[red]no[/]", escape(why))
    console.print(table)
    components = Table("GPU component", "found", "detail")
    for name, probe in probes.report().items():
        components.add_row(name, "[green]yes[/]" if probe.ok else "[red]no[/]", escape(probe.detail))
    console.print(components)


if __name__ == "__main__":
    app()
