"""Attention variants: each export holds its own attention (and no other), agrees with the torch reference on
ONNX Runtime CPU in fp32 and fp16 at shapes other than the export example (B=2, T=8), for the full model and
the standalone attention part; fp16 masks never give NaN, even with activations scaled up."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.verify.agreement import check
from onnxbench.export import VARIANTS, VariantMismatch, census, to_onnx, verify_variant
from onnxbench.export.variants import (
    SAFE_FP16_FILL,
    fuse_for_ort,
    sanitize_fp16_masks,
    unsafe_fp16_mask_fills,
)
from onnxbench.models import get_preset
from onnxbench.runtimes import get
from onnxbench.runtimes.ort_placement import profile_attention
from onnxbench.tolerance import CPU_BANDS, band

# Shapes different from the export example (B=2, T=8): two batch sizes x two sequence lengths.
SHAPES = [(1, 5), (1, 19), (3, 5), (3, 19)]
PRECISIONS = ["fp32", "fp16"]
PARTS = ["model", "attention"]

_ARTIFACTS: dict = {}


def artifact(cache_dir, variant: str, precision: str, part: str):
    key = (variant, precision, part)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = to_onnx(get_preset("tiny"), seed=0, variant=variant, precision=precision, part=part,
                                  cache_dir=cache_dir, model_name="tiny")
    return _ARTIFACTS[key]


def histogram(path) -> collections.Counter:
    model = onnx.load(str(path))
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)


# What each variant's graph must and must not hold, counted here independently of verify_variant.
# the variants the GPT-2 ``tiny`` preset has (``ort-gqa-inplace`` is the Llama family's decoder only:
# tests/export/test_gqa_inplace_export.py)
GPT2_VARIANTS = [v for v, recipe in VARIANTS.items() if recipe.family_reason("gpt2") is None]
EXPECTED = {
    "decomposed": ("ai.onnx:Softmax", ["ai.onnx:Attention", "com.microsoft:MultiHeadAttention"]),
    "sdpa": ("ai.onnx:Softmax", ["ai.onnx:Attention", "com.microsoft:MultiHeadAttention"]),
    "onnx-attention": ("ai.onnx:Attention", ["ai.onnx:Softmax", "com.microsoft:MultiHeadAttention"]),
    "ort-fused": ("com.microsoft:MultiHeadAttention", ["ai.onnx:Softmax", "ai.onnx:Attention"]),
}


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", GPT2_VARIANTS)
def test_variant_graph_and_agreement(cache_dir, variant, precision, part):
    art = artifact(cache_dir, variant, precision, part)
    n_blocks = get_preset("tiny").n_layers if part == "model" else 1
    present, absent = EXPECTED[variant]
    ops = histogram(art.path)
    assert ops[present] == n_blocks, ops
    assert all(ops[a] == 0 for a in absent), ops
    assert art.opset == (23 if variant == "onnx-attention" else 18)
    assert art.metadata["onnxbench.variant"] == variant and art.metadata["onnxbench.part"] == part

    tol = band(CPU_BANDS, precision)
    with get("ort-cpu").open(art) as ort_session, get("torch").open(
        type(art)(**{**art.__dict__, "precision": "fp32"})
    ) as reference:
        for batch, seq_len in SHAPES:
            feeds = make_feeds(ort_session.inputs(), batch, seq_len, seed=1, int_high=512)
            y = next(iter(ort_session.run(feeds).values()))
            y_ref = next(iter(reference.run(feeds).values()))
            agreement = check(y, y_ref, tol)
            expected_shape = (batch, seq_len, 512 if part == "model" else 64)
            assert y.shape == expected_shape
            assert agreement.agree, (variant, precision, part, batch, seq_len, agreement)


@pytest.mark.parametrize("variant", GPT2_VARIANTS)
def test_attention_provider_is_read_from_the_profile(cache_dir, variant):
    art = artifact(cache_dir, variant, "fp32", "model")
    with get("ort-cpu").open(art) as session:
        feeds = make_feeds(session.inputs(), 1, 6, int_high=512)
        placement = profile_attention(session, feeds)
    assert placement.summary == "CPUExecutionProvider"
    assert sum(placement.by_provider.values()) == get_preset("tiny").n_layers
    core = {"ort-fused": "MultiHeadAttention", "onnx-attention": "Attention"}.get(variant, "Softmax")
    assert all(op.startswith(core) for op in placement.by_op), placement.by_op


def test_a_variant_that_degrades_fails_loudly(cache_dir):
    decomposed = onnx.load(str(artifact(cache_dir, "decomposed", "fp32", "model").path))
    fused = onnx.load(str(artifact(cache_dir, "ort-fused", "fp32", "model").path))
    standard = onnx.load(str(artifact(cache_dir, "onnx-attention", "fp32", "model").path))
    for model, wrong in [(decomposed, "ort-fused"), (decomposed, "onnx-attention"), (fused, "decomposed"),
                         (standard, "ort-fused"), (standard, "decomposed"), (fused, "onnx-attention")]:
        with pytest.raises(VariantMismatch, match=wrong):
            verify_variant(model, wrong, 2)
    # ort-fused that lost its com.microsoft nodes (here: the fusion found nothing in the explicit math)
    unfusable = fuse_for_ort(decomposed)
    assert census(unfusable).n_fused == 0
    with pytest.raises(VariantMismatch, match="com.microsoft attention x2"):
        verify_variant(unfusable, "ort-fused", 2)
    # one block fused, the other not: still a mismatch
    half = onnx.load(str(artifact(cache_dir, "ort-fused", "fp32", "model").path))
    first = next(n for n in half.graph.node if n.op_type == "MultiHeadAttention")
    first.domain, first.op_type = "", "Softmax"
    with pytest.raises(VariantMismatch):
        verify_variant(half, "ort-fused", 2)


def test_bad_variant_requests_are_refused(cache_dir):
    with pytest.raises(ValueError, match="known: decomposed"):
        to_onnx(get_preset("tiny"), variant="flash", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="dynamo exporter"):
        to_onnx(get_preset("tiny"), variant="ort-fused", exporter="torchscript", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="part must be one of"):
        to_onnx(get_preset("tiny"), part="mlp", cache_dir=cache_dir)


@pytest.mark.parametrize("variant", GPT2_VARIANTS)
def test_fp16_masks_do_not_saturate(cache_dir, variant):
    model = onnx.load(str(artifact(cache_dir, variant, "fp16", "model").path))
    assert unsafe_fp16_mask_fills(model) == []


def test_sanitize_moves_a_saturating_fp16_fill():
    # Add(scores, Where(mask, 0, finfo(fp16).min)) -> Softmax: the sdpa lowering's additive mask plane
    h = onnx.helper
    scores = h.make_tensor_value_info("scores", onnx.TensorProto.FLOAT16, [2, 2])
    mask = h.make_tensor_value_info("mask", onnx.TensorProto.BOOL, [2, 2])
    out = h.make_tensor_value_info("probs", onnx.TensorProto.FLOAT16, [2, 2])
    inits = [onnx.numpy_helper.from_array(np.array(0, np.float16), "zero"),
             onnx.numpy_helper.from_array(np.array(np.finfo(np.float16).min, np.float16), "fill")]
    graph = h.make_graph([h.make_node("Where", ["mask", "zero", "fill"], ["plane"]),
                          h.make_node("Add", ["scores", "plane"], ["masked"]),
                          h.make_node("Softmax", ["masked"], ["probs"])], "g", [scores, mask], [out], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=10)
    assert unsafe_fp16_mask_fills(model) == [float(np.finfo(np.float16).min)]
    assert sanitize_fp16_masks(model) == 1
    assert unsafe_fp16_mask_fills(model) == []
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # scores so negative that score + finfo.min would round to -inf; a fully masked row stays finite
    s = np.array([[-40000, -30000], [-50000, -10]], np.float16)
    m = np.array([[True, False], [False, False]])
    probs = sess.run(None, {"scores": s, "mask": m})[0]
    assert np.isfinite(probs).all()
    assert SAFE_FP16_FILL < -30000


def _scaled_module(variant_impl: str, scale: float):
    """tiny with embeddings scaled by ``scale`` (residual stream ~scale*0.03, so LayerNorm's sum of squares
    over d_model leaves the fp16 range) and W^Q, W^K scaled so attention logits reach the hundreds."""
    from onnxbench.models import build

    model = build(get_preset("tiny", attention=variant_impl), seed=0)
    with torch.no_grad():
        model.wte.weight.mul_(scale)
        model.wpe.weight.mul_(scale)
        for block in model.blocks:
            block.attn.q_proj.weight.mul_(8.0)
            block.attn.k_proj.weight.mul_(8.0)
    return model


@pytest.mark.parametrize("variant", GPT2_VARIANTS)
def test_fp16_under_scaled_activations_has_no_nan(tmp_path, variant):
    """Activations of |x| ~ 1e2-1e3: x^2 summed over d_model=64 overflows fp16 (max 65504) if LayerNorm were
    computed in fp16 primitives; the scores stress softmax. ORT CPU fp16 must stay finite and close to fp32."""
    import onnxruntime as ort

    from onnxbench.export.onnx_export import _torch_export
    from onnxbench.export.variants import finish_variant

    recipe = VARIANTS[variant]
    module = _scaled_module(recipe.implementation, scale=5000.0)
    ids = torch.randint(0, 512, (3, 19), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hidden = module.wte(ids) + module.wpe(torch.arange(19))
        assert hidden.abs().max() > 256  # x^2 > 65504: would overflow a float16 sum of squares
        reference = module(ids).numpy()
    path = tmp_path / "m.onnx"
    half = module.half()
    _torch_export(half, ids[:2, :8], path, recipe.resolve_opset(18), "dynamo")
    model = finish_variant(onnx.load(str(path)), variant, "fp16", n_blocks=2)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input_ids": ids.numpy()})[0]
    assert logits.dtype == np.float16
    assert np.isfinite(logits).all()
    agreement = check(logits, reference, band(CPU_BANDS, "fp16"))
    assert agreement.cosine >= 0.999, agreement


def test_matrix_runs_variants_and_parts(cache_dir, tmp_path):
    """A small matrix over two variants and both parts: every cell ok and agreeing, the opset the variant
    dictates in the row, the attention EP recorded for ONNX Runtime rows, and the report's variant section."""
    from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
    from onnxbench.reports import load, write_report
    from onnxbench.reports.tables import attention_variant_table

    spec = MatrixSpec(models=["tiny"], attention=["decomposed", "onnx-attention"], parts=["model", "attention"],
                      runtimes=["torch", "ort-cpu"], batches=[3], seq_lens=[11], opsets=[18],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0))
    cells = spec.expand()
    assert len(cells) == 2 * 2 * 2
    assert {c.opset for c in cells if c.attention == "onnx-attention"} == {23}
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir)
    rows = summary.rows
    assert all(r["status"] == "ok" and r["verdict"] == ("floor" if r["runtime"] == "torch" else "pass")
               for r in rows), [r["reason"] for r in rows]
    assert {(r["part"], r["attention"], r["opset"]) for r in rows} == {
        ("model", "decomposed", 18), ("model", "onnx-attention", 23),
        ("attention", "decomposed", 18), ("attention", "onnx-attention", 23)}
    assert {r["attention_provider"] for r in rows if r["runtime"] == "ort-cpu"} == {"CPUExecutionProvider"}
    assert {r["attention_provider"] for r in rows if r["runtime"] == "torch"} == {None}
    table = attention_variant_table(load(tmp_path / "run"))
    assert len(table) == 8 and set(table["attention"]) == {"decomposed", "onnx-attention"}
    report = write_report(tmp_path / "run")["markdown"].read_text()
    assert "## Attention variants" in report and "attention ran on" in report


def test_matrix_refuses_bad_parts_and_exporter_mismatch():
    from onnxbench.benchmarks import MatrixSpec

    with pytest.raises(ValueError, match="unknown part 'mlp'"):
        MatrixSpec(models=["tiny"], parts=["mlp"], runtimes=["torch"]).validate()
    with pytest.raises(ValueError, match="need the dynamo exporter"):
        MatrixSpec(models=["tiny"], attention=["ort-fused"], exporter="torchscript", runtimes=["torch"]).validate()
