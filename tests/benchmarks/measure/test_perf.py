"""Machine ceilings, the work model, tuned configurations and the torch-compile peer."""

import json
import subprocess
import sys

import numpy as np
import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, default_matrix, run_matrix
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.measure.ceilings import best_of, measure_ceilings, peak_for, reprobe
from onnxbench.benchmarks.measure.tune import choose, search
from onnxbench.benchmarks.measure.workmodel import above_peak_reason, achieved, work
from onnxbench.models import get_preset
from onnxbench.models.flops import attention_flops, forward_flops
from onnxbench.rundir import read_rows
from onnxbench.runtimes import RuntimeOptions

FAST = TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.0, max_time_s=1.0)


def test_ceilings_are_measured_positive_and_keep_the_higher_backend():
    c = measure_ceilings(gemm_n=256, copy_bytes=16 * 2**20, cuda=False, timing=FAST)
    cpu = c["cpu"]
    assert set(cpu["gemm_gflops_by_backend"]) == {"torch", "ort"}, cpu["errors"]
    assert all(v > 0 for v in cpu["gemm_gflops_by_backend"].values())
    assert cpu["gemm_gflops"] == max(cpu["gemm_gflops_by_backend"].values())
    assert cpu["gemm_gflops_by_backend"][cpu["gemm_source"]] == cpu["gemm_gflops"]
    assert cpu["mem_bw_gbs"] > 0 and cpu["mem_bw_gbs"] >= cpu["mem_bw_gbs_median"]
    assert peak_for(c, "cpu", "fp16") == (cpu["gemm_gflops"], cpu["mem_bw_gbs"])
    assert peak_for(None, "cpu", "fp32") == (None, None)


def test_best_of_keeps_the_higher_of_every_ceiling_and_lists_every_probe():
    start = {"cpu": {"gemm_gflops": 40.0, "gemm_gflops_by_backend": {"torch": 40.0, "ort": 30.0},
                     "gemm_source": "torch", "mem_bw_gbs": 9.0, "gemm_n": 256},
             "probes": [{"cpu": {"gemm_gflops": 40.0, "mem_bw_gbs": 9.0}}], "measure_s": 1.0}
    end = {"cpu": {"gemm_gflops": 55.0, "gemm_gflops_by_backend": {"torch": 35.0, "ort": 55.0},
                   "gemm_source": "ort", "mem_bw_gbs": 7.0, "gemm_n": 256},
           "probes": [{"cpu": {"gemm_gflops": 55.0, "mem_bw_gbs": 7.0}}], "measure_s": 2.0}
    best = best_of(start, end)
    cpu = best["cpu"]
    assert cpu["gemm_gflops_by_backend"] == {"torch": 40.0, "ort": 55.0}
    assert (cpu["gemm_gflops"], cpu["gemm_source"], cpu["mem_bw_gbs"]) == (55.0, "ort", 9.0)
    assert len(best["probes"]) == 2 and best["measure_s"] == 3.0
    assert best_of(None, start)["cpu"]["gemm_gflops"] == 40.0 and best_of(None) is None
    assert reprobe({"cpu": {"gemm_gflops": 1.0}}) == {"cpu": {"gemm_gflops": 1.0}}, "given ceilings stay as given"


def test_a_run_reprobes_its_ceilings_at_the_end_and_reads_every_row_against_the_higher(tmp_path, cache_dir):
    """Ceilings probed under contention (here: a real probe scaled down 1000x) read low; the probe at the end of
    the run restores an upper bound and every row's fraction is recomputed against it."""
    measured = measure_ceilings(gemm_n=256, copy_bytes=16 * 2**20, cuda=False, timing=FAST)
    low = json.loads(json.dumps(measured))
    for key in ("gemm_gflops", "mem_bw_gbs"):
        low["cpu"][key] /= 1000
    low["cpu"]["gemm_gflops_by_backend"] = {k: v / 1000 for k, v in low["cpu"]["gemm_gflops_by_backend"].items()}
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8, 16], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, ceilings=low)
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    cpu = header["ceilings"]["cpu"]
    assert len(header["ceilings"]["probes"]) == 2
    assert cpu["gemm_gflops"] > 100 * low["cpu"]["gemm_gflops"] and cpu["mem_bw_gbs"] > 100 * low["cpu"]["mem_bw_gbs"]
    for r in read_rows(tmp_path / "run"):
        assert r["frac_peak_flops"] == pytest.approx(r["achieved_gflops"] / cpu["gemm_gflops"])
        # a tiny model's bytes stay in the caches, beyond the DRAM copy bandwidth: flagged, but not its FLOP/s
        assert r["frac_peak_flops"] < 1 and "frac_peak_flops" not in r["reason"]
    assert [r["frac_peak_flops"] for r in summary.rows] == [r["frac_peak_flops"] for r in read_rows(tmp_path / "run")]


