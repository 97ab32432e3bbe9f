"""Shared fixtures: one export cache per test session so that each tiny artifact is exported once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnxbench-cache")
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
