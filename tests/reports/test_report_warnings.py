"""What a report claims must hold: an interrupted run reads as incomplete, a busy machine and noisy cells are
flagged at the top and on every summary figure they affect, a fraction of a ceiling above 1 is a measurement
problem, and the ceilings are a readable table. Runs are tests/data/run_small (a real tiny CPU run: torch and
ort-cpu at 4 shapes) edited the way an interrupted, busy or noisy run looks."""

import json
import shutil

import pytest

from onnxbench import noise
from onnxbench.cli import console as cli_console
from onnxbench.cli.summary import print_summary, warn_if_unreliable
from onnxbench.reports import load, load_header, write_report
from onnxbench.reports.render import render_markdown
from onnxbench.reports.tables import summary_table
from tests.conftest import DATA

RUN = DATA / "run_small"


def _run(tmp_path, rows=None, **header_fields):
    """A copy of run_small with ``rows`` (default: all of its rows) and header fields replaced."""
    run = tmp_path / "run"
    run.mkdir()
    header = {**json.loads((RUN / "header.json").read_text()), **header_fields}
    (run / "header.json").write_text(json.dumps(header))
    if rows is None:
        rows = [json.loads(line) for line in (RUN / "results.jsonl").read_text().splitlines()]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _rows():
    return [json.loads(line) for line in (RUN / "results.jsonl").read_text().splitlines()]


def _first_lines(md: str, n: int = 6) -> str:
    return "\n".join(md.splitlines()[:n])


def test_an_interrupted_run_says_so_first_and_names_no_winner(tmp_path):
    """The run stopped after torch's 4 cells: ort-cpu, requested, never ran."""
    rows = [r for r in _rows() if r["runtime"] == "torch"]
    run = _run(tmp_path, rows, interrupted=True, n_cells=8)
    md = write_report(run)["markdown"].read_text()
    top = _first_lines(md)
    assert "Incomplete run" in top and "4 of the matrix's 8 cells did not run" in top
    assert "no row at all for the requested runtime(s) ort-cpu" in top
    summary = summary_table(load(run), requested=["torch", "ort-cpu"])
    assert set(summary.fastest) == {"none: no row for ort-cpu (incomplete run)"}
    assert summary.speedup.isna().all()
    assert "| torch |" not in md.split("## Summary")[1].split("## Latency")[0], "no winner in the summary"


def test_a_run_missing_cells_without_a_recorded_count_still_reads_as_interrupted(tmp_path):
    rows = [r for r in _rows() if r["runtime"] == "torch"][:2]
    md = render_markdown(load(_run(tmp_path, rows, interrupted=True)), load_header(tmp_path / "run"), [])
    assert "Incomplete run (interrupted" in _first_lines(md) and "ort-cpu" in _first_lines(md)


def test_a_complete_quiet_run_has_no_warning():
    md = render_markdown(load(RUN), load_header(RUN), [])
    assert "Warning" not in md and "†" not in md


def test_a_busy_cpu_at_start_is_a_banner(tmp_path):
    run = _run(tmp_path, cpu_busy_pct_at_start=85.0)
    top = _first_lines(write_report(run)["markdown"].read_text())
    assert "Busy machine: the CPUs were 85 % busy" in top


def test_noisy_cells_are_a_banner_and_mark_every_summary_figure_they_affect(tmp_path):
    rows = _rows()
    for r in rows:  # ort-cpu b1 t16 (a winner) and torch b4 t64 (a reference) get wide intervals
        if (r["runtime"], r["batch"], r["seq_len"]) in {("ort-cpu", 1, 16), ("torch", 4, 64)}:
            r["ci95_p50_hi_ms"] = r["latency_ms_p50"] * 1.3
    run = _run(tmp_path, rows)
    md = write_report(run)["markdown"].read_text()
    assert "Noisy timings: 2 of 8 measured cells" in _first_lines(md)
    summary = md.split("## Summary")[1].split("## Latency")[0]
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in summary.splitlines()
             if line.startswith("| ") and line[2].isdigit()}
    noisy_winner, noisy_reference, clean = lines[("1", "16")], lines[("4", "64")], lines[("1", "64")]
    assert noisy_winner.count("†") == 3, noisy_winner  # p50, tokens/s, speed-up
    assert noisy_reference.count("†") == 2, noisy_reference  # torch p50, speed-up
    assert "†" not in clean
    assert "## Noisy timings" in md


