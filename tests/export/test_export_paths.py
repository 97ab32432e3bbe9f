"""The export path as an axis (docs/export.md, "Export paths"): its default keeps the cell ids of runs recorded
before it; a bad value is one error listing the paths; a path whose tool is absent makes skipped rows naming the
package; and the real tools on tiny local checkpoints (no download): the ORT model builder here, Hugging Face
Optimum where ``ONNXBENCH_OPTIMUM_PYTHON`` names a python that has it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.export import builder, optimum
from onnxbench.export.paths import EXPORT_PATHS
from tests.decoder_files import optimum_layout_file, perturbed, save_checkpoint

DATA = Path(__file__).parent.parent / "data"
FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=5.0)


def _rows(summary, **match):
    return [r for r in summary.rows if all(r[k] == v for k, v in match.items())]


def test_the_default_path_keeps_the_cell_ids_of_a_run_recorded_before_the_axis():
    header = json.loads((DATA / "run_small" / "header.json").read_text())
    recorded = {json.loads(line)["cell_id"] for line in (DATA / "run_small" / "results.jsonl").read_text().splitlines()}
    spec = MatrixSpec.from_dict(header["matrix"])
    assert spec.export_paths == ["onnxbench"]
    assert {c.cell_id for c in spec.build().cells} == recorded
    spec.export_paths = ["onnxbench", "builder"]
    cells = spec.build().cells
    assert {c.cell_id for c in cells if c.export_path == "onnxbench"} == recorded
    others = [c for c in cells if c.export_path == "builder"]
    assert others and not {c.cell_id for c in others} & recorded
    assert {c.attention for c in others} == {"external"} and {c.opset for c in others} == {0}


def test_an_unknown_path_is_one_error_listing_the_paths(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "run", "--models", "tiny", "--runtimes", "ort-cpu",
                           "--export-paths", "onnxbench,optimun", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown export path 'optimun'" in proc.stderr and ", ".join(EXPORT_PATHS) in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_export_paths_on_onnx_files_alone_are_refused(tmp_path):
    path = optimum_layout_file(perturbed("llama-tiny"), tmp_path / "dec.onnx")
    with pytest.raises(ValueError, match=r"export paths \['builder'\] apply to presets and checkpoints"):
        MatrixSpec(models=[], onnx=OnnxFiles([str(path)]), runtimes=["ort-cpu"], export_paths=["builder"]).build()


def test_a_path_whose_tool_is_absent_is_a_skipped_row_naming_the_package(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv(optimum.PYTHON_ENV, raising=False)
    monkeypatch.setattr(builder, "version", lambda: None)
    spec = MatrixSpec(models=["llama-tiny"], runtimes=["ort-cpu", "torch"], batches=[1], seq_lens=[8],
                      export_paths=["optimum", "optimum-opt", "builder"], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False)
    assert len(summary.rows) == 6 and all(r["status"] == "skipped" for r in summary.rows)
    for path in ("optimum", "optimum-opt"):
        (row,) = _rows(summary, export_path=path, runtime="ort-cpu")
        assert "optimum-onnx" in row["reason"] and optimum.PYTHON_ENV in row["reason"]
    (row,) = _rows(summary, export_path="builder", runtime="ort-cpu")
    assert builder.PACKAGE in row["reason"]
    assert all("runs the torch module rebuilt" in r["reason"] for r in _rows(summary, runtime="torch"))
    monkeypatch.setenv(optimum.PYTHON_ENV, str(tmp_path / "no-such-python"))
    reason = EXPORT_PATHS["optimum"].unavailable_reason()
    assert "does not run" in reason and "no-such-python" in reason


def test_what_a_path_cannot_make_is_named():
    gpt2 = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], precisions=["fp32", "fp16"], parts=["model", "attention"],
                      batches=[1], seq_lens=[8], export_paths=["builder", "optimum"]).build()
    reasons = {(c.export_path, c.precision, c.part): gpt2.unrunnable_reason(c) for c in gpt2.cells}
    assert "does not write the gpt2 family" in reasons[("builder", "fp32", "model")]
    assert "makes fp32, not fp16" in reasons[("optimum", "fp16", "model")]
    assert "exports the whole model" in reasons[("optimum", "fp32", "attention")]


@pytest.mark.slow
@pytest.mark.skipif(builder.unavailable_reason() is not None, reason=str(builder.unavailable_reason()))
def test_the_builder_path_runs_the_same_weights_against_the_same_reference(tmp_path, cache_dir):
    """A checkpoint folder (Qwen2: q/k/v biases) through onnxbench's export and the model builder, prefill and
    left-padded generate on ort-cpu, and the builder's folder on ort-genai: every row passes against the float64
    torch model of the checkpoint; the builder's graph is its own (GroupQueryAttention, opset read from the file),
    its folder holds the tokenizer written offline and genai_config.json."""
    checkpoint = save_checkpoint(perturbed("llama-tiny", qkv_bias=True), tmp_path / "qwen2-tiny")
    spec = MatrixSpec(models=[], checkpoints=[str(checkpoint)], runtimes=["ort-cpu", "ort-genai"], batches=[2],
                      seq_lens=[8], scenarios=["prefill", "generate"], new_tokens=[4], paddings=[0.0, 0.25],
                      export_paths=["onnxbench", "builder"], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False)
    ran = _rows(summary, runtime="ort-cpu") + _rows(summary, runtime="ort-genai", export_path="builder",
                                                    scenario="generate")
    assert len(ran) == 8
    for row in ran:
        assert row["status"] == "ok" and row["verdict"] == "pass", (row["export_path"], row["runtime"], row["reason"])
        assert row["reference_config"] == "torch float64" and row["floor_ratio"] <= row["floor_factor"]
    (built,) = _rows(summary, scenario="prefill", export_path="builder", runtime="ort-cpu")
    (ours,) = _rows(summary, scenario="prefill", export_path="onnxbench", runtime="ort-cpu")
    assert built["decoder_layout"] == "builder" and built["attention"] == "external"
    assert built["n_params"] == ours["n_params"] and built["onnx_sha256"] != ours["onnx_sha256"]
    assert all(r["decoder_layout"] == "builder" for r in _rows(summary, scenario="generate", export_path="builder"))
    folders = list((cache_dir / "paths" / "builder").glob("qwen2-tiny-*"))
    assert len(folders) == 1 and (folders[0] / "genai_config.json").is_file()
    model = onnx.load(str(folders[0] / "model.onnx"), load_external_data=False)
    assert built["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert any(n.op_type == "GroupQueryAttention" for n in model.graph.node)
    assert not (checkpoint / "tokenizer.json").exists()  # the user's folder is linked, never written into


@pytest.mark.slow
@pytest.mark.skipif(builder.unavailable_reason() is not None, reason=str(builder.unavailable_reason()))
def test_the_builders_int4_model_is_the_int4_weight_precision(tmp_path, cache_dir):
    """``int4-weight`` on the builder path is the builder's own ``-p int4`` model (MatMulNBits), judged by the
    quantized criteria against the float64 reference, prefill and generate, on ort-cpu and ort-genai."""
    spec = MatrixSpec(models=["llama-tiny"], runtimes=["ort-cpu", "ort-genai"], batches=[1], seq_lens=[8],
                      scenarios=["prefill", "generate"], new_tokens=[4], precisions=["int4-weight"],
                      export_paths=["builder"], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False)
    ran = [r for r in summary.rows if r["status"] == "ok"]
    assert {(r["runtime"], r["scenario"]) for r in ran} == {("ort-cpu", "prefill"), ("ort-cpu", "generate"),
                                                            ("ort-genai", "generate")}
    for row in ran:
        assert row["verdict"] == "pass" and row["precision"] == "int4-weight", (row["runtime"], row["reason"])
        assert row["flops"] is not None or "work not counted" in row["reason"]  # never silently empty
    (folder,) = (cache_dir / "paths" / "builder").glob("llama-tiny-*")
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert any(n.op_type == "MatMulNBits" for n in model.graph.node)


@pytest.mark.slow
@pytest.mark.skipif(optimum.unavailable_reason() is not None, reason=str(optimum.unavailable_reason()))
def test_the_optimum_paths_generate_and_agree_with_the_float64_reference(tmp_path, cache_dir):
    """A preset through Hugging Face Optimum's exporter (in its own python) with and without ONNX Runtime's
    transformer optimizer: prefill and left-padded generate rows pass on ort-cpu against the preset's float64
    torch reference, in Optimum's layout, the optimizer's graph a different file."""
    spec = MatrixSpec(models=["llama-tiny"], runtimes=["ort-cpu"], batches=[2], seq_lens=[8],
                      scenarios=["prefill", "generate"], new_tokens=[5], paddings=[0.25],
                      export_paths=["optimum", "optimum-opt"], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False)
    assert len(summary.rows) == 4
    for row in summary.rows:
        assert row["status"] == "ok" and row["verdict"] == "pass", (row["export_path"], row["reason"])
        assert row["decoder_layout"] == "optimum" and row["reference_config"] == "torch float64"
        assert row["opset"] == 18 and row["flops"] > 0
    shas = {r["export_path"]: r["onnx_sha256"] for r in _rows(summary, scenario="prefill")}
    assert shas["optimum"] != shas["optimum-opt"]
    assert all(r["first_divergent_step"] is None for r in _rows(summary, scenario="generate"))


def test_the_optimum_python_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv(optimum.PYTHON_ENV, sys.executable)
    found = optimum.versions()
    assert found is not None and found["torch"]  # this python answers the probe (it has torch, not optimum-onnx)
    assert (optimum.unavailable_reason() is None) == bool(found.get("optimum-onnx"))
    assert os.environ[optimum.PYTHON_ENV] == optimum.python()
