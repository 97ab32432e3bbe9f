"""ONNX export of the Llama family (dynamo exporter): the full model and the decoder with a KV cache, attention
variants ``decomposed`` and ``sdpa`` at opset 18 (RoPE and RMSNorm decomposed), and at opset 23 where torch's
exporter writes ONNX ``RotaryEmbedding``, ``RMSNormalization`` and ``Attention`` reading n_kv_heads-wide K/V;
each checked on ONNX Runtime CPU against the float64 torch reference with the project's bands
(onnxbench.tolerance: fp32 atol = rtol = 1e-3; measured ~3e-7, printed with ``pytest -s``);
``inspect`` reports RoPE, the norm and the K/V heads; a Qwen2 checkpoint exports with its weights; ``ort-fused``
is refused for the family.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxbench.benchmarks.verify.agreement import check
from onnxbench.export import DECODER_WITH_PAST, to_onnx
from onnxbench.export.decoder_with_past import empty_past, input_names, output_names, present_as_past
from onnxbench.export.inspect import inspect_model
from onnxbench.models import build, get_preset
from onnxbench.tolerance import CPU_BANDS, band

CONFIG = get_preset("llama-tiny")  # 4 query heads, 2 K/V heads, d_head 16
# (B, T, T_past): prefills (empty past) and decode steps, none the export example (2, 3, 5)
SHAPES = [(1, 1, 0), (3, 7, 0), (2, 1, 9), (3, 4, 11)]
# (variant, opset) -> op census every graph of the pair must show (node counts over both blocks)
CASES = {
    ("decomposed", 18): {"ai.onnx:Softmax": 2, "ai.onnx:Sin": 1, "ai.onnx:Cos": 1},
    ("sdpa", 18): {"ai.onnx:Softmax": 2, "ai.onnx:Sin": 1, "ai.onnx:Cos": 1},
    ("sdpa", 23): {"ai.onnx:Attention": 2, "ai.onnx:RotaryEmbedding": 4, "ai.onnx:RMSNormalization": 5},
}

_ARTIFACTS: dict = {}


def artifact(cache_dir, variant: str, opset: int, part: str, precision: str = "fp32"):
    key = (variant, opset, part, precision)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = to_onnx(CONFIG, seed=0, variant=variant, opset=opset, part=part, precision=precision,
                                  cache_dir=cache_dir, model_name="llama-tiny")
    return _ARTIFACTS[key]


def _session(art):
    return ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])


def _run(sess, feeds):
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _census(path) -> collections.Counter:
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def reference64():
    return build(CONFIG, seed=0).double()


@pytest.mark.parametrize("variant, opset", list(CASES))
def test_model_part_exports_and_agrees_with_float64(cache_dir, reference64, variant, opset):
    art = artifact(cache_dir, variant, opset, "model")
    assert art.opset == opset and art.config == CONFIG.replace(attention=art.config.attention)
    assert json.loads(art.metadata["onnxbench.config"])["n_kv_heads"] == 2
    ops = _census(art.path)
    assert all(ops[op] == n for op, n in CASES[(variant, opset)].items()), ops
    ids = torch.randint(0, CONFIG.vocab_size, (3, 21), generator=torch.Generator().manual_seed(1))
    out = _run(_session(art), {"input_ids": ids.numpy()})["logits"]
    with torch.no_grad():
        expected = reference64(ids).numpy()
    agreement = check(out, expected, band(CPU_BANDS, "fp32"), "logits")
    print(f"\n{variant} opset {opset} model: max abs err vs float64 {agreement.max_abs_err:.2e}")
    assert agreement.agree, agreement


@pytest.mark.parametrize("variant, opset", list(CASES))
def test_decoder_with_past_exports_and_agrees_with_float64(cache_dir, reference64, variant, opset):
    art = artifact(cache_dir, variant, opset, DECODER_WITH_PAST)
    n = CONFIG.n_layers
    assert [s.name for s in art.inputs] == input_names(n) and [s.name for s in art.outputs] == output_names(n)
    specs = {s.name: s for s in (*art.inputs, *art.outputs)}
    assert specs["past_key_values.1.key"].shape == ("batch", 2, "past_sequence", 16)  # n_kv_heads, not n_heads
    assert specs["present.0.value"].shape == ("batch", 2, "total_sequence", 16)
    ops = _census(art.path)
    assert all(ops[op] == n_ops for op, n_ops in CASES[(variant, opset)].items()), ops
    # opset 23: the past goes into Attention itself (past_key/past_value inputs), no Expand repeats K/V
    reader = "ai.onnx:Attention" if opset >= 23 else "ai.onnx:Concat"
    assert art.metadata["onnxbench.past_consumers"] == reader
    sess, tol, worst = _session(art), band(CPU_BANDS, "fp32"), 0.0
    for batch, length, past_length in SHAPES:
        gen = torch.Generator().manual_seed(batch * 100 + length + past_length)
        ids = torch.randint(0, CONFIG.vocab_size, (batch, length), generator=gen)
        mask = torch.ones(batch, past_length + length, dtype=torch.int64)
        if batch > 1:
            mask[1, :min(3, past_length + length - 1)] = 0  # left padding reaching into the past
        shape = (batch, CONFIG.n_kv_heads, past_length, CONFIG.d_head)
        past = [(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) for _ in range(n)]
        feeds = dict(zip(input_names(n), [ids.numpy(), mask.numpy(), *[t.numpy() for kv in past for t in kv]],
                         strict=True))
        out = _run(sess, feeds)
        with torch.no_grad():
            ref, present = reference64(ids, mask, [(k.double(), v.double()) for k, v in past], use_cache=True)
        tokens = mask[:, past_length:].bool().numpy()
        agreement = check(out["logits"][tokens], ref.numpy()[tokens], tol, "logits")
        assert agreement.agree, (batch, length, past_length, agreement)
        keys = mask.bool().numpy()
        for i, (k, v) in enumerate(present):
            for name, expected in ((f"present.{i}.key", k), (f"present.{i}.value", v)):
                assert out[name].shape == (batch, 2, past_length + length, 16)
                got = out[name].transpose(0, 2, 1, 3)[keys]
                assert check(got, expected.numpy().transpose(0, 2, 1, 3)[keys], tol, name).agree, name
        worst = max(worst, agreement.max_abs_err)
    print(f"\n{variant} opset {opset} decoder-with-past: logits max abs err vs float64 {worst:.2e} over {SHAPES}")


def test_greedy_decode_through_ort_matches_torch_tokens(cache_dir):
    """16 steps through the sdpa decoder-with-past graph with left padding, the cache fed back each step."""
    from onnxbench.models import greedy_generate, left_pad

    sess = _session(artifact(cache_dir, "sdpa", 18, DECODER_WITH_PAST))
    ids, mask = left_pad([[5, 17, 99, 3, 42, 7], [11, 2]])
    expected = greedy_generate(build(CONFIG, seed=0), ids, 16, mask)
    out = _run(sess, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), **empty_past(CONFIG, 2)})
    tokens, mask = [], mask.numpy()
    for _ in range(16):
        token = out["logits"][:, -1].argmax(-1)[:, None]
        tokens.append(token)
        mask = np.concatenate([mask, np.ones((2, 1), dtype=np.int64)], axis=1)
        out = _run(sess, {"input_ids": token, "attention_mask": mask, **present_as_past(out)})
    assert np.array_equal(np.concatenate(tokens, axis=1), expected.tokens.numpy())


def test_fp16_decoder_with_past_agrees_in_the_fp16_band(cache_dir, reference64):
    sess = _session(artifact(cache_dir, "sdpa", 18, DECODER_WITH_PAST, precision="fp16"))
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 6))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1] * 6])
    out = _run(sess, {"input_ids": ids, "attention_mask": mask, **empty_past(CONFIG, 2, np.float16)})
    assert all(np.isfinite(v).all() for v in out.values())
    with torch.no_grad():
        ref = reference64(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    real = mask.astype(bool)
    assert check(out["logits"][real], ref[real], band(CPU_BANDS, "fp16"), "logits").agree


def test_inspect_says_how_rope_rmsnorm_and_kv_heads_appear(cache_dir):
    decomposed = inspect_model(artifact(cache_dir, "decomposed", 18, DECODER_WITH_PAST).path)
    assert decomposed.rope == "decomposed x4" and decomposed.norm == "decomposed RMSNorm x5"
    assert decomposed.kv_heads == 2 and "past_key_values" in decomposed.kv_heads_note
    assert decomposed.n_params_config == CONFIG.n_params
    ops = inspect_model(artifact(cache_dir, "sdpa", 23, DECODER_WITH_PAST).path)
    assert ops.rope == "ai.onnx:RotaryEmbedding x4" and ops.norm == "ai.onnx:RMSNormalization x5"
    assert ops.kv_heads == 2 and "GQA" in ops.kv_heads_note
    gpt2 = inspect_model(to_onnx(get_preset("tiny"), seed=0, cache_dir=cache_dir, model_name="tiny").path)
    assert (gpt2.rope, gpt2.norm, gpt2.kv_heads) == ("none", "ai.onnx:LayerNormalization x5", 4)


def test_ort_fused_is_refused_for_the_llama_family(cache_dir):
    with pytest.raises(ValueError, match="'ort-fused' is not available for the llama family"):
        to_onnx(CONFIG, variant="ort-fused", cache_dir=cache_dir)


def test_qwen2_checkpoint_exports_with_its_weights(tmp_path, cache_dir):
    from onnxbench.models import checkpoint_config, load_checkpoint
    from onnxbench.models.hf_llama import save_checkpoint

    model = build(get_preset("llama-tiny", qkv_bias=True, tie_embeddings=False), seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) * 0.05)
    ckpt = save_checkpoint(model, tmp_path / "my-qwen")
    art = to_onnx(checkpoint_config(ckpt), checkpoint=ckpt, variant="sdpa", cache_dir=cache_dir)
    assert art.checkpoint == str(ckpt.resolve()) and art.config.qkv_bias
    ids = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        expected = load_checkpoint(ckpt, dtype=torch.float64)(ids).numpy()
    got = _run(_session(art), {"input_ids": ids.numpy()})["logits"]
    assert check(got, expected, band(CPU_BANDS, "fp32"), "logits").agree


def test_cli_exports_llama_tiny_with_sdpa(tmp_path, cache_dir):
    out = tmp_path / "llama.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "export", "--preset", "llama-tiny", "--attention",
                           "sdpa", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and "llama-tiny" in proc.stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["onnxbench.variant"] == "sdpa" and json.loads(meta["onnxbench.config"])["family"] == "llama"
    proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "inspect", str(out)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "RoPE: decomposed x4" in proc.stdout and "K/V heads: 2" in proc.stdout, proc.stdout


def test_a_matrix_cell_of_ort_fused_for_the_llama_family_is_skipped_with_the_reason():
    from onnxbench.benchmarks.cells import Cell
    from onnxbench.benchmarks.plan.sources import PresetSource

    llama, gpt2 = PresetSource.named("llama-tiny", 0, "dynamo"), PresetSource.named("tiny", 0, "dynamo")
    cell = Cell("llama-tiny", "ort-fused", "fp32", 18, "ort-cpu", 1, 8)
    assert "not available for the llama family" in llama.unrunnable_reason(cell)
    assert llama.unrunnable_reason(Cell("llama-tiny", "sdpa", "fp32", 18, "ort-cpu", 1, 8)) is None
    assert gpt2.unrunnable_reason(Cell("tiny", "ort-fused", "fp32", 18, "ort-cpu", 1, 8)) is None
