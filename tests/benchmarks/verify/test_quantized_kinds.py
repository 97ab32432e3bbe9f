"""The quantized criteria by output kind (docs/quantization.md, "Judging a quantized graph"): vocabulary logits are
judged by cosine, top-1, KL and the relative RMS error, every other output by cosine and the relative RMS error; a
wrong scale that cosine, top-1 and KL cannot see fails on the relative RMS error, and the row names the criteria."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.verify.divergence import module_scopes
from onnxbench.benchmarks.verify.quantized import (
    INT8_DYNAMIC_THRESHOLDS,
    OTHER,
    VOCAB_LOGITS,
    check_quantized,
    output_kind,
)
from onnxbench.benchmarks.verify.reference import Expected, Reference
from onnxbench.benchmarks.verify.verdict import judge_quantized
from onnxbench.export import to_onnx
from onnxbench.export.quantize import quantize_int8_dynamic
from onnxbench.models import get_preset

INT8 = "int8-dynamic"
LIMIT = INT8_DYNAMIC_THRESHOLDS.max_rel_rms_err
FAST = TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.0, max_iters=2)


class _Reference(Reference):
    """The float reference's outputs are given to the test; only its vocabulary matters here."""

    label = "float reference"

    def __init__(self, vocab_size: int | None) -> None:
        super().__init__()
        self.vocab_size = vocab_size


def test_the_output_kind_comes_from_the_reference_vocabulary():
    assert output_kind((2, 8, 512), 512) == VOCAB_LOGITS
    assert output_kind((2, 8, 64), 512) == OTHER  # hidden states of that model
    assert output_kind((2, 1), 512) == OTHER and output_kind((512,), 512) == OTHER  # no position axis
    assert output_kind((2, 8, 512), None) == OTHER  # an encoder file: no vocabulary known


def _scale_output(path, factor: float, out):
    """Copy of the model whose first output is multiplied by ``factor``: the wrong scale a broken quantizer (a bad
    output scale, a lost rescale) gives."""
    model = onnx.load(str(path))
    name = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}.unscaled" if o == name else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "planted.factor"))
    model.graph.node.append(helper.make_node("Mul", [f"{name}.unscaled", "planted.factor"], [name]))
    onnx.save(model, str(out))
    return out


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


