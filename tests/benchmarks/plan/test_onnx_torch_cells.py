"""The torch runtimes run a torch module rebuilt from a model's config, never an ONNX file: an ``--onnx`` file's
torch cells are ``skipped`` rows with the reason, also for a file onnxbench exported itself (whose metadata would
let torch rebuild the model the file came from, and report that module's timing under the file's name)."""

from __future__ import annotations

import pytest

from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.export import to_onnx
from onnxbench.models import get_preset


@pytest.fixture(scope="module")
def own_export(cache_dir):
    """One of onnxbench's exports, given back as a user's file (its metadata names the preset and the seed)."""
    return to_onnx(get_preset("tiny"), seed=0, exporter="torchscript", cache_dir=cache_dir, model_name="tiny")


@pytest.mark.parametrize("reference_models", [{}, {"model": "tiny"}])
def test_torch_cells_of_an_onnx_file_are_skipped_with_the_reason(own_export, reference_models):
    spec = MatrixSpec(models=[], runtimes=["torch", "ort-cpu"], batches=[1], seq_lens=[8],
                      onnx=OnnxFiles(files=[str(own_export.path)], reference_models=reference_models))
    built = spec.build()
    reasons = {cell.runtime: built.unrunnable_reason(cell) for cell in built.cells}
    assert reasons["ort-cpu"] is None
    assert reasons["torch"] and "not an ONNX file" in reasons["torch"], reasons
    assert "ort-cpu" in reasons["torch"]  # names the runtimes that run the file


def test_the_same_model_as_a_preset_keeps_its_torch_cells():
    built = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu"], batches=[1], seq_lens=[8]).build()
    assert all(built.unrunnable_reason(cell) is None for cell in built.cells)
