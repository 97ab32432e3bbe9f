"""The GPU runtimes' fixes that can be exercised without a GPU: library probing on a fake library folder, the ELF
NEEDED reader, ORT session creation without the fallback retry, bf16 outputs, the profiling twin, the ort-trt
engine-cache key and partitioning, ONNXBENCH_REQUIRE_GPU, the device clock in the harness, guarded CUDA
ceilings and the TF32 peak, the speed-up baseline chosen by device, and the GPU name without torch."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.measure.ceilings import measure_ceilings, peak_for
from onnxbench.benchmarks.measure.memory import device_memory_used
from onnxbench.benchmarks.measure.timing import measure, measure_stages
from onnxbench.benchmarks.plan.sources.onnx_file import inspect_onnx
from onnxbench.reports import tables
from onnxbench.runtimes import RuntimeOptions, ort_trt
from onnxbench.runtimes import probes as gpu
from onnxbench.runtimes.ort_cuda import bfloat16_bits_to_float32
from onnxbench.runtimes.ort_placement import profile_attention
from onnxbench.schema import make_row

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) to build the fake libraries")


def _shared_library(folder, soname: str, source: str = "int onnxbench_fake(void) { return 1; }\n",
                    links: tuple[str, ...] = ()) -> None:
    """Build a real (tiny) shared library named ``soname`` in ``folder``, optionally linking others there."""
    src = folder / f"{soname}.c"
    src.write_text(source)
    cmd = [CC, "-shared", "-fPIC", "-o", str(folder / soname), str(src), f"-Wl,-soname,{soname}", f"-L{folder}",
           "-Wl,--no-as-needed"]
    subprocess.run(cmd + [f"-l:{name}" for name in links], check=True, capture_output=True)


# --- library probing -------------------------------------------------------------------------------------------

@needs_cc
def test_tensorrt_ep_libraries_are_loaded_from_a_library_folder_and_a_missing_one_is_named(tmp_path):
    _shared_library(tmp_path, "libnvinfer.so.77", "int getInferLibVersion(void) { return 770102; }\n")
    _shared_library(tmp_path, "libnvinfer_plugin.so.77")
    probe = gpu.tensorrt_ep_libraries(77, dirs=[tmp_path])
    assert not probe.ok and "libnvonnxparser.so.77" in probe.detail and "tensorrt-cu13-libs" in probe.detail
    assert "libnvinfer.so.77" not in probe.detail  # the ones that loaded are not blamed
    _shared_library(tmp_path, "libnvonnxparser.so.77")
    probe = gpu.tensorrt_ep_libraries(77, dirs=[tmp_path])
    assert probe.ok, probe.detail
    assert "libnvinfer_plugin.so.77" in probe.detail and str(tmp_path) in probe.detail


@needs_cc
def test_a_missing_cuda_library_names_the_wheel_that_provides_it(tmp_path):
    _shared_library(tmp_path, "libcudart.so.88")
    probe = gpu.load_libraries(["libcudart.so.88", "libcublasLt.so.88", "libcudnn.so.88"], dirs=[tmp_path])
    assert not probe.ok
    assert "libcublasLt.so.88" in probe.detail and "nvidia-cublas" in probe.detail
    assert "libcudnn.so.88" in probe.detail and "nvidia-cudnn-cu13" in probe.detail
    assert "libcudart.so.88 not" not in probe.detail


@needs_cc
def test_elf_needed_lists_the_link_time_dependencies(tmp_path):
    _shared_library(tmp_path, "libfakedep.so.3")
    _shared_library(tmp_path, "libfakeep.so.1", links=("libfakedep.so.3",))
    assert "libfakedep.so.3" in gpu.elf_needed(tmp_path / "libfakeep.so.1")
    assert gpu.elf_needed(tmp_path / "libfakedep.so.3.c") == []  # not ELF
    assert gpu.elf_needed(tmp_path / "absent.so") == []


def test_the_cuda_ep_needs_what_its_provider_library_links_plus_cudnn():
    capi = gpu._ort_capi_dir()
    names = gpu.ep_cuda_libraries("libonnxruntime_providers_cuda.so")
    assert "libcudnn.so.9" in names and not any(n.startswith(("libc.so", "libcuda.so")) for n in names)
    if capi is not None and (capi / "libonnxruntime_providers_cuda.so").exists():
        linked = gpu.elf_needed(capi / "libonnxruntime_providers_cuda.so")
        assert [n for n in names if n != "libcudnn.so.9"] == [n for n in linked if n in names]
        assert any(n.startswith("libcublasLt.so.") for n in names)
    else:  # the CPU-only onnxruntime wheel: the CUDA 13 default list
        assert names == list(gpu.CUDA_EP_LIBRARIES)


def test_probes_report_each_cuda_library_or_why_the_ep_is_absent():
    report = gpu.report()
    assert all(isinstance(p, gpu.Probe) and p.detail for p in report.values())
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert any(name.endswith("(ORT CUDA EP)") for name in report)
    else:
        assert "onnxruntime-gpu" in report["onnxruntime CUDA EP"].detail


def test_gpu_name_asks_the_driver_not_torch(monkeypatch):
    import torch

    def touched(*args, **kwargs):
        raise AssertionError("gpu_name() must not create a torch CUDA context")

    for name in ("is_available", "get_device_name", "init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, touched)
    name = gpu.gpu_name(0)
    assert isinstance(name, str) and name
    if not gpu.cuda_driver().ok:
        assert name == "unknown"


def test_device_memory_is_none_off_the_gpu():
    assert device_memory_used("cpu") is None
    if not gpu.cuda_driver().ok:
        assert device_memory_used("cuda:0") is None


# --- ONNX Runtime sessions -------------------------------------------------------------------------------------

def _one_node_model(tmp_path, to=TensorProto.BFLOAT16):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=to), helper.make_node("Shape", ["x"], ["s"])], "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", to, ["batch", 3]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "cast.onnx"
    onnx.save(model, path)
    return inspect_onnx(path)[0]


def test_bf16_outputs_come_back_as_float32_through_dlpack(tmp_path):
    import torch

    art = _one_node_model(tmp_path)
    x = np.array([[1.0001, 2.5, 3.14159], [-7.77, 1e-3, 65504.0]], np.float32)
    with runtimes.get("ort-cpu").open(art) as s:
        out = s.run({"x": x})
    expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], expected)
    assert not np.array_equal(out["y"], x)  # really rounded to bf16, not passed through
    bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bfloat16_bits_to_float32(bits), expected)


def test_a_provider_that_cannot_load_fails_the_session_instead_of_retrying_on_the_cpu(tmp_path, cache_dir,
                                                                                   monkeypatch):
    """ORT's TensorRT EP raises at creation here (no TensorRT); with the Python API's retry left on, ORT would
    re-create the session on the CPU EP and the row would read as a fallback. It must be a failed row quoting
    ORT's own error."""
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT EP whose creation could fail")
    if gpu.ort_tensorrt_ep().ok:
        pytest.skip("ort-trt can run here: its session creation does not fail")
    monkeypatch.setattr(ort_trt.OrtTrt, "availability", classmethod(lambda cls: (True, "probe bypassed by the test")))
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-trt"], batches=[1], seq_lens=[8],
                      timing=TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0))
    (row,) = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False).rows  # patch lives here
    assert row["status"] == "failed", row
    assert row["reason"].startswith("session creation failed") and "TensorRT" in row["reason"]
    assert "fell back" not in row["reason"]


