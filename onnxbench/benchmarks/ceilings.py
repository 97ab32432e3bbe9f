"""Machine ceilings: the dense GEMM peak and the memory bandwidth this machine reaches, measured at the start of a
run and stored in the run header (``header["ceilings"]``) so that every cell can be read as a fraction of them.

What is measured (through the timing harness, :func:`onnxbench.benchmarks.timing.measure`):

- **GEMM peak** (GFLOP/s): a square ``(n, n) @ (n, n)`` fp32 product, ``2 n^3`` FLOPs, through each runtime's own
  kernels — ``torch.matmul`` and a one-node ONNX ``MatMul`` in ONNX Runtime's CPU EP (MLAS); the higher is kept
  as the ceiling, both are recorded. On a CUDA device (when ``torch.cuda.is_available()``): fp32 with TF32 off,
  fp16 and bf16 ``torch.matmul``.
- **Memory bandwidth** (GB/s): a copy of a buffer much larger than the last-level cache, counting the bytes read
  plus the bytes written (``2 * nbytes``), as STREAM's *Copy* kernel does (McCalpin, STREAM benchmark,
  https://www.cs.virginia.edu/stream/ref.html; write-allocate traffic is not counted).

Each ceiling is computed from the **fastest** timed iteration (a ceiling is the best the machine did, not a
typical iteration); the median is recorded beside it. These are the two roofs of the roofline model (Williams,
Waterman & Patterson, *Roofline: an insightful visual performance model for multicore architectures*, CACM 52(4),
2009).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .timing import TimingConfig, measure

#: Short timing: the ceilings must cost a few seconds at the start of a run, not minutes.
QUICK_TIMING = TimingConfig(warmup_iters=2, min_iters=5, min_time_s=0.2, max_iters=50, max_time_s=1.5)


def _rates(work: float, fn, synchronize=lambda: None, timing: TimingConfig = QUICK_TIMING) -> tuple[float, float]:
    """(best, median) rate in units of ``work`` per second for one call of ``fn``."""
    result, _ = measure(fn, synchronize, timing)
    return work / (result.latency_ms_min / 1e3), work / (result.latency_ms_p50 / 1e3)


def torch_gemm_gflops(n: int = 1024, dtype: str = "float32", device: str = "cpu",
                      timing: TimingConfig = QUICK_TIMING) -> tuple[float, float]:
    """(best, median) GFLOP/s of ``torch.matmul`` on two ``(n, n)`` ``dtype`` matrices on ``device``
    (``2 n^3`` FLOPs per product). On CUDA, TF32 is switched off for the duration so that fp32 means fp32."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    out = torch.empty_like(a)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        best, median = _rates(2 * n**3 / 1e9, lambda: torch.matmul(a, b, out=out), sync, timing)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return best, median


def ort_gemm_gflops(n: int = 1024, timing: TimingConfig = QUICK_TIMING) -> tuple[float, float]:
    """(best, median) GFLOP/s of a one-node ONNX ``MatMul`` of two fp32 ``(n, n)`` inputs on ONNX Runtime's CPU
    EP, run through IOBinding so that only the product is timed."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("A", "B")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = min(model.ir_version, 10)  # readable by older onnxruntime releases too
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(onnx.shape_inference.infer_shapes(model).SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    binding = session.io_binding()
    for name in ("A", "B"):
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(
            rng.standard_normal((n, n), dtype=np.float32)))
    binding.bind_output("Y", "cpu")
    return _rates(2 * n**3 / 1e9, lambda: session.run_with_iobinding(binding), timing=timing)


def copy_gbs(nbytes: int = 256 * 2**20, device: str = "cpu", timing: TimingConfig = QUICK_TIMING
             ) -> tuple[float, float]:
    """(best, median) GB/s of ``dst.copy_(src)`` for a ``nbytes`` buffer on ``device``, counting ``2 * nbytes``
    (read + write) per copy as STREAM Copy does."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return _rates(2 * nbytes / 1e9, lambda: dst.copy_(src), sync, timing)


