"""GPU runtimes: everything that needs no GPU runs here (profiles, cache keys, dtype and shape checks, fallback
detection with onnxruntime-gpu on a GPU-less machine); the tests marked ``gpu`` / ``tensorrt`` run for real where
the hardware and libraries are present and are skipped with the probe's reason elsewhere."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import onnxruntime as ort
import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.measure.timing import measure_stages
from onnxbench.benchmarks.verify.agreement import check_outputs
from onnxbench.errors import OptionError
from onnxbench.export import TensorSpec
from onnxbench.runtimes import RuntimeOptions, RuntimeUnavailable, ShapeOutOfRange, probes
from onnxbench.runtimes.ort_cuda import OrtCuda, cuda_provider_options
from onnxbench.runtimes.ort_trt import OrtTrt, tensorrt_provider_options
from onnxbench.runtimes.tensorrt import Tensorrt, build_options, engine_cache_key, timing_cache_key
from onnxbench.runtimes.trt_profiles import (
    ShapeRange,
    axis_range,
    check_binding,
    input_profile,
    resolve_ranges,
    shape_ranges,
    trt_shape_strings,
)
from onnxbench.tolerance import GPU_FP16, GPU_TF32, TF32, TOLERANCES
from tests.conftest import require_runtime

IDS = TensorSpec("input_ids", "int64", ("batch", "sequence"))
# the GPU runtimes that run the tiny preset's prefill cells (ort-genai-cuda runs builder folders' generate cells
# only: tests/runtimes/test_ort_genai.py)
GPU_RUNTIMES = tuple(name for name, cls in runtimes.registry().items()
                     if cls.device == "cuda" and cls.scenarios is None)

CUDA_EP = probes.ort_cuda_ep()
TRT_EP = probes.ort_tensorrt_ep()
NATIVE_TRT = probes.native_tensorrt()


# --- optimization profiles from the matrix -------------------------------------------------------------------

def test_axis_range_is_min_upper_median_max_of_distinct_values():
    assert axis_range([4, 1]) == (1, 4, 4)
    assert axis_range([128, 32, 64, 32]) == (32, 64, 128)
    assert axis_range([7]) == (7, 7, 7)
    with pytest.raises(ValueError, match=">= 1"):
        axis_range([])
    with pytest.raises(ValueError, match=">= 1"):
        axis_range([0, 4])


def test_profile_follows_the_matrix_axes_and_keeps_static_dims():
    ranges = shape_ranges([1, 4], [32, 128])
    assert ranges == {"batch": (1, 4, 4), "sequence": (32, 128, 128)}
    pixels = TensorSpec("pixels", "float32", ("batch", 3, "height"))
    profile = input_profile([IDS, pixels], {**ranges, "height": (8, 16, 32)})
    assert profile["input_ids"] == ShapeRange((1, 32), (4, 128), (4, 128))
    assert profile["pixels"] == ShapeRange((1, 3, 8), (4, 3, 16), (4, 3, 32))
    with pytest.raises(ValueError, match="'width' has no"):
        input_profile([TensorSpec("x", "float32", ("batch", "width"))], ranges)


def test_run_matrix_profile_covers_exactly_the_cells_of_one_session():
    from onnxbench.benchmarks.run.worker import session_ranges

    cells = MatrixSpec(models=["tiny"], runtimes=["tensorrt"], batches=[2, 1, 8], seq_lens=[16, 64]).expand()
    assert session_ranges(cells) == {"batch": (1, 2, 8), "sequence": (16, 64, 64)}


def test_ranges_default_and_clip_to_max_positions():
    assert resolve_ranges({}, None)["batch"] == (1, 1, 4)
    assert resolve_ranges({"batch": (1, 1, 1), "sequence": (8, 256, 1024)}, 512)["sequence"] == (8, 256, 512)


def test_shape_range_validates_and_trt_ep_strings_use_trtexec_syntax():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeRange((1, 64), (1, 32), (1, 128))
    strings = trt_shape_strings({"input_ids": ShapeRange((1, 32), (4, 128), (4, 128)),
                                 "mask": ShapeRange((1,), (2,), (3,))})
    assert strings == {"trt_profile_min_shapes": "input_ids:1x32,mask:1",
                       "trt_profile_opt_shapes": "input_ids:4x128,mask:2",
                       "trt_profile_max_shapes": "input_ids:4x128,mask:3"}


# --- binding checks --------------------------------------------------------------------------------------------

def test_int64_ids_bound_to_an_int32_engine_input_are_rejected_with_the_fix():
    r = ShapeRange((1, 1), (1, 64), (4, 128))
    check_binding("input_ids", "int64", (2, 16), "int64", r)  # in range, same dtype: accepted
    check_binding("input_ids", "torch.int64", (2, 16), "int64", r)  # torch spelling is the same dtype
    with pytest.raises(TypeError, match=r"int64 but the engine expects int32.*astype\('int32'\)"):
        check_binding("input_ids", "int64", (2, 16), "int32", r)


def test_shape_outside_the_profile_quotes_min_opt_max():
    r = ShapeRange((1, 1), (1, 64), (4, 128))
    with pytest.raises(ShapeOutOfRange, match=r"\(2, 256\).*min \(1, 1\), opt \(1, 64\), max \(4, 128\)"):
        check_binding("input_ids", "int64", (2, 256), "int64", r)
    with pytest.raises(ShapeOutOfRange, match="outside"):
        check_binding("input_ids", "int64", (8, 16), "int64", r)
    with pytest.raises(ShapeOutOfRange, match="outside"):
        check_binding("input_ids", "int64", (16,), "int64", r)


# --- cache keys ------------------------------------------------------------------------------------------------

def test_engine_cache_key_changes_with_every_ingredient():
    profile = input_profile([IDS], shape_ranges([1, 4], [32, 128]))
    default, tf32 = Tensorrt.parse_options({}), Tensorrt.parse_options({"tf32": True})
    opts = build_options(default, profile)
    base = engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200", opts)
    assert base == engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200", build_options(default, profile))
    variants = [
        engine_cache_key("b" * 64, "10.13.0", "NVIDIA H200", opts),
        engine_cache_key("a" * 64, "11.4.0", "NVIDIA H200", opts),
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA A100-SXM4-80GB", opts),
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200", build_options(tf32, profile)),
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA H200",
                         build_options(default, input_profile([IDS], shape_ranges([1, 8], [32, 128])))),
    ]
    assert len({base, *variants}) == 6


def test_timing_cache_key_is_per_tensorrt_version_and_gpu_only():
    assert timing_cache_key("10.13.0", "NVIDIA H200") == timing_cache_key("10.13.0", "NVIDIA H200")
    assert timing_cache_key("10.13.0", "NVIDIA H200") != timing_cache_key("11.4.0", "NVIDIA H200")
    assert timing_cache_key("10.13.0", "NVIDIA H200") != timing_cache_key("10.13.0", "NVIDIA L4")


# --- options ---------------------------------------------------------------------------------------------------

def test_cuda_provider_options_default_to_tf32_off_and_reject_unknown_keys():
    opts = cuda_provider_options(OrtCuda.parse_options({}))
    assert opts["use_tf32"] == "0" and opts["enable_cuda_graph"] == "0" and opts["device_id"] == "0"
    both = cuda_provider_options(OrtCuda.parse_options({"tf32": True, "cuda_graph": True}))
    assert both["use_tf32"] == "1" and both["enable_cuda_graph"] == "1"
    with pytest.raises(OptionError, match="unknown ort-cuda option"):
        OrtCuda.parse_options({"use_fp8": True})
    with pytest.raises(OptionError, match="cudnn_conv_algo_search"):
        OrtCuda.parse_options({"cudnn_conv_algo_search": "fastest"})
    with pytest.raises(OptionError, match="unknown ort-trt option.*cuda_graph"):
        OrtTrt.parse_options({"cuda_graph": True})  # the TensorRT EP does its own graph capture
    with pytest.raises(OptionError, match="unknown tensorrt option"):
        Tensorrt.parse_options({"fp16": True})


def test_ort_trt_options_cache_by_model_and_carry_the_profile(tiny_artifact):
    options = RuntimeOptions(profile_ranges=shape_ranges([1, 2], [8, 4096]))
    opts, labels = tensorrt_provider_options(tiny_artifact, options, 0)
    top = tiny_artifact.config.max_positions
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_enable"] == "True"
    assert f"/{tiny_artifact.sha256[:16]}/" in opts["trt_engine_cache_path"]
    assert labels["engine_cache"] == opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"]
    assert labels["profile_max"] == opts["trt_profile_max_shapes"]
    assert opts["trt_fp16_enable"] == "False"  # precision lives in the graph
    assert opts["trt_profile_min_shapes"] == "input_ids:1x8"
    assert opts["trt_profile_max_shapes"] == f"input_ids:2x{top}"


# --- tolerances ------------------------------------------------------------------------------------------------

def test_tolerances_are_keyed_by_runtime_precision_and_tf32():
    assert runtimes.runtime_class("ort-cuda").tolerance("fp32", tf32=False) == TOLERANCES["fp32"]
    assert runtimes.runtime_class("tensorrt").tolerance("fp32", tf32=True) == GPU_TF32
    assert runtimes.runtime_class("ort-trt").tolerance("fp16") == GPU_FP16
    assert runtimes.runtime_class("ort-cpu").tolerance("fp16") == TOLERANCES["fp16"]
    assert runtimes.runtime_class("ort-cpu").tolerance("fp32", tf32=True) == TF32
    assert GPU_FP16.atol > TOLERANCES["fp16"].atol > TOLERANCES["fp32"].atol
    # TF32 keeps the fp16 bands' absolute check and its own floor factor against the fp32 floor
    assert (GPU_TF32.atol, TF32.atol) == (GPU_FP16.atol, TOLERANCES["fp16"].atol)
    assert GPU_TF32.floor_factor == TF32.floor_factor > GPU_FP16.floor_factor > TOLERANCES["fp16"].floor_factor


# --- detection -------------------------------------------------------------------------------------------------

def test_trt_version_integers_decode_per_nvinfer_version_header():
    assert probes.decode_trt_version(100300) == "10.3.0"
    assert probes.decode_trt_version(110400) == "11.4.0"
    assert probes.decode_trt_version(8601) == "8.6.1"


def test_the_tensorrt_major_linked_by_onnxruntime_is_read_from_its_ep_library():
    capi = probes._ort_capi_dir()
    lib = capi / "libonnxruntime_providers_tensorrt.so" if capi else None
    if lib is None or not lib.exists():
        pytest.skip("this onnxruntime build has no TensorRT EP library")
    major = probes.ort_tensorrt_major()
    assert isinstance(major, int) and major >= 8
    assert f"libnvinfer.so.{major}" in probes.needed_libraries(lib)


def test_probes_never_raise_and_agree_with_the_registry():
    table = runtimes.availability()
    for name in GPU_RUNTIMES:
        ok, why = table[name]
        assert isinstance(ok, bool) and why
    assert table["ort-cuda"][0] == CUDA_EP.ok and table["ort-trt"][0] == TRT_EP.ok
    assert table["tensorrt"][0] == NATIVE_TRT.ok
    assert all(isinstance(p, probes.Probe) for p in probes.report().values())


def test_provider_list_alone_does_not_count_as_a_gpu():
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA EP")
    if probes.cuda_driver().ok:
        pytest.skip(f"a CUDA device is present here ({probes.cuda_driver().detail})")
    # onnxruntime-gpu lists CUDA here although there is no GPU: the probe must say no, and say why.
    assert not CUDA_EP.ok and "silently run on the CPU" in CUDA_EP.detail
    with pytest.raises(RuntimeUnavailable) as info:
        OrtCuda().open(None)
    assert probes.cuda_driver().detail in str(info.value)


# --- fallback detection through the matrix runner --------------------------------------------------------------

def _tiny_spec(runtimes_: list[str]) -> MatrixSpec:
    return MatrixSpec(models=["tiny"], runtimes=runtimes_, batches=[1], seq_lens=[8],
                      timing=TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0))


def test_gpu_runtimes_become_skipped_rows_with_the_reason_here(tmp_path, cache_dir):
    if probes.cuda_driver().ok:
        pytest.skip("a GPU is present: the GPU runtimes run for real here")
    summary = run_matrix(_tiny_spec(list(GPU_RUNTIMES)), tmp_path / "run", cache_dir=cache_dir)
    assert [r["runtime"] for r in summary.rows] == list(GPU_RUNTIMES)
    for row in summary.rows:
        assert row["status"] == "skipped", row
        assert row["reason"] == runtimes.runtime_class(row["runtime"]).availability()[1]  # the probe's own reason
        assert row["latency_ms_p50"] is None and row["compute_ms"] is None and row["max_abs_err"] is None


def test_a_real_cuda_session_that_falls_back_to_cpu_is_a_skipped_row(tmp_path, cache_dir, monkeypatch):
    """With the GPU probe bypassed, onnxruntime-gpu really opens a CUDA session here and silently runs it on the
    CPU; the provider read-back must turn that into a skipped row naming the fallback, never a result."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA EP to fall back from")
    if probes.cuda_driver().ok:
        pytest.skip("a CUDA GPU is present here, so the CUDA EP does not fall back")
    monkeypatch.setattr(OrtCuda, "availability", classmethod(lambda cls: (True, "probe bypassed by the test")))
    # isolate=False: the patched probe lives in this process, not in a worker process
    summary = run_matrix(_tiny_spec(["ort-cuda"]), tmp_path / "run", cache_dir=cache_dir, isolate=False)
    (row,) = summary.rows
    assert row["status"] == "skipped" and row["runtime"] == "ort-cuda"
    assert "fell back" in row["reason"] and "CUDAExecutionProvider" in row["reason"]
    assert "CPUExecutionProvider" in row["reason"]
    assert row["latency_ms_p50"] is None and row["iters"] is None and row["agree"] is None


