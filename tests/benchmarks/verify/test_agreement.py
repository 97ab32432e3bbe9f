"""Agreement semantics: NaN/Inf positions, the required atol, the noise-floor check, the float64 evaluation of a
foreign graph, and rows that would compare the reference with itself (docs/agreement.md)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.rows import ReferenceCheck, assemble
from onnxbench.benchmarks.run.messages import CellFinished, Group
from onnxbench.benchmarks.run.worker import measure_group
from onnxbench.benchmarks.verify.agreement import Tolerance, check, required_atol
from onnxbench.benchmarks.verify.fp64 import float64_copy, noise_floor, onnx_float64
from onnxbench.benchmarks.verify.reference import OnnxFileReference, TorchFloat64Reference
from onnxbench.export import read_artifact
from onnxbench.runtimes import RuntimeOptions

IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default
FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)
FP32 = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.99999, floor_factor=10.0)


def _logits(seed=0, shape=(2, 5, 50)):
    return np.random.default_rng(seed).standard_normal(shape) * 3


def test_nan_and_inf_at_the_same_positions_compare_equal_and_are_counted():
    ref = _logits()
    ref[0, 0, :3] = [np.nan, np.inf, -np.inf]
    y = ref + 1e-5
    result = check(y, ref, FP32)
    assert result.agree and result.nonfinite_matched == 3 and result.nan_count == 3 and result.ref_nonfinite == 3
    assert result.max_abs_err == pytest.approx(1e-5) and result.cosine == pytest.approx(1.0)
    y[0, 0, 1] = -np.inf  # the opposite infinity is not the same value
    assert check(y, ref, FP32).nonfinite_matched == 2


def test_nan_in_the_output_where_the_reference_is_finite_fails():
    ref = _logits()
    y = ref.copy()
    y[1, 2, 3] = np.nan
    result = check(y, ref, Tolerance(atol=1e9, rtol=1e9, min_cosine=-1))
    assert not result.agree and result.nan_count == 1 and result.required_atol == np.inf
    assert result.cosine == pytest.approx(1.0)  # over the finite positions only


def test_a_non_finite_reference_is_reported_and_not_a_failure_of_the_runtime():
    ref = _logits()
    ref[1, :, 7] = np.nan  # e.g. Sqrt of a negative input in the reference alone
    y = np.nan_to_num(ref, nan=123.0)
    result = check(y, ref, FP32)
    assert result.agree and result.ref_nonfinite == 5 and result.nonfinite_matched == 0 and result.nan_count == 0
    assert result.max_abs_err == 0.0 and result.top1_agree == pytest.approx(1.0)


def test_required_atol_is_the_smallest_atol_that_passes_at_the_rtol():
    ref = _logits()
    y = ref + np.random.default_rng(1).uniform(-1e-3, 1e-3, ref.shape)
    need = required_atol(y, ref, rtol=1e-4)
    assert need == pytest.approx(np.max(np.abs(y - ref) - 1e-4 * np.abs(ref)))
    assert check(y, ref, Tolerance(atol=need * 1.0001, rtol=1e-4, min_cosine=0)).agree
    assert not check(y, ref, Tolerance(atol=need * 0.99, rtol=1e-4, min_cosine=0)).agree
    assert check(y, ref, Tolerance(atol=1, rtol=1e-4)).required_atol == pytest.approx(need)
    assert required_atol(ref, ref, rtol=0.0) == 0.0


def test_the_floor_check_fails_an_error_far_above_the_floor_inside_the_absolute_band():
    y64 = _logits()
    floor = 1e-6
    drift = np.zeros_like(y64)
    drift[0, 1, 2] = 50 * floor  # 5e-5: well inside atol = 1e-3
    close = check(y64 + drift / 25, y64, FP32, fp64=(y64, floor))
    far = check(y64 + drift, y64, FP32, fp64=(y64, floor))
    assert close.agree and close.floor.floor_ratio == pytest.approx(2.0)
    assert not far.agree and far.floor.floor_ratio == pytest.approx(50.0) and far.required_atol < FP32.atol
    columns = ReferenceCheck.of(far, "FAIL", "torch float64")
    assert columns.err_fp64 == pytest.approx(5e-5) and columns.floor_factor == 10.0 and columns.noise_floor == floor
    assert ReferenceCheck.of(check(y64, y64, FP32), "pass", "x").floor_ratio is None  # no float64: no floor


def test_noise_floor_is_never_below_the_unit_roundoff_of_the_largest_value():
    y64 = np.array([1.0, -4.0, 2.0])
    assert noise_floor(y64.astype(np.float32), y64, "fp32") == pytest.approx(4.0 * 2.0**-24)
    assert noise_floor(y64 + 1e-3, y64, "fp16") == pytest.approx(2.0**-11 * 4.0)
    assert noise_floor(y64 + 1e-2, y64, "fp16") == pytest.approx(1e-2)


def _model(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    onnx.save(model, str(path))
    return model


def test_float64_copy_evaluates_the_graph_in_double(tmp_path):
    # y = Cast<float>(x) * w + c, with an fp16 initializer and a value_float Constant: all must become double
    w = np.full((4,), 1 / 3, dtype=np.float16)
    model = _model(tmp_path / "m.onnx", [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["xf", "w"], ["xw"]),
        helper.make_node("Constant", [], ["c"], value_float=0.1),
        helper.make_node("Cast", ["xw"], ["xw32"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["xw32", "c"], ["y"]),
    ], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [numpy_helper.from_array(w, "w")])
    double = float64_copy(model)
    assert double.graph.output[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert all(t.data_type == TensorProto.DOUBLE for t in double.graph.initializer)
    x = np.array([1.0, 2.0, 3.0, 1e-3], dtype=np.float32)
    y = onnx_float64(model, {"x": x})["y"]
    assert y.dtype == np.float64
    # the graph's constants keep their stored values (0.1 was stored as a float32); the arithmetic is double
    np.testing.assert_array_equal(y, x.astype(np.float64) * np.float64(w[0]) + np.float64(np.float32(0.1)))


def test_float64_evaluation_refuses_unknown_domains(tmp_path):
    node = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)], ir_version=IR_VERSION)
    with pytest.raises(ValueError, match="com.microsoft"):
        onnx_float64(model, {"x": np.ones(2, np.float32)})


@pytest.fixture(scope="module")
def sqrt_onnx(tmp_path_factory):
    """sqrt(x) * 3 for x ~ N(0, 1): NaN wherever x < 0, in the reference and in every runtime alike."""
    path = tmp_path_factory.mktemp("sqrt") / "sqrt.onnx"
    _model(path, [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Mul", ["s", "three"], ["y"])],
           [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
           [numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    return path


def test_user_model_with_nan_in_its_reference_passes_with_the_nan_counted(sqrt_onnx, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[3], seq_lens=[1], timing=FAST,
                      onnx=OnnxFiles(files=[str(sqrt_onnx)]))
    rows = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["verdict"] == "pass" and row["agree"] is True, row
    assert row["nan_count"] == row["ref_nonfinite"] == row["nonfinite_matched"] > 0
    assert row["cosine"] == pytest.approx(1.0)
    assert row["reference_runtime"] == "ort-cpu"
    assert row["reference_config"] == "ort-cpu graph_optimization_level=disable"
    # the graph is small: the float64 evaluation gives it a noise floor
    assert row["noise_floor"] > 0 and row["floor_ratio"] <= row["floor_factor"]
    assert "NaN/Inf values" in row["reason"]


def test_the_reference_configuration_on_its_own_runtime_is_a_reference_row_not_a_pass(sqrt_onnx, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[3], seq_lens=[1], timing=FAST,
                      onnx=OnnxFiles(files=[str(sqrt_onnx)]))
    matrix = spec.build()
    (cell,) = matrix.cells
    source = matrix.source(cell)
    rows = {}
    for level in ("disable", "all"):
        group = Group(source, source.artifact(cell), (cell,), spec,
                      RuntimeOptions(extra={"graph_optimization_level": level}), cache_dir=cache_dir)
        (finished,) = [m for m in measure_group(group) if isinstance(m, CellFinished)]
        rows[level] = assemble(*finished.measurement.parts())
    assert rows["disable"]["verdict"] == "reference" and rows["disable"]["agree"] is None
    assert rows["disable"]["max_abs_err"] == 0.0
    assert rows["all"]["verdict"] == "pass" and rows["all"]["agree"] is True


def test_references_know_their_own_configuration(tiny_artifact, sqrt_onnx):
    torch_ref = TorchFloat64Reference.of_artifact(tiny_artifact)
    assert not torch_ref.is_self("torch", {"dtype": "float32", "threads": 2})
    assert torch_ref.is_self("torch", {"dtype": "float64"}) and not torch_ref.is_self("ort-cpu", {"dtype": "float64"})
    ort_ref = OnnxFileReference(read_artifact(sqrt_onnx))
    assert ort_ref.is_self("ort-cpu", {"graph_optimization_level": "disable", "execution_mode": "sequential"})
    assert not ort_ref.is_self("ort-cpu", {"graph_optimization_level": "all"})
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)}
    ort_ref.expected(feeds, "fp32")
    assert ort_ref._session.options["graph_optimization_level"] == "disable"  # what really ran
    ort_ref.close()


def test_float64_reference_is_cached_on_disk_by_weights_and_inputs(tiny_artifact, tmp_path):
    cache_dir = tmp_path  # a cache of its own: another test may have cached the float64 reference of these inputs
    reference = TorchFloat64Reference.of_artifact(tiny_artifact, cache_dir)
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 512, (2, 8))}
    first = reference.expected(feeds, "fp32")
    files = sorted((cache_dir / "reference64").glob("*.npz"))
    assert files and first.fp64["logits"][0].dtype == np.float64 and len(first.fp64_blocks) == 2
    again = TorchFloat64Reference.of_artifact(tiny_artifact, cache_dir).expected(feeds, "fp32")
    assert sorted((cache_dir / "reference64").glob("*.npz")) == files
    np.testing.assert_array_equal(again.outputs["logits"], first.outputs["logits"])
    other = {"input_ids": feeds["input_ids"][:1]}
    TorchFloat64Reference.of_artifact(tiny_artifact, cache_dir).expected(other, "fp32")
    assert len(list((cache_dir / "reference64").glob("*.npz"))) == len(files) + 1
    # fp32 torch against float64: a real, nonzero error at the fp32 noise level
    err, floor = np.max(np.abs(first.outputs["logits"] - reference.torch.at_precision(feeds, "fp32")
                               .outputs["logits"])), first.fp64["logits"][1]
    assert 0 < err < 1e-5 and err == pytest.approx(floor)
