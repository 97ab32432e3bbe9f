"""A model whose weights exceed 2 GiB (protobuf's message limit) exports with external data, is checked,
inspected, loads in ONNX Runtime and agrees with torch. One layer and a 262144-token vocabulary keep it quick:
E is 262144 x 2304 = 604M parameters, 2.4 GB in fp32 (docs/export.md gives the measured time and memory)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onnxbench.benchmarks import TOLERANCES, compare
from onnxbench.export import to_onnx
from onnxbench.export.inspect import inspect_model
from onnxbench.models import TransformerConfig, build

HUGE_VOCAB = TransformerConfig(vocab_size=262_144, max_positions=16, d_model=2304, n_heads=8, n_layers=1, d_ff=256)


@pytest.mark.slow
def test_model_over_2_gib_exports_with_external_data_and_agrees(tmp_path):
    assert HUGE_VOCAB.n_params * 4 > 2 * 2**30, "premise: fp32 weights over 2 GiB"
    artifact = to_onnx(HUGE_VOCAB, seed=0, cache_dir=tmp_path, model_name="huge-vocab")
    assert sorted(p.name for p in artifact.path.parent.iterdir()) == ["done", "model.onnx", "model.onnx.data"]
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [artifact.path.parent.name], \
        "no temporary files left in the cache"
    assert artifact.path.stat().st_size < 2**20 and artifact.path.with_name("model.onnx.data").stat().st_size > 2**31

    info = inspect_model(artifact.path)
    assert info.n_params_config == HUGE_VOCAB.n_params and info.n_params > 0.99 * HUGE_VOCAB.n_params

    ids = np.random.default_rng(0).integers(0, HUGE_VOCAB.vocab_size, (1, 3), dtype=np.int64)
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input_ids": ids})
    del session  # one copy of the weights in memory at a time
    with torch.no_grad():
        expected = build(HUGE_VOCAB, seed=0)(torch.from_numpy(ids)).numpy()
    result = compare(logits, expected, TOLERANCES["fp32"])
    assert result.agree, result
