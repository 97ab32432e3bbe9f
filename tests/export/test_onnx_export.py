import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxbench.benchmarks import TOLERANCES, compare
from onnxbench.export import read_artifact, to_onnx
from onnxbench.models import build, get_preset


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_export_at_one_shape_runs_at_others(cache_dir, attention):
    config = get_preset("tiny", attention=attention)
    artifact = to_onnx(config, seed=2, cache_dir=cache_dir)
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    model = build(config, seed=2)
    rng = np.random.default_rng(0)
    for batch in (1, 2, 3):
        for seq in (1, 7, config.max_positions):
            ids = rng.integers(0, config.vocab_size, (batch, seq), dtype=np.int64)
            (logits,) = session.run(None, {"input_ids": ids})
            assert logits.shape == (batch, seq, config.vocab_size)
            with torch.no_grad():
                ref = model(torch.from_numpy(ids)).numpy()
            result = compare(logits, ref, TOLERANCES["fp32"])
            assert result.agree, (batch, seq, result)


def test_graph_io_metadata_and_checker(tiny_artifact):
    model = onnx.load(str(tiny_artifact.path))
    onnx.checker.check_model(model)
    (inp,) = tiny_artifact.inputs
    assert (inp.name, inp.dtype) == ("input_ids", "int64")
    assert all(isinstance(d, str) for d in inp.shape), "batch and sequence must be dynamic"
    assert tiny_artifact.outputs[0].shape[-1] == 512
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["onnxbench.config"]) == get_preset("tiny").to_dict()
    assert meta["onnxbench.seed"] == "0"
    assert meta["onnxbench.opset"] == str(tiny_artifact.opset) == "18"
    assert "torch" in json.loads(meta["onnxbench.versions"])


def test_second_export_is_served_from_cache(cache_dir, tiny_artifact):
    again = to_onnx(get_preset("tiny"), seed=0, cache_dir=cache_dir, model_name="tiny")
    assert again.cached and again.path == tiny_artifact.path and again.sha256 == tiny_artifact.sha256
    other_seed = to_onnx(get_preset("tiny"), seed=1, cache_dir=cache_dir, exporter="torchscript")
    assert not other_seed.cached and other_seed.path != tiny_artifact.path


def test_non_onnx_file_gets_one_clear_error(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("this is not protobuf")
    with pytest.raises(ValueError, match="not a loadable ONNX model|no nodes"):
        read_artifact(bogus)


def test_unknown_precision_is_rejected(cache_dir):
    with pytest.raises(ValueError, match="precision must be one of"):
        to_onnx(get_preset("tiny"), precision="int4", cache_dir=cache_dir)
