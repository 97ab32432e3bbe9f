"""Reports built from a small committed run directory (tests/data/run_small: a real tiny CPU run)."""

import shutil

import pandas as pd

from onnxbench.reports import agreement_table, latency_table, load, speedup_table, write_report
from onnxbench.schema import COLUMNS

from .conftest import DATA

RUN = DATA / "run_small"


def test_load_gives_every_schema_column():
    df = load(RUN)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    raw = pd.read_json(RUN / "results.jsonl", lines=True)
    assert len(df) == len(raw)


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


def test_agreement_table_has_one_row_per_ok_cell():
    df = load(RUN)
    table = agreement_table(df)
    assert len(table) == int((df.status == "ok").sum())
    assert {"max_abs_err", "cosine", "top1_agree", "atol", "agree"} <= set(table.columns)


def test_report_files_from_the_committed_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    paths = write_report(run)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    for title in ("Latency p50 (ms)", "Speed-up vs torch eager", "Agreement with the torch fp32 reference"):
        assert title in md and title in html
    assert "data:image/png;base64," in html
    assert (run / "plot_0_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ort-cpu" in md and "torch" in md
