"""The "cannot run" lines `onnxbench run` prints before it starts: one per cell, each told apart from the others
by the key columns that vary over the listed cells."""

from onnxbench.benchmarks.cells import Cell
from onnxbench.cli.run import unrunnable_lines

WHY = "ort-cpu has no int8 kernel for this graph"


def _cell(**kw):
    return Cell(**{"model": "ck-llama", "attention": "decomposed", "precision": "int8-dynamic", "opset": 18,
                   "runtime": "ort-cpu", "batch": 1, "seq_len": 8, **kw})


def test_cells_differing_in_attention_path_and_scenario_get_a_line_each():
    cells = [_cell(attention=a, export_path=p, scenario=s, new_tokens=n, part=part)
             for a, p in (("decomposed", "onnxbench"), ("sdpa", "onnxbench"), ("external", "optimum"))
             for s, n, part in (("prefill", 0, "model"), ("generate", 4, "decoder-with-past"))]
    lines = unrunnable_lines([(c, WHY) for c in cells] + [(_cell(runtime="torch"), None)])
    assert len(lines) == len(cells) == len(set(lines))
    assert lines[0] == ("  cannot run, will be a skipped row: ck-llama model decomposed onnxbench ort-cpu b1 t8 "
                        f"prefill new tokens 0: {WHY}")
    assert "ck-llama decoder-with-past external optimum ort-cpu b1 t8 generate new tokens 4:" in lines[-1]


def test_a_cell_alone_is_named_by_model_runtime_and_shape():
    assert unrunnable_lines([(_cell(), WHY)]) == [f"  cannot run, will be a skipped row: ck-llama ort-cpu b1 t8: {WHY}"]
