"""Opsets: a row's opset is the file's, and an opset the exporter cannot produce is refused (measured table in
onnxbench/export/opsets.json, docs/export.md)."""

import os

import onnx
import pytest

from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.export import UnsupportedOpset, supported_opsets, to_onnx
from onnxbench.export import opsets as opset_table
from onnxbench.models import get_preset
from tests.cli_run import run_cli

FAST = TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0)


def _file_opset(path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_measured_table_covers_every_exporter_and_variant():
    from onnxbench.export import EXPORTERS, VARIANTS

    for exporter in EXPORTERS:
        assert 18 in supported_opsets(exporter, "decomposed"), exporter
    for variant, recipe in VARIANTS.items():
        assert recipe.written or supported_opsets("dynamo", variant), variant  # written: no exporter involved
    assert 15 not in supported_opsets("dynamo", "decomposed")  # dynamo's version conversion fails (LayerNorm)
    assert 99 not in supported_opsets("dynamo", "decomposed")


def test_lowest_measured_opset_is_written_as_asked(cache_dir):
    """The table is a measurement of this torch, not a guess: its lowest dynamo opset is the one in the file
    (that the opset below it is not is checked by test_exporter_writing_another_opset_fails_and_caches_nothing)."""
    lowest = supported_opsets("dynamo", "decomposed")[0]
    artifact = to_onnx(get_preset("tiny"), opset=lowest, cache_dir=cache_dir, model_name="tiny")
    assert artifact.opset == _file_opset(artifact.path) == lowest


def test_unsupported_opset_is_refused_before_export(tmp_path):
    with pytest.raises(UnsupportedOpset, match=r"cannot produce opset 15 .*supported opsets: \d+-\d+"):
        to_onnx(get_preset("tiny"), opset=15, cache_dir=tmp_path)
    assert not (tmp_path / "artifacts").exists(), "nothing may be exported or created"


def test_exporter_writing_another_opset_fails_and_caches_nothing(tmp_path, monkeypatch):
    """Should the table not hold (another torch), the opset written is still checked: dynamo falls back to
    opset 18 when its conversion to the opset below the measured range fails, and that is an error, not a file
    labelled with the opset asked for."""
    table = opset_table._table()
    below = supported_opsets("dynamo", "decomposed")[0] - 1
    patched = {**table, "supported": {**table["supported"], "dynamo": {
        **table["supported"]["dynamo"], "decomposed": [below, *table["supported"]["dynamo"]["decomposed"]]}}}
    monkeypatch.setattr(opset_table, "_table", lambda: patched)
    with pytest.raises(UnsupportedOpset, match=f"wrote opset 18 when opset {below} was asked for"):
        to_onnx(get_preset("tiny"), opset=below, cache_dir=tmp_path)
    assert os.listdir(tmp_path / "artifacts") == [], "a failed export leaves nothing in the cache"


def test_matrix_refuses_an_opset_no_variant_can_use():
    with pytest.raises(ValueError, match=r"cannot produce opset 14 .*decomposed: \d+-\d+"):
        MatrixSpec(models=["tiny"], opsets=[14, 18], runtimes=["ort-cpu"]).validate()


def test_rows_carry_the_opset_of_the_file_and_unproducible_cells_are_skipped(cache_dir, tmp_path):
    """onnx-attention exists only at opset 23; sdpa below the dynamo exporter's range cannot be produced:
    those cells are skipped rows with the reason, and every ok row's opset is the one in the file that ran."""
    lowest = supported_opsets("dynamo", "sdpa")[0]
    spec = MatrixSpec(models=["tiny"], attention=["sdpa", "onnx-attention"], opsets=[lowest - 1, lowest],
                      runtimes=["ort-cpu"], batches=[2], seq_lens=[5], timing=FAST)
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [(r["attention"], r["opset"]) for r in skipped] == [("sdpa", lowest - 1)]
    assert f"cannot produce opset {lowest - 1}" in skipped[0]["reason"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["attention"], r["opset"]) for r in ok} == {("sdpa", lowest), ("onnx-attention", 23)}
    for attention, opset in {(r["attention"], r["opset"]) for r in ok}:
        variant_config = get_preset("tiny", attention="sdpa")
        artifact = to_onnx(variant_config, opset=opset, cache_dir=cache_dir, variant=attention, model_name="tiny")
        assert artifact.cached and _file_opset(artifact.path) == opset


@pytest.mark.parametrize("opset", ["15", "99"])
def test_cli_export_of_an_unsupported_opset_is_one_line_and_exit_2(opset, tmp_path):
    proc = run_cli("export", "--preset", "tiny", "--opset", opset, "--cache-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot produce opset {opset}" in lines[0] and "supported opsets: " in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "artifacts").exists()
