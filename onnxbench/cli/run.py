"""``onnxbench run``: the flags become overrides of the matrix (applied by the code that reads matrix files), the
library runs it, and this module renders the plan, the progress and the end-of-run summary, and sets the exit
status from the rows (:func:`exit_status`)."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..schema import cell_label, varying_keys
from . import flags
from .console import (
    BAD_INPUT,
    DISAGREED,
    FAILED_CELLS,
    INTERRUPTED,
    NOTHING_MEASURED,
    OK,
    app,
    console,
    err,
    fail,
    note,
    warn,
)
from .summary import busy_note, export_time, print_summary, warn_if_unreliable

#: The flags that change the matrix (refused with --resume, which continues the recorded one).
_AXIS_FLAGS = ("models", "runtimes", "attention", "parts", "precisions", "opsets", "threads", "batches", "seq_lens",
               "scenario", "new_tokens", "padding", "exporter", "min_time", "min_iters", "matrix", "shard",
               "checkpoint", "onnx", "dim", "shape", "int_range", "reference_model", "locate_divergence",
               "export_paths")


@app.command()
def run(
    out: str = typer.Option("runs/latest", help="run directory to write"),
    models: str | None = typer.Option(None, help="comma-separated presets (default: tiny,gpt2-small)"),
    runtimes: str | None = typer.Option(
        None, help="comma-separated runtimes (default: torch, ort-cpu, ort-cuda, tensorrt, ort-trt, torch-cuda; "
                   "`onnxbench doctor` lists them all)"),
    attention: str | None = typer.Option(
        None, help="comma-separated attention variants (decomposed, sdpa, onnx-attention, ort-fused, ort-gqa-inplace)"),
    parts: str | None = typer.Option(None, help="comma-separated parts: model, attention"),
    export_paths: str | None = typer.Option(
        None, help="comma-separated export paths of presets and checkpoints: onnxbench (its own export, default), "
                   "optimum (Hugging Face Optimum's exporter; needs ONNXBENCH_OPTIMUM_PYTHON), optimum-opt (that "
                   "export after ONNX Runtime's transformer optimizer), builder (ONNX Runtime GenAI's model builder)"),
    precisions: str | None = typer.Option(
        None, help="comma-separated precisions: fp32, fp16, bf16, int8-dynamic, int4-weight (the fp32 graph "
                   "quantized; runs on ort-cpu; --onnx files get it beside their own precision)"),
    opsets: str | None = typer.Option(None, help="comma-separated opsets"),
    threads: str | None = typer.Option(
        None, help="comma-separated intra-op thread counts (1 .. logical cores), an axis of the CPU runtimes "
                   "that take one (ort-cpu, torch, ort-genai); default: each runtime's own"),
    batches: str | None = typer.Option(None, help="comma-separated batch sizes (for every model: replaces "
                                       "per-model [shapes] of a matrix file, which the run then names)"),
    seq_lens: str | None = typer.Option(None, help="comma-separated sequence lengths (generate: prompt lengths; "
                                        "for every model, as --batches)"),
    scenario: str | None = typer.Option(None, help="comma-separated scenarios: prefill (one forward pass), "
                                        "generate (greedy decoding with the KV cache: TTFT, TPOT)"),
    new_tokens: str | None = typer.Option(None, help="generate: comma-separated numbers of new tokens (default 64)"),
    padding: str | None = typer.Option(None, help="comma-separated fractions of padding in [0, 1) (default 0): "
                                       "generate, left padding of the prompts; --onnx files' prefill, right "
                                       "padding of the attention mask, judged at the real positions"),
    exporter: str | None = typer.Option(None, help="dynamo | torchscript"),
    min_time: float | None = typer.Option(None, help="minimum timed seconds per cell"),
    min_iters: int | None = typer.Option(None, help="minimum timed iterations per cell"),
    cache_dir: Path | None = typer.Option(None, help="artifact cache (default $ONNXBENCH_CACHE or "
                                          "~/.cache/onnxbench); must be writable"),
    report: bool = typer.Option(True, help="write report.md / report.html at the end"),
    checkpoint: list[Path] | None = typer.Option(
        None, help="GPT-2, Llama or Qwen2 checkpoint directory to benchmark (repeatable; model name = directory "
        "name)"),
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
    that --resume continues. Exit status: 0 ok, 1 some cells failed, 2 bad input, 3 nothing measured, 4 some
    outputs disagreed with the reference, 130 interrupted."""
    args = dict(locals())  # the flags as given, by parameter name
    if not out.strip():
        fail("--out is empty (the run would be written into the current folder); give a run directory")
    out = Path(out)
    given = {k: v for k, v in args.items() if k in _AXIS_FLAGS and v not in (None, False, [])}
    run_executor = _executor(executor, ray_address)
    if resume is not None:
        spec, out = _resumed(resume, given, overwrite), resume
    elif retry_failed:
        fail("--retry-failed only applies with --resume RUN_DIR")
    else:
        spec = _spec(matrix, overrides(**{k: args[k] for k in _AXIS_FLAGS if k != "matrix"}))
    if cell_timeout is not None:
        spec.cell_timeout_s = cell_timeout
    built = _build(spec)
    summary = _execute(built, out, cache_dir=cache_dir, resume=resume is not None, retry_failed=retry_failed,
                       ceilings=ceilings, tune=tune, executor=run_executor, overwrite=overwrite)
    raise typer.Exit(_finish(out, summary, spec, report=report, resumed=resume is not None))


