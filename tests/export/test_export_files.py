"""Export files: content hashes that cover external data, external data for large weights, a cache that never
keeps a failed export, `onnxbench export --out` that creates no folders and overwrites nothing foreign, and a
cached export reported as cached."""

import hashlib
import os
import socket

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxbench.benchmarks import TOLERANCES, MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.verify.agreement import check
from onnxbench.export import content_sha256, external_data_files, onnx_export, read_artifact, to_onnx
from onnxbench.export.inspect import inspect_model
from onnxbench.export.onnx_export import copy_artifact, is_onnxbench_artifact
from onnxbench.models import build, get_preset
from tests.cli_run import run_cli


def _matmul_model(directory, weights: np.ndarray):
    """y = x @ W with W (4, 4) float32 in the external-data file ``weights.bin``."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    directory.mkdir()
    path = directory / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def test_same_graph_bytes_with_other_external_weights_get_other_hashes_and_cache_keys(tmp_path, monkeypatch):
    from onnxbench.runtimes import ort_trt, tensorrt

    monkeypatch.setenv("ONNXBENCH_CACHE", str(tmp_path / "cache"))
    a = _matmul_model(tmp_path / "a", np.eye(4, dtype=np.float32))
    b = _matmul_model(tmp_path / "b", 2 * np.eye(4, dtype=np.float32) + 5)
    assert a.read_bytes() == b.read_bytes(), "premise: the .onnx files are byte-identical"
    x = np.ones((1, 4), np.float32)
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for p in (a, b)]
    assert np.abs(outputs[0] - outputs[1]).max() > 20, "premise: the weights matter"

    art_a, art_b = read_artifact(a), read_artifact(b)
    assert art_a.sha256 != art_b.sha256
    build = {"strongly_typed": True, "tf32": False, "profile": {}}
    assert (tensorrt.engine_cache_key(art_a.sha256, "10.13", "GPU", build)
            != tensorrt.engine_cache_key(art_b.sha256, "10.13", "GPU", build))
    ep = {"trt_engine_cache_enable": "True", "trt_fp16_enable": "False"}
    assert (ort_trt.engine_cache_key(art_a.sha256, ep, False, "libnvinfer.so.10", "GPU")
            != ort_trt.engine_cache_key(art_b.sha256, ep, False, "libnvinfer.so.10", "GPU"))
    assert external_data_files(onnx.load(str(a), load_external_data=False)) == ["weights.bin"]


def test_self_contained_model_hash_is_the_file_sha256(tiny_artifact):
    assert tiny_artifact.sha256 == hashlib.sha256(tiny_artifact.path.read_bytes()).hexdigest()


def test_missing_external_data_is_named(tmp_path):
    path = _matmul_model(tmp_path / "a", np.eye(4, dtype=np.float32))
    (tmp_path / "a" / "weights.bin").unlink()
    with pytest.raises(ValueError, match="weights.bin, which is missing"):
        read_artifact(path)


@pytest.mark.parametrize("variant,part", [("decomposed", "model"), ("ort-fused", "attention")])
def test_weights_over_the_threshold_go_to_external_data(tmp_path, monkeypatch, variant, part):
    """The path a model over 2 GiB takes, on `tiny` (the threshold lowered to 0 bytes): weights in
    model.onnx.data, checked and shape-inferred through the path, loaded by ONNX Runtime and agreeing with torch,
    inspected, hashed with the data, copied with it; an edited data file is exported again, not served."""
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    config = get_preset("tiny", attention="sdpa" if variant == "ort-fused" else "explicit")
    artifact = to_onnx(config, seed=3, cache_dir=tmp_path / "cache", variant=variant, part=part)
    graph = onnx.load(str(artifact.path), load_external_data=False)
    assert external_data_files(graph) == ["model.onnx.data"]
    data = artifact.path.with_name("model.onnx.data")
    assert data.stat().st_size > 10_000 and artifact.path.stat().st_size < data.stat().st_size
    assert artifact.sha256 != hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert {v.name for v in graph.graph.value_info}, "shape inference ran and was saved"
    assert inspect_model(artifact.path).n_params > 0

    copy = tmp_path / "copy.onnx"
    written = copy_artifact(artifact.path, copy)
    assert written == [copy, tmp_path / "copy.onnx.data"]
    module = build(config, seed=3)
    if part == "attention":
        module = module.blocks[0].attn
        x = torch.randn(2, 5, config.d_model)
    else:
        x = torch.randint(0, config.vocab_size, (2, 5))
    with torch.no_grad():
        expected = module(x).numpy()
    for path in (artifact.path, copy):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert check(got, expected, TOLERANCES["fp32"]).agree, path

    with open(data, "r+b") as f:  # damage the weights: the cache must not serve them
        f.seek(100)
        f.write(b"\x7f" * 64)
    again = to_onnx(config, seed=3, cache_dir=tmp_path / "cache", variant=variant, part=part)
    assert not again.cached and again.sha256 == artifact.sha256


def test_failed_export_leaves_nothing_and_abandoned_exports_are_removed(tmp_path, monkeypatch):
    import psutil

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after the exporter wrote its files")

    with monkeypatch.context() as m:
        m.setattr(onnx_export, "_annotate_and_check", broken)
        with pytest.raises(RuntimeError, match="simulated"):
            to_onnx(get_preset("tiny"), exporter="torchscript", cache_dir=tmp_path)
    assert os.listdir(tmp_path / "artifacts") == []

    dead = next(pid for pid in range(4_000_000, 3_000_000, -1) if not psutil.pid_exists(pid))
    abandoned = tmp_path / "artifacts" / f"0123456789abcdef.tmp-{dead}-deadbeef@{socket.gethostname()}"
    abandoned.mkdir()
    (abandoned / "model.onnx.data").write_bytes(b"\0" * 1000)
    artifact = to_onnx(get_preset("tiny"), exporter="torchscript", cache_dir=tmp_path)
    assert os.listdir(tmp_path / "artifacts") == [artifact.path.parent.name]


def test_cli_export_out_needs_an_existing_folder(tmp_path, tiny_artifact, cache_dir):
    target = tmp_path / "missing" / "deeper" / "x.onnx"
    proc = run_cli("export", "--preset", "tiny", "--out", str(target), "--cache-dir", str(cache_dir))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"folder {target.parent} does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "missing").exists()


def test_cli_export_out_does_not_overwrite_a_foreign_file(tmp_path, tiny_artifact, cache_dir):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    proc = run_cli("export", "--preset", "tiny", "--out", str(existing), "--cache-dir", str(cache_dir))
    assert proc.returncode == 2 and "not an onnxbench artifact; pass --overwrite" in proc.stderr, proc.stdout
    assert existing.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["existing.txt"], "no partial or temporary file"

    proc = run_cli("export", "--preset", "tiny", "--out", str(existing), "--overwrite", "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert is_onnxbench_artifact(existing) and content_sha256(existing) == tiny_artifact.sha256
    # Our own artifact at --out is replaced without the flag (exporting to the same path again).
    proc = run_cli("export", "--preset", "tiny", "--out", str(existing), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0 and "cached" in proc.stdout, proc.stdout + proc.stderr


def test_a_cached_export_is_reported_as_cached_not_as_zero_seconds(tiny_artifact, cache_dir, tmp_path):
    from onnxbench.cli.summary import export_time

    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[4],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0))
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False)
    (row,) = summary.rows
    assert row["status"] == "ok" and row["export_s"] is None
    assert row["onnx_sha256"] == tiny_artifact.sha256
    assert export_time(summary) == "export cached"
