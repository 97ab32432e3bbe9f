"""``ort-genai``: the ORT model builder's model of a tiny Llama checkpoint (random weights, saved here, tokenizer
written offline) run by onnxruntime-genai's Generator, judged against the float64 torch model of the same
checkpoint; the same model on ``ort-cpu``; the cells it cannot run (docs/generation.md, "ONNX Runtime GenAI")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.export import read_artifact
from onnxbench.models import greedy_generate, load_checkpoint
from onnxbench.runtimes import RuntimeOptions, RuntimeUnavailable
from onnxbench.runtimes.ort_genai import OrtGenaiCuda, pad_token_for
from onnxbench.runtimes.probes import cuda_driver
from tests.decoder_files import builder_export, genai_python, optimum_layout_file, perturbed, save_checkpoint

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=5.0)
GENAI_OK, GENAI_WHY = runtimes.runtime_class("ort-genai").availability()
needs_genai = pytest.mark.skipif(not GENAI_OK or genai_python() is None,
                                 reason=f"ort-genai unavailable ({GENAI_WHY}) or no model builder")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(checkpoint folder, the builder's fp32 model.onnx) of a perturbed llama-tiny (4 query heads, 2 K/V heads)."""
    directory = tmp_path_factory.mktemp("genai")
    checkpoint = save_checkpoint(perturbed("llama-tiny"), directory / "ckpt")
    return checkpoint, builder_export(checkpoint, directory / "built")


def test_pad_token_is_the_configs_unless_a_real_token_has_it():
    ids = np.array([[7, 3, 5, 9], [0, 0, 1, 2]])
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert pad_token_for(ids, mask, 4, 16) == 4
    assert pad_token_for(ids, mask, 3, 16) == 0  # 3 is a real token; 0 appears only under the padding
    with pytest.raises(RuntimeUnavailable, match="every token id"):
        pad_token_for(np.array([[0, 1, 2, 3]]), np.ones((1, 4), int), 0, 4)


def test_ort_genai_runs_generate_only_and_no_quantized_precision():
    cls = runtimes.runtime_class("ort-genai")
    assert cls.scenario_reason("generate") is None
    assert "generate scenario only" in cls.scenario_reason("prefill")
    assert "does not run int8-dynamic" in cls.precision_reason("int8-dynamic")
    assert runtimes.runtime_class("ort-cpu").scenario_reason("prefill") is None


def test_ort_genai_cuda_is_unavailable_without_a_gpu():
    if cuda_driver().ok:
        pytest.skip("a CUDA GPU is present here")
    ok, why = OrtGenaiCuda.availability()
    assert not ok and why


@needs_genai
@pytest.mark.slow
def test_ort_genai_cuda_opened_without_a_gpu_is_refused_never_run_on_the_cpu(built, monkeypatch):
    if cuda_driver().ok:
        pytest.skip("a CUDA GPU is present here")
    monkeypatch.setattr(OrtGenaiCuda, "availability", classmethod(lambda cls: (True, "probe bypassed by the test")))
    with pytest.raises(RuntimeUnavailable, match="cuda"):
        runtimes.get("ort-genai-cuda").open(read_artifact(built[1]))


