"""Report sections that depend on what the run holds: a synthetic run directory (tests/derived_runs.py) with a
second attention variant, GPU fields, a tuned configuration, an agreement failure, skipped and failed cells."""

import json

import pytest

from onnxbench.reports import load, load_header, write_report
from onnxbench.reports.plots import throughput_by_attention
from onnxbench.reports.render import render_markdown
from onnxbench.reports.tables import config_table, noisy_table, not_ok_table, stage_table, summary_table
from tests.conftest import DATA
from tests.derived_runs import synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("synthetic") / "run")


def test_summary_skips_faster_runtimes_that_failed_agreement(run):
    df = load(run)
    summary = summary_table(df).set_index(["batch", "seq_len"])
    worst = summary.loc[(4, 64)]
    assert worst.fastest == "ort-cpu" and worst.attention == "sdpa"
    assert worst.faster_but_disagreeing == "ort-cuda"
    ok = df[(df.status == "ok") & (df.batch == 4) & (df.seq_len == 64) & (df.attention == "sdpa")]
    torch_p50 = ok[ok.runtime == "torch"].latency_ms_p50.iloc[0]
    assert worst.speedup == pytest.approx(torch_p50 / worst.latency_ms_p50)
    assert summary.loc[(1, 16)].fastest == "ort-cuda"


def test_failures_are_marked_and_optional_sections_appear(run):
    df = load(run)
    md = render_markdown(df, load_header(run), [])
    n_fail = int((df.agree == False).sum())  # noqa: E712 - nullable boolean column
    assert n_fail == 2 and md.count("| **FAIL** |") == n_fail
    assert "| **failed** | ort-trt |" in md and "libnvinfer.so.10 \\| not found" in md, "pipe escaped"
    for title in ("## GPU time split", "## Roofline", "## Execution providers", "## Tuned configurations"):
        assert title in md
    assert "ort-cpu [threads-1] p50 (ms)" in md
    assert md.index("| **failed** |") < md.index("| skipped |"), "failed cells first"


def test_skipped_and_failed_cells_are_grouped_by_reason(run):
    table = not_ok_table(load(run))
    assert list(table.status) == ["failed", "skipped"]
    assert list(table.runtime) == ["ort-trt", "tensorrt"] and list(table.cells) == [1, 1]
    assert table.reason.iloc[1] == "TensorRT is not installed"


def test_gpu_split_only_lists_rows_that_have_it(run):
    split = stage_table(load(run))
    assert set(split.runtime) == {"ort-cuda"} and len(split) == 8
    assert list(split.columns[-4:]) == ["latency_ms_p50", "h2d_ms", "compute_ms", "d2h_ms"]
    assert stage_table(load(DATA / "run_small")).empty


def test_attention_plot_only_with_several_variants(run):
    assert throughput_by_attention(load(run))[:8] == b"\x89PNG\r\n\x1a\n"
    assert throughput_by_attention(load(DATA / "run_small")) is None
    paths = write_report(run)
    assert "plot:plot_throughput_attention.png" in paths
    assert "](plot_throughput_attention.png)" in paths["markdown"].read_text()


def test_a_cell_measured_twice_reports_the_last_row(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "header.json").write_text((DATA / "run_small" / "header.json").read_text())
    lines = (DATA / "run_small" / "results.jsonl").read_text().splitlines()
    again = json.loads(lines[-1])
    again["latency_ms_p50"] = 123.456
    (run / "results.jsonl").write_text("\n".join(lines + [json.dumps(again)]) + "\n")
    md = render_markdown(load(run), {}, [])
    assert "123.5" in md and md.startswith("# onnxbench report") and "8 cells:" in md


def test_noisy_cells_are_those_with_a_wide_median_ci():
    df = load(DATA / "run_small")
    assert noisy_table(df).empty, "run_small's medians are tight although its CoV is high (outliers)"
    df.loc[0, "ci95_p50_hi_ms"] = df.loc[0, "latency_ms_p50"] * 1.2
    noisy = noisy_table(df)
    assert len(noisy) == 1 and noisy.ci95_width.iloc[0] > 0.1
    assert "## Noisy timings" in render_markdown(df, {}, [])


def test_tuned_configurations_say_which_won_where_next_to_the_default(run):
    df = load(run)
    mask = (df.config_id != "default") & (df.seq_len == 64)
    df.loc[mask, "options"] = '{"tune_config": "default"}'  # a shape where the default was kept
    table = config_table(df)
    by_shape = {(a, s): c for a, s, c in zip(table.attention, table.seq_len, table.tune_config, strict=True)}
    assert by_shape == {("decomposed", 16): "threads-1", ("sdpa", 16): "threads-1",
                        ("decomposed", 64): "default", ("sdpa", 64): "default"}
    default = df[(df.config_id == "default") & (df.runtime == "ort-cpu") & (df.batch == 1)]
    for line in table.itertuples():
        ref = default[(default.attention == line.attention) & (default.seq_len == line.seq_len)]
        assert line.default_p50 == ref.latency_ms_p50.item() and line.tuned_p50 > line.default_p50


def test_a_complete_shard_is_not_an_incomplete_run_and_its_summary_says_merge():
    """A shard runs whole groups of some runtimes: no "Incomplete run" warning when its own cells all ran, and the
    summary names no winner against a runtime that is in another shard, saying how to compare."""
    df = load(DATA / "run_small")
    header = load_header(DATA / "run_small")
    shard = df[df.runtime == "ort-cpu"]
    header = {**header, "n_cells": len(shard), "matrix": {**header["matrix"], "shard": "2/2"}}
    md = render_markdown(shard, header, [])
    assert "Incomplete run" not in md
    assert "none: no row for torch (shard 2/2: `onnxbench merge` the shards to compare)" in md
    unsharded = {**header, "matrix": {**header["matrix"], "shard": None}}
    assert "Incomplete run" in render_markdown(shard, unsharded, []), "without a shard the warning stays"


def test_a_noisy_generate_row_is_listed_under_noisy_timings():
    """The warning's count covers generate rows, so the section it points to lists them too (with the scenario)."""
    df = load(DATA / "run_small")
    header = load_header(DATA / "run_small")
    gen = df[df.runtime == "ort-cpu"].head(1).assign(scenario="generate", new_tokens=4, padding=0.25,
                                                     part="decoder-with-past", tpot_ms_p50=1.0)
    gen["ci95_p50_hi_ms"] = gen["latency_ms_p50"] * 3
    md = render_markdown(gen, header, [])
    assert "Noisy timings: 1 of 1" in md and "## Noisy timings" in md
    section = md.split("## Noisy timings")[1]
    assert "| generate | 4 | 0.25 |" in section


def test_the_agreement_table_leads_with_the_verdict_and_the_criterion_that_failed(run):
    from onnxbench.reports.tables import agreement_table, failed_criteria

    table = agreement_table(load(run))
    assert list(table.columns[:2]) == ["verdict", "failed_on"]
    failed = table[table.verdict == "FAIL"]
    # the planted failure has a small band error and floor ratio but a cosine of 0.97: the cosine failed
    assert failed.failed_on.tolist() == ["cosine 0.970000"] * 2
    assert (table[table.verdict != "FAIL"].failed_on == "").all()
    row = {"verdict": "FAIL", "required_atol": 0.4, "atol": 1e-3, "floor_ratio": 900.0, "floor_factor": 10.0,
           "nan_count": 3, "nonfinite_matched": 1, "cosine": 0.99}
    assert failed_criteria(row) == "NaN/Inf (2); band: needs atol 0.4 > 0.001; floor: 900× > 10×"
    assert failed_criteria({**row, "verdict": "pass"}) == ""