def test_a_row_above_a_given_ceiling_is_flagged(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST)
    run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, ceilings={"cpu": {"gemm_gflops": 1e-6, "mem_bw_gbs": 1e-6}})
    (row,) = read_rows(tmp_path / "run")
    assert row["frac_peak_flops"] > 1 and row["status"] == "ok"
    assert "warning: above the measured peak (frac_peak_flops " in row["reason"]
    assert "frac_peak_bw" in row["reason"] and "measurement problem" in row["reason"]
    assert row["reason"] == above_peak_reason(row), "the warning is set once"
    cleared = above_peak_reason({**row, "frac_peak_flops": 0.5, "frac_peak_bw": 0.5})
    assert "above the measured peak" not in cleared and "measurement problem" not in cleared, "and cleared"


def test_work_model_counts_flops_from_the_flops_module_and_a_byte_lower_bound():
    cfg = get_preset("tiny")
    w = work(cfg, "model", 2, 16)
    assert w.flops == forward_flops(cfg, 2, 16).total
    assert w.bytes_moved == cfg.n_params * 4 + 2 * 16 * 8 + 2 * 16 * cfg.vocab_size * 4
    half = work(cfg, "model", 2, 16, "fp16")
    assert half.bytes_moved == cfg.n_params * 2 + 2 * 16 * 8 + 2 * 16 * cfg.vocab_size * 2
    a = work(cfg, "attention", 2, 16)
    d = cfg.d_model
    assert a.flops == attention_flops(cfg, 2, 16)
    assert a.bytes_moved == 4 * (d * d + d) * 4 + 2 * 2 * 16 * d * 4
    cols = achieved(w, 2.0, {"cpu": {"gemm_gflops": 10.0, "mem_bw_gbs": 5.0}}, "cpu", "fp32")
    assert cols["achieved_gflops"] == pytest.approx(w.flops / 2e-3 / 1e9)
    assert cols["frac_peak_flops"] == pytest.approx(cols["achieved_gflops"] / 10.0)
    assert cols["frac_peak_bw"] == pytest.approx(w.bytes_moved / 2e-3 / 1e9 / 5.0)
    with pytest.raises(ValueError, match="part must be"):
        work(cfg, "block", 1, 1)


