"""Padded batches for ONNX files: ``--padding`` (the ``paddings`` axis) gives an ``--onnx`` file's prefill cells a
fraction of right padding in each row's attention mask (row b: ``floor(padding·T·(b+1)/B)`` trailing zeros, so rows
differ), and the outputs that have the mask's (batch, sequence) axes are judged over the real positions only. Cells
at padding 0 keep the ids of runs recorded before; a file with no attention-mask input gets ``skipped`` padded cells;
a padding no cell can use is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import TensorProto

from onnxbench.benchmarks.cells import Cell
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.benchmarks.verify.reference import Expected, OnnxFileReference
from onnxbench.benchmarks.verify.verdict import judge
from onnxbench.errors import MatrixError
from onnxbench.reports import write_report
from onnxbench.tolerance import FP32

from ..plan.onnx_models import identity_model

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)


def _spec(path, **changes):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[2], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(path)], int_ranges={"input_ids": [0, 100]}))
    return dataclasses.replace(spec, **changes)


def test_padding_expands_the_prefill_cells_and_padding_0_keeps_their_ids(bert_onnx):
    cells = _spec(bert_onnx, paddings=[0.0, 0.25]).build().cells
    assert sorted(c.padding for c in cells) == [0.0, 0.25]
    unpadded = next(c for c in cells if c.padding == 0)
    before = _spec(bert_onnx).build().cells  # the matrix without the axis: the ids runs recorded
    assert [c.cell_id for c in before] == [unpadded.cell_id]


def test_the_mask_is_right_padded_and_the_hidden_states_are_judged_at_real_positions(bert_onnx):
    built = _spec(bert_onnx, paddings=[0.25]).build()
    (cell,) = built.cells
    source = built.source(cell)
    feeds = source.cell_feeds(source.model.inputs, cell)
    assert feeds["attention_mask"].tolist() == [[1] * 7 + [0], [1] * 6 + [0, 0]]
    assert feeds["input_ids"].shape == (2, 8)
    positions = source.real_positions(cell, feeds)
    assert positions.outputs == ("last_hidden_state",)  # pooler_output (batch, d) is judged whole
    assert positions.mask.tolist() == (feeds["attention_mask"] == 1).tolist()


def test_outputs_at_padded_positions_are_not_judged(bert_onnx):
    built = _spec(bert_onnx, paddings=[0.25]).build()
    (cell,) = built.cells
    source = built.source(cell)
    feeds = source.cell_feeds(source.model.inputs, cell)
    rng = np.random.default_rng(0)
    reference = {"last_hidden_state": rng.standard_normal((2, 8, 32)).astype(np.float32),
                 "pooler_output": rng.standard_normal((2, 32)).astype(np.float32)}
    runtime = {k: v.copy() for k, v in reference.items()}
    runtime["last_hidden_state"][1, 6:] += 5.0  # garbage where the mask is 0 only
    positions = source.real_positions(cell, feeds)
    whole = judge(runtime, Expected(reference), FP32, OnnxFileReference(source.model), "ort-cpu", {})
    assert whole.verdict == "FAIL"  # judged everywhere, the padded positions fail the row
    kept, expected = positions.restrict(runtime), positions.restrict_expected(Expected(reference))
    real = judge(kept, expected, FP32, OnnxFileReference(source.model), "ort-cpu", {})
    assert real.verdict == "pass" and real.agreement.max_abs_err == 0.0
    runtime["last_hidden_state"][0, 0] += 5.0  # a real position: still judged
    assert judge(positions.restrict(runtime), expected, FP32, OnnxFileReference(source.model), "ort-cpu",
                 {}).verdict == "FAIL"


def test_a_padded_bert_run_passes_and_its_row_says_how_it_was_judged(bert_onnx, tmp_path, cache_dir):
    rows = run_matrix(_spec(bert_onnx, paddings=[0.0, 0.25]), tmp_path / "run", cache_dir=cache_dir,
                      isolate=False, ceilings=False).rows
    by_padding = {r["padding"]: r for r in rows}
    assert set(by_padding) == {0.0, 0.25}
    assert all(r["status"] == "ok" and r["verdict"] == "pass" for r in rows), [r["reason"] for r in rows]
    assert "real positions" in by_padding[0.25]["reason"] and "last_hidden_state" in by_padding[0.25]["reason"]
    assert "real positions" not in by_padding[0.0]["reason"]
    # the report tells the padded batch from the unpadded one of the same shape (not one row hiding the other)
    write_report(tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    latency = report[report.index("## Latency"):].split("\n## ")[0]
    assert "padding" in latency and "0.25" in latency, latency


def test_a_file_without_an_attention_mask_gets_skipped_padded_cells(tmp_path):
    path = identity_model(tmp_path / "ids.onnx", [("input_ids", TensorProto.INT64, ["batch", "sequence"])])
    built = _spec(path, paddings=[0.0, 0.5]).build()
    reasons = {c.padding: built.unrunnable_reason(c) for c in built.cells}
    assert reasons[0.0] is None and "attention-mask input" in reasons[0.5], reasons


def test_padding_no_cell_can_use_is_refused():
    with pytest.raises(MatrixError, match="padding"):
        MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], paddings=[0.25]).build()
    with pytest.raises(MatrixError, match=r"\[0, 1\)"):
        MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], paddings=[1.5]).build()


def test_the_cell_key_is_the_prefill_key_with_padding():
    cell = Cell("tiny-bert", "external", "fp32", 17, "ort-cpu", 2, 8, padding=0.25)
    assert cell.cell_id != dataclasses.replace(cell, padding=0.0).cell_id