def test_the_profiling_twin_is_created_from_the_creation_options(tiny_artifact, tmp_path):
    options = RuntimeOptions(intra_op_threads=1, extra={"graph_optimization_level": "basic"})
    with runtimes.get("ort-cpu").open(tiny_artifact, options) as s:
        twin = s.profiling_twin(str(tmp_path / "twin"))
        assert twin.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert twin.get_session_options().intra_op_num_threads == 1
        assert twin.get_providers() == s.session.get_providers()
        assert s.creation["providers"] == ["CPUExecutionProvider"] and s.creation["options"] is options
        placement = profile_attention(s, make_feeds(s.inputs(), 1, 8, int_high=8))
    assert placement.summary == "CPUExecutionProvider"
    assert placement.nodes_by_provider["CPUExecutionProvider"] > 0
    assert placement.cpu_compute_ops.get("MatMul", 0) > 0  # float compute, counted by op
    assert placement.left_ep("CPUExecutionProvider") is None
    warning = placement.left_ep("CUDAExecutionProvider")
    assert warning.startswith("warning: ") and "MatMul" in warning and "left CUDAExecutionProvider" in warning


# --- ort-trt: cache key and partitioning -------------------------------------------------------------------------

def test_ort_trt_engine_cache_key_holds_every_build_option():
    base_opts = {"trt_fp16_enable": "False", "trt_profile_min_shapes": "input_ids:1x8", "device_id": "0"}
    key = ort_trt.engine_cache_key("a" * 64, base_opts, False, "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1")
    same = ort_trt.engine_cache_key("a" * 64, {**base_opts, "trt_engine_cache_path": "/elsewhere",
                                               "user_compute_stream": "1234"}, False,
                                    "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1")
    assert key == same  # cache paths and the stream address do not change the engine
    variants = [
        ort_trt.engine_cache_key("a" * 64, base_opts, True, "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1"),
        ort_trt.engine_cache_key("a" * 64, {**base_opts, "trt_fp16_enable": "True"}, False,
                                 "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1"),
        ort_trt.engine_cache_key("a" * 64, {**base_opts, "trt_profile_min_shapes": "input_ids:1x16"}, False,
                                 "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1"),
        ort_trt.engine_cache_key("a" * 64, base_opts, False, "libnvinfer.so.10 10.14.0", "NVIDIA H200", "1.31.1"),
        ort_trt.engine_cache_key("a" * 64, base_opts, False, "libnvinfer.so.10 10.13.0", "NVIDIA L4", "1.31.1"),
        ort_trt.engine_cache_key("a" * 64, base_opts, False, "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.32.0"),
        ort_trt.engine_cache_key("b" * 64, base_opts, False, "libnvinfer.so.10 10.13.0", "NVIDIA H200", "1.31.1"),
    ]
    assert len({key, *variants}) == 1 + len(variants)


