"""Matrix files (TOML), CLI overrides, and which combinations are errors vs skipped rows."""

import json
from pathlib import Path

import pytest

from onnxbench.benchmarks import MatrixSpec, default_matrix
from onnxbench.benchmarks.plan.matrix import load_matrix
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.schema import KEY_COLUMNS
from tests.cli_run import run_cli

EXAMPLE = Path(__file__).parents[3] / "examples" / "matrix.toml"


def test_the_shipped_example_loads_and_expands():
    spec = load_matrix(EXAMPLE)
    spec.validate()
    assert spec.models == ["tiny", "gpt2-small"] and spec.attention == ["decomposed", "sdpa"]
    assert spec.timing.min_time_s == 1.0 and spec.shape_axes("gpt2-small") == ([1], [32, 128, 256])
    assert spec.noise_limit == 0.10
    matrix = spec.build()
    cells = matrix.cells
    # tiny: 2 variants x 2 runtimes x 2 batches x 2 seq_lens; gpt2-small: 2 x 2 x 1 x 3
    assert len(cells) == 16 + 12 and cells == spec.expand()
    assert not [c for c in cells if matrix.unrunnable_reason(c)]


def test_the_shipped_example_narrowed_to_tiny_is_valid():
    """README: `onnxbench run --matrix examples/matrix.toml --models tiny` must not fail on tiny's limits."""
    spec = load_matrix(EXAMPLE)
    spec.models = ["tiny"]
    spec.validate()
    assert {c.seq_len for c in spec.expand()} == {32, 128}


