"""A torch prefill row at the cell's precision is the noise floor itself (docs/agreement.md, "Floor rows"): its
verdict is ``floor``, not ``pass``; its ``agree`` is empty, and the report's counts and summary, ``compare`` and the
exit status treat it as neither a pass nor a fail. A torch row that misses the band still FAILs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.verify.reference import Expected, Reference
from onnxbench.benchmarks.verify.verdict import judge
from onnxbench.cli.run import exit_status
from onnxbench.reports import load, write_report
from onnxbench.reports.compare import compare
from onnxbench.reports.tables import summary_table
from onnxbench.tolerance import FP32

FAST = TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.0, max_iters=2)


def test_torch_rows_are_the_floor_and_counted_as_neither_pass_nor_fail(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu"], batches=[2], seq_lens=[16], timing=FAST)
    rows = {r["runtime"]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False,
                                               ceilings=False).rows}
    torch_row, ort_row = rows["torch"], rows["ort-cpu"]
    assert torch_row["status"] == "ok" and torch_row["verdict"] == "floor" and torch_row["agree"] is None
    assert 0 < torch_row["floor_ratio"] <= 1.0 + 1e-6  # the floor against itself (u_p * max|y| may exceed it)
    assert torch_row["criteria"].startswith("logits: allclose") and "FAIL" not in (torch_row["reason"] or "")
    assert ort_row["verdict"] == "pass" and ort_row["agree"] is True
    assert exit_status(list(rows.values())) == 0
    assert exit_status([*rows.values(), {**ort_row, "verdict": "FAIL", "agree": False}]) == 4

    df = load(tmp_path / "run")
    summary = summary_table(df, requested=["torch", "ort-cpu"])
    assert list(summary["fastest"]) == ["ort-cpu"]  # the floor is no evidence of agreement, nor of disagreement
    assert summary["faster_but_disagreeing"].isna().all()
    report = write_report(tmp_path / "run")["markdown"].read_text()
    assert "1 pass, 0 FAIL, 1 floor (the noise floor itself, not a pass)" in report

    # a run from before the floor verdict, where the same torch row was a pass: not an agreement lost
    before = df.copy()
    before.loc[before.runtime == "torch", ["verdict", "agree"]] = ["pass", True]
    cells = compare(before, df).cells
    assert not cells["verdict"].str.contains("agreement lost").any(), cells[["runtime", "verdict"]]
    lost = df.copy()
    lost["agree"] = lost["agree"].astype("object")
    lost.loc[lost.runtime == "ort-cpu", ["verdict", "agree"]] = ["FAIL", False]
    cells = compare(df, lost).cells
    assert (cells.loc[cells.runtime == "ort-cpu", "verdict"] == "regression: agreement lost").all()


class _Floor(Reference):
    """A reference whose torch rows are its noise floor."""

    label = "torch float64"

    def is_floor(self, runtime: str, options: dict) -> bool:
        return runtime == "torch"


def test_a_floor_row_that_misses_the_band_fails():
    """E.g. torch eager ran other weights than the reference: the row is not the floor it claims to be."""
    y = np.random.default_rng(0).standard_normal((2, 4, 32))
    expected = Expected({"logits": y})
    assert judge({"logits": y + 1e-6}, expected, FP32, _Floor(), "torch", {}).verdict == "floor"
    off = judge({"logits": y + 0.1}, expected, FP32, _Floor(), "torch", {})
    assert off.verdict == "FAIL" and off.reason().startswith("FAIL: logits: allclose: required_atol 0.1 > atol 0.001")
    assert judge({"logits": y + 0.1}, expected, FP32, _Floor(), "ort-cpu", {}).verdict == "FAIL"
    columns, check = judge({"logits": y}, expected, FP32, _Floor(), "torch", {}).parts()
    assert columns.agree is None and check.verdict == "floor"
    assert pd.isna(columns.agree)
