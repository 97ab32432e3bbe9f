"""Padding is whole tokens: a generate cell asks for a fraction ``padding`` of its last prompt row, and
``floor(padding·T)`` tokens are fed. The key column keeps what was asked (cell ids stay stable, a resumed run finds
its cells); where the fed fraction differs, the plan says so before the run and the row's ``reason`` says what was
fed (a prompt of one token with padding 0.75 pads nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbench.benchmarks.cells import Cell
from onnxbench.benchmarks.inputs import padding_note, padding_tokens
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import PresetSource
from onnxbench.benchmarks.run.runner import run_matrix

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)


@pytest.mark.parametrize("padding, seq_len, batch, want", [
    (0.75, 1, 1, [0]), (0.25, 32, 1, [8]), (0.25, 10, 2, [1, 2]), (0.29, 100, 1, [29]), (0.5, 8, 4, [1, 2, 3, 4])])
def test_padding_tokens_per_row(padding, seq_len, batch, want):
    assert [padding_tokens(padding, seq_len, row, batch) for row in range(batch)] == want


def test_the_prompt_pads_whole_tokens_and_the_note_says_what_was_fed():
    source = PresetSource.named("tiny")
    cell = Cell("tiny", "decomposed", "fp32", 18, "ort-cpu", 2, 1, part="decoder-with-past", scenario="generate",
                new_tokens=2, padding=0.75)
    _, mask = source.prompt(cell)
    assert (mask == 1).all()  # one token: nothing can be padded
    assert "0.75 asked" in padding_note(0.75, mask) and "0 fed" in padding_note(0.75, mask)
    _, mask = source.prompt(Cell(**{**cell.__dict__, "seq_len": 32, "padding": 0.25}))
    assert padding_note(0.25, mask) == ""  # 8 of 32: exactly what was asked
    assert (mask[-1] == 0).sum() == 8 and (mask[0] == 0).sum() == 4


def test_generate_rows_say_the_padding_fed(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], scenarios=["generate"], batches=[2], seq_lens=[1, 10],
                      new_tokens=[2], paddings=[0.75, 0.5], exporter="torchscript", timing=FAST)
    built = spec.build()
    notes = built.plan_notes()
    assert any("0.75" in n and "seq_len 1" in n and "0 of 1" in n for n in notes), notes
    assert any("0.75" in n and "seq_len 10" in n and "7 of 10" in n for n in notes), notes
    assert not any("seq_len 10" in n and "0.5 " in n for n in notes), notes  # 5 of 10 is 0.5
    rows = {(r["seq_len"], r["padding"]): r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir,
                                                               isolate=False, ceilings=False).rows}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert "padding 0.75 asked, 0 fed" in rows[(1, 0.75)]["reason"]
    assert "padding 0.75 asked, 0.7 fed" in rows[(10, 0.75)]["reason"]  # floor(7.5) = 7 of 10 tokens
    assert "padding" not in rows[(10, 0.5)]["reason"]
    # the key column is what was asked: the cell ids do not change
    assert rows[(1, 0.75)]["cell_id"] == Cell("tiny", "decomposed", "fp32", 18, "ort-cpu", 2, 1,
                                              part="decoder-with-past", scenario="generate", new_tokens=2,
                                              padding=0.75).cell_id
    assert np.isclose(rows[(1, 0.75)]["padding"], 0.75)