def _finish(out: Path, summary, spec, *, report: bool, resumed: bool) -> int:
    """Print the summary, the wall-time split and the reliability warnings, write the report if asked, and return
    the exit status of the whole run directory (a resumed run's earlier rows count too)."""
    if resumed and not summary.rows:
        note("nothing left to run: every cell of the matrix already has a row (--retry-failed runs the failed "
             "ones again)")
    else:
        print_summary(summary.rows, busy_note(out))
        note(f"wall time: {export_time(summary)}, worker start-up {summary.worker_start_s:.1f} s, reference "
             f"{summary.reference_s:.1f} s, sessions {summary.session_s:.1f} s, timing {summary.timing_s:.1f} s")
        warn_if_unreliable(out, summary.rows, spec.noise_limit)
    if report:
        from ..reports import write_report

        paths = write_report(out)
        console.print("report: " + ", ".join(str(p) for p in paths.values()), highlight=False, soft_wrap=True)
    from ..rundir import read_rows

    status = exit_status(read_rows(out))  # the whole run: a resumed run's earlier rows count too
    if status != OK:
        warn(_STATUS_WHY[status])
    return status


def overrides(models=None, runtimes=None, attention=None, parts=None, precisions=None, opsets=None, threads=None,
              batches=None, seq_lens=None, scenario=None, new_tokens=None, padding=None, exporter=None,
              min_time=None, min_iters=None, shard=None, checkpoint=None, onnx=None, dim=None, shape=None,
              int_range=None, reference_model=None, locate_divergence=False, export_paths=None) -> dict:
    """The matrix overrides the flags ask for, shaped like a matrix file (``MatrixSpec.to_dict``): only the flags
    given. A user's own models (``--checkpoint``, ``--onnx``) replace the default presets unless ``--models``
    names some.

    Raises:
        flags.FlagError: for a flag whose value cannot be read.
    """
    lists = {"models": (models, str), "runtimes": (runtimes, str), "attention": (attention, str),
             "parts": (parts, str), "precisions": (precisions, str), "opsets": (opsets, int),
             "threads": (threads, int), "batches": (batches, int), "seq_lens": (seq_lens, int),
             "scenarios": (scenario, str), "new_tokens": (new_tokens, int), "paddings": (padding, float),
             "export_paths": (export_paths, str)}
    flag_names = {"scenarios": "--scenario", "paddings": "--padding"}
    out = {key: flags.csv(value, flag_names.get(key, "--" + key.replace("_", "-")), cast, _EXAMPLES.get(key))
           for key, (value, cast) in lists.items() if value is not None}
    out |= {k: v for k, v in {"exporter": exporter, "shard": shard}.items() if v is not None}
    timing = {k: v for k, v in {"min_time_s": min_time, "min_iters": min_iters}.items() if v is not None}
    if timing:
        out["timing"] = timing
    if locate_divergence:
        out["locate_divergence"] = True
    if checkpoint or onnx:
        out.setdefault("models", [])
        out["checkpoints"] = [str(p) for p in checkpoint or []]
    table = {"files": [str(p) for p in onnx or []],
             "dims": flags.key_values(dim, "--dim", "NAME=SIZE or NAME=MIN:OPT:MAX", flags.dim),
             "input_shapes": flags.key_values(shape, "--shape", "NAME=d0,d1,... (sizes or axis names)", flags.shape),
             "int_ranges": flags.key_values(int_range, "--int-range", "[INPUT=]LO:HI", flags.int_range,
                                            default_key="*"),
             "reference_models": flags.reference_models(onnx or [], reference_model) if reference_model else {}}
    if any(table.values()):
        if not onnx:
            raise flags.FlagError("--dim, --shape and --int-range apply to --onnx files; give the file with --onnx")
        out["onnx"] = table
    return out


