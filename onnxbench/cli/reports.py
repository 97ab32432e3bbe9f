"""``onnxbench report``, ``compare`` and ``merge``: what reads run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from ..schema import KEY_COLUMNS
from .console import app, console, fail, note, warn


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
    from ..benchmarks.run.merge import merge_runs
    from ..reports import write_report

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
    from ..reports import write_report

    try:
        paths = write_report(run_dir, out)
    except FileNotFoundError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
    if screenshot:
        from ..reports import browser

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
    from ..reports.compare import NOTHING_COMPARED, compare_runs, parse_threshold, render_markdown, write_comparison

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
    if result.exit_code == NOTHING_COMPARED:
        fail(f"{run_a} and {run_b} share no measured cell (cells are matched on {', '.join(KEY_COLUMNS)}); "
             "nothing was compared")
    for field, a, b in result.env_diffs:
        warn(f"environments differ: {field}: {a} -> {b}")
    for line in result.busy_lines():
        warn(line)
    if result.hardware_diffs:
        shown = "; ".join(f"{cell}: {a} -> {b}" for cell, a, b in result.hardware_diffs[:3])
        more = f" and {len(result.hardware_diffs) - 3} more" if len(result.hardware_diffs) > 3 else ""
        warn(f"{len(result.hardware_diffs)} cell(s) ran on different hardware: {shown}{more}; their changes may "
             "come from the machines, not the code")
    note(f"{n.get('regression', 0)} regression(s) beyond {result.threshold:.1%}, "
         f"{n.get('improvement', 0)} improvement(s), {n.get('within noise', 0)} change(s) beyond the "
         f"threshold but within noise, {n.get('unchanged', 0)} unchanged, {n.get('not compared', 0)} not compared")
    raise typer.Exit(result.exit_code)