def test_run_with_ceilings_and_tune_fills_work_columns_and_records_the_best_config(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu"], batches=[1], seq_lens=[8, 16], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, ceilings=True, tune=["ort-cpu"])
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    cpu = header["ceilings"]["cpu"]
    assert cpu["gemm_gflops"] > 0 and cpu["mem_bw_gbs"] > 0
    rows = summary.rows
    assert all(r["status"] == "ok" and r["verdict"] == ("floor" if r["runtime"] == "torch" else "pass")
               for r in rows), [r["reason"] for r in rows]
    assert sorted((r["runtime"], r["config_id"]) for r in rows) == sorted(
        [("torch", "default")] * 2 + [("ort-cpu", "default")] * 2 + [("ort-cpu", "tuned")] * 2)
    assert len({r["cell_id"] for r in rows}) == len(rows)  # config_id is part of the cell key
    for r in rows:
        assert r["achieved_gflops"] == pytest.approx(r["flops"] / (r["latency_ms_p50"] / 1e3) / 1e9)
        assert r["achieved_gbs"] == pytest.approx(r["bytes_moved"] / (r["latency_ms_p50"] / 1e3) / 1e9)
        assert r["frac_peak_flops"] == pytest.approx(r["achieved_gflops"] / cpu["gemm_gflops"])
        assert r["frac_peak_bw"] == pytest.approx(r["achieved_gbs"] / cpu["mem_bw_gbs"])
    assert [t["runtime"] for t in header["tuning"]] == ["ort-cpu"]  # tune=[...] names the runtimes to tune
    ort_search = next(t for t in header["tuning"] if t["runtime"] == "ort-cpu")
    assert {"default", "fused", "attn-fused"} <= set(ort_search["p50_ms"])
    assert set(ort_search["best"]) == set(ort_search["why"]) == {"1x8", "1x16"}  # a configuration per shape
    defaults = {(r["batch"], r["seq_len"]): r for r in rows
                if r["runtime"] == "ort-cpu" and r["config_id"] == "default"}
    for r in rows:
        if r["config_id"] != "tuned":
            continue
        shape = f"{r['batch']}x{r['seq_len']}"
        chosen, used = ort_search["best"][shape], json.loads(r["options"])["tune_config"]
        default = defaults[(r["batch"], r["seq_len"])]
        # never slower than the default beyond the cell's CI95
        assert r["ci95_p50_lo_ms"] <= default["ci95_p50_hi_ms"]
        if chosen != "default":  # won at the search by its CI
            assert ort_search["ci95_ms"][chosen][shape][1] < ort_search["ci95_ms"]["default"][shape][0]
        if used == "default":  # the default's own measurement, and why
            assert r["latency_ms_p50"] == default["latency_ms_p50"]
            assert "tuned = the default configuration's measurement" in r["reason"]
            assert chosen == "default" or f"{chosen} measured slower than the default" in r["reason"]
        else:
            assert used == chosen


def test_tune_search_records_failing_candidates_and_picks_among_the_rest(tiny_artifact):
    candidates = {"default": RuntimeOptions(), "bad": RuntimeOptions(extra={"execution_mode": "bogus"}),
                  "1t": RuntimeOptions(intra_op_threads=1)}
    result = search("ort-cpu", tiny_artifact, [(1, 8), (2, 8)], timing=FAST, candidates=candidates)
    assert "'execution_mode' must be one of" in result.errors["bad"]
    assert set(result.p50_ms) == {"default", "1t"} and set(result.best) == {"1x8", "2x8"}
    assert all(name in {"default", "1t"} for name in result.best.values())
    assert result.options("1t") is candidates["1t"]
    assert all(set(ci) == {"1x8", "2x8"} for ci in result.ci95_ms.values())


def test_a_shape_keeps_the_default_unless_a_candidate_is_distinguishably_faster():
    ci = {"default": (9.0, 11.0), "a": (7.0, 8.5), "b": (8.0, 9.5)}
    assert choose({"default": 10.0, "a": 8.0}, ci)[0] == "a"  # CI wholly below the default's
    name, why = choose({"default": 10.0, "b": 9.0}, ci)  # faster p50, overlapping CI
    assert name == "default" and "not distinguishably faster" in why and "b (0.90x)" in why
    assert choose({"default": 7.0, "a": 8.0}, ci)[0] == "default"  # the default is the fastest
    assert choose({"a": 8.0, "b": 9.0}, ci)[0] == "a"  # no default to compare with: the fastest
    with pytest.raises(ValueError, match="no candidate"):
        choose({}, ci)


def _measurement(p50, lo, hi, config):
    from onnxbench.benchmarks.measure.timing import Timing
    from onnxbench.benchmarks.rows import Measurement, Outcome, SessionInfo

    return Measurement(Outcome("ok"), SessionInfo(options=json.dumps({"tune_config": config})),
                       timing=Timing(1, 10, p50, p50, p50, p50, lo, 0.1, lo, hi, 0.01))


def test_a_tuned_row_distinguishably_slower_than_the_default_reports_the_default():
    from onnxbench.benchmarks.run.runner import no_slower_than_default

    default = _measurement(10.0, 9.5, 10.5, "default")
    slower = _measurement(12.0, 11.0, 13.0, "fused")
    kept = no_slower_than_default(slower, default)
    assert kept.timing == default.timing and json.loads(kept.session.options)["tune_config"] == "default"
    assert "fused measured slower than the default" in kept.outcome.reason
    within = _measurement(10.6, 10.2, 11.0, "fused")  # slower p50, overlapping CI: kept as measured
    assert no_slower_than_default(within, default) is within
    faster = _measurement(8.0, 7.5, 8.5, "fused")
    assert no_slower_than_default(faster, default) is faster


def test_attention_fusion_fuses_sdpa_attention_and_agrees(cache_dir):
    from onnxbench.errors import OptionError
    from onnxbench.export import to_onnx
    from onnxbench.runtimes.ort_transformers import attention_fused_path, fused_op_counts

    cfg = get_preset("tiny")
    sdpa = to_onnx(cfg, seed=0, cache_dir=cache_dir, model_name="tiny", variant="sdpa", opset=18)
    counts = fused_op_counts(attention_fused_path(sdpa))
    assert counts.get("MultiHeadAttention") == cfg.n_layers, counts
    feeds = make_feeds(sdpa.inputs, 2, 8, int_high=cfg.vocab_size)
    ort_cpu = runtimes.get("ort-cpu")
    with ort_cpu.open(sdpa) as plain, ort_cpu.open(sdpa, RuntimeOptions(extra={"attention_fusion": True})) as fused:
        assert fused.options["attention_fusion"] is True
        np.testing.assert_allclose(fused.run(feeds)["logits"], plain.run(feeds)["logits"], atol=1e-4, rtol=1e-4)
    with pytest.raises(OptionError, match="set one of them"):
        ort_cpu.open(sdpa, RuntimeOptions(extra={"attention_fusion": True, "transformer_optimizer": True}))


def test_transformer_optimizer_fuses_and_agrees(tiny_artifact):
    from onnxbench.runtimes.ort_transformers import fused_op_counts, optimized_path

    counts = fused_op_counts(optimized_path(tiny_artifact))
    assert counts.get("SkipLayerNormalization", 0) >= 2, counts
    feeds = make_feeds(tiny_artifact.inputs, 2, 8, int_high=512)
    ort_cpu = runtimes.get("ort-cpu")
    with ort_cpu.open(tiny_artifact) as plain, \
            ort_cpu.open(tiny_artifact, RuntimeOptions(extra={"transformer_optimizer": True})) as fused:
        assert fused.options["transformer_optimizer"] is True
        np.testing.assert_allclose(fused.run(feeds)["logits"], plain.run(feeds)["logits"], atol=1e-4, rtol=1e-4)


def test_transformer_optimizer_import_survives_a_local_onnx_utils(tmp_path):
    (tmp_path / "onnx_utils.py").write_text("raise ImportError('the wrong onnx_utils was imported')\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from onnxbench.runtimes.ort_transformers import import_optimizer\n"
            "print(import_optimizer().optimize_model.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "optimize_model" in proc.stdout, proc.stderr


def test_torch_compile_is_registered_but_kept_out_of_the_default_matrix():
    assert "torch-compile" in runtimes.registry()
    assert "torch-compile" not in default_matrix().runtimes and "ort-cpu" in default_matrix().runtimes


def test_roofline_plot_is_drawn_from_the_schema_and_header(tmp_path, cache_dir):
    from onnxbench.reports import load, plots

    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST)
    ceilings = {"cpu": {"gemm_gflops": 10.0, "mem_bw_gbs": 2.0}}
    run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, ceilings=ceilings)
    df = load(tmp_path / "run")
    assert (df["achieved_gflops"] / df["frac_peak_flops"]).tolist() == pytest.approx([10.0])  # roof from schema
    png = plots.roofline(df)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.roofline(df.assign(flops=None)) is None
    from onnxbench.reports import write_report

    paths = write_report(tmp_path / "run")
    assert "plot_roofline.png" in paths["markdown"].read_text()


