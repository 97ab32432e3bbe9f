import numpy as np
import onnxruntime as ort
import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import TOLERANCES, compare
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.runtimes import RuntimeUnavailable, probes
from onnxbench.runtimes.ort import OrtSession


def test_torch_and_ort_cpu_agree_within_fp32_tolerance(tiny_artifact):
    with runtimes.get("torch").open(tiny_artifact) as ref, runtimes.get("ort-cpu").open(tiny_artifact) as s:
        assert s.provider_actual == "CPUExecutionProvider"
        feeds = make_feeds(s.inputs(), 2, 17, int_high=512)
        result = compare(s.run(feeds)["logits"], ref.run(feeds)["logits"], TOLERANCES["fp32"])
        assert result.agree and result.max_abs_err < 1e-4


def test_iobinding_fast_path_computes_the_same_logits(tiny_artifact):
    with runtimes.get("ort-cpu").open(tiny_artifact) as s:
        feeds = make_feeds(s.inputs(), 1, 9, int_high=512)
        fn = s.prepare(feeds)
        fn()
        bound = s._binding.copy_outputs_to_cpu()[0]
        np.testing.assert_array_equal(bound, s.run(feeds)["logits"])


def test_session_reports_a_provider_fallback_instead_of_hiding_it(tiny_artifact):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA EP to fall back from (CPU-only wheel)")
    # The driver decides whether there is a GPU: a CPU build of torch on a GPU machine would say "no GPU" and
    # this test would then fail for a CUDA EP that really ran.
    if probes.cuda_driver().ok:
        pytest.skip("a CUDA GPU is present here, so the CUDA EP does not fall back")
    # onnxruntime-gpu lists CUDA as available on this GPU-less machine; the session falls back to CPU.
    with pytest.raises(RuntimeUnavailable, match="fell back"):
        OrtSession("ort-cuda", tiny_artifact, ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:0",
                   runtimes.RuntimeOptions())


def test_registry_errors_and_availability_never_raise():
    with pytest.raises(KeyError, match="registered"):
        runtimes.get("tvm")
    table = runtimes.availability()
    assert table["torch"][0] and table["ort-cpu"][0]
    assert all(isinstance(reason, str) and reason for _, reason in table.values())


def test_torch_runtime_refuses_a_foreign_onnx(tmp_path, tiny_artifact):
    import dataclasses

    foreign = dataclasses.replace(tiny_artifact, config=None)
    with pytest.raises(RuntimeUnavailable, match="not exported by onnxbench"):
        runtimes.get("torch").open(foreign)


def test_make_feeds_names_an_unbound_axis():
    from onnxbench.export import TensorSpec

    with pytest.raises(ValueError, match="--dim height=SIZE"):
        make_feeds((TensorSpec("pixels", "float32", ("batch", 3, "height")),), 1, 1)
