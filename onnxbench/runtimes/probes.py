"""Real GPU and GPU-library detection for the GPU runtimes (never trusts a provider list alone).

``onnxruntime.get_available_providers()`` lists CUDA and TensorRT on any machine where the onnxruntime-gpu
wheel is installed, GPU or not, and a session asked for CUDA then silently runs on the CPU. So availability is
decided here from the things that must really be present:

* a CUDA driver with at least one device: ``libcuda.so.1`` loaded with ctypes, ``cuInit(0)`` and
  ``cuDeviceGetCount`` (CUDA Driver API, https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__INITIALIZE.html);
* for ONNX Runtime's CUDA EP: its provider library in the wheel and the CUDA runtime / cuBLAS / cuDNN it links
  (found through ``onnxruntime.preload_dlls()`` or the CUDA build of torch);
* for ONNX Runtime's TensorRT EP: ``libnvinfer.so.<major>`` of the TensorRT major version the EP links
  (read from the EP library's ELF ``NEEDED`` entries; ORT 1.31 links ``libnvinfer.so.10``);
* for the native runtime: the ``tensorrt`` Python package and a CUDA build of torch (its CUDA tensors are the
  engine's I/O buffers).

Every probe returns a :class:`Probe` and never raises; the reason of a failed probe names the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    """Result of one detection: ``ok`` and a one-line ``detail`` (what was found, or why not and the fix)."""

    ok: bool
    detail: str


@functools.lru_cache(maxsize=1)
def cuda_driver() -> Probe:
    """The NVIDIA driver's CUDA Driver API and its device count (``cuInit``, ``cuDeviceGetCount``)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Probe(False, "no NVIDIA driver (libcuda.so.1 not found): this machine has no usable CUDA GPU")
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return Probe(False, f"cuInit failed with CUresult {rc} (driver present but no usable GPU)")
        count, version = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetCount(ctypes.byref(count))
        lib.cuDriverGetVersion(ctypes.byref(version))
    except Exception as exc:  # a broken driver install must not crash `doctor`
        return Probe(False, f"CUDA driver unusable: {exc}")
    if count.value < 1:
        return Probe(False, "CUDA driver present but it reports 0 devices")
    v = version.value
    return Probe(True, f"{count.value} CUDA device(s), driver API {v // 1000}.{(v % 1000) // 10}")