@pytest.fixture(scope="module")
def score_model(tmp_path_factory):
    """A (batch, 1) regression head: y = relu(x W1) W2, x (batch, 64), float32; its weights are MatMuls that
    int8-dynamic quantizes."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 64)).astype(np.float32) / 8
    w2 = rng.standard_normal((64, 1)).astype(np.float32) / 8
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["score"])], "score",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    path = tmp_path_factory.mktemp("score") / "score.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def test_a_batch_by_one_output_100x_too_large_fails_on_the_scale_criterion(score_model, tmp_path, cache_dir):
    """softmax over one value is 1 whatever the value: KL is 0 and top-1 is 1 for any scale, and cosine ignores
    scale; the relative RMS error sees it."""
    clean = quantize_int8_dynamic(score_model, cache_dir=cache_dir).path
    broken = _scale_output(clean, 100.0, tmp_path / "x100.onnx")
    feeds = {"x": np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)}
    expected = Expected(_run(score_model, feeds))
    good = judge_quantized(_run(clean, feeds), expected, INT8, _Reference(None))
    bad = judge_quantized(_run(broken, feeds), expected, INT8, _Reference(None))
    assert good.verdict == "pass", good.failures
    assert good.agreement.kind == OTHER and good.agreement.top1_agree is None and good.agreement.kl_mean is None
    assert bad.verdict == "FAIL" and bad.agreement.cosine >= INT8_DYNAMIC_THRESHOLDS.min_cosine  # blind to scale
    np.testing.assert_allclose(bad.agreement.rel_rms_err, 99.0, rtol=0.05)
    assert bad.failures == (f"score: rel_rms_err {bad.agreement.rel_rms_err:.4g} > {LIMIT:g}",)
    assert bad.reason() == f"FAIL: {bad.failures[0]}"
    assert bad.criteria == f"score (other): cosine >= 0.99, rel_rms_err <= {LIMIT:g}"
    columns, check = bad.parts()
    assert columns.rel_rms_err == bad.agreement.rel_rms_err and columns.kl_mean is None
    assert check.criteria == bad.criteria and check.verdict == "FAIL"


def test_hidden_states_are_not_judged_by_top1_or_kl_over_channels():
    """Nearly equal channels: the argmax over d_model flips with any error, yet the output is within 1%."""
    rng = np.random.default_rng(0)
    hidden = (1.0 + 1e-3 * rng.standard_normal((2, 8, 64))).astype(np.float32)
    noisy = (hidden + 1e-2 * rng.standard_normal(hidden.shape)).astype(np.float32)
    as_logits = check_quantized(noisy, hidden, kind=VOCAB_LOGITS)
    assert as_logits.top1_agree < INT8_DYNAMIC_THRESHOLDS.min_top1 and not as_logits.agree  # the old criteria
    verdict = judge_quantized({"last_hidden_state": noisy}, Expected({"last_hidden_state": hidden}), INT8,
                              _Reference(512))
    assert verdict.verdict == "pass" and verdict.agreement.kind == OTHER, verdict.failures
    assert verdict.agreement.rel_rms_err < 0.02


def test_one_block_attention_output_with_a_wrong_weight_scale_fails_only_on_rel_rms(tmp_path, cache_dir):
    """The tiny preset's attention part quantized; v_proj's weight scale x2 doubles the output exactly (attention
    is linear in V), so cosine stays at the clean value and only the relative RMS error fails it."""
    config = get_preset("tiny")
    art = to_onnx(config, seed=0, cache_dir=cache_dir, model_name="tiny", part="attention")
    clean = quantize_int8_dynamic(art, cache_dir=cache_dir)
    fp32 = onnx.load(str(art.path))
    initializers = {i.name for i in fp32.graph.initializer}
    (weight,) = [n.input[1] for n in fp32.graph.node if n.op_type == "MatMul" and n.input[1] in initializers
                 and "v_proj" in module_scopes(n)]
    model = onnx.load(str(clean.path))
    scale = next(i for i in model.graph.initializer if i.name == f"{weight}_scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2.0, scale.name))
    broken = tmp_path / "v_scale_x2.onnx"
    onnx.save(model, str(broken))
    feeds = {"hidden_states": np.random.default_rng(0).standard_normal((2, 16, config.d_model)).astype(np.float32)}
    expected = Expected(_run(art.path, feeds))
    good = judge_quantized(_run(clean.path, feeds), expected, INT8, _Reference(config.vocab_size))
    bad = judge_quantized(_run(broken, feeds), expected, INT8, _Reference(config.vocab_size))
    assert good.verdict == "pass" and good.agreement.rel_rms_err < LIMIT / 2, good.failures
    assert bad.verdict == "FAIL" and [f.split()[1] for f in bad.failures] == ["rel_rms_err"], bad.failures
    np.testing.assert_allclose(bad.agreement.cosine, good.agreement.cosine, atol=1e-3)
    np.testing.assert_allclose(bad.agreement.rel_rms_err, 1.0, atol=0.1)


def test_a_preset_int8_row_names_the_criteria_of_vocabulary_logits(tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], precisions=[INT8], runtimes=["ort-cpu"], batches=[2], seq_lens=[16],
                      timing=FAST)
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=False).rows
    assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
    assert row["criteria"] == ("logits (vocabulary logits): cosine >= 0.99, top1_agree >= 0.7, kl_mean <= 0.01, "
                               f"kl_max <= 0.1, rel_rms_err <= {LIMIT:g}")
    assert 0 < row["rel_rms_err"] < LIMIT and row["kl_mean"] is not None


def test_an_int8_file_with_a_batch_by_one_output_is_judged_as_other(score_model, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], precisions=[INT8], runtimes=["ort-cpu"], batches=[4], seq_lens=[1], timing=FAST,
                      onnx=OnnxFiles(files=[str(score_model)]))
    rows = {r["precision"]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False,
                                                   ceilings=False).rows}
    row = rows[INT8]
    assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
    assert row["criteria"] == f"score (other): cosine >= 0.99, rel_rms_err <= {LIMIT:g}"
    assert rows["fp32"]["criteria"].startswith("score: allclose atol=0.001 rtol=0.001, no NaN/Inf, cosine >= ")
    assert row["top1_agree"] is None and row["kl_mean"] is None and 0 < row["rel_rms_err"] < LIMIT
