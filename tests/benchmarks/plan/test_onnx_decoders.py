"""``onnxbench run --onnx FILE --scenario generate`` on decoders in the layouts users bring (docs/usage.md, "Your
own ONNX files"; docs/generation.md, "ONNX decoders you bring"): rows per layout against the file on ONNX Runtime
without graph optimizations and against the float64 torch model of the checkpoint, the layout in the row, the
errors before any work; and the same with files made by the real tools (Hugging Face Optimum's exporter, the ORT
model builder) where ``ONNXBENCH_OPTIMUM_PYTHON`` / ``ONNXBENCH_GENAI_PYTHON`` name interpreters that have them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.plan.sources.onnx_file import OnnxFileSource
from onnxbench.benchmarks.verify.reference import OnnxFileReference
from onnxbench.export import DECODER_WITH_PAST, read_artifact
from onnxbench.export.decoder_layout import EXPECTED_IO, detect_layout
from onnxbench.models import greedy_generate, load_checkpoint
from tests.decoder_files import (
    GENAI_ENV,
    OPTIMUM_ENV,
    builder_export,
    builder_layout_file,
    genai_python,
    optimum_export,
    optimum_layout_file,
    optimum_python,
    perturbed,
    save_checkpoint,
)

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=5.0)
CLI = [sys.executable, "-m", "onnxbench.cli"]


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def llama_files(tmp_path_factory):
    """A perturbed llama-tiny as a checkpoint folder and as two Optimum-layout files (two model names)."""
    directory = tmp_path_factory.mktemp("decoders")
    model = perturbed("llama-tiny")
    checkpoint = save_checkpoint(model, directory / "ckpt")
    return model, checkpoint, optimum_layout_file(model, directory / "vs-ort.onnx"), \
        optimum_layout_file(model, directory / "vs-torch.onnx")


def _rows(summary, **match):
    return [r for r in summary.rows if all(r[k] == v for k, v in match.items())]


def test_an_optimum_layout_decoder_generates_against_both_references(llama_files, tmp_path, cache_dir):
    _, checkpoint, vs_ort, vs_torch = llama_files
    files = OnnxFiles([str(vs_ort), str(vs_torch)], reference_models={"vs-torch": str(checkpoint)})
    spec = MatrixSpec(models=[], onnx=files, runtimes=["ort-cpu", "torch"], batches=[2], seq_lens=[8],
                      scenarios=["prefill", "generate"], new_tokens=[5], paddings=[0.0, 0.25], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False,
                         ceilings={"cpu": {"gemm_gflops": 50.0, "mem_bw_gbs": 10.0}})
    generate = _rows(summary, scenario="generate", runtime="ort-cpu")
    assert len(generate) == 4
    for row in generate:
        assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
        assert row["decoder_layout"] == "optimum" and row["part"] == DECODER_WITH_PAST
        assert row["first_divergent_step"] is None and row["tpot_ms_p50"] > 0 and row["ttft_ms"] > 0
        assert row["floor_ratio"] is not None  # a float64 reference either way: torch's, or onnx's evaluator
        assert row["flops"] > 0 and row["bytes_moved"] > 0  # one decode step, counted from the graph
    configs = {r["model"]: r["reference_config"] for r in generate}
    assert configs == {"vs-ort": "ort-cpu graph_optimization_level=disable", "vs-torch": "torch float64"}
    prefill = _rows(summary, scenario="prefill", runtime="ort-cpu")
    assert all(r["status"] == "ok" and r["verdict"] == "pass" and r["decoder_layout"] == "optimum"
               for r in prefill), [r["reason"] for r in prefill]
    torch_rows = _rows(summary, runtime="torch")
    assert torch_rows and all(r["status"] == "skipped" and "not an ONNX file" in r["reason"] for r in torch_rows)


def test_generate_prompts_follow_the_seed_padding_and_int_range(llama_files):
    _, _, vs_ort, _ = llama_files
    source = OnnxFileSource.at(vs_ort, seed=3)
    from onnxbench.benchmarks.cells import Cell

    cell = Cell("vs-ort", "external", "fp32", 18, "ort-cpu", 4, 8, part=DECODER_WITH_PAST, scenario="generate",
                new_tokens=4, padding=0.5)
    ids, mask = source.prompt(cell)
    assert ids.shape == mask.shape == (4, 8) and ids.dtype == np.int64
    assert mask.sum(axis=1).tolist() == [7, 6, 5, 4]  # floor(0.5 * 8 * (b + 1) / 4) padding tokens
    assert ids.max() < 512 and ids.max() > 2  # the vocabulary, not make_feeds' default [0, 2)
    np.testing.assert_array_equal(ids, source.prompt(cell)[0])
    narrow = OnnxFileSource.at(vs_ort, seed=3, int_ranges={"input_ids": [10, 20]})
    kept = narrow.prompt(cell)[0][mask == 1]
    assert kept.min() >= 10 and kept.max() < 20
    assert source.decoder_layout(cell) == "optimum"
    assert source.padding_length(cell) == 8  # the prompt (the mask's axis is past + sequence)
    notes = MatrixSpec(models=[], onnx=OnnxFiles([str(vs_ort)]), runtimes=["ort-cpu"], seq_lens=[8],
                       scenarios=["generate"], new_tokens=[4], paddings=[0.3]).build().plan_notes()
    assert notes == ["padding 0.3 at seq_len 8 feeds 2 of 8 positions in the last row (0.25): padding is whole "
                     "tokens; the rows say so"]
    feeds = source.feeds(source.model.inputs, 2, 6)  # the prefill: an empty cache, positions 0 .. 5
    assert feeds["past_key_values.0.key"].shape == (2, 2, 0, 16) and feeds["position_ids"][1].tolist() == list(
        range(6))


def test_a_file_that_cannot_generate_is_one_error_before_any_work(tmp_path, tiny_artifact, llama_files):
    proc = run_cli("run", "--onnx", str(tiny_artifact.path), "--runtimes", "ort-cpu", "--scenario", "generate",
                   "--seq-lens", "8", "--new-tokens", "4", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the generate scenario needs a decoder with a KV cache" in proc.stderr and EXPECTED_IO in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    proc = run_cli("run", "--onnx", str(llama_files[2]), "--runtimes", "ort-cpu", "--scenario", "generate",
                   "--seq-lens", "8", "--new-tokens", "4", "--int-range", "input_ids=0:600",
                   "--out", str(tmp_path / "run2"))
    assert proc.returncode == 2 and r"must lie in [0, 512)" in proc.stderr, proc.stderr


def test_a_reference_model_that_does_not_fit_the_decoder_is_refused(llama_files, tmp_path):
    _, _, vs_ort, _ = llama_files
    other = save_checkpoint(perturbed("tiny"), tmp_path / "gpt2")  # 4 K/V heads, learned positions
    with pytest.raises(ValueError, match=r"does not fit the reference model .*n_kv_heads 2 \(the model's 4\)"):
        MatrixSpec(models=[], onnx=OnnxFiles([str(vs_ort)], reference_models={"vs-ort": str(other)}),
                   runtimes=["ort-cpu"], scenarios=["generate"], seq_lens=[8], new_tokens=[4]).build()


def test_a_builder_layout_decoder_runs_prefill_and_generates_through_the_in_place_loop(tmp_path, cache_dir):
    """The builder layout's generate cells run the in-place loop (GroupQueryAttention writes the shared buffer,
    rows right-padded) and pass against the file's own reference; its prefill runs from an empty cache."""
    path = builder_layout_file(tmp_path / "built")
    spec = MatrixSpec(models=[], onnx=OnnxFiles([str(path)]), runtimes=["ort-cpu"], batches=[2], seq_lens=[8],
                      scenarios=["prefill", "generate"], new_tokens=[4], timing=FAST)
    rows = {r["scenario"]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows}
    assert rows["prefill"]["status"] == "ok" and rows["prefill"]["verdict"] == "pass", rows["prefill"]["reason"]
    assert rows["prefill"]["decoder_layout"] == "builder" and "com.microsoft" in rows["prefill"]["reason"]
    assert rows["generate"]["status"] == "ok" and rows["generate"]["verdict"] == "pass", rows["generate"]["reason"]
    assert rows["generate"]["decoder_layout"] == "builder" and rows["generate"]["first_divergent_step"] is None