# --- harness: trtexec-style split ------------------------------------------------------------------------------

def test_measure_stages_times_each_stage_inside_its_own_synchronized_region():
    synced = []

    def slow():
        time.sleep(0.003)

    medians = measure_stages({"h2d": lambda: None, "compute": slow, "d2h": lambda: None},
                             lambda: synced.append(1), TimingConfig(warmup_iters=1, min_iters=5, min_time_s=0))
    assert list(medians) == ["h2d", "compute", "d2h"]
    assert medians["compute"] >= 3.0 > medians["h2d"]
    assert len(synced) == 3 * (1 + 5)
    with pytest.raises(ValueError, match="no stages"):
        measure_stages({})


def test_cpu_sessions_offer_no_split(tiny_artifact):
    with runtimes.get("ort-cpu").open(tiny_artifact) as s:
        assert s.prepare_stages(make_feeds(s.inputs(), 1, 4, int_high=8)) is None


# --- on a GPU machine: the real thing -------------------------------------------------------------------------
# Skipped with the runtime's reason where it cannot run; failed instead where ONNXBENCH_REQUIRE_GPU requires it
# (scripts/gpu_check.sh sets it for every runtime `doctor` reports ready).

def _check_against_reference(session, artifact, batch=2, seq=16, tf32=False):
    feeds = make_feeds(session.inputs(), batch, seq, int_high=artifact.config.vocab_size)
    fp32 = dataclasses.replace(artifact, precision="fp32")
    with runtimes.get("torch").open(fp32) as ref:
        reference = ref.run({k: v.astype(np.int64) for k, v in feeds.items()})
    tol = runtimes.runtime_class(session.runtime).tolerance(artifact.precision, tf32)
    results = check_outputs(session.run(feeds), reference, tol)
    assert all(a.agree for a in results), results
    return feeds


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", GPU_RUNTIMES)
def test_gpu_runtime_rows_from_the_real_worker(runtime, tmp_path, cache_dir):
    """The path `onnxbench run` takes (worker process per group, isolate=True): ok rows that agree, with the
    CUDA-event split, device memory and TF32 recorded, on tiny fp32 and fp16 at two shapes."""
    require_runtime(runtime)
    spec = MatrixSpec(models=["tiny"], precisions=["fp32", "fp16"], runtimes=[runtime], batches=[1, 2],
                      seq_lens=[16], timing=TimingConfig(warmup_iters=3, min_iters=5, min_time_s=0.0))
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=True)
    assert len(summary.rows) == 4
    for row in summary.rows:
        assert row["status"] == "ok", row["reason"]
        assert row["agree"] is True and row["device"] == "cuda:0"
        assert row["compute_ms"] > 0 and row["h2d_ms"] > 0 and row["d2h_ms"] > 0
        assert row["device_mem_mb"] is not None and row["device_mem_mb"] > 0
        options = json.loads(row["options"])
        assert options["tf32"] is False and options["compute_clock"] == "cuda-events"
        if runtime.startswith("ort-"):
            assert "CPUExecutionProvider" not in (row["attention_provider"] or "")


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_ort_cuda_reuses_one_binding_and_graph_per_shape_and_its_outputs_agree(tiny_artifact, cuda_graph):
    require_runtime("ort-cuda")
    options = RuntimeOptions(extra={"cuda_graph": cuda_graph})
    with runtimes.get("ort-cuda").open(tiny_artifact, options) as s:
        assert s.provider_actual == "CUDAExecutionProvider" and s.device == "cuda:0"
        assert s.options["tf32"] is False and s.options["cuda_graph"] is cuda_graph
        for batch, seq in ((2, 16), (1, 8)):  # two shapes: with CUDA graphs, two graph ids
            feeds = _check_against_reference(s, tiny_artifact, batch, seq)
            for _ in range(2):  # the latency and the stages prepare the same shape: one binding, one graph
                fn = s.prepare(feeds)
                for _ in range(3):  # capture happens on an early run; later runs replay
                    fn()
                    s.synchronize()
            stages = s.prepare_stages(feeds)
            measure_stages(stages, s.synchronize, TimingConfig(warmup_iters=1, min_iters=3), s.device_timer())
            np.testing.assert_allclose(s.fetch_outputs()["logits"], s.run(feeds)["logits"], rtol=1e-4, atol=1e-4)
        assert len(s._bound) == 2 and s._graphs == (2 if cuda_graph else 0)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_builds_caches_checks_dtype_and_profile(tiny_artifact, tmp_path, monkeypatch):
    require_runtime("tensorrt")
    monkeypatch.setenv("ONNXBENCH_CACHE", str(tmp_path))
    options = RuntimeOptions(profile_ranges=shape_ranges([1, 2], [8, 16]))
    with runtimes.get("tensorrt").open(tiny_artifact, options) as s:
        assert s.options["engine_cache"] == "miss" and s.build_s > 0 and s.options["tf32"] is False
        feeds = _check_against_reference(s, tiny_artifact, 2, 16)
        with pytest.raises(ShapeOutOfRange, match="min"):
            s.run(make_feeds(s.inputs(), 4, 16, int_high=8))
        wrong = "int32" if s.inputs()[0].dtype == "int64" else "int64"
        with pytest.raises(TypeError, match="engine expects"):
            s.run({"input_ids": feeds["input_ids"].astype(wrong)})
        s.prepare(feeds)()
        np.testing.assert_allclose(s.fetch_outputs()["logits"], s.run(feeds)["logits"], rtol=1e-4, atol=1e-4)
        assert set(s.prepare_stages(feeds)) == {"h2d", "compute", "d2h"}
    assert list(tmp_path.glob("tensorrt/timing-*.cache"))
    with runtimes.get("tensorrt").open(tiny_artifact, options) as again:
        assert again.options["engine_cache"] == "hit"


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_ort_trt_runs_on_tensorrt_and_names_the_linked_version(tiny_artifact):
    require_runtime("ort-trt")
    with OrtTrt().open(tiny_artifact, RuntimeOptions(profile_ranges=shape_ranges([1, 2], [8, 16]))) as s:
        assert s.provider_actual == "TensorrtExecutionProvider"
        assert "libnvinfer.so." in s.options["tensorrt_linked"]
        _check_against_reference(s, tiny_artifact, 2, 16, tf32=s.options["tf32"])


