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