# --- the real tools, where their interpreters are named ---------------------------------------------------------

needs_optimum = pytest.mark.skipif(optimum_python() is None, reason=f"{OPTIMUM_ENV} does not name a python with "
                                   "optimum-onnx 0.1 (transformers < 4.58); docs/usage.md")
needs_builder = pytest.mark.skipif(genai_python() is None, reason=f"{GENAI_ENV} does not name a python with "
                                   "onnxruntime-genai (and transformers 5); docs/usage.md")


@pytest.mark.slow
@needs_optimum
def test_decoders_exported_by_optimum_generate_with_onnx_scenario_generate(tmp_path, cache_dir):
    """Llama (GQA), Qwen2 (q/k/v biases, tied embedding) and GPT-2 checkpoints written by onnxbench, exported by
    optimum-cli, then ``onnxbench run --onnx ... --reference-model CKPT --scenario generate`` with left padding:
    every step's tokens and logits pass against the float64 torch model of the same checkpoint."""
    files, references = [], []
    for name, overrides in (("llama", {}), ("qwen2", {"qkv_bias": True, "tie_embeddings": True}), ("gpt2", {})):
        model = perturbed("tiny" if name == "gpt2" else "llama-tiny", **overrides)
        checkpoint = save_checkpoint(model, tmp_path / "ckpt" / name)
        exported = optimum_export(checkpoint, tmp_path / "optimum" / name)
        link = tmp_path / f"optimum-{name}.onnx"  # optimum writes model.onnx for every model: name them apart
        link.symlink_to(exported)
        files += [str(link)]
        references += ["--reference-model", str(checkpoint)]
    out = tmp_path / "run"
    proc = run_cli("run", *sum((["--onnx", f] for f in files), []), *references, "--runtimes", "ort-cpu",
                   "--scenario", "generate", "--batches", "2", "--seq-lens", "8", "--new-tokens", "6",
                   "--padding", "0,0.25", "--min-time", "0.05", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["status"] == "ok" and row["verdict"] == "pass", (row["model"], row["reason"])
        assert row["decoder_layout"] == "optimum" and row["reference_config"] == "torch float64"
    report = (out / "report.md").read_text()
    assert "optimum-qwen2" in report


@pytest.mark.slow
@needs_builder
def test_a_decoder_made_by_the_model_builder_is_detected_and_its_reference_right_pads(tmp_path):
    """The builder's fp32 graph of a llama-tiny checkpoint: its layout (d_head from genai_config.json), and the
    reference's teacher-forced logits of a left-padded batch equal the float64 torch model's greedy run."""
    model = perturbed("llama-tiny")
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    path = builder_export(checkpoint, tmp_path / "built")
    layout = detect_layout(path)
    assert (layout.kind, layout.n_kv_heads, layout.d_head, layout.max_positions) == ("builder", 2, 16, 128)
    ids = np.random.default_rng(0).integers(4, 512, (2, 10))
    mask = np.ones_like(ids)
    ids[1, :4], mask[1, :4] = 0, 0
    reference = load_checkpoint(checkpoint, dtype=torch.float64)
    greedy = greedy_generate(reference, torch.from_numpy(ids), 6, torch.from_numpy(mask))
    expected = OnnxFileReference(read_artifact(path)).generation_expected(ids, mask, greedy.tokens.numpy(), "fp32")
    np.testing.assert_allclose(expected.outputs["logits"], greedy.logits.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@needs_builder
def test_a_decoder_made_by_the_model_builder_generates_on_ort_cpu_through_the_in_place_loop(tmp_path):
    """The builder's fp32 graph of a llama-tiny checkpoint generates on ``ort-cpu`` with its shared
    GroupQueryAttention buffer bound once (docs/generation.md, "A KV cache updated in place"): every step's tokens
    and logits pass against the float64 torch model of the same checkpoint, left padding included."""
    checkpoint = save_checkpoint(perturbed("llama-tiny"), tmp_path / "ckpt")
    path = builder_export(checkpoint, tmp_path / "built")
    out = tmp_path / "run"
    proc = run_cli("run", "--onnx", str(path), "--reference-model", str(checkpoint), "--runtimes", "ort-cpu",
                   "--scenario", "generate", "--batches", "2", "--seq-lens", "8", "--new-tokens", "6",
                   "--padding", "0,0.25", "--min-time", "0.05", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
        assert row["decoder_layout"] == "builder" and row["reference_config"] == "torch float64"
        assert row["first_divergent_step"] is None