def test_ort_trt_cache_folder_follows_nvidia_tf32_override(tiny_artifact, monkeypatch):
    options = RuntimeOptions(profile_ranges={"batch": (1, 1, 2), "sequence": (8, 8, 16)})
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    with_tf32, _ = ort_trt.tensorrt_provider_options(tiny_artifact, options, 0)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    without, _ = ort_trt.tensorrt_provider_options(tiny_artifact, options, 0)
    assert ort_trt.tf32_allowed() is False
    assert with_tf32["trt_engine_cache_path"] != without["trt_engine_cache_path"]
    same = {k: v for k, v in without.items() if "cache_path" not in k}
    assert {k: v for k, v in with_tf32.items() if "cache_path" not in k} == same


def test_a_graph_tensorrt_cannot_take_whole_gets_no_explicit_profiles(tmp_path, tiny_artifact):
    assert ort_trt.partitioned_reason(tiny_artifact.path) is None
    graph = helper.make_graph(
        [helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")], "fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "fused.onnx")
    reason = ort_trt.partitioned_reason(tmp_path / "fused.onnx")
    assert "1 com.microsoft node(s) (FastGelu)" in reason
    art = inspect_onnx(tmp_path / "fused.onnx")[0]
    opts, labels = ort_trt.tensorrt_provider_options(art, RuntimeOptions(profile_ranges={"batch": (1, 1, 2)}), 0)
    assert not any(k.startswith("trt_profile_") for k in opts)
    assert "partitioned" in labels["profile"] and "FastGelu" in labels["profile"]


# --- ONNXBENCH_REQUIRE_GPU -----------------------------------------------------------------------------------------

def test_required_gpu_runtimes_parses_all_names_and_rejects_others(monkeypatch):
    names = ["ort-cuda", "torch-cuda"]
    monkeypatch.delenv(gpu.REQUIRE_GPU_ENV, raising=False)
    assert gpu.required_gpu_runtimes(names) == set()
    monkeypatch.setenv(gpu.REQUIRE_GPU_ENV, "1")
    assert gpu.required_gpu_runtimes(names) == set(names)
    monkeypatch.setenv(gpu.REQUIRE_GPU_ENV, "torch-cuda")
    assert gpu.required_gpu_runtimes(names) == {"torch-cuda"}
    monkeypatch.setenv(gpu.REQUIRE_GPU_ENV, "ort-cpu")
    with pytest.raises(ValueError, match="not GPU runtimes"):
        gpu.required_gpu_runtimes(names)
    assert {n for n, cls in runtimes.registry().items() if cls.device == "cuda"} == {
        "ort-cuda", "ort-trt", "tensorrt", "torch-cuda", "torch-compile-cuda", "ort-genai-cuda"}


def test_require_gpu_turns_a_skipped_gpu_runtime_into_a_failed_row(tmp_path, cache_dir, monkeypatch):
    if runtimes.runtime_class("torch-cuda").availability()[0]:
        pytest.skip("torch-cuda can run here: nothing would be skipped")
    monkeypatch.setenv(gpu.REQUIRE_GPU_ENV, "torch-cuda")  # the worker process inherits it
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu", "torch-cuda", "ort-cuda"], batches=[1], seq_lens=[8],
                      timing=TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0))
    rows = {r["runtime"]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=True).rows}
    assert rows["ort-cpu"]["status"] == "ok"
    assert rows["torch-cuda"]["status"] == "failed"
    assert rows["torch-cuda"]["reason"].startswith(f"{gpu.REQUIRE_GPU_ENV} requires torch-cuda")
    assert rows["ort-cuda"]["status"] == "skipped"  # not required: still a skip with its reason


# --- harness, ceilings, reports --------------------------------------------------------------------------------

