"""``--dim NAME=SIZE`` (the ``[onnx] dims`` table) binds an axis of an ONNX file's inputs: a name that no input of
any file has is refused before anything runs, naming the axes that exist (what was asked is what ran)."""

from __future__ import annotations

import pytest
from onnx import TensorProto

from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.errors import MatrixError

from .onnx_models import identity_model


def _spec(paths, dims):
    return MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1], seq_lens=[4],
                      onnx=OnnxFiles(files=[str(p) for p in paths], dims=dims))


@pytest.fixture
def past_model(tmp_path):
    return identity_model(tmp_path / "past.onnx", [("ids", TensorProto.INT64, ["batch", "sequence"]),
                                                   ("past", TensorProto.FLOAT, ["batch", "past_len", 4]),
                                                   ("extra", TensorProto.FLOAT, [None, 2])])


def test_a_dim_no_input_has_is_refused_with_the_axes_that_exist(past_model):
    with pytest.raises(MatrixError) as info:
        _spec([past_model], {"past_len": 2, "extra.0": 2, "past_sequence_length": 4}).build()
    message = str(info.value)
    assert "past_sequence_length" in message
    for axis in ("batch", "sequence", "past_len", "extra.0"):
        assert axis in message, message


@pytest.mark.parametrize("key, hint", [("ids.1", "sequence"), ("extra.1", "static")])
def test_an_input_index_key_must_name_an_unnamed_dynamic_axis(past_model, key, hint):
    # ids.1 is named `sequence` (the key would be ignored); extra.1 is the static size 2
    with pytest.raises(MatrixError, match=hint):
        _spec([past_model], {key: 3, "past_len": 2, "extra.0": 2}).build()


def test_dims_that_name_axes_of_any_file_are_accepted(past_model, tmp_path):
    other = identity_model(tmp_path / "other.onnx", [("x", TensorProto.FLOAT, ["batch", "height"])])
    built = _spec([past_model, other], {"past_len": 3, "extra.0": 2, "height": 5, "batch": 2}).build()
    assert {c.model for c in built.cells} == {"past", "other"}
    assert built.sources["other"].feeds(built.sources["other"].model.inputs, 2, 4)["x"].shape == (2, 5)
