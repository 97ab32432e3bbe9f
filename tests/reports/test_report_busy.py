"""A run measured on a busy machine (cpu_busy_pct_at_start above onnxbench.noise.BUSY_LIMIT_PCT) says so on every
figure where it is read: a mark on each timing value of the report, a line in the summary, a note on each plot
and on the ceilings; `compare` says which run was busy (document and stderr) rather than gate on it silently."""

import json
import shutil

from typer.testing import CliRunner

from onnxbench import noise
from onnxbench.cli import app
from onnxbench.reports import load, load_header
from onnxbench.reports.compare import compare_runs
from onnxbench.reports.compare import render_markdown as compare_markdown
from onnxbench.reports.format import BUSY_MARK
from onnxbench.reports.render import build_sections, make_plots, render_markdown
from tests.conftest import DATA

RUN = DATA / "run_small"
CEILINGS = {"cpu": {"gemm_gflops": 80.1, "mem_bw_gbs": 9.1, "gemm_n": 1024, "threads": 2}}
runner = CliRunner()


def _busy(run, pct=63.0):
    shutil.copytree(RUN, run)
    header = json.loads((run / "header.json").read_text())
    header.update(cpu_busy_pct_at_start=pct, ceilings=CEILINGS)
    (run / "header.json").write_text(json.dumps(header))
    return run


def _table(sections, anchor):
    return next(s for s in sections if s.anchor == anchor)


def test_the_rule_is_the_noise_module_s():
    assert noise.busy_pct({"cpu_busy_pct_at_start": noise.BUSY_LIMIT_PCT + 1}) is not None
    assert noise.busy_pct({"cpu_busy_pct_at_start": noise.BUSY_LIMIT_PCT}) is None
    assert "63 % busy" in noise.busy_note({"cpu_busy_pct_at_start": 63.0})
    assert noise.busy_note({"cpu_busy_pct_at_start": 1.0}) == ""


def test_every_timing_figure_of_a_busy_run_is_marked_and_the_summary_says_why(tmp_path):
    run = _busy(tmp_path / "run")
    df, header = load(run), load_header(run)
    md = render_markdown(df, header, [])
    summary_part = md.split("## Summary")[1].split("## Latency")[0]
    assert "63 % busy" in summary_part and BUSY_MARK.strip() in summary_part
    sections = build_sections(df, header, [])
    from onnxbench.reports.markup import _prepare

    timed = {"summary": ["p50 (ms)", "tokens/s", "torch p50 (ms)", "speed-up vs torch"],
             "latency": None, "speedup": None, "roofline": ["GFLOP/s", "GB/s", "% of peak FLOP/s"]}
    for anchor, labels in timed.items():
        section = _table(sections, anchor)
        assert BUSY_MARK.strip() in section.intro, anchor
        for table in section.tables:
            text = _prepare(table)[0]
            columns = labels or [c for c in text.columns if "(ms)" in c or "×" in c or c.startswith("ort")
                                 or c.startswith("torch")]
            columns = [c for c in columns if c in text.columns]
            assert columns, (anchor, list(text.columns))
            for column in columns:
                values = [v for v in text[column] if v != "—"]
                assert values and all(v.endswith(BUSY_MARK) for v in values), (anchor, column, values)
    # agreement figures are not timings: unmarked
    agreement = _prepare(_table(sections, "agreement").tables[0])[0]
    assert not any(BUSY_MARK.strip() in v for v in agreement.to_numpy().ravel())
    ceilings = _table(sections, "ceilings")
    assert "under load" in ceilings.intro and "63 % busy" in ceilings.intro


def test_a_quiet_run_carries_no_busy_mark():
    df, header = load(RUN), load_header(RUN)
    md = render_markdown(df, header, make_plots(df, header))
    assert BUSY_MARK.strip() not in md and "busy with other work" not in md


def test_plots_of_a_busy_run_say_so(tmp_path):
    run = _busy(tmp_path / "run")
    df, header = load(run), load_header(run)
    busy, quiet = make_plots(df, header), make_plots(df, load_header(RUN))
    assert [p.filename for p in busy] == [p.filename for p in quiet] and busy
    for b, q in zip(busy, quiet, strict=True):
        assert "63 % busy" in b.title and "busy" not in q.title
        assert b.png != q.png, f"{b.filename}: the figure itself must carry the note"


def test_compare_says_which_run_was_busy_on_stderr_and_in_the_document(tmp_path):
    busy = _busy(tmp_path / "busy", 80.0)
    c = compare_runs(RUN, busy)
    text = compare_markdown(c)
    assert "run B" in text and "80 % busy" in text and "Warning" in text
    result = runner.invoke(app, ["compare", str(RUN), str(busy)])
    assert "warning:" in result.stderr and "80 % busy" in result.stderr
    both = compare_markdown(compare_runs(busy, busy))
    assert "both runs" in both.lower()
    quiet = runner.invoke(app, ["compare", str(RUN), str(RUN)])
    assert "busy" not in quiet.stderr and "busy" not in quiet.stdout


def test_a_busy_generate_run_marks_its_figures_but_not_the_texts_in_their_place(tmp_path):
    from tests.reports.test_report_robustness import _generate_rows, _write

    header = {**json.loads((RUN / "header.json").read_text()), "cpu_busy_pct_at_start": 90.0}
    run = _write(tmp_path / "run", _generate_rows([1, 64]) + [{**_generate_rows([1])[0], "batch": 2}], header)
    md = render_markdown(load(run), load_header(run), [])
    generation = md.split("## Generation")[1].split("\n## ")[0]
    assert "90 % busy" in generation
    winner = "ort-cpu (decomposed attention, fp32)"
    assert f"{winner}: 0.2 ms{BUSY_MARK}" in generation and f"{winner}: 0.1 ms{BUSY_MARK}" in generation
    assert "| no decode step (new tokens 1) |" in generation
    assert f"| 0.200{BUSY_MARK} |" in generation
