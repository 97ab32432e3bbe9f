"""The decoder-with-past ONNX graph (one graph for prefill and decode) for every attention variant: names and
dynamic axes, the variant's attention core reading the past, agreement with the torch reference on ONNX Runtime
CPU at (B, T, T_past) shapes including an empty past, no NaN for all-padding rows, and a 16-step greedy decode
through ONNX Runtime with the cache that matches torch's tokens and the no-cache recomputation.

Tolerances: the project's bands (onnxbench.benchmarks.verify.agreement.TOLERANCES: fp32 atol = rtol = 1e-3, fp16 5e-2);
measured fp32 differences are ~3e-7 on the tiny preset (printed with ``pytest -s``).
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxbench.benchmarks.verify.agreement import check
from onnxbench.export import (
    DECODER_WITH_PAST,
    VARIANTS,
    VariantMismatch,
    cache_key,
    empty_past,
    present_as_past,
    to_onnx,
    verify_past,
)
from onnxbench.export.decoder_with_past import input_names, output_names
from onnxbench.models import build, get_preset, greedy_generate, left_pad
from onnxbench.tolerance import CPU_BANDS, band

CONFIG = get_preset("tiny")
# (B, T, T_past): prefills (empty past) and decode steps, none the export example (2, 3, 5)
SHAPES = [(1, 1, 0), (3, 7, 0), (2, 1, 9), (3, 4, 11), (1, 1, 1)]
# the variants GPT-2 has (ort-gqa-inplace is the Llama family's: tests/export/test_gqa_inplace_export.py)
GPT2_VARIANTS = [v for v, recipe in VARIANTS.items() if recipe.family_reason("gpt2") is None]
CASES = [(v, "fp32") for v in GPT2_VARIANTS] + [(v, "fp16") for v in ("sdpa", "onnx-attention", "ort-fused")]
# The node each variant's graph must hold once per block, and the op that must read every past input,
# counted here independently of verify_variant / verify_past.
CORE = {
    "decomposed": ("ai.onnx:Softmax", "ai.onnx:Concat"),
    "sdpa": ("ai.onnx:Softmax", "ai.onnx:Concat"),
    "onnx-attention": ("ai.onnx:Attention", "ai.onnx:Attention"),
    "ort-fused": ("com.microsoft:MultiHeadAttention", "com.microsoft:MultiHeadAttention"),
}

_ARTIFACTS: dict = {}


def artifact(cache_dir, variant: str, precision: str = "fp32", exporter: str = "dynamo"):
    key = (variant, precision, exporter)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = to_onnx(CONFIG, seed=0, variant=variant, precision=precision, exporter=exporter,
                                  part=DECODER_WITH_PAST, cache_dir=cache_dir, model_name="tiny")
    return _ARTIFACTS[key]


def session(art) -> ort.InferenceSession:
    return ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def step_inputs(batch: int, length: int, past_length: int, dtype, seed: int):
    """Token ids, a mask with left padding in row 1 (reaching into the past), and a random past."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CONFIG.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, past_length + length, dtype=torch.int64)
    if batch > 1:
        mask[1, :min(3, past_length + length - 1)] = 0
    shape = (batch, CONFIG.n_heads, past_length, CONFIG.d_head)
    past = [(torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype))
            for _ in range(CONFIG.n_layers)]
    return ids, mask, past


def feeds_of(ids, mask, past) -> dict[str, np.ndarray]:
    flat = [t.numpy() for kv in past for t in kv]
    return dict(zip(input_names(CONFIG.n_layers), [ids.numpy(), mask.numpy(), *flat], strict=True))


