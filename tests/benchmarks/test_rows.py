"""Row assembly: the typed parts hold every schema column exactly once, and assemble refuses what is not a part."""

import dataclasses

import pytest

from onnxbench.benchmarks import Cell
from onnxbench.benchmarks.rows import (
    ROW_PARTS,
    CellKey,
    Measurement,
    ModelInfo,
    Outcome,
    RunStamp,
    Throughput,
    assemble,
)
from onnxbench.schema import COLUMNS, KEY_COLUMNS, SCHEMA_VERSION


def test_the_parts_fields_together_are_exactly_the_schema_columns():
    names = [f.name for part in ROW_PARTS for f in dataclasses.fields(part)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    assert not duplicated, f"columns in more than one part: {duplicated}"
    assert not set(COLUMNS) - set(names), f"schema columns in no part: {sorted(set(COLUMNS) - set(names))}"
    assert not set(names) - set(COLUMNS), f"part fields that are no column: {sorted(set(names) - set(COLUMNS))}"
    assert {f.name for f in dataclasses.fields(CellKey)} == {"cell_id", *KEY_COLUMNS}


def test_assemble_fills_every_column_in_schema_order():
    cell = Cell("tiny", "decomposed", "fp32", 18, "ort-cpu", 2, 16)
    row = assemble(RunStamp("r1", 0.001, "2026-01-01T00:00:00+00:00"), CellKey.of(cell),
                   ModelInfo(n_params=10, reference_runtime="torch"),
                   *Measurement(Outcome("ok"), throughput=Throughput.of(2, 16, 4.0)).parts())
    assert list(row) == list(COLUMNS)
    assert row["schema_version"] == SCHEMA_VERSION and row["cell_id"] == cell.cell_id and row["batch"] == 2
    assert row["throughput_seq_s"] == pytest.approx(500.0) and row["throughput_tok_s"] == pytest.approx(8000.0)
    assert row["latency_ms_p50"] is None and row["status"] == "ok"


def test_assemble_refuses_a_part_twice_or_a_plain_dict():
    with pytest.raises(TypeError, match="given twice"):
        assemble(Outcome("ok"), Outcome("failed"))
    with pytest.raises(TypeError, match="not a row part"):
        assemble(Outcome("ok"), {"status": "ok"})
    with pytest.raises(ValueError, match="status must be one of"):
        assemble(Outcome("done"))
