"""Agreement criteria for quantized logits: cosine, top-1 and KL(p_ref || p_q) of the next-token distribution, and
that they fail a deliberately broken int8 graph that a clean one passes."""

from __future__ import annotations

import ast
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.verify.quantized import (
    INT8_DYNAMIC_THRESHOLDS,
    QuantThresholds,
    check_quantized,
    log_softmax,
    next_token_kl,
)
from onnxbench.export.quantize import quantize_int8_dynamic
from onnxbench.models import get_preset


def test_kl_against_a_hand_computed_value():
    ref = np.array([[0.0, 0.0]])  # p = (1/2, 1/2)
    q = np.array([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.5 ln(4/3)
    assert next_token_kl(ref, q)[0] == pytest.approx(expected, rel=1e-12)
    assert next_token_kl(q, ref)[0] != pytest.approx(expected)  # not symmetric: the direction matters
    assert next_token_kl(ref, ref)[0] == 0.0
    # shifting all logits of a position changes nothing (softmax is shift-invariant); huge logits stay finite
    big = np.array([[1e4, 1e4 - 1.0, -1e4]], dtype=np.float32)
    assert next_token_kl(big, big + 123.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(log_softmax(big)).all()
    with pytest.raises(ValueError):
        next_token_kl(ref, np.zeros((1, 3)))


def test_compare_quantized_metrics_and_limits():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5, 50)).astype(np.float32)
    same = check_quantized(ref.copy(), ref)
    assert same.agree and same.cosine == pytest.approx(1.0) and same.top1_agree == 1.0 and same.kl_max == 0.0
    noisy = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    a = check_quantized(noisy, ref)
    kl = next_token_kl(ref, noisy)
    assert a.kl_mean == pytest.approx(kl.mean()) and a.kl_max == pytest.approx(kl.max()) and a.agree
    strict = QuantThresholds(min_cosine=0.99, min_top1=0.7, max_kl_mean=a.kl_mean / 2, max_kl_max=1.0,
                             max_rel_rms_err=1.0)
    assert not check_quantized(noisy, ref, strict).agree  # each limit is applied
    flipped = ref.copy()
    flipped[..., 0] = ref.max(-1) + 1.0  # a different argmax everywhere
    assert check_quantized(flipped, ref).top1_agree == pytest.approx(np.mean(ref.argmax(-1) == 0))
    bad = noisy.copy()
    bad[0, 0, 0] = np.nan
    result = check_quantized(bad, ref)
    assert result.nan_count == 1 and not result.agree and np.isfinite(result.kl_mean)
    assert "nan_count 1 > 0" in result.failures()
    with pytest.raises(ValueError, match="shape"):
        check_quantized(ref[:1], ref)
    with pytest.raises(ValueError, match="position axis"):
        check_quantized(ref[0, 0], ref[0, 0])


def _weight_under(model: onnx.ModelProto, scope: str) -> str:
    initializers = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        scopes = ast.literal_eval({p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "[]"))
        if node.op_type == "MatMul" and scope in scopes and node.input[1] in initializers:
            return node.input[1]
    raise LookupError(scope)


def test_a_planted_scale_fault_fails_where_the_clean_graph_passes(tiny_artifact, cache_dir, tmp_path):
    config = get_preset("tiny")
    clean = quantize_int8_dynamic(tiny_artifact, cache_dir=cache_dir)
    weight = _weight_under(onnx.load(str(tiny_artifact.path)), "blocks.1.mlp.fc_in")
    model = onnx.load(str(clean.path))
    scale = next(i for i in model.graph.initializer if i.name == f"{weight}_scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2.0, scale.name))  # a wrong scale
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    feeds = make_feeds(tiny_artifact.inputs, 4, 32, int_high=config.vocab_size)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    y_ref = run(tiny_artifact.path)
    good, bad = check_quantized(run(clean.path), y_ref), check_quantized(run(broken), y_ref)
    assert good.agree and not bad.agree
    assert bad.cosine < INT8_DYNAMIC_THRESHOLDS.min_cosine < good.cosine
    assert bad.kl_mean > 10 * good.kl_mean