@pytest.mark.parametrize("variant, precision", CASES)
def test_graph_io_core_op_and_agreement_at_shapes(cache_dir, variant, precision):
    art = artifact(cache_dir, variant, precision)
    n = CONFIG.n_layers
    assert art.part == DECODER_WITH_PAST and art.metadata["onnxbench.part"] == DECODER_WITH_PAST
    assert art.opset == (23 if variant == "onnx-attention" else 18)
    assert [s.name for s in art.inputs] == input_names(n) and [s.name for s in art.outputs] == output_names(n)
    float_type = "float16" if precision == "fp16" else "float32"
    specs = {s.name: s for s in (*art.inputs, *art.outputs)}
    assert specs["input_ids"].shape == ("batch", "sequence") and specs["input_ids"].dtype == "int64"
    assert specs["attention_mask"].shape == ("batch", "total_sequence")
    assert specs["past_key_values.1.value"].shape == ("batch", 4, "past_sequence", 16)
    assert specs["past_key_values.1.value"].dtype == float_type
    assert specs["present.0.key"].shape == ("batch", 4, "total_sequence", 16)
    assert specs["logits"].shape == ("batch", "sequence", 512) and specs["logits"].dtype == float_type

    graph = onnx.load(str(art.path)).graph
    ops = collections.Counter(f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in graph.node)
    core, reader = CORE[variant]
    assert ops[core] == n, ops
    for node in graph.node:  # every past input's values go to the expected op, and only there
        for name in node.input:
            if name.startswith("past_key_values.") and node.op_type != "Shape":
                assert f"{node.domain or 'ai.onnx'}:{node.op_type}" == reader, (name, node.op_type)
    if variant == "onnx-attention":  # Attention-23 with past_key/past_value in and present_key/value out
        attention = [node for node in graph.node if node.op_type == "Attention"]
        assert [list(a.input[4:]) for a in attention] == [[f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
                                                          for i in range(n)]
        assert [list(a.output[1:]) for a in attention] == [[f"present.{i}.key", f"present.{i}.value"] for i in range(n)]

    sess = session(art)
    reference = build(CONFIG, seed=0)
    tol = band(CPU_BANDS, precision)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    worst = 0.0
    for batch, length, past_length in SHAPES:
        ids, mask, past = step_inputs(batch, length, past_length, dtype, seed=batch * 100 + length + past_length)
        out = run(sess, feeds_of(ids, mask, past))
        with torch.no_grad():
            ref, present = reference(ids, mask, [(k.float(), v.float()) for k, v in past], use_cache=True)
        tokens = mask[:, past_length:].bool().numpy()  # padded queries' logits are meaningless: not compared
        agreement = check(out["logits"][tokens], ref.numpy()[tokens], tol, "logits")
        assert out["logits"].shape == (batch, length, 512)
        assert agreement.agree, (batch, length, past_length, agreement)
        keys = mask.bool().numpy()
        for i, (k, v) in enumerate(present):
            assert out[f"present.{i}.key"].shape == (batch, 4, past_length + length, 16)
            for name, expected in ((f"present.{i}.key", k), (f"present.{i}.value", v)):
                got = out[name].transpose(0, 2, 1, 3)[keys]  # (tokens, H, d_head)
                assert check(got, expected.numpy().transpose(0, 2, 1, 3)[keys], tol, name).agree, name
        worst = max(worst, agreement.max_abs_err)
    print(f"\n{variant} {precision}: logits max abs err {worst:.2e} over (B, T, T_past) in {SHAPES}")


@pytest.mark.parametrize("variant, precision", CASES)
def test_all_padding_row_gives_no_nan(cache_dir, variant, precision):
    sess = session(artifact(cache_dir, variant, precision))
    dtype = np.float16 if precision == "fp16" else np.float32
    ids = np.random.default_rng(0).integers(0, 512, (2, 5))
    mask = np.array([[0] * 5, [1] * 5])
    prefill = run(sess, {"input_ids": ids, "attention_mask": mask, **empty_past(CONFIG, 2, dtype)})
    step = run(sess, {"input_ids": ids[:, :1], "attention_mask": np.concatenate([mask, [[0], [1]]], axis=1),
                      **present_as_past(prefill)})
    for outputs in (prefill, step):
        assert all(np.isfinite(v).all() for v in outputs.values())
    alone = run(sess, {"input_ids": ids[1:], "attention_mask": mask[1:], **empty_past(CONFIG, 1, dtype)})
    assert check(prefill["logits"][1], alone["logits"][0], band(CPU_BANDS, precision)).agree


def ort_greedy(sess, ids: np.ndarray, mask: np.ndarray, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding through the graph: prefill with an empty past, then one token per step with the cache."""
    feeds = {"input_ids": ids, "attention_mask": mask, **empty_past(CONFIG, ids.shape[0])}
    tokens, logits = [], []
    for _ in range(new_tokens):
        out = run(sess, feeds)
        last = out["logits"][:, -1]
        token = last.argmax(-1)[:, None]
        tokens.append(token)
        logits.append(last)
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        feeds = {"input_ids": token, "attention_mask": mask, **present_as_past(out)}
    return np.concatenate(tokens, axis=1), np.stack(logits, axis=1)


@pytest.mark.parametrize("variant", GPT2_VARIANTS)
def test_greedy_decode_through_onnx_runtime_matches_torch(cache_dir, variant):
    sess = session(artifact(cache_dir, variant))
    reference = build(CONFIG, seed=0)
    gen = torch.Generator().manual_seed(7)
    ids, mask = left_pad([torch.randint(0, 512, (n,), generator=gen).tolist() for n in (12, 5, 9)])
    tokens, logits = ort_greedy(sess, ids.numpy(), mask.numpy(), 17)  # prefill + 16 decode steps
    cached = greedy_generate(reference, ids, 17, mask)
    recomputed = greedy_generate(reference, ids, 17, mask, use_cache=False)
    vs_cached = check(logits, cached.logits.numpy(), band(CPU_BANDS, "fp32"))
    vs_recomputed = check(logits, recomputed.logits.numpy(), band(CPU_BANDS, "fp32"))
    print(f"\n{variant}: 17 greedy tokens x 3 rows; logits max abs err vs torch cached "
          f"{vs_cached.max_abs_err:.2e}, vs no-cache recompute {vs_recomputed.max_abs_err:.2e}")
    np.testing.assert_array_equal(tokens, cached.tokens.numpy())
    np.testing.assert_array_equal(tokens, recomputed.tokens.numpy())
    assert vs_cached.agree and vs_recomputed.agree, (vs_cached, vs_recomputed)


def test_torchscript_exporter_handles_the_empty_past_too(cache_dir):
    art = artifact(cache_dir, "decomposed", exporter="torchscript")
    assert art.metadata["onnxbench.exporter"] == "torchscript"
    assert {s.name: s.shape for s in art.inputs}["attention_mask"] == ("batch", "total_sequence")
    sess = session(art)
    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]])
    tokens, _ = ort_greedy(sess, ids.numpy(), mask.numpy(), 6)
    np.testing.assert_array_equal(tokens, greedy_generate(build(CONFIG, seed=0), ids, 6, mask).tokens.numpy())


def test_verify_past_rejects_a_graph_whose_past_bypasses_the_core(cache_dir):
    decomposed = onnx.load(str(artifact(cache_dir, "decomposed").path))
    with pytest.raises(VariantMismatch, match="'onnx-attention'.*wrong readers"):
        verify_past(decomposed, "onnx-attention", CONFIG.n_layers)
    with pytest.raises(VariantMismatch, match="expected 6 past inputs"):
        verify_past(decomposed, "decomposed", 3)


def test_export_is_cached_and_keyed_apart_from_the_prefill_model(cache_dir):
    first = artifact(cache_dir, "decomposed")
    again = to_onnx(CONFIG, seed=0, variant="decomposed", part=DECODER_WITH_PAST, cache_dir=cache_dir)
    assert again.cached and again.path == first.path and again.sha256 == first.sha256
    assert again.part == DECODER_WITH_PAST and again.config == CONFIG
    assert again.metadata["onnxbench.past_consumers"] == "ai.onnx:Concat"
    key = first.path.parent.name
    assert key == cache_key(CONFIG, 0, "decomposed", "fp32", 18, "dynamo", DECODER_WITH_PAST)
    assert key != cache_key(CONFIG, 0, "decomposed", "fp32", 18, "dynamo", "model")
    with pytest.raises(ValueError, match="part must be one of"):
        to_onnx(CONFIG, part="decoder", cache_dir=cache_dir)
