"""Small ONNX graphs built in the tests (no download): identity graphs with chosen input names, element types and
shapes."""

from __future__ import annotations

import onnx
from onnx import helper

# onnx 1.23 writes IR version 14 by default, newer than onnxruntime 1.31 reads (13)
IR_VERSION = 10


def identity_model(path, inputs, opset=18):
    """A graph whose outputs are its inputs (through Identity), one per (name, elem_type, shape); returns ``path``."""
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs]
    graph = helper.make_graph(
        nodes, "identity",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.save(model, str(path))
    return path
