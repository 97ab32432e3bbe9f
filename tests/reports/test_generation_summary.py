"""The generation summary names a row that was measured: the lowest passing TTFT / TPOT over attention variants,
export paths and precisions, with what made it, never a median across variants."""

import json

import pandas as pd

from onnxbench.reports.generation import generation_summary
from onnxbench.reports.load import coerce
from tests.conftest import DATA


def _row(runtime, attention, ttft, tpot, verdict="pass", export_path="onnxbench", precision="fp32"):
    base = json.loads((DATA / "run_small" / "results.jsonl").read_text().splitlines()[1])
    return {**base, "runtime": runtime, "attention": attention, "export_path": export_path, "precision": precision,
            "part": "decoder-with-past", "scenario": "generate", "padding": 0.0, "seq_len": 8, "new_tokens": 4,
            "batch": 1, "cell_id": f"{runtime}-{attention}-{export_path}-{precision}", "ttft_ms": ttft,
            "tpot_ms_p50": tpot, "verdict": verdict, "status": "ok"}


def _summary(rows):
    return generation_summary(coerce(pd.DataFrame(rows))).iloc[0]


def test_the_lowest_ttft_and_tpot_are_the_best_passing_row_named_with_its_variant():
    # ort-cpu's median over the variants (0.32 / 0.27) would hide the best row (ort-gqa-inplace)
    rows = [_row("ort-cpu", "decomposed", 0.44, 0.38), _row("ort-cpu", "sdpa", 0.34, 0.28),
            _row("ort-cpu", "onnx-attention", 0.32, 0.26), _row("ort-cpu", "ort-gqa-inplace", 0.21, 0.13),
            _row("torch", "sdpa", 500.0, 50.0)]
    summary = _summary(rows)
    assert summary["lowest_ttft"] == "ort-cpu (ort-gqa-inplace attention, fp32): 0.21 ms"
    assert summary["lowest_tpot"] == "ort-cpu (ort-gqa-inplace attention, fp32): 0.13 ms"


def test_a_faster_row_that_failed_is_not_the_winner_and_none_passing_is_said():
    rows = [_row("ort-cpu", "sdpa", 0.34, 0.28), _row("ort-cpu", "ort-gqa-inplace", 0.21, 0.13, verdict="FAIL"),
            _row("ort-cpu", "sdpa", 0.1, 0.05, precision="int8-dynamic", verdict="FAIL")]
    summary = _summary(rows)
    assert summary["lowest_ttft"] == "ort-cpu (sdpa attention, fp32): 0.34 ms"
    failed = _summary([{**r, "verdict": "FAIL"} for r in rows])
    assert failed["lowest_ttft"] == failed["lowest_tpot"] == "none agreed"


def test_the_winner_names_its_export_path_and_precision():
    rows = [_row("ort-cpu", "sdpa", 0.34, 0.28), _row("ort-cpu", "external", 0.2, 0.09, export_path="builder"),
            _row("ort-cpu", "sdpa", 0.1, 0.05, precision="int8-dynamic")]
    summary = _summary(rows)
    assert summary["lowest_ttft"] == "ort-cpu via onnxbench (sdpa attention, int8-dynamic): 0.1 ms"
    summary = _summary(rows[:2])
    assert summary["lowest_tpot"] == "ort-cpu via builder (fp32): 0.09 ms"
