"""The Summary of a run with several export paths: the winner names its path, and a speed-up divides times of
one graph (never torch's time of onnxbench's graph by a builder graph's time)."""

import json

import pytest

from onnxbench.reports import load, load_header
from onnxbench.reports.render import render_markdown
from onnxbench.reports.tables import summary_table
from tests.conftest import DATA
from tests.reports.test_report_robustness import _write

RUN = DATA / "run_small"


def _run(tmp_path, torch_builder: bool):
    """run_small's batch 1, seq 16 cell plus an ort-cpu row of the builder's graph (attention external) 10x
    faster than ort-cpu's onnxbench graph, and with ``torch_builder`` torch rows of that graph and optimum's."""
    rows = [json.loads(line) for line in (RUN / "results.jsonl").read_text().splitlines()]
    rows = [{**r, "export_path": "onnxbench"} for r in rows if r["batch"] == 1 and r["seq_len"] == 16]
    ort = next(r for r in rows if r["runtime"] == "ort-cpu")
    torch = next(r for r in rows if r["runtime"] == "torch")
    builder = [{**ort, "export_path": "builder", "attention": "external", "cell_id": "ort-builder",
                "latency_ms_p50": ort["latency_ms_p50"] / 10}]
    if torch_builder:  # and of optimum's graph (attention external too), faster: not the builder's baseline
        builder += [{**torch, "export_path": path, "attention": "external", "cell_id": f"torch-{path}",
                     "latency_ms_p50": p50} for path, p50 in (("builder", 2.0), ("optimum", 1.0))]
    return _write(tmp_path / "run", rows + builder, json.loads((RUN / "header.json").read_text()))


def test_the_winner_names_its_export_path_and_no_speedup_divides_another_graphs_time(tmp_path):
    run = _run(tmp_path, torch_builder=False)
    summary = summary_table(load(run)).iloc[0]
    assert summary["fastest"] == "ort-cpu via builder"
    assert summary["speedup"] != summary["speedup"]  # NaN: torch has no row of the builder's graph
    assert summary["no_baseline"] == "no torch row for this graph (export path builder)"
    md = render_markdown(load(run), load_header(run), [])
    table = md.split("## Summary")[1].split("\n## ")[0]
    assert "| ort-cpu via builder |" in table and "no torch row for this graph (export path builder) |" in table


def test_a_speedup_of_a_builder_graph_is_against_torchs_row_of_that_graph(tmp_path):
    df = load(_run(tmp_path, torch_builder=True))
    summary = summary_table(df).iloc[0]
    ort = df[(df["runtime"] == "ort-cpu") & (df["export_path"] == "builder")]["latency_ms_p50"].iloc[0]
    assert summary["reference_p50"] == pytest.approx(2.0)
    assert summary["speedup"] == pytest.approx(2.0 / ort)
