"""Machine ceilings: the dense GEMM peak and the memory bandwidth this machine reaches, measured at the start of a
run and stored in the run header (``header["ceilings"]``) so that every cell can be read as a fraction of them.

What is measured (through the timing harness, :func:`onnxbench.benchmarks.measure.timing.measure`):

- **GEMM peak** (GFLOP/s): a square ``(n, n) @ (n, n)`` fp32 product, ``2 n^3`` FLOPs, through each runtime's own
  kernels — ``torch.matmul`` and a one-node ONNX ``MatMul`` in ONNX Runtime's CPU EP (MLAS); the higher is kept
  as the ceiling, both are recorded. On a CUDA device (when ``torch.cuda.is_available()``): fp32 with TF32 off,
  fp32 with TF32 on (``gemm_gflops_tf32``, the roof of cells that ran with TF32 allowed), fp16 and bf16
  ``torch.matmul``, each timed with CUDA events on the current stream (device time, as the cells' split is).
- **Memory bandwidth** (GB/s): a copy of a buffer much larger than the last-level cache, counting the bytes read
  plus the bytes written (``2 * nbytes``), as STREAM's *Copy* kernel does (McCalpin, STREAM benchmark,
  https://www.cs.virginia.edu/stream/ref.html; write-allocate traffic is not counted).

A ceiling must be an **upper bound** by construction, or a cell's fraction of it can exceed 100 %: each is
computed from the **fastest** timed iteration of its probe (the best of the repeats, not a typical iteration; the
median is recorded beside it), and a run probes again at its end (and at the end of every ``--resume``) and keeps,
per ceiling, the higher of all its probes (:func:`best_of`, :func:`reprobe`): a probe met by contention from other
processes reads low, never high. docs/measurement.md ("Ceilings") gives the rule. These are the two roofs of the
roofline model (Williams, Waterman & Patterson, *Roofline: an insightful visual performance model for multicore
architectures*, CACM 52(4), 2009).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .timing import TimingConfig, measure

#: Short timing: the ceilings must cost a few seconds at the start of a run, not minutes.
QUICK_TIMING = TimingConfig(warmup_iters=2, min_iters=5, min_time_s=0.2, max_iters=50, max_time_s=1.5)


def _rates(work: float, fn, synchronize=lambda: None, timing: TimingConfig = QUICK_TIMING,
           device_timer=None) -> tuple[float, float]:
    """(best, median) rate in units of ``work`` per second for one call of ``fn``."""
    result, _ = measure(fn, synchronize, timing, device_timer)
    return work / (result.latency_ms_min / 1e3), work / (result.latency_ms_p50 / 1e3)


def _cuda_clock(device: str):
    """(synchronize, device timer) for ``device``: CUDA events on its current stream, or host time on the CPU."""
    if not device.startswith("cuda"):
        return (lambda: None), None
    import torch

    from ...runtimes.torch_cuda import TorchEventTimer

    stream = torch.cuda.current_stream(device)
    return stream.synchronize, TorchEventTimer(stream)


def torch_gemm_gflops(n: int = 1024, dtype: str = "float32", device: str = "cpu",
                      timing: TimingConfig = QUICK_TIMING, tf32: bool = False) -> tuple[float, float]:
    """(best, median) GFLOP/s of ``torch.matmul`` on two ``(n, n)`` ``dtype`` matrices on ``device``
    (``2 n^3`` FLOPs per product). On CUDA, TF32 is set to ``tf32`` for the duration (fp32 means fp32 unless
    asked) and each product is timed with CUDA events."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=getattr(torch, dtype))
    out = torch.empty_like(a)
    sync, timer = _cuda_clock(device)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        best, median = _rates(2 * n**3 / 1e9, lambda: torch.matmul(a, b, out=out), sync, timing, timer)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
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
    sync, timer = _cuda_clock(device)
    return _rates(2 * nbytes / 1e9, lambda: dst.copy_(src), sync, timing, timer)


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
        ``gemm_gflops_tf32``, ``gemm_gflops_fp16`` and ``gemm_gflops_bf16`` (device time from CUDA events). A
        probe that fails is recorded under its device's ``errors`` and the others still run. ``probe`` holds the
        arguments (so that :func:`reprobe` repeats the same probe); ``probes`` lists each probe's headline
        figures (one entry here; :func:`best_of` concatenates).
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
        try:
            cuda = torch.cuda.is_available()
        except Exception:
            cuda = False
    if cuda:
        out.update(_cuda_ceilings(4 * gemm_n, 4 * copy_bytes, timing))
    out["measure_s"] = time.perf_counter() - start
    out["probe"] = {"gemm_n": gemm_n, "copy_bytes": copy_bytes, "cuda": bool(cuda),
                    "timing": dataclasses.asdict(timing)}
    out["probes"] = [{device: {k: entry[k] for k in RATES if k in entry} for device, entry in _devices(out).items()}]
    return out


