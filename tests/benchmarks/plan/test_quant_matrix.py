
"""int8-dynamic as a precision of the matrix: presets and user ONNX files are quantized (cached like exports),
run on the runtimes that declare it (skipped with the reason elsewhere), judged by the quantized criteria against
the float reference, and shown next to their float rows in the report."""

from __future__ import annotations

import pytest

from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.benchmarks.verify.quantized import INT8_DYNAMIC_THRESHOLDS as INT8_THRESHOLDS
from onnxbench.errors import MatrixError
from onnxbench.reports import write_report
from onnxbench.runtimes import registry

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)
INT8 = "int8-dynamic"


@pytest.fixture(scope="module")
def tiny_int8_run(tmp_path_factory, cache_dir):
    spec = MatrixSpec(models=["tiny"], precisions=["fp32", INT8], runtimes=["torch", "ort-cpu"], batches=[1, 2],
                      seq_lens=[16], timing=FAST)
    out = tmp_path_factory.mktemp("int8") / "run"
    summary = run_matrix(spec, out, cache_dir=cache_dir, isolate=False,
                         ceilings={"cpu": {"gemm_gflops": 50.0, "mem_bw_gbs": 10.0}})
    return out, summary.rows


def test_int8_rows_of_a_preset_run_on_ort_cpu_and_pass_the_quantized_criteria(tiny_int8_run):
    _, rows = tiny_int8_run
    int8 = [r for r in rows if r["precision"] == INT8]
    assert len(int8) == 4
    ort = [r for r in int8 if r["runtime"] == "ort-cpu"]
    assert all(r["status"] == "ok" and r["verdict"] == "pass" and r["agree"] for r in ort), ort
    for r in ort:
        assert r["reference_config"] == "torch float64"
        assert 0.99 <= r["cosine"] < 1.0 and r["top1_agree"] >= 0.7  # quantized: close, but not float-close
        assert 0 < r["kl_mean"] <= r["kl_max"] <= 0.1
        assert r["atol"] is None and r["floor_ratio"] is None  # the float bands do not apply
        assert r["max_abs_err"] > 1e-3  # beyond the fp32 band: the float criteria would have failed it
        # work counted from the quantized graph; no fp32 GEMM peak to read int8 kernels against
        assert r["flops"] > 0 and r["achieved_gflops"] > 0 and r["frac_peak_flops"] is None
        assert r["frac_peak_bw"] is not None
    fp32 = {(r["batch"], r["runtime"]): r for r in rows if r["precision"] == "fp32"}
    for r in ort:
        assert r["flops"] == pytest.approx(fp32[(r["batch"], "ort-cpu")]["flops"], rel=1e-9)
        assert r["onnx_sha256"] != fp32[(r["batch"], "ort-cpu")]["onnx_sha256"]
        assert fp32[(r["batch"], "ort-cpu")]["kl_mean"] is None  # float rows keep the float criteria


def test_runtimes_without_int8_kernels_get_a_skipped_row_naming_the_ones_with(tiny_int8_run):
    _, rows = tiny_int8_run
    torch_rows = [r for r in rows if r["precision"] == INT8 and r["runtime"] == "torch"]
    able = [name for name, cls in registry().items() if INT8 in cls.quantized_precisions]
    assert able == ["ort-cpu"]
    assert torch_rows and all(r["status"] == "skipped" and "torch does not run int8-dynamic" in r["reason"]
                              and "ort-cpu" in r["reason"] for r in torch_rows)


def test_report_shows_int8_accuracy_next_to_its_speed_up(tiny_int8_run):
    out, _ = tiny_int8_run
    write_report(out)
    report = (out / "report.md").read_text()
    section = report.split("## Quantized vs float")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ort-cpu")]
    assert len(lines) == 2, section  # one per shape, torch's skipped int8 cells have no line
    header = next(line for line in section.splitlines() if line.startswith("| runtime"))
    for column in ("float p50", "quantized p50", "speed-up", "KL mean", "KL max", "top-1", "cosine", "verdict"):
        assert column in header
    assert all("pass" in line for line in lines)


def test_int8_of_a_user_onnx_file_is_compared_with_the_float_file(tiny_artifact, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], precisions=[INT8], runtimes=["ort-cpu"], batches=[1], seq_lens=[16], timing=FAST,
                      onnx=OnnxFiles(files=[str(tiny_artifact.path)]))
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    by_precision = {r["precision"]: r for r in rows}
    assert set(by_precision) == {"fp32", INT8}  # the file as given, and quantized
    q = by_precision[INT8]
    assert q["status"] == "ok" and q["verdict"] == "pass", q
    assert q["reference_config"] == "ort-cpu graph_optimization_level=disable"
    assert q["kl_mean"] is not None and q["flops"] == pytest.approx(by_precision["fp32"]["flops"], rel=1e-9)


def test_int8_of_a_file_that_is_not_fp32_is_skipped_with_the_reason(tmp_path, cache_dir):
    from onnxbench.export import to_onnx
    from onnxbench.models import get_preset

    fp16 = to_onnx(get_preset("tiny"), precision="fp16", cache_dir=cache_dir, model_name="tiny")
    spec = MatrixSpec(models=[], precisions=[INT8], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(fp16.path)]))
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    (skipped,) = [r for r in rows if r["precision"] == INT8]
    assert skipped["status"] == "skipped" and "made from an fp32 graph" in skipped["reason"] and "fp16" in \
        skipped["reason"]


def test_unknown_precision_lists_int8_dynamic():
    with pytest.raises(MatrixError, match="int8-dynamic"):
        MatrixSpec(models=["tiny"], precisions=["int4"]).validate()


def test_int8_generate_cells_of_a_preset_run_and_are_judged_by_the_quantized_criteria(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], precisions=[INT8], runtimes=["ort-cpu"], scenarios=["generate"],
                      new_tokens=[4], batches=[1], seq_lens=[8], timing=FAST)
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
    assert row["kl_mean"] is not None and row["atol"] is None and row["tpot_ms_p50"] > 0


def test_judge_quantized_fails_a_distorted_output_and_ignores_integer_ones():
    import numpy as np

    from onnxbench.benchmarks.verify.reference import Expected, Reference
    from onnxbench.benchmarks.verify.verdict import judge_quantized

    class Ref(Reference):
        label = "float reference"
        vocab_size = 50  # the logits' last axis: vocabulary logits, judged by top-1 and KL too

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 8, 50)).astype(np.float32)
    expected = Expected({"logits": logits, "ids": np.arange(4)})
    close = logits + 1e-3 * rng.standard_normal(logits.shape).astype(np.float32)
    good = judge_quantized({"logits": close, "ids": np.arange(4) + 1}, expected, INT8, Ref())
    assert good.verdict == "pass" and good.agreement.kl_mean < 1e-4
    bad = judge_quantized({"logits": close, "ids": np.arange(4)}, expected, INT8, Ref(),
                          fast_outputs={"logits": 3 * logits})  # the timed path's outputs are judged too
    assert bad.verdict == "FAIL" and bad.agreement.kl_mean > INT8_THRESHOLDS.max_kl_mean
    columns, check = bad.parts()
    assert columns.kl_max == bad.agreement.kl_max and columns.atol is None and check.verdict == "FAIL"