@pytest.mark.slow
def test_torch_compile_agrees_with_eager_and_keeps_compile_out_of_timing(tiny_artifact):
    feeds = make_feeds(tiny_artifact.inputs, 1, 8, int_high=512)
    with runtimes.get("torch").open(tiny_artifact) as eager, runtimes.get("torch-compile").open(tiny_artifact) as tc:
        reference = eager.run(feeds)["logits"]
        out = tc.run(feeds)["logits"]
        np.testing.assert_allclose(out, reference, atol=1e-4, rtol=1e-4)
        assert tc.compile_s[(1, 8)] > 0 and tc.build_s >= tc.compile_s[(1, 8)]
        fn = tc.prepare(feeds)  # same shape: no second compile
        assert list(tc.compile_s) == [(1, 8)]
        np.testing.assert_allclose(fn().numpy(), reference, atol=1e-4, rtol=1e-4)


def test_torch_grid_varies_grad_mode_and_threads_and_ort_grid_has_the_fusions():
    from onnxbench.benchmarks.measure.tune import grid

    torch_grid = grid("torch")
    assert torch_grid["no_grad"].extra == {"inference_mode": False} and "default" in torch_grid
    assert any(o.extra.get("transformer_optimizer") for o in grid("ort-cpu").values())
    assert any(o.extra.get("attention_fusion") for o in grid("ort-cpu").values())
    assert any(o.extra.get("attention_fusion") for o in grid("ort-cuda").values())
    assert grid("torch-compile") == {}