def _cuda_ceilings(gemm_n: int, copy_bytes: int, timing: TimingConfig) -> dict[str, Any]:
    """Ceilings of every CUDA device, each probe guarded: a failing one (out of memory, a broken CUDA install)
    is recorded under the device's ``errors`` and the others still run; a failure to enumerate devices is
    recorded under ``"cuda"``."""
    import torch

    out: dict[str, Any] = {}
    try:
        count = torch.cuda.device_count()
    except Exception as exc:
        return {"cuda": {"errors": {"device_count": f"{type(exc).__name__}: {exc}"}}}
    for index in range(count):
        device = f"cuda:{index}"
        gpu: dict[str, Any] = {"gemm_n": gemm_n, "copy_bytes": copy_bytes, "gemm_source": "torch", "tf32": False,
                               "clock": "cuda-events", "errors": {}}
        probes = {
            "name": lambda index=index: torch.cuda.get_device_name(index),
            "gemm_gflops": lambda d=device: torch_gemm_gflops(gemm_n, "float32", d, timing)[0],
            "gemm_gflops_tf32": lambda d=device: torch_gemm_gflops(gemm_n, "float32", d, timing, tf32=True)[0],
            "gemm_gflops_fp16": lambda d=device: torch_gemm_gflops(gemm_n, "float16", d, timing)[0],
            "gemm_gflops_bf16": lambda d=device: torch_gemm_gflops(gemm_n, "bfloat16", d, timing)[0],
            "mem_bw": lambda d=device: copy_gbs(copy_bytes, d, timing),
        }
        for key, probe in probes.items():
            try:
                value = probe()
            except Exception as exc:  # recorded, never fatal: the run's cells matter more than a ceiling
                gpu["errors"][key] = f"{type(exc).__name__}: {exc}"
                continue
            if key == "mem_bw":
                gpu["mem_bw_gbs"], gpu["mem_bw_gbs_median"] = value
            else:
                gpu[key] = value
        out[device] = gpu
    return out


#: The ceilings of a device entry (GFLOP/s or GB/s): merged by keeping the highest.
RATES = ("gemm_gflops", "gemm_gflops_tf32", "gemm_gflops_fp16", "gemm_gflops_bf16", "mem_bw_gbs")


def _devices(ceilings: dict) -> dict[str, dict]:
    return {k: v for k, v in ceilings.items() if isinstance(v, dict) and k not in ("probe",)}


def _max_merge(a, b):
    """Deep merge of two probe results: the larger of two numbers, dicts merged key by key, otherwise ``a``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _max_merge(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return max(a, b)
    return a


def best_of(*measured: dict | None) -> dict | None:
    """Ceilings that bound every probe given: per device, each rate (GEMM GFLOP/s per backend and precision,
    copy GB/s, and their medians) is the highest any probe reached, ``gemm_source`` the backend of the highest
    GEMM; ``probes`` lists every probe's figures in order, ``measure_s`` is their total. ``None`` entries are
    ignored (``None`` if all are).

    The probes must come from :func:`measure_ceilings` (dicts shaped like its result; a hand-written dict with
    only ``{"cpu": {"gemm_gflops": ..., "mem_bw_gbs": ...}}`` works too).
    """
    given = [m for m in measured if m]
    if not given:
        return None
    out: dict[str, Any] = {}
    for m in given:
        for device, entry in _devices(m).items():
            out[device] = _max_merge(out[device], entry) if device in out else dict(entry)
    for entry in out.values():
        backends = entry.get("gemm_gflops_by_backend")
        if backends:
            entry["gemm_source"], entry["gemm_gflops"] = max(backends.items(), key=lambda kv: kv[1])
    out["probes"] = [p for m in given for p in m.get("probes", [])]
    out["measure_s"] = sum(m.get("measure_s", 0.0) for m in given)
    if "probe" in given[0]:
        out["probe"] = given[0]["probe"]
    return out


def reprobe(ceilings: dict | None) -> dict | None:
    """``ceilings`` merged (:func:`best_of`) with a new probe of the same kind (the ``probe`` arguments
    :func:`measure_ceilings` recorded), so that a run's ceilings bound what the machine did at its start and at
    its end. Ceilings without recorded probe arguments (given by hand, e.g. a vendor's peak) are returned as they
    are; so is ``None``."""
    if not ceilings or "probe" not in ceilings:
        return ceilings
    args = dict(ceilings["probe"])
    args["timing"] = TimingConfig(**args["timing"])
    return best_of(ceilings, measure_ceilings(**args))


def peak_for(ceilings: dict | None, device: str, precision: str,
             tf32: bool = False) -> tuple[float | None, float | None]:
    """(GEMM peak GFLOP/s, bandwidth GB/s) that a cell on ``device`` at ``precision`` is read against.

    On the CPU the fp32 peak is used for every precision (ONNX Runtime's CPU EP computes fp16 graphs through
    fp32 casts). On CUDA, fp16/bf16 cells use the matching tensor-core peak, and fp32 cells that ran with TF32
    allowed (``tf32``) the TF32 peak, so that a TF32 cell is not read against the far lower fp32 roof (and a
    fraction cannot exceed 1 for that reason). A quantized precision (``int8-dynamic``) has no GEMM peak unless
    the ceilings hold one of that name: its integer kernels are not bounded by the fp32 peak (int8 gpt2-small
    runs about 2.9x the fp32 rate here, docs/quantization.md). ``(None, None)`` without ceilings.
    """
    from ...export.quantize import QUANTIZED_PRECISIONS

    entry = (ceilings or {}).get(device) or (ceilings or {}).get(device.split(":")[0]) or {}
    if precision in QUANTIZED_PRECISIONS:
        return entry.get(f"gemm_gflops_{precision}"), entry.get("mem_bw_gbs")
    key = "tf32" if precision == "fp32" and tf32 else precision
    flops = entry.get(f"gemm_gflops_{key}") or entry.get("gemm_gflops")
    return flops, entry.get("mem_bw_gbs")
