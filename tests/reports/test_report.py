"""Reports built from a small committed run directory (tests/data/run_small: a real tiny CPU run).

Golden files: tests/golden/report_run_small.md is the expected Markdown report of run_small. After an intended
change of the report, regenerate the goldens with

    ONNXBENCH_UPDATE_GOLDEN=1 python -m pytest tests/reports/test_report.py tests/reports/test_compare.py

and review the diff before committing.
"""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from onnxbench.reports import agreement_table, latency_table, load, speedup_table, write_report
from onnxbench.reports.load import coerce
from onnxbench.reports.render import render_markdown
from onnxbench.reports.tables import summary_table
from onnxbench.schema import COLUMNS
from tests.conftest import DATA

RUN = DATA / "run_small"
GOLDEN = Path(__file__).parents[1] / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/NAME; rewrite the file instead when ONNXBENCH_UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if os.environ.get("ONNXBENCH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing; create it with ONNXBENCH_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from the golden file; if intended, regenerate (see module doc)"


def test_load_gives_every_schema_column():
    df = load(RUN)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    raw = pd.read_json(RUN / "results.jsonl", lines=True)
    assert len(df) == len(raw)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_read_back_like_the_jsonl(tmp_path, fmt):
    """The tidy table round-trips through each format the runner writes; a run dir with only that file loads."""
    df = load(RUN)
    run = tmp_path / fmt
    run.mkdir()
    shutil.copy(RUN / "header.json", run)
    if fmt == "csv":
        df.to_csv(run / "results.csv", index=False)
    else:
        df.to_parquet(run / "results.parquet", index=False)
    back = load(run)
    # CSV cannot tell an empty string from a missing value: compare with "" as missing on both sides
    pd.testing.assert_frame_equal(back.replace("", pd.NA), coerce(df).replace("", pd.NA), check_dtype=False)
    assert render_markdown(back, {}, []) == render_markdown(df, {}, [])


def test_latency_and_speedup_tables_follow_the_rows():
    df = load(RUN)
    lat = latency_table(df)
    assert {"torch", "ort-cpu"} <= set(lat.columns)
    ok = df[(df.status == "ok") & (df.runtime == "ort-cpu")].iloc[0]
    key = (ok.model, ok.part, ok.attention, ok.precision, ok.batch, ok.seq_len)
    assert lat.loc[key, "ort-cpu"] == ok.latency_ms_p50
    speed = speedup_table(df)
    assert speed.loc[key, "ort-cpu"] == lat.loc[key, "torch"] / lat.loc[key, "ort-cpu"]
    assert (speed["torch"] == 1.0).all()


def test_summary_names_the_fastest_agreeing_runtime():
    df = load(RUN)
    summary = summary_table(df)
    assert len(summary) == df.groupby(["batch", "seq_len"]).ngroups
    for row in summary.itertuples():
        cell = df[(df.batch == row.batch) & (df.seq_len == row.seq_len) & df.agree.astype(bool)]
        fastest = cell.loc[cell.latency_ms_p50.idxmin()]
        torch_p50 = cell[cell.runtime == "torch"].latency_ms_p50.iloc[0]
        assert row.fastest == fastest.runtime
        assert row.speedup == pytest.approx(torch_p50 / fastest.latency_ms_p50)


def test_agreement_table_has_one_row_per_ok_cell():
    df = load(RUN)
    table = agreement_table(df)
    assert len(table) == int((df.status == "ok").sum())
    assert {"max_abs_err", "cosine", "top1_agree", "atol", "verdict"} <= set(table.columns)
    assert set(table.verdict) == {"pass"} and "floor_ratio" in table.columns
    # a run written before the verdict column: the verdict comes from agree, the empty floor columns are left out
    legacy = df.assign(verdict=pd.NA, floor_ratio=float("nan"), floor_factor=float("nan"),
                       required_atol=float("nan"))
    table = agreement_table(legacy)
    assert set(table.verdict) == {"pass"} and "floor_ratio" not in table.columns


def test_reference_rows_are_not_passes_and_located_blocks_are_listed():
    df = load(RUN)
    ok = df.index[df.status == "ok"]
    torch_rows = df.index[(df.status == "ok") & (df.runtime == "torch")]
    df["verdict"] = "pass"
    df.loc[torch_rows, ["verdict", "agree"]] = ["reference", pd.NA]  # as if torch were its own reference
    failing = ok.difference(torch_rows)[0]
    df.loc[failing, ["verdict", "agree", "first_divergent_block"]] = ["FAIL", False, 1]
    df.loc[ok, ["floor_ratio", "floor_factor", "required_atol"]] = [1.2, 10.0, 0.0]
    df.loc[failing, "floor_ratio"] = 1.5e4
    table = agreement_table(df)
    assert {"floor_ratio", "floor_factor", "required_atol"} <= set(table.columns)
    md = render_markdown(df, {}, [])
    n_ok, n_ref = len(ok), len(torch_rows)
    assert (f"agreement of the ok cells: {n_ok - n_ref - 1} pass, 1 FAIL, {n_ref} reference (compared with "
            "itself, not a pass)") in md
    assert "### First diverging block" in md and "| 15,000.0 |" in md
    summary = summary_table(df)
    assert "torch" not in set(summary.fastest)  # a reference row is never "the fastest that agreed"


def test_report_files_from_the_committed_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    paths = write_report(run)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    for title in ("## Summary", "## Latency", "## Speed-up vs torch", "## Agreement", "## Skipped and failed cells",
                  "## Environment"):
        assert title in md
        assert f"<h2>{title[3:]}</h2>" in html
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html.split("<body>")[1]
    assert (run / "plot_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](plot_throughput.png)" in md
    assert "(ms)" in md and "('" not in md, "flat, labelled columns (no tuple indexes)"
    # optional sections stay out of a CPU run that has no such columns
    for absent in ("GPU time split", "Tuned configurations", "by attention"):
        assert absent not in md
    # the rows carry the analytic work model and the providers read back, so these sections are there even
    # without measured ceilings
    assert "## Roofline" in md and "## Execution providers" in md


def test_markdown_report_matches_golden(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    first = write_report(run, tmp_path / "a")["markdown"].read_text()
    second = write_report(run, tmp_path / "b")["markdown"].read_text()
    assert first == second, "rendering must be deterministic"
    assert (tmp_path / "a" / "report.html").read_bytes() == (tmp_path / "b" / "report.html").read_bytes()
    check_golden("report_run_small.md", first)