def test_a_single_value_for_a_list_key_is_a_one_element_list(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('models = "tiny"\nruntimes = "ort-cpu"\nbatches = 4\nseq_lens = 16\nopsets = 18\n')
    spec = load_matrix(path)
    assert (spec.models, spec.runtimes, spec.batches, spec.seq_lens, spec.opsets) == (
        ["tiny"], ["ort-cpu"], [4], [16], [18])
    spec.validate()


def test_a_files_batches_outrank_the_default_per_model_shapes(tmp_path):
    """The embedded default runs gpt2-small at B = 1 only; a file asking for B = 4096 gets B = 4096, unless its
    own [shapes] table says otherwise."""
    path = tmp_path / "m.toml"
    path.write_text('models = ["gpt2-small"]\nbatches = [4096]\nseq_lens = [1024]\n')
    assert default_matrix().shape_axes("gpt2-small")[0] == [1]
    assert load_matrix(path).shape_axes("gpt2-small") == ([4096], [1024])
    path.write_text('models = ["gpt2-small", "tiny"]\nbatches = [4]\n[shapes.gpt2-small]\nbatches = [2]\n')
    spec = load_matrix(path)
    assert spec.shape_axes("gpt2-small")[0] == [2] and spec.shape_axes("tiny")[0] == [4]


def test_the_old_cov_warn_key_still_sets_the_noise_limit(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("cov_warn = 0.2\n")
    assert load_matrix(path).noise_limit == 0.2


def test_keys_left_out_keep_the_defaults(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('models = ["tiny"]\n[timing]\nmin_iters = 7\n')
    spec = load_matrix(path)
    default = default_matrix()
    assert spec.models == ["tiny"] and spec.timing.min_iters == 7
    assert spec.runtimes == default.runtimes and spec.timing.warmup_iters == default.timing.warmup_iters


@pytest.mark.parametrize(
    "text, message",
    [
        ("modles = ['tiny']", "unknown matrix keys ['modles']"),
        ("[timing]\nmin_itres = 3", "unknown [timing] keys ['min_itres']"),
        ("models = ['tiny'", "is not valid TOML"),
    ],
)
def test_bad_matrix_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_matrix(path)
    assert str(path) in str(info.value)


def test_a_seq_len_no_model_accepts_is_an_error_but_one_some_accept_is_a_skipped_cell():
    with pytest.raises(ValueError, match="exceed tiny's max_positions=128"):
        MatrixSpec(models=["tiny"], seq_lens=[256]).validate()
    spec = MatrixSpec(models=["tiny", "small"], seq_lens=[256], batches=[1], runtimes=["ort-cpu"])
    matrix = spec.build()
    reasons = {c.model: matrix.unrunnable_reason(c) for c in matrix.cells}
    assert reasons["small"] is None and "max_positions=128" in reasons["tiny"]


def test_round_trip_through_a_run_header():
    spec = load_matrix(EXAMPLE)
    again = MatrixSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and [c.cell_id for c in again.expand()] == [c.cell_id for c in spec.expand()]


def test_cli_runs_a_matrix_file_with_flag_overrides_and_lists_cells_it_cannot_run(tmp_path, cache_dir):
    path = tmp_path / "m.toml"
    path.write_text('models = ["tiny", "small"]\nruntimes = ["ort-cpu"]\nbatches = [1, 2]\nseq_lens = [200]\n'
                    'attention = ["decomposed", "sdpa"]\n'
                    'exporter = "torchscript"\n[timing]\nmin_time_s = 0.02\nmin_iters = 3\n')
    out = tmp_path / "run"
    proc = run_cli("run", "--matrix", str(path), "--batches", "1", "--out", str(out), "--no-report",
                   "--no-ceilings", "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # two tiny cells (one per attention variant) cannot run: a line each, named by the axis they differ in
    for attention in ("decomposed", "sdpa"):
        line = f"cannot run, will be a skipped row: tiny {attention} ort-cpu b1 t200"
        assert proc.stderr.count(line) == 1, proc.stderr
    by_model = {}
    for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()):
        by_model.setdefault(r["model"], []).append(r)
    assert sorted(r["attention"] for r in by_model["tiny"]) == ["decomposed", "sdpa"]
    rows = {model: rs[0] for model, rs in by_model.items()}
    assert set(rows) == {"tiny", "small"}  # --batches 1 overrode the file's [1, 2]
    assert rows["tiny"]["status"] == "skipped" and "max_positions=128" in rows["tiny"]["reason"]
    assert rows["small"]["status"] == "ok" and rows["small"]["seq_len"] == 200
    header = json.loads((out / "header.json").read_text())
    assert header["matrix"]["batches"] == [1] and header["matrix"]["exporter"] == "torchscript"
    assert all(rows["tiny"][k] is not None for k in KEY_COLUMNS)


def test_each_model_kind_is_one_source_and_model_names_are_unique(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1, 2], seq_lens=[8],
                      attention=["decomposed", "sdpa"], precisions=["fp32", "fp16"], onnx=OnnxFiles(files=[str(path)]))
    matrix = spec.build()
    assert [type(s).__name__ for s in matrix.sources.values()] == ["PresetSource", "OnnxFileSource"]
    relu = [c for c in matrix.cells if c.model == "relu"]
    # an ONNX file is run as it is: no attention/precision/opset axes; its batch axis takes the matrix's sizes
    assert [(c.attention, c.precision, c.opset, c.batch, c.seq_len) for c in relu] == [
        ("external", "fp16", 17, 1, 1), ("external", "fp16", 17, 2, 1)]
    assert matrix.sources["relu"].reference_runtime == "ort-cpu" and matrix.sources["tiny"].reference_runtime == "torch"
    assert len([c for c in matrix.cells if c.model == "tiny"]) == 2 * 2 * 2 * 1
    clash = tmp_path / "tiny.onnx"
    clash.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"share the model name 'tiny'; rename one of them"):
        MatrixSpec(models=["tiny"], onnx=OnnxFiles(files=[str(clash)])).validate()


@pytest.mark.parametrize("fields, message", [
    ({"exporter": "bogus"}, "unknown exporter 'bogus'; known: dynamo, torchscript"),
    ({"batches": [0, 2]}, "tiny: batch sizes [0] must be >= 1 (--batches"),
    ({"seq_lens": [8, -1]}, "tiny: sequence lengths [-1] must be >= 1"),
])
def test_a_bad_axis_value_is_refused_naming_itself_and_where_it_came_from(fields, message):
    from onnxbench.errors import MatrixError

    with pytest.raises(MatrixError) as raised:
        MatrixSpec(**{"models": ["tiny"], "runtimes": ["ort-cpu"], **fields}).build()
    assert message in str(raised.value)


def test_a_bad_timing_value_names_the_flag_and_the_value():
    from onnxbench.benchmarks.measure.timing import TimingConfig

    with pytest.raises(ValueError, match=r"min_time_s \(--min-time\) = -1"):
        TimingConfig(min_time_s=-1)