class _CountingClock:
    """A device clock of fixed readings (a test double of CUDA events), recording the order of calls."""

    def __init__(self, ms: float) -> None:
        self.ms, self.calls = ms, []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def elapsed_ms(self) -> float:
        self.calls.append("elapsed")
        return self.ms


def test_stages_and_ceilings_take_the_device_clock_when_there_is_one():
    clock = _CountingClock(2.5)
    order = []
    medians = measure_stages({"h2d": lambda: order.append("h2d"), "compute": lambda: order.append("compute")},
                             lambda: order.append("sync"), TimingConfig(warmup_iters=0, min_iters=3, min_time_s=0),
                             device_timer=clock)
    assert medians == {"h2d": 2.5, "compute": 2.5}
    assert clock.calls[:3] == ["start", "stop", "elapsed"] and order[:2] == ["h2d", "sync"]
    timing, raw = measure(lambda: None, config=TimingConfig(warmup_iters=0, min_iters=4, min_time_s=0),
                          device_timer=_CountingClock(1.25))
    assert timing.latency_ms_p50 == 1.25 and list(raw) == [1_250_000] * len(raw)


def test_a_failing_cuda_ceiling_probe_is_recorded_not_raised(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a usable GPU: the CUDA probes would succeed")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # claims a device the CPU build cannot use
    c = measure_ceilings(gemm_n=64, copy_bytes=2**20, cuda=True,
                         timing=TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.0, max_time_s=0.1))
    assert c["cpu"]["gemm_gflops"] > 0
    errors = c["cuda:0"]["errors"]
    assert {"gemm_gflops", "gemm_gflops_tf32", "gemm_gflops_fp16", "mem_bw"} <= set(errors)


def test_fp32_cells_with_tf32_are_read_against_the_tf32_peak():
    ceilings = {"cuda:0": {"gemm_gflops": 50e3, "gemm_gflops_tf32": 400e3, "gemm_gflops_fp16": 800e3,
                           "mem_bw_gbs": 4000.0}}
    assert peak_for(ceilings, "cuda:0", "fp32") == (50e3, 4000.0)
    assert peak_for(ceilings, "cuda:0", "fp32", tf32=True) == (400e3, 4000.0)
    assert peak_for(ceilings, "cuda:0", "fp16", tf32=True) == (800e3, 4000.0)


def _row(runtime: str, device: str, p50: float, batch: int = 1) -> dict:
    return make_row(run_id="r", cell_id=f"{runtime}-{batch}", model="tiny", part="model", attention="decomposed",
                    precision="fp32", opset=18, runtime=runtime, config_id="default", batch=batch, seq_len=16,
                    status="ok", device=device, latency_ms_p50=p50, latency_ms_p99=p50, agree=True,
                    throughput_tok_s=16 / p50, reference_runtime="torch", options=json.dumps({}))


def test_speedups_compare_gpu_rows_with_torch_cuda_and_cpu_rows_with_torch():
    df = pd.DataFrame([_row("torch", "cpu", 10.0), _row("ort-cpu", "cpu", 5.0), _row("torch-cuda", "cuda:0", 2.0),
                       _row("ort-cuda", "cuda:0", 0.5)])
    speed = tables.speedup_table(df).iloc[0]
    assert speed["ort-cpu"] == 2.0 and speed["ort-cuda"] == 4.0 and speed["torch-cuda"] == 1.0
    assert tables.speedup_table(df, baseline="torch").iloc[0]["ort-cuda"] == 20.0  # an explicit baseline wins
    ((_, grid),) = tables.latency_grid(df, ("speedup",))
    assert grid["ort-cuda|speedup"].iloc[0] == 4.0 and grid["ort-cpu|speedup"].iloc[0] == 2.0
    summary = tables.summary_table(df).iloc[0]
    assert summary["fastest"] == "ort-cuda" and summary["baseline"] == "torch-cuda" and summary["speedup"] == 4.0
    cpu_only = tables.summary_table(df[df["device"] == "cpu"]).iloc[0]
    assert cpu_only["baseline"] == "torch" and cpu_only["speedup"] == 2.0
    assert tables.has_gpu_rows(df) and not tables.has_gpu_rows(df[df["device"] == "cpu"])


def test_native_tensorrt_engine_key_follows_nvidia_tf32_override(monkeypatch):
    from onnxbench.runtimes.tensorrt import Tensorrt, build_options, engine_cache_key

    typed = Tensorrt.parse_options({"tf32": True})
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    allowed = build_options(typed, {})
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    forbidden = build_options(typed, {})
    assert forbidden["tf32_override"] == "0" and allowed["tf32_override"] is None
    assert engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200", allowed) != \
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200", forbidden)
