"""An input axis of size 0 (``--dim past_sequence_length=0``: an empty KV cache, the first step of a decoder with
past) is a shape ONNX Runtime runs; it is accepted, fed and measured. Negative sizes, and a batch or sequence
axis of 0 (nothing to measure), stay refused with one line."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import MatrixSpec
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.plan.sources.onnx_file import dim_ranges
from onnxbench.benchmarks.run.runner import run_matrix
from onnxbench.errors import MatrixError
from onnxbench.export import TensorSpec

FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_iters=3)


@pytest.fixture
def with_past(tmp_path):
    """y = Concat(past, x) along the sequence: (batch, past_sequence_length + sequence, 4)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    past = helper.make_tensor_value_info("past", TensorProto.FLOAT, ["batch", "past_sequence_length", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "total", 4])
    graph = helper.make_graph([helper.make_node("Concat", ["past", "x"], ["y"], axis=1)], "past", [x, past], [y])
    path = tmp_path / "past.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    return path


def test_size_0_is_fed_and_ranges_may_start_at_0():
    spec = TensorSpec("past", "float32", ("batch", "past_sequence_length", 4))
    assert make_feeds((spec,), 2, 8, dims={"past_sequence_length": 0})["past"].shape == (2, 0, 4)
    assert dim_ranges({"past_sequence_length": 0}) == {"past_sequence_length": (0, 0, 0)}
    assert dim_ranges({"past_sequence_length": [0, 0, 8]}) == {"past_sequence_length": (0, 0, 8)}
    with pytest.raises(ValueError, match=">= 0"):
        make_feeds((spec,), 2, 8, dims={"past_sequence_length": -1})
    with pytest.raises(ValueError, match="0 <= MIN"):
        dim_ranges({"past_sequence_length": [-1, 0, 8]})


def test_an_empty_kv_cache_runs_on_ort_cpu(with_past, tmp_path, cache_dir):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[2], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(with_past)], dims={"past_sequence_length": 0}))
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False, ceilings=False).rows
    assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
    assert (row["batch"], row["seq_len"]) == (2, 8)


def test_a_batch_axis_of_0_is_refused(with_past):
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[2], seq_lens=[8],
                      onnx=OnnxFiles(files=[str(with_past)], dims={"batch": 0, "past_sequence_length": 0}))
    with pytest.raises(MatrixError, match=">= 1"):
        spec.build()