@functools.lru_cache(maxsize=1)
def torch_cuda() -> Probe:
    """A CUDA build of torch that sees a device (needed for device buffers of the native TensorRT runtime)."""
    try:
        import torch
    except ImportError:
        return Probe(False, "torch is not installed")
    if torch.version.cuda is None:
        return Probe(False, f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch")
    try:
        if not torch.cuda.is_available():
            return Probe(False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
        return Probe(True, f"torch {torch.__version__} (CUDA {torch.version.cuda}): {torch.cuda.get_device_name(0)}")
    except Exception as exc:
        return Probe(False, f"torch.cuda unusable: {exc}")


def gpu_name(device_id: int = 0) -> str:
    """Marketing name of CUDA device ``device_id`` (e.g. ``"NVIDIA H200"``), or ``"unknown"``."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device_id)
    except Exception:
        pass
    from ..env import gpus

    found = gpus()
    return found[device_id]["name"] if len(found) > device_id else "unknown"


def _ort_capi_dir() -> Path | None:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "capi"


def needed_libraries(path: Path) -> list[str]:
    """Versioned sonames (``libX.so.N``) named inside a shared library: its ``DT_NEEDED`` entries live in
    ``.dynstr`` as plain strings, so a byte scan finds them without loading the library (which would fail
    exactly when a dependency is missing). May also list sonames the library only mentions in messages.

    Returns [] if the file cannot be read. Used to learn which ``libnvinfer.so.N`` ONNX Runtime's TensorRT EP
    was built against.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return []
    # Sonames are NUL-terminated strings in .dynstr; the ones we care about have a fixed shape.
    return sorted({m.decode() for m in re.findall(rb"lib[A-Za-z0-9_+-]+\.so\.[0-9]+", data)})


def ort_tensorrt_major() -> int | None:
    """TensorRT major version ONNX Runtime's TensorRT EP links (``libnvinfer.so.N`` in its NEEDED list)."""
    capi = _ort_capi_dir()
    if capi is None:
        return None
    for name in needed_libraries(capi / "libonnxruntime_providers_tensorrt.so"):
        m = re.fullmatch(r"libnvinfer\.so\.(\d+)", name)
        if m:
            return int(m.group(1))
    return None


def decode_trt_version(value: int) -> str:
    """``getInferLibVersion()``'s integer as ``"major.minor.patch"``.

    NvInferVersion.h: TensorRT >= 10 encodes ``major * 10000 + minor * 100 + patch`` (10.3.0 -> 100300);
    TensorRT 8.x encoded ``major * 1000 + minor * 100 + patch`` (8.6.1 -> 8601).
    """
    if value >= 100000:
        return f"{value // 10000}.{(value // 100) % 100}.{value % 100}"
    return f"{value // 1000}.{(value // 100) % 10}.{value % 100}"


def _library_dirs() -> list[Path]:
    # pip wheels of TensorRT put their .so files in site-packages/tensorrt_libs (tensorrt-cuXX-libs).
    dirs = []
    for entry in sys.path:
        for sub in ("tensorrt_libs", "tensorrt_cu13_libs", "tensorrt_cu12_libs"):
            candidate = Path(entry) / sub
            if candidate.is_dir():
                dirs.append(candidate)
    return dirs


@functools.lru_cache(maxsize=4)
def nvinfer(major: int) -> Probe:
    """Load ``libnvinfer.so.<major>`` (system path or a pip ``tensorrt_libs`` folder) and read its version.

    Loading it with ``RTLD_GLOBAL`` also lets ONNX Runtime's TensorRT EP, which ``dlopen``s the same soname
    later, find a pip-installed TensorRT without ``LD_LIBRARY_PATH``.
    """
    soname = f"libnvinfer.so.{major}"
    candidates = [soname] + [str(d / soname) for d in _library_dirs() if (d / soname).exists()]
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        try:
            version = decode_trt_version(int(lib.getInferLibVersion()))
        except Exception:
            version = "unknown version"
        return Probe(True, f"{soname} {version} ({candidate})")
    return Probe(False, f"{soname} not found (install TensorRT {major}.x, e.g. `pip install 'tensorrt-cu13<"
                        f"{major + 1}'`, or add its lib folder to LD_LIBRARY_PATH)")


@functools.lru_cache(maxsize=1)
def tensorrt_python() -> Probe:
    """The ``tensorrt`` Python package (imports its bundled libraries) and its version."""
    if importlib.util.find_spec("tensorrt") is None:
        return Probe(False, "the tensorrt Python package is not installed (pip install 'onnxbench[gpu]')")
    try:
        import tensorrt as trt
    except Exception as exc:
        return Probe(False, f"import tensorrt failed: {type(exc).__name__}: {exc}")
    return Probe(True, f"tensorrt {trt.__version__}")


def _ort_ep_listed(provider: str) -> Probe:
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception as exc:
        return Probe(False, f"onnxruntime unusable: {exc}")
    if provider not in providers:
        return Probe(False, f"this onnxruntime build has no {provider} (install onnxruntime-gpu)")
    return Probe(True, f"onnxruntime {ort.__version__} lists {provider}")


@functools.lru_cache(maxsize=1)
def preload_cuda_libraries() -> str:
    """Call ``onnxruntime.preload_dlls()`` once (CUDA runtime, cuBLAS, cuDNN from the nvidia-* wheels or the
    CUDA build of torch) so that the CUDA EP can load; returns what it printed (usually nothing)."""
    out = io.StringIO()
    try:
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            with contextlib.redirect_stdout(out):
                ort.preload_dlls()
    except Exception as exc:
        return f"preload_dlls failed: {exc}"
    return out.getvalue().strip()


def ort_cuda_ep() -> Probe:
    """Can ONNX Runtime's CUDA EP run here: the EP is in the build and a CUDA device is present."""
    listed = _ort_ep_listed("CUDAExecutionProvider")
    if not listed.ok:
        return listed
    driver = cuda_driver()
    if not driver.ok:
        return Probe(False, f"{driver.detail}; onnxruntime-gpu would silently run on the CPU")
    return Probe(True, f"{listed.detail}; {driver.detail}")


def ort_tensorrt_ep() -> Probe:
    """Can ONNX Runtime's TensorRT EP run here: CUDA EP requirements plus the TensorRT it links."""
    cuda = ort_cuda_ep()
    if not cuda.ok:
        return cuda
    listed = _ort_ep_listed("TensorrtExecutionProvider")
    if not listed.ok:
        return listed
    major = ort_tensorrt_major()
    if major is None:
        return Probe(False, "cannot tell which libnvinfer ONNX Runtime's TensorRT EP links")
    lib = nvinfer(major)
    if not lib.ok:
        return Probe(False, f"ONNX Runtime's TensorRT EP links libnvinfer.so.{major}: {lib.detail}")
    return Probe(True, f"{listed.detail}; links {lib.detail}")


def native_tensorrt() -> Probe:
    """Can the native TensorRT runtime run here: a GPU, a CUDA build of torch, and the tensorrt package."""
    driver = cuda_driver()
    if not driver.ok:
        return driver
    torch_probe = torch_cuda()
    if not torch_probe.ok:
        return Probe(False, f"{torch_probe.detail} (its CUDA tensors are the engine's I/O buffers)")
    trt_probe = tensorrt_python()
    if not trt_probe.ok:
        return trt_probe
    return Probe(True, f"{trt_probe.detail}; {torch_probe.detail}")


def report() -> dict[str, Probe]:
    """Every GPU component this package looks for, by name (for ``onnxbench doctor`` and the GPU check)."""
    major = ort_tensorrt_major() or 10
    rows = {
        "CUDA driver": cuda_driver(),
        "torch CUDA": torch_cuda(),
        "onnxruntime CUDA EP": ort_cuda_ep(),
        f"libnvinfer.so.{major} (ORT TensorRT EP)": nvinfer(major),
        "tensorrt (Python)": tensorrt_python(),
    }
    if os.environ.get("NVIDIA_TF32_OVERRIDE") is not None:
        rows["NVIDIA_TF32_OVERRIDE"] = Probe(True, os.environ["NVIDIA_TF32_OVERRIDE"])
    return rows