def measure_ceilings(*, gemm_n: int = 1024, copy_bytes: int = 128 * 2**20, cuda: bool | None = None,
                     timing: TimingConfig = QUICK_TIMING) -> dict[str, Any]:
    """Measure the machine's ceilings (a few seconds on a CPU).

    Args:
        gemm_n: side of the square GEMM (FLOPs per product ``2 n^3``).
        copy_bytes: size of the copied buffer (bytes); keep it well above the last-level cache.
        cuda: measure CUDA devices too (default: when ``torch.cuda.is_available()``).
        timing: timing settings for each probe.

    Returns:
        ``{"cpu": {...}, "cuda:0": {...}, "measure_s": s}``. Each device entry has ``gemm_gflops`` (the fp32 GEMM
        ceiling, GFLOP/s), ``gemm_gflops_by_backend`` (``{"torch": ..., "ort": ...}``), ``gemm_source`` (the
        backend that set it), ``mem_bw_gbs`` (GB/s, 1 GB = 1e9 bytes) and the probe sizes; a CUDA entry also has
        ``gemm_gflops_fp16`` and ``gemm_gflops_bf16``. A probe that fails is recorded under ``errors``.
    """
    import torch

    start = time.perf_counter()
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {"gemm_n": gemm_n, "copy_bytes": copy_bytes, "threads": torch.get_num_threads(),
                           "gemm_gflops_by_backend": {}, "gemm_gflops_median_by_backend": {}, "errors": {}}
    for backend, probe in (("torch", lambda: torch_gemm_gflops(gemm_n, timing=timing)),
                           ("ort", lambda: ort_gemm_gflops(gemm_n, timing=timing))):
        try:
            best, median = probe()
            cpu["gemm_gflops_by_backend"][backend] = best
            cpu["gemm_gflops_median_by_backend"][backend] = median
        except Exception as exc:  # one backend failing must not lose the other's ceiling
            cpu["errors"][backend] = f"{type(exc).__name__}: {exc}"
    if cpu["gemm_gflops_by_backend"]:
        cpu["gemm_source"], cpu["gemm_gflops"] = max(cpu["gemm_gflops_by_backend"].items(), key=lambda kv: kv[1])
    cpu["mem_bw_gbs"], cpu["mem_bw_gbs_median"] = copy_gbs(copy_bytes, timing=timing)
    out["cpu"] = cpu
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            gpu: dict[str, Any] = {"name": torch.cuda.get_device_name(index), "gemm_n": 4 * gemm_n,
                                   "copy_bytes": 4 * copy_bytes, "gemm_source": "torch", "tf32": False}
            gpu["gemm_gflops"], _ = torch_gemm_gflops(4 * gemm_n, "float32", device, timing)
            gpu["gemm_gflops_fp16"], _ = torch_gemm_gflops(4 * gemm_n, "float16", device, timing)
            gpu["gemm_gflops_bf16"], _ = torch_gemm_gflops(4 * gemm_n, "bfloat16", device, timing)
            gpu["mem_bw_gbs"], gpu["mem_bw_gbs_median"] = copy_gbs(4 * copy_bytes, device, timing)
            out[device] = gpu
    out["measure_s"] = time.perf_counter() - start
    return out


def peak_for(ceilings: dict | None, device: str, precision: str) -> tuple[float | None, float | None]:
    """(GEMM peak GFLOP/s, bandwidth GB/s) that a cell on ``device`` at ``precision`` is read against.

    On the CPU the fp32 peak is used for every precision (ONNX Runtime's CPU EP computes fp16 graphs through
    fp32 casts). On CUDA, fp16/bf16 cells use the matching tensor-core peak. ``(None, None)`` without ceilings.
    """
    entry = (ceilings or {}).get(device) or (ceilings or {}).get(device.split(":")[0]) or {}
    flops = entry.get(f"gemm_gflops_{precision}") or entry.get("gemm_gflops")
    return flops, entry.get("mem_bw_gbs")