def test_the_cli_and_the_report_count_the_same_noisy_cells(tmp_path):
    """One criterion: run_small has CoVs of 14-99 % (outliers) but tight medians; only wide intervals count."""
    rows = _rows()
    assert all(r["cov"] > noise.NOISE_LIMIT for r in rows)
    rows[0]["ci95_p50_hi_ms"] = rows[0]["latency_ms_p50"] * 1.5
    run = _run(tmp_path, rows)
    md = write_report(run)["markdown"].read_text()
    assert "Noisy timings: 1 of 8 measured cells" in md
    with cli_console.err.capture() as captured:
        warn_if_unreliable(run, rows, noise.NOISE_LIMIT)
    assert "1 of 8 measured cells have noisy timings" in captured.get()
    assert [bool(noise.noise_reason(r)) for r in rows] == [True] + [False] * 7


def test_a_noisy_cell_is_told_the_remedy_its_load_reading_points_to():
    row = {**_rows()[0], "iters": 10}
    row["ci95_p50_hi_ms"] = row["latency_ms_p50"] * 1.3
    quiet = noise.noise_reason({**row, "cpu_busy_pct": 5.0})
    busy = noise.noise_reason({**row, "cpu_busy_pct": 60.0})
    unknown = noise.noise_reason({**row, "cpu_busy_pct": None})
    assert "machine was quiet (5% busy): more than its 10 timed iterations (--min-time" in quiet
    assert "other processes used 60% of the CPUs: rerun on a quiet machine" in busy and "--min-time" not in busy
    assert "rerun on a quiet one, or time more than its 10 timed iterations" in unknown


def test_a_fraction_of_peak_above_one_is_a_measurement_problem_not_a_figure(tmp_path):
    rows = _rows()
    for r in rows:
        r.update(flops=1e9, achieved_gflops=50.0, frac_peak_flops=0.5, achieved_gbs=1.0, frac_peak_bw=0.1)
    rows[0].update(frac_peak_flops=2.35)
    md = write_report(_run(tmp_path, rows))["markdown"].read_text()
    assert "235" not in md, "an impossible fraction must not be shown as a number"
    assert md.count("> peak (measurement problem)") == 2  # the roofline cell and the banner
    assert "Measurement problem: 1 cell(s) exceed a measured ceiling" in _first_lines(md)
    with cli_console.console.capture() as captured:
        print_summary(rows)
    assert "> peak (measurement problem)" in captured.get() and "235" not in captured.get()


def test_ceilings_are_a_readable_table(tmp_path):
    ceilings = {"cpu": {"gemm_gflops": 80.14, "gemm_gflops_by_backend": {"torch": 80.14, "ort": 60.2},
                        "gemm_source": "torch", "mem_bw_gbs": 9.1, "gemm_n": 1024, "copy_bytes": 128 * 2**20,
                        "threads": 2, "errors": {}},
                "probe": {"gemm_n": 1024}, "probes": [{"cpu": {"gemm_gflops": 70.0}}, {"cpu": {"gemm_gflops": 80.14}}],
                "measure_s": 4.2}
    md = write_report(_run(tmp_path, ceilings=ceilings))["markdown"].read_text()
    section = md.split("## Machine ceilings")[1].split("## Environment")[0]
    assert "| cpu | 80.1 (torch) | torch 80.1, ort 60.2 | 9.1 | GEMM n=1024, copy 128 MiB, 2 threads | 2 probe(s) |" \
        in section
    assert '{"cpu"' not in md and "gemm_gflops" not in md


def test_the_cli_results_table_names_the_axes_that_vary(tmp_path):
    rows = _rows()
    rows += [{**r, "attention": "sdpa", "precision": "fp16"} for r in rows]
    with cli_console.console.capture() as captured:
        print_summary(rows)
    text = captured.get()
    header = text.splitlines()[2]  # the scenario's title, the table's top rule, its header
    assert "attention" in header and "precision" in header and "part" not in header
    assert text.count("sdpa") == 8 and text.count("decomposed") == 8


@pytest.mark.parametrize("interrupted", [True, False])
def test_html_report_carries_the_same_warnings(tmp_path, interrupted):
    rows = [r for r in _rows() if r["runtime"] == "torch"] if interrupted else _rows()
    run = _run(tmp_path, rows, interrupted=interrupted, n_cells=8, cpu_busy_pct_at_start=50.0)
    html = write_report(run)["html"].read_text()
    head = html.split("<nav>")[0]
    assert ("Incomplete run" in head) is interrupted
    assert "Busy machine" in head and "class='warn'" in head
    shutil.rmtree(run)