@needs_genai
@pytest.mark.slow
def test_generator_tokens_and_logits_equal_the_float64_models_and_timed_runs_repeat(built):
    """A right-padded batch of two rows (one padded), a real token equal to the config's pad id: every step's
    greedy token equals the float64 model's, the logits each was chosen from agree within 1e-4, and a second
    generation from reset() chooses the same tokens."""
    checkpoint, path = built
    pad = json.loads((path.parent / "genai_config.json").read_text())["model"]["pad_token_id"]
    ids = np.random.default_rng(0).integers(4, 512, (2, 10))
    ids[0, 5] = pad  # would be masked out if the Generator's pad id stayed the config's
    mask = np.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0
    reference = greedy_generate(load_checkpoint(checkpoint, dtype=torch.float64), torch.from_numpy(ids), 6,
                                torch.from_numpy(mask))
    with runtimes.get("ort-genai").open(read_artifact(path), RuntimeOptions(intra_op_threads=1)) as session:
        assert session.provider_actual == "cpu" and session.options["intra_op_threads"] == 1
        loop = session.decoder(ids, mask, 6)
        loop.reset(record=True)
        loop.prefill()
        for _ in range(5):
            loop.step()
        with pytest.raises(IndexError):
            loop.step()
        tokens, logits = loop.tokens(), loop.logits()
        np.testing.assert_array_equal(tokens, reference.tokens.numpy())
        np.testing.assert_allclose(logits, reference.logits.numpy(), atol=1e-4, rtol=1e-4)
        loop.reset()
        loop.prefill()  # the prompt's forward: the graph's last logits output covers the whole prompt
        assert np.asarray(loop.generator.get_output("logits")).shape == (2, 10, 512)
        loop.step()  # generate_next_token ran token 0's forward itself (the timed step holds the forward)
        step_logits = np.asarray(loop.generator.get_output("logits"))
        assert step_logits.shape == (2, 1, 512)
        np.testing.assert_allclose(step_logits[:, -1], logits[:, 1], atol=1e-5, rtol=1e-5)
        for _ in range(4):
            loop.step()
        np.testing.assert_array_equal(loop.tokens(), tokens)
        with pytest.raises(RuntimeError, match="not recorded"):
            loop.logits()
        with pytest.raises(RuntimeUnavailable, match="padded batch of one row"):
            session.decoder(ids[1:], mask[1:], 4)


def _row(rows, **match):
    (row,) = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return row


@needs_genai
@pytest.mark.slow
def test_a_builder_model_on_ort_genai_and_on_ort_cpu_against_the_float64_checkpoint(built, tmp_path, cache_dir):
    """The run a user makes (worker processes): ort-genai's generate rows pass against the float64 torch model
    (unpadded, and a padded batch of two); its prefill cells and a padded batch of one are skipped rows saying
    why; ort-cpu runs the same file's prefill, and its generate cells pass or say the builder layout's loop is
    missing."""
    checkpoint, path = built
    spec = MatrixSpec(models=[], onnx=OnnxFiles([str(path)], reference_models={"model": str(checkpoint)}),
                      runtimes=["ort-genai", "ort-cpu"], batches=[1, 2], seq_lens=[8], paddings=[0.0, 0.25],
                      scenarios=["prefill", "generate"], new_tokens=[6], timing=FAST)
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=True).rows
    for batch, padding in ((1, 0.0), (2, 0.0), (2, 0.25)):
        row = _row(rows, runtime="ort-genai", scenario="generate", batch=batch, padding=padding)
        assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
        assert row["reference_config"] == "torch float64" and row["decoder_layout"] == "builder"
        assert row["first_divergent_step"] is None and row["ttft_ms"] > 0 and row["tpot_ms_p50"] > 0
        assert json.loads(row["options"])["provider"] == "cpu"
    row = _row(rows, runtime="ort-genai", scenario="generate", batch=1, padding=0.25)
    assert row["status"] == "skipped" and "padded batch of one row" in row["reason"]
    for row in (r for r in rows if r["runtime"] == "ort-genai" and r["scenario"] == "prefill"):
        assert row["status"] == "skipped" and "generate scenario only" in row["reason"]
    for row in (r for r in rows if r["runtime"] == "ort-cpu"):
        if row["scenario"] == "prefill" or row["status"] == "ok":
            assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
        else:
            assert row["status"] == "skipped" and "builder layout" in row["reason"]


@needs_genai
def test_a_decoder_without_its_builder_folder_is_a_skipped_generate_row(tmp_path, cache_dir):
    """An Optimum-layout decoder (no genai_config.json beside it): ort-genai's generate cell is skipped, naming
    the model builder; nothing runs under its name."""
    path = optimum_layout_file(perturbed("llama-tiny"), tmp_path / "optimum.onnx")
    spec = MatrixSpec(models=[], onnx=OnnxFiles([str(path)]), runtimes=["ort-genai"], batches=[1], seq_lens=[8],
                      scenarios=["generate"], new_tokens=[4], timing=FAST)
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    assert row["status"] == "skipped" and "model builder" in row["reason"] and "genai_config.json" in row["reason"]
    assert row["ttft_ms"] is None
