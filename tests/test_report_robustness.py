"""Reports of runs the README shows, that crashed or said something false: a run with --tune (the reference
runtime tuned too), a merge of ordinary runs of different matrices, generate runs without a decode step."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from onnxbench.cli import app
from onnxbench.reports import load, load_header
from onnxbench.reports.tables import latency_grid, summary_table

from .conftest import DATA

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
