"""Shared fixtures: one export cache per test session so that each tiny artifact is exported once; a small BERT
exported by torch from transformers as an example of a user's ONNX file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory, worker_id) -> Path:
    """One artifact cache for the whole test run. Under pytest-xdist (``make test`` runs two workers) every worker
    has its own base temp, so the cache sits one level up, shared: an export made by one worker is a cache hit for
    the other. Cache entries are published by an atomic rename (docs/export.md, "The export cache"), so two workers
    exporting the same key at once both finish and one copy is kept."""
    if worker_id == "master":
        path = tmp_path_factory.mktemp("onnxbench-cache")
    else:
        path = tmp_path_factory.getbasetemp().parent / "onnxbench-cache"
        path.mkdir(exist_ok=True)
    os.environ["ONNXBENCH_CACHE"] = str(path)  # CLI subprocesses share it
    return path


@pytest.fixture(scope="session")
def tiny_artifact(cache_dir):
    from onnxbench.export import to_onnx
    from onnxbench.models import get_preset

    return to_onnx(get_preset("tiny"), seed=0, cache_dir=cache_dir, model_name="tiny")


def require_runtime(name: str) -> None:
    """Skip the calling test with the runtime's real reason when ``name`` cannot run here, or fail it when
    ``ONNXBENCH_REQUIRE_GPU`` makes that runtime required (a GPU check must not pass by skipping)."""
    from onnxbench import runtimes
    from onnxbench.runtimes.probes import REQUIRE_GPU_ENV, required_gpu_runtimes

    ok, why = runtimes.runtime_class(name).availability()
    if ok:
        return
    gpu_names = [n for n, cls in runtimes.registry().items() if cls.device == "cuda"]
    if name in required_gpu_runtimes(gpu_names):
        pytest.fail(f"{REQUIRE_GPU_ENV} requires {name}, which cannot run here: {why}")
    pytest.skip(f"{name} unavailable: {why}")


@pytest.fixture(scope="session")
def bert_onnx(tmp_path_factory):
    """A small BERT from transformers (random weights, local config, no download) exported to ONNX."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()

    class Outputs(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    path = tmp_path_factory.mktemp("bert") / "tiny-bert.onnx"
    example = (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.int64))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Outputs(bert), example, str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes,
                                        "pooler_output": {0: "batch"}})
    return path
