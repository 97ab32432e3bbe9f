"""`onnxbench inspect`: opset, op histogram, attention per block, parameters and FLOPs, as data and on the CLI."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxbench.export import to_onnx
from onnxbench.export.inspect import inspect_model
from onnxbench.models import get_preset
from onnxbench.models.flops import attention_flops, flops_per_token


def test_inspect_full_model(tiny_artifact):
    info = inspect_model(tiny_artifact.path, seq_lens=(16, 64, 4096))
    model = onnx.load(str(tiny_artifact.path))
    config = get_preset("tiny")
    assert info.opset == 18 and info.variant == "decomposed" and info.part == "model"
    counted = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)
    assert info.op_histogram == dict(counted)
    assert info.n_nodes == len(model.graph.node)
    assert list(info.attention_cores) == ["blocks.0", "blocks.1"]
    assert all(cores == ["ai.onnx:Softmax"] for cores in info.attention_cores.values())
    assert info.block_source == "name_scopes"
    # each block's attention has its four projections (MatMul) and the two attention products
    assert all(hist["ai.onnx:MatMul"] == 6 for hist in info.attention_blocks.values())
    assert info.n_params_config == config.n_params
    assert abs(info.n_params - config.n_params) / config.n_params < 0.05
    assert info.inputs == {"input_ids": ["int64", "batch", "sequence"]}
    assert set(info.flops_per_token) == {16, 64}  # 4096 > max_positions is left out
    assert info.flops_per_token[64] == flops_per_token(config, 64)
    assert info.flops_per_token[64] > info.flops_per_token[16]  # the attention context term grows with T
    assert "Kaplan" in info.flops_note


def test_inspect_fused_attention_part(cache_dir):
    art = to_onnx(get_preset("tiny"), variant="ort-fused", part="attention", cache_dir=cache_dir, model_name="tiny")
    info = inspect_model(art.path, seq_lens=(32,))
    config = get_preset("tiny")
    assert info.attention_cores == {"blocks.0": ["com.microsoft:MultiHeadAttention"]}
    assert info.opsets.get("com.microsoft") == 1
    assert info.n_params_config == 4 * (config.d_model ** 2 + config.d_model)
    assert info.flops_per_token[32] == attention_flops(config, 1, 32) / 32
    assert info.inputs == {"hidden_states": ["float32", "batch", "sequence", config.d_model]}


def test_inspect_foreign_model_without_provenance(tmp_path, tiny_artifact):
    model = onnx.load(str(tiny_artifact.path))
    del model.metadata_props[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    info = inspect_model(path)
    assert info.block_source == "order"
    assert info.attention_cores == {"core#0": ["ai.onnx:Softmax"], "core#1": ["ai.onnx:Softmax"]}
    assert info.flops_per_token == {} and "unknown" in info.flops_note
    assert info.variant is None


def test_inspect_rejects_a_non_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        inspect_model(bad)


def test_cli_inspect(tiny_artifact, tmp_path):
    cmd = [sys.executable, "-m", "onnxbench.cli", "inspect", str(tiny_artifact.path)]
    out = subprocess.run(cmd + ["--json", "--seq-lens", "8,32"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["opset"] == 18 and set(data["flops_per_token"]) == {"8", "32"}
    assert list(data["attention_cores"]) == ["blocks.0", "blocks.1"]
    table = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"})
    assert "attention per block" in table.stdout and "blocks.1" in table.stdout
    missing = subprocess.run([sys.executable, "-m", "onnxbench.cli", "inspect", str(tmp_path / "none.onnx")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_cli_inspect_labels_the_two_parameter_counts(tiny_artifact):
    """The two counts differ (the exporter stores the identical zero biases / unit LayerNorm weights once and
    adds scalar constants), so each says what it counts."""
    model = onnx.load(str(tiny_artifact.path))
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
    stored = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floats)
    scalars = sum(1 for t in model.graph.initializer if t.data_type in floats and not t.dims)
    config = get_preset("tiny")
    assert stored != config.n_params and scalars > 0, "premise: the two counts differ"
    out = subprocess.run([sys.executable, "-m", "onnxbench.cli", "inspect", str(tiny_artifact.path)],
                         capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert f"parameters (initializer elements): {stored:,}" in out
    assert "identical tensors such as zero biases kept once" in out
    assert f"parameters (model, tied unembedding counted once): {config.n_params:,}" in out
