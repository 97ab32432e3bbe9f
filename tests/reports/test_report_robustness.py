"""Reports of runs the README shows, that crashed or said something false: a run with --tune (the reference
runtime tuned too), a merge of ordinary runs of different matrices, generate runs without a decode step."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from onnxbench.cli import app
from onnxbench.reports import load, load_header, write_report
from onnxbench.reports.generation import generation_summary
from onnxbench.reports.render import render_markdown
from onnxbench.reports.tables import latency_grid, summary_table
from tests.conftest import DATA

RUN = DATA / "run_small"
runner = CliRunner()


def _rows(run=RUN):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def _write(run, rows, header):
    run.mkdir(parents=True)
    (run / "header.json").write_text(json.dumps(header))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _tuned_run(run):
    """run_small plus a ``tuned`` row for every cell of both runtimes, as ``run --runtimes torch,ort-cpu --tune``
    writes them (the tuned rows 20 % faster)."""
    rows = _rows()
    tuned = [{**r, "config_id": "tuned", "cell_id": r["cell_id"] + "-tuned",
              "latency_ms_p50": r["latency_ms_p50"] * 0.8, "options": '{"tune_config": "1t"}'} for r in rows]
    return _write(run, rows + tuned, json.loads((RUN / "header.json").read_text()))


def test_a_tuned_run_with_a_tuned_reference_renders_and_reads_speedups_against_the_default(tmp_path):
    run = _tuned_run(tmp_path / "run")
    df = load(run)
    grids = latency_grid(df, ("speedup",))
    assert grids, "no speed-up grid"
    for _, frame in grids:
        assert frame["torch|speedup"].tolist() == pytest.approx([1.0] * len(frame))
        # torch's tuned configuration against torch's default: 1 / 0.8
        assert frame["torch [tuned]|speedup"].tolist() == pytest.approx([1.25] * len(frame))
    summary = summary_table(df)
    assert len(summary) == df.groupby(["batch", "seq_len"]).ngroups
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    assert "## Speed-up vs torch" in text and "torch [tuned]" in text


def test_a_merge_of_ordinary_runs_of_different_matrices_has_a_report(tmp_path):
    """Two ordinary (non-shard) runs that overlap in some cells but whose matrices differ: the merged header has
    no common matrix; `merge` writes the report and `report` reads the folder again."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(RUN, a)
    header = json.loads((RUN / "header.json").read_text())
    header["run_id"] += "-other"
    header["matrix"] = {**header["matrix"], "seq_lens": [64, 128]}
    rows = [r for r in _rows() if r["seq_len"] == 64]
    rows += [{**r, "seq_len": 128, "cell_id": r["cell_id"] + "-128"} for r in rows]
    _write(b, rows, header)
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and "Traceback" not in result.output
    merged = load_header(out)
    assert merged["matrix"] is None
    text = (out / "report.md").read_text()
    assert "merged runs of different matrices" in text
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0


def _generate_rows(new_tokens):
    """ok generate rows of one runtime at one prompt length, as the generate scenario writes them: without a
    decode step (new_tokens 1) the TPOT columns are empty and the latency columns are the prefill's (TTFT)."""
    base = {**_rows()[1], "runtime": "ort-cpu", "part": "decoder-with-past", "scenario": "generate",
            "padding": 0.0, "seq_len": 8}
    out = []
    for n in new_tokens:
        row = {**base, "new_tokens": n, "cell_id": f"gen-{n}", "ttft_ms": 0.2, "e2e_ms": 0.2 + 0.1 * (n - 1)}
        if n > 1:
            row.update(tpot_ms_p50=0.1, tpot_ms_p90=0.12, tpot_ms_p99=0.2, decode_tok_s=10_000.0,
                       latency_ms_p50=0.1, throughput_tok_s=10_000.0)
        else:
            row.update(tpot_ms_p50=None, tpot_ms_p90=None, tpot_ms_p99=None, decode_tok_s=None,
                       latency_ms_p50=0.2, throughput_tok_s=None)
        out.append(row)
    return out


@pytest.mark.parametrize("new_tokens", [[1], [1, 64]])
def test_a_generate_run_without_a_decode_step_renders_and_says_so(tmp_path, new_tokens):
    run = _write(tmp_path / "run", _generate_rows(new_tokens), json.loads((RUN / "header.json").read_text()))
    paths = write_report(run)
    text = paths["markdown"].read_text()
    assert "## Generation" in text
    summary = generation_summary(load(run))  # one row per number of new tokens
    # no decode step ran: not "none agreed", which would say the decode steps failed the check
    assert summary["lowest_tpot"].iloc[0] == "no decode step (new tokens 1)"
    if new_tokens == [1, 64]:
        assert summary["lowest_tpot"].iloc[1] == "ort-cpu (decomposed attention, fp32): 0.1 ms"
    assert "none agreed" not in text


def test_the_noisy_timings_section_says_what_a_generate_row_without_decode_step_timed():
    rows = _generate_rows([1])
    rows[0].update(ci95_p50_lo_ms=0.1, ci95_p50_hi_ms=0.4)
    import pandas as pd

    from onnxbench.reports.load import coerce

    md = render_markdown(coerce(pd.DataFrame(rows)), {}, [])
    section = md.split("## Noisy timings")[1].split("## ")[0]
    assert "TTFT" in section and "new tokens 1" in section