_EXAMPLES = {"models": "tiny,gpt2-small", "runtimes": "torch,ort-cpu", "attention": "decomposed,sdpa",
             "parts": "model", "precisions": "fp32", "opsets": "18", "threads": "1,2", "batches": "1,4",
             "seq_lens": "32,128", "scenarios": "prefill,generate", "new_tokens": "64", "paddings": "0,0.25",
             "export_paths": "onnxbench,builder"}


def _spec(matrix: Path | None, given: dict):
    """The embedded default or the matrix file, with the flags' overrides; what a flag replaced in a matrix file's
    per-model shapes is said before the run."""
    from ..benchmarks import default_matrix
    from ..benchmarks.plan.matrix import load_matrix

    spec, replaced = (load_matrix(matrix) if matrix is not None else default_matrix()).with_overrides(given)
    for line in replaced if matrix is not None else []:
        note(f"note: {line} (from {matrix}; flags apply to every model)")
    return spec


def _build(spec):
    """The validated matrix; a value no cell can use, or a model that cannot be read, is one error line."""
    try:
        return spec.build()
    except (ValueError, KeyError, FileNotFoundError, PermissionError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))


def _resumed(resume: Path, given: dict, overwrite: bool):
    """The matrix recorded in the run directory being resumed."""
    from ..benchmarks.run.resume import resume_spec

    if not resume.is_dir():
        fail(f"{resume} does not exist: nothing to resume (start a run with `onnxbench run --out {resume}`)")
    if given:
        fail(f"--resume continues the matrix (and shard) recorded in {resume}/header.json; drop "
             f"{', '.join('--' + k.replace('_', '-') for k in given)} (only --cell-timeout, --retry-failed, "
             "--cache-dir and the executor flags apply)")
    if overwrite:
        fail("--overwrite starts a new run and --resume continues one; give one of them")
    try:
        return resume_spec(resume)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _execute(built, out: Path, **kwargs):
    """Run the matrix with a progress line of what runs now, shown once the run directory is checked (a refused
    directory is one error line); Ctrl-C (or SIGTERM) leaves a valid run directory."""
    from ..benchmarks import run_matrix

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=False)

    def stop():  # Rich's stop of a display never started prints blank lines around the error line
        if progress.live.is_started:
            progress.stop()

    def on_start(matrix, todo, set_aside):
        if set_aside is not None:
            note(f"--overwrite: moved the run that was in {out} to {set_aside} (nothing deleted)")
        _print_plan(matrix, todo, out, kwargs["resume"])
        if todo:  # a finished run resumed has nothing to show progress of
            progress.add_task("starting", total=len(todo))
            progress.start()

    def on_cell(cell, row):
        progress.advance(progress.task_ids[0])

    def on_progress(what: str):
        if progress.task_ids:
            progress.update(progress.task_ids[0], description=what)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_matrix(built, out, on_start=on_start, on_cell=on_cell, on_progress=on_progress, **kwargs)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        stop()
        fail(str(exc))
    except KeyboardInterrupt:
        stop()
        note(f"interrupted: the rows so far are in {out} (results.jsonl/csv/parquet); continue with "
             f"`onnxbench run --resume {out}`")
        raise typer.Exit(INTERRUPTED) from None
    finally:
        stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _print_plan(matrix, todo, out: Path, resume: bool) -> None:
    """What the run will do, before it starts: the cell count, an empty shard, the cells that will be skipped."""
    spec, cells = matrix.spec, matrix.cells
    shard = f" (shard {spec.shard})" if spec.shard else ""
    note(f"{len(cells)} cells{shard} -> {out}" + (f" ({len(todo)} left to run)" if resume else ""))
    if spec.shard and not cells:
        note(f"shard {spec.shard} has no cells: the matrix has fewer (artifact, runtime) groups than shards; its run "
             "directory merges as an empty part")
    for line in matrix.plan_notes():
        note(f"note: {line}")
    for line in unrunnable_lines([(c, matrix.unrunnable_reason(c)) for c in todo]):
        note(line)


