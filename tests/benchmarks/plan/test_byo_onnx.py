
"""Bring your own ONNX: a model built by other code (transformers BERT), inputs generated from its graph,
run through `onnxbench run --onnx` with ORT CPU as the reference; and the errors for models it cannot feed."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.plan.sources.onnx_file import inspect_onnx, shape_axes
from onnxbench.export import TensorSpec

# onnx 1.23 writes IR version 14 by default, newer than onnxruntime 1.31 reads (13)
IR_VERSION = 10
CLI = [sys.executable, "-m", "onnxbench.cli"]


def run_cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"}, **kw)


def _identity_model(path, inputs, opset=18):
    """A graph whose outputs are its inputs (through Identity), one per (name, elem_type, shape)."""
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs]
    graph = helper.make_graph(
        nodes, "identity",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.save(model, str(path))
    return path


def test_bert_runs_through_onnxbench_run_onnx(bert_onnx, tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = run_cli("run", "--onnx", str(bert_onnx), "--runtimes", "torch,ort-cpu", "--dim", "batch=2",
                   "--seq-lens", "8,16", "--int-range", "input_ids=0:100", "--min-time", "0.05",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert {r["model"] for r in rows} == {"tiny-bert"}
    assert {(r["batch"], r["seq_len"]) for r in rows} == {(2, 8), (2, 16)}
    assert all(r["reference_runtime"] == "ort-cpu" and r["attention"] == "external" for r in rows)
    torch_rows = [r for r in rows if r["runtime"] == "torch"]
    assert all(r["status"] == "skipped" and "ort-cpu as the reference" in r["reason"] for r in torch_rows)
    ort_rows = [r for r in rows if r["runtime"] == "ort-cpu"]
    assert all(r["status"] == "ok" and r["agree"] and r["latency_ms_p50"] > 0 for r in ort_rows), ort_rows
    assert all(r["opset"] == 17 and r["n_params"] > 20_000 for r in ort_rows)
    # compared with ORT CPU without graph optimizations, not with the same optimized session
    assert all(r["verdict"] == "pass" and r["reference_config"] == "ort-cpu graph_optimization_level=disable"
               for r in ort_rows)
    # onnx's reference evaluator cannot run this graph (its GatherElements fails on the position ids, in fp32
    # too): no noise floor, and the row says why
    assert all(r["floor_ratio"] is None and "no noise floor" in r["reason"] for r in ort_rows)
    report = (out / "report.md").read_text()
    assert "tiny-bert" in report


def test_unbound_dim_string_input_and_broken_file_get_clear_errors(tmp_path):
    dyn = _identity_model(tmp_path / "dyn.onnx", [("x", TensorProto.FLOAT, ["batch", "features"])])
    proc = run_cli("run", "--onnx", str(dyn), "--runtimes", "ort-cpu", "--out", str(tmp_path / "r1"))
    assert proc.returncode == 2 and "--dim features=SIZE" in proc.stderr, proc.stdout + proc.stderr
    strings = _identity_model(tmp_path / "strings.onnx", [("s", TensorProto.STRING, [2])])
    proc = run_cli("run", "--onnx", str(strings), "--runtimes", "ort-cpu", "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2 and "string tensor" in proc.stderr
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not protobuf \xff\xfe")
    proc = run_cli("run", "--onnx", str(broken), "--runtimes", "ort-cpu", "--out", str(tmp_path / "r3"))
    assert proc.returncode == 2 and "not a loadable ONNX model" in proc.stderr
    for p in (proc,):
        assert "Traceback" not in p.stdout + p.stderr


def test_reference_model_that_does_not_fit_is_one_clear_error(tmp_path):
    floats = _identity_model(tmp_path / "floats.onnx", [("x", TensorProto.FLOAT, ["batch", 4])])
    ids = _identity_model(tmp_path / "ids.onnx", [("input_ids", TensorProto.INT64, ["batch", "sequence"])])
    cases = [
        (["--onnx", str(floats), "--reference-model", "tiny"], "inputs ['x'] do not fit"),
        (["--onnx", str(ids), "--reference-model", "tiny"], "no output named 'logits'"),
        (["--onnx", str(ids), "--reference-model", "no-such-model"], "neither a preset"),
        (["--reference-model", "tiny"], "applies to --onnx files"),
        (["--onnx", str(ids), "--onnx", str(floats), "--reference-model", "tiny", "--reference-model", "tiny",
          "--reference-model", "tiny"], "3 --reference-model values for 2 --onnx files"),
    ]
    for args, message in cases:
        out = tmp_path / "run"
        proc = run_cli("run", *args, "--runtimes", "ort-cpu", "--out", str(out))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr and not (out / "results.jsonl").exists()


def test_model_that_onnxruntime_cannot_load_becomes_failed_rows(tmp_path):
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)],
                              ir_version=IR_VERSION)
    onnx.save(model, str(tmp_path / "custom.onnx"))
    out = tmp_path / "run"
    proc = run_cli("run", "--onnx", str(tmp_path / "custom.onnx"), "--runtimes", "ort-cpu", "--out", str(out))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # nothing was measured: the exit status says so
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "failed" and "NoSuchOp" in rows[0]["reason"]


def test_sequence_input_is_refused(tmp_path):
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("SequenceLength", ["xs"], ["n"])], "g", [seq],
                              [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    onnx.save(model, str(tmp_path / "seq.onnx"))
    with pytest.raises(ValueError, match="'xs' is a sequence_type"):
        inspect_onnx(tmp_path / "seq.onnx")


def test_make_feeds_covers_dtypes_dims_and_ranges():
    specs = (
        TensorSpec("input_ids", "int32", ("batch", "sequence")),
        TensorSpec("attention_mask", "int64", ("batch", "sequence")),
        TensorSpec("pixels", "uint8", (3, "height", 4)),
        TensorSpec("scale", "float16", ("batch",)),
        TensorSpec("bias", "float64", (2,)),
        TensorSpec("flag", "bool", ()),
    )
    feeds = make_feeds(specs, 3, 7, seed=1, dims={"height": 5}, int_ranges={"input_ids": (10, 20)})
    assert feeds["input_ids"].shape == (3, 7) and feeds["input_ids"].dtype == np.int32
    assert feeds["input_ids"].min() >= 10 and feeds["input_ids"].max() < 20
    assert (feeds["attention_mask"] == 1).all()  # masks default to "attend everywhere"
    assert feeds["pixels"].shape == (3, 5, 4) and feeds["pixels"].dtype == np.uint8
    assert feeds["scale"].dtype == np.float16 and feeds["bias"].dtype == np.float64
    assert feeds["flag"].shape == () and feeds["flag"].dtype == np.bool_
    again = make_feeds(specs, 3, 7, seed=1, dims={"height": 5}, int_ranges={"input_ids": (10, 20)})
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    wide = make_feeds(specs[:1], 2, 64, seed=1, int_ranges={"*": (0, 30522)})
    assert wide["input_ids"].max() > 20
    # an explicit --dim wins over the batch rule
    assert make_feeds(specs[:1], 3, 7, dims={"batch": 5})["input_ids"].shape == (5, 7)


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        (TensorSpec("x", "float32", ("foo",)), {}, "--dim foo=SIZE"),
        (TensorSpec("x", "float32", (0, 4)), {}, "--dim x.0=SIZE"),
        (TensorSpec("ids", "int64", ("batch",)), {"int_ranges": {"ids": (5, 5)}}, "empty integer range"),
        (TensorSpec("ids", "uint8", ("batch",)), {"int_ranges": {"ids": (0, 1000)}}, "outside uint8"),
        (TensorSpec("x", "float32", ("batch",)), {"dims": {"batch": -1}}, "must be >= 0"),
    ],
)
def test_make_feeds_errors_name_the_fix(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_feeds((spec,), 1, 1, **kwargs)


def test_unnamed_dynamic_axis_is_bound_by_input_and_index():
    feeds = make_feeds((TensorSpec("x", "float32", (0, 4)),), 1, 1, dims={"x.0": 3})
    assert feeds["x"].shape == (3, 4)


def test_shape_axes_bind_batch_and_sequence(tmp_path):
    path = _identity_model(tmp_path / "m.onnx", [("ids", TensorProto.INT64, ["batch_size", "sequence_length"])])
    artifact, _ = inspect_onnx(path)
    assert shape_axes(artifact, [1, 4], [8, 16], {}) == ([1, 4], [8, 16])
    assert shape_axes(artifact, [1, 4], [8, 16], {"batch_size": 2}) == ([2], [8, 16])
    static = _identity_model(tmp_path / "s.onnx", [("x", TensorProto.FLOAT, [2, 3])])
    assert shape_axes(inspect_onnx(static)[0], [1, 4], [8], {}) == ([1], [1])


def test_input_of_unknown_rank_is_refused_until_shape_gives_it(tmp_path):
    path = _identity_model(tmp_path / "unranked.onnx", [("x", TensorProto.FLOAT, None)])
    out = tmp_path / "refused"
    proc = run_cli("run", "--onnx", str(path), "--runtimes", "ort-cpu", "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown rank" in proc.stderr and "--shape x=" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    out = tmp_path / "run"
    proc = run_cli("run", "--onnx", str(path), "--runtimes", "ort-cpu", "--shape", "x=batch,3", "--batches", "2",
                   "--min-time", "0.02", "--min-iters", "3", "--no-ceilings", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["status"], r["batch"]) for r in rows] == [("ok", 2)]


def test_input_shapes_matrix_key_shapes_the_feeds(tmp_path):
    from onnxbench.benchmarks.plan.matrix import load_matrix

    path = _identity_model(tmp_path / "unranked.onnx", [("x", TensorProto.FLOAT, None)])
    toml = tmp_path / "m.toml"
    toml.write_text(f'onnx_models = ["{path}"]\nmodels = []\nruntimes = ["ort-cpu"]\nbatches = [4]\n'
                    'input_shapes = {{ x = ["batch", 5, 2] }}\n'.replace("{{", "{").replace("}}", "}"))
    built = load_matrix(toml).build()
    source = built.sources["unranked"]
    assert [c.batch for c in built.cells] == [4]
    assert source.feeds(source.model.inputs, 4, 1)["x"].shape == (4, 5, 2)
    bad = tmp_path / "bad.toml"
    bad.write_text(toml.read_text().replace('"batch", 5, 2', "0, 5"))
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        load_matrix(bad).build()


def _past_model(tmp_path):
    return _identity_model(tmp_path / "past.onnx", [("ids", TensorProto.INT64, ["batch", "sequence"]),
                                                    ("past", TensorProto.FLOAT, ["batch", "past_sequence_length", 4]),
                                                    ("extra", TensorProto.FLOAT, [None, 2])])


@pytest.mark.parametrize("past, want", [(3, ((1, 3, 4), (2, 3, 4), (2, 3, 4))),
                                        ([1, 3, 8], ((1, 1, 4), (2, 3, 4), (2, 8, 4)))])
def test_every_dim_bound_axis_gets_an_optimization_profile_range(tmp_path, past, want):
    from onnxbench.benchmarks.plan.matrix import MatrixSpec
    from onnxbench.benchmarks.run.worker import session_ranges
    from onnxbench.runtimes.trt_profiles import input_profile, trt_shape_strings

    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1, 2], seq_lens=[8],
                      onnx=OnnxFiles(files=[str(_past_model(tmp_path))], dims={"past_sequence_length": past,
                                                                               "extra.0": 5}))
    built = spec.build()
    source = built.sources["past"]
    profile = input_profile(source.model.inputs, session_ranges(built.cells, source))
    assert (profile["past"].min, profile["past"].opt, profile["past"].max) == want
    assert profile["extra"].min == profile["extra"].max == (5, 2)
    strings = trt_shape_strings(profile)
    assert strings["trt_profile_max_shapes"] == f"ids:2x8,past:2x{want[2][1]}x4,extra:5x2"
    assert source.feeds(source.model.inputs, 2, 8)["past"].shape == (2, want[1][1], 4)  # fed at OPT


def test_dim_range_flag_and_bad_ranges(tmp_path):
    path = _past_model(tmp_path)
    base = ["run", "--onnx", str(path), "--runtimes", "ort-cpu", "--dim", "extra.0=2", "--no-ceilings",
            "--no-report", "--min-time", "0.02", "--min-iters", "3", "--seq-lens", "4"]
    proc = run_cli(*base, "--dim", "past_sequence_length=1:3:8", "--out", str(tmp_path / "ok"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for bad in ("past_sequence_length=8:3:1", "past_sequence_length=1:3"):
        out = tmp_path / "bad"
        proc = run_cli(*base, "--dim", bad, "--out", str(out))
        assert proc.returncode == 2 and "MIN:OPT:MAX" in proc.stderr and not out.exists(), proc.stdout
