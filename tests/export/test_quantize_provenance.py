"""The int8 artifact's provenance (``onnxbench.quantization`` metadata, ``preprocess``) lists the preprocessing
steps that ran, not the ones attempted: ONNX Runtime's ``quant_pre_process`` logs a failed optimization step and
goes on, and the metadata says it failed (and ORT's traceback is not printed on the console)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxbench.export.quantize import quantize_int8_dynamic


def _preprocess_steps(artifact) -> list[str]:
    meta = {p.key: p.value for p in onnx.load(str(artifact.path), load_external_data=False).metadata_props}
    return json.loads(meta["onnxbench.quantization"])["preprocess"]


def test_a_failed_optimization_step_is_recorded_as_failed(tmp_path, capfd):
    # a MatMul with a constant weight (quantizable), then an operator of a domain ONNX Runtime has no kernel for:
    # its session (the optimization step) cannot be created, symbolic shape inference cannot pass it either
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Foo", ["h"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)],
                              ir_version=10)
    onnx.save(model, str(tmp_path / "custom.onnx"))
    steps = _preprocess_steps(quantize_int8_dynamic(tmp_path / "custom.onnx", cache_dir=tmp_path / "cache"))
    assert "ort_basic_optimization" not in steps, steps
    failed = [s for s in steps if s.startswith("ort_basic_optimization failed")]
    assert failed and "com.example:Foo" in failed[0], steps
    assert "onnx_shape_inference" in steps
    assert "Traceback" not in capfd.readouterr().err


def test_steps_that_ran_are_listed_as_they_are(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
              str(tmp_path / "plain.onnx"))
    steps = _preprocess_steps(quantize_int8_dynamic(tmp_path / "plain.onnx", cache_dir=tmp_path / "cache"))
    assert steps == ["symbolic_shape_inference", "ort_basic_optimization", "onnx_shape_inference"]