@pytest.mark.gpu
def test_cuda_ceilings_are_measured_with_a_tf32_peak():
    require_runtime("torch-cuda")
    from onnxbench.benchmarks.measure.ceilings import measure_ceilings

    c = measure_ceilings(gemm_n=256, copy_bytes=16 * 2**20, cuda=True,
                         timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.0, max_time_s=1.0))
    entry = c["cuda:0"]
    assert not entry["errors"], entry["errors"]
    for key in ("gemm_gflops", "gemm_gflops_tf32", "gemm_gflops_fp16", "gemm_gflops_bf16", "mem_bw_gbs"):
        assert entry[key] > 0


# --- the one-command GPU check ---------------------------------------------------------------------------------

def _gpu_check(*args, timeout=600):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_gpu_check_on_a_machine_without_gpu_lists_what_is_missing_and_exits_0(tmp_path):
    if CUDA_EP.ok or NATIVE_TRT.ok:
        pytest.skip("a GPU runtime is available here: the GPU check would run for real")
    proc = _gpu_check("--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No GPU runtime can run on this machine" in proc.stdout
    for name in ("CUDA driver", "tensorrt (Python)", "ort-cuda", "ort-trt"):
        assert name in proc.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_gpu_check_runs_the_matrix_and_prints_the_table(tmp_path, cache_dir):
    """The script's matrix and table path, exercised with ort-cpu since this machine has no GPU runtime."""
    proc = _gpu_check("--runtimes", "ort-cpu", "--models", "tiny", "--skip-tests", "--min-time", "0",
                      "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("== Results", 1)[1]
    # 8 prefill cells and 8 generate cells (fp32/fp16 x B 1, 4 x padding 0, 0.25); Markdown with tabulate, else plain
    assert "latency_ms_p50" in table and table.count(" ort-cpu ") == 16
    assert (tmp_path / "run" / "results.jsonl").is_file()
    assert (tmp_path / "run" / "generate" / "results.jsonl").is_file()
