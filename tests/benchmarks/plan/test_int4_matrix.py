"""int4-weight as a precision of the matrix: GPT-2 and Llama presets are quantized to MatMulNBits, their ort-cpu
prefill and generate rows are judged by the quantized criteria (a planted scale fault fails), their work is
counted from the 4-bit graph, and a runtime without MatMulNBits kernels gets a skipped row naming the op."""

from __future__ import annotations

import pytest
from onnx import numpy_helper

from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.benchmarks.verify.quantized import INT4_WEIGHT_THRESHOLDS
from onnxbench.export import quantize_int4

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)
INT4 = "int4-weight"
CEILINGS = {"cpu": {"gemm_gflops": 50.0, "mem_bw_gbs": 10.0}}


def _spec(model: str) -> MatrixSpec:
    return MatrixSpec(models=[model], precisions=["fp32", INT4], runtimes=["torch", "ort-cpu"], batches=[1],
                      seq_lens=[16], scenarios=["prefill", "generate"], new_tokens=[6], timing=FAST)


@pytest.fixture(scope="module", params=["tiny", "llama-tiny"])
def int4_run(request, tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("int4") / "run"
    return request.param, run_matrix(_spec(request.param), out, cache_dir=cache_dir, isolate=False,
                                     ceilings=CEILINGS).rows


def test_ort_cpu_prefill_and_generate_rows_are_judged_by_the_int4_criteria(int4_run):
    _, rows = int4_run
    ort = {r["scenario"]: r for r in rows if r["precision"] == INT4 and r["runtime"] == "ort-cpu"}
    assert set(ort) == {"prefill", "generate"}
    for scenario, r in ort.items():
        assert r["status"] == "ok" and r["verdict"] == "pass" and r["agree"], (scenario, r["reason"])
        assert r["reference_config"] == "torch float64"
        assert INT4_WEIGHT_THRESHOLDS.min_cosine <= r["cosine"] < 1.0 and r["top1_agree"] >= 0.7
        assert 0 < r["kl_mean"] <= r["kl_max"] <= INT4_WEIGHT_THRESHOLDS.max_kl_max
        assert r["atol"] is None and r["floor_ratio"] is None  # the float bands do not apply
        assert r["max_abs_err"] > 1e-3  # beyond the fp32 band: the float criteria would have failed it
    gen = ort["generate"]
    assert gen["ttft_ms"] > 0 and gen["tpot_ms_p50"] > 0 and gen["decoder_layout"] == "onnxbench"


def test_int4_work_is_counted_from_the_4bit_graph(int4_run):
    _, rows = int4_run
    ok = {(r["precision"], r["scenario"]): r for r in rows if r["runtime"] == "ort-cpu"}
    for scenario in ("prefill", "generate"):
        fp32, int4 = ok[("fp32", scenario)], ok[(INT4, scenario)]
        assert int4["flops"] == pytest.approx(fp32["flops"], rel=1e-6), scenario  # the same products, 4-bit B
        # packed 4-bit codes + a float scale per 32 weights: far fewer bytes than fp32 (the embedding table for
        # the lookup stays fp32, so not a full 8x)
        assert int4["bytes_moved"] < 0.6 * fp32["bytes_moved"], scenario
        assert int4["frac_peak_flops"] is None and int4["frac_peak_bw"] is not None


def test_runtimes_without_matmulnbits_get_a_skipped_row_naming_the_op(int4_run):
    _, rows = int4_run
    skipped = [r for r in rows if r["precision"] == INT4 and r["runtime"] == "torch"]
    assert len(skipped) == 2
    for r in skipped:
        assert r["status"] == "skipped" and "torch does not run int4-weight" in r["reason"]
        assert "MatMulNBits" in r["reason"] and "runtimes that run it: ort-cpu" in r["reason"]


def test_a_graph_with_broken_scales_fails(tmp_path, monkeypatch):
    """The unembedding's block scales x100 (logits 100x too large, same direction: cosine alone cannot see it);
    a fresh cache, so that the clean artifact is not served."""
    quantize = quantize_int4._quantize

    def broken(model, options):
        model = quantize(model, options)
        last = [n for n in model.graph.node if n.op_type == "MatMulNBits"][-1]
        scales = next(i for i in model.graph.initializer if i.name == last.input[2])
        scales.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scales) * 100, scales.name))
        return model

    monkeypatch.setattr(quantize_int4, "_quantize", broken)
    rows = run_matrix(_spec("tiny"), tmp_path / "run", cache_dir=tmp_path / "cache", isolate=False,
                      ceilings=CEILINGS).rows
    ort = [r for r in rows if r["precision"] == INT4 and r["runtime"] == "ort-cpu"]
    assert {r["scenario"] for r in ort} == {"prefill", "generate"}
    for r in ort:
        assert r["status"] == "ok" and r["verdict"] == "FAIL" and r["agree"] is False, r
        assert r["kl_mean"] > INT4_WEIGHT_THRESHOLDS.max_kl_mean
    clean = [r for r in rows if r["precision"] == "fp32" and r["runtime"] == "ort-cpu"]
    assert all(r["verdict"] == "pass" for r in clean)  # only the int4 graph carries the fault


def test_the_in_place_cache_variant_quantized_to_int4_generates_and_is_counted(tmp_path, cache_dir):
    """The in-place variant's cache axis is the buffer's, not a concatenating graph's past axis: its int4 decode
    step is counted from the file's own layout, and a graph the counter could not bind would cost only the work
    columns (with a note), never the run."""
    spec = MatrixSpec(models=["llama-tiny"], precisions=[INT4], runtimes=["ort-cpu"], attention=["ort-gqa-inplace"],
                      batches=[1], seq_lens=[8], scenarios=["generate"], new_tokens=[4], timing=FAST)
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=CEILINGS).rows
    assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
    assert row["flops"] > 0 and row["bytes_moved"] > 0