def unrunnable_lines(reasons) -> list[str]:
    """One line per cell that cannot run (``reasons``: (cell, reason or None) pairs), naming the cell by model,
    runtime, batch, seq_len and every other key column that varies over those cells (attention, export path,
    precision, scenario, ...), so that no two listed cells read alike."""
    cells = [(c, why) for c, why in reasons if why]
    keys = varying_keys([c for c, _ in cells])
    return list(dict.fromkeys(f"  cannot run, will be a skipped row: {cell_label(c, keys)}: {why}"
                              for c, why in cells))


def exit_status(rows: list[dict]) -> int:
    """The run's exit status from its rows: 3 when no cell was measured (none ``ok``: every cell skipped or failed,
    or no cell at all), else 1 when some cell ``failed``, else 4 when some ``ok`` row's verdict is ``FAIL``, else 0
    (every cell ok or skipped with its reason; a ``reference`` or ``floor`` verdict is neither a pass nor a fail).
    README, "Exit status"."""
    if not any(r.get("status") == "ok" for r in rows):
        return NOTHING_MEASURED
    if any(r.get("status") == "failed" for r in rows):
        return FAILED_CELLS
    if any(r.get("status") == "ok" and r.get("verdict") == "FAIL" for r in rows):
        return DISAGREED
    return OK


_STATUS_WHY = {NOTHING_MEASURED: f"nothing was measured: every cell was skipped or failed (exit status "
                                 f"{NOTHING_MEASURED})",
               FAILED_CELLS: f"some cells failed (exit status {FAILED_CELLS}; their reasons are above and in the "
                             "report)",
               DISAGREED: f"some outputs disagreed with the reference: verdict FAIL (exit status {DISAGREED})",
               BAD_INPUT: "bad input"}


def _executor(name: str, address: str | None):
    """The executor ``--executor`` names (None: the default worker processes).

    Raises:
        typer.Exit: (status 2) for an unknown executor, or Ray not installed.
    """
    if name not in ("process", "ray"):
        fail(f"unknown --executor {name!r}; known: process, ray")
    if name == "process":
        if address is not None:
            fail("--ray-address applies to --executor ray")
        return None
    from ..benchmarks.run.ray_executor import RayExecutor, ray_module

    try:
        ray_module()
    except ImportError as exc:
        fail(str(exc))
    return RayExecutor(address)
