"""Real GPU and GPU-library detection for the GPU runtimes (never trusts a provider list alone).

``onnxruntime.get_available_providers()`` lists CUDA and TensorRT on any machine where the onnxruntime-gpu
wheel is installed, GPU or not, and a session asked for CUDA then silently runs on the CPU. So availability is
decided here from the things that must really be present:

* a CUDA driver with at least one device: ``libcuda.so.1`` loaded with ctypes, ``cuInit(0)`` and
  ``cuDeviceGetCount`` (CUDA Driver API, https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__INITIALIZE.html);
* for ONNX Runtime's CUDA EP: the EP in the build and every CUDA 13 library its provider library links (cuBLAS,
  cuBLASLt, cudart, cuRAND: its ELF ``NEEDED`` entries) plus cuDNN 9, each really loaded after
  ``onnxruntime.preload_dlls()`` (nvidia-* wheels or the CUDA build of torch); a missing one names its wheel;
* for ONNX Runtime's TensorRT EP: ``libnvinfer``, ``libnvonnxparser`` and ``libnvinfer_plugin`` of the TensorRT
  major version the EP links (ORT 1.31: ``.so.10``), loaded ``RTLD_GLOBAL`` in the probe itself, because the EP
  library has no RUNPATH and a worker that never imports ``tensorrt`` would otherwise fail to load it;
* for the native runtime: the ``tensorrt`` Python package and a CUDA build of torch (its CUDA tensors are the
  engine's I/O buffers).

Every probe returns a :class:`Probe` and never raises; the reason of a failed probe names the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import io
import os
import re
import struct
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
    """Marketing name of CUDA device ``device_id`` (e.g. ``"NVIDIA H200"``), or ``"unknown"``.

    Asked of the driver (``cuDeviceGetName``), which creates no CUDA context, so an ONNX Runtime worker does not
    get a torch context (and its memory) just for a label; ``nvidia-smi`` where the driver call fails.
    """
    from . import cuda_driver

    try:
        return cuda_driver.device_name(device_id)
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
    """Versioned sonames (``libX.so.N``) named inside a shared library: its ``DT_NEEDED`` entries and the
    libraries it ``dlopen``s by name (e.g. ``libnvinfer_plugin.so.10``) are plain strings in it, so a byte scan
    finds them without loading the library (which would fail exactly when a dependency is missing). May also
    list sonames the library only mentions in messages; :func:`elf_needed` gives the link-time list alone.

    Returns [] if the file cannot be read.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return sorted({m.decode() for m in re.findall(rb"lib[A-Za-z0-9_+-]+\.so\.[0-9]+", data)})


def elf_needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF shared library, in link order (what ``readelf -d``
    lists as NEEDED): the ``SHT_DYNAMIC`` section's tag-1 entries are offsets into the string table its
    ``sh_link`` names (System V ABI, "Dynamic Section"). Returns [] for anything else or an unreadable file."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # ELFCLASS64, ELFDATA2LSB
        return []
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        needed = []
        for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
            if sh_type != 6:  # SHT_DYNAMIC
                continue
            strtab = sections[link][4]
            for pos in range(offset, offset + size, entsize or 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 0:  # DT_NULL
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(data[strtab + value:data.index(b"\0", strtab + value)].decode())
        return needed
    except (struct.error, IndexError, ValueError):
        return []


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


#: Which pip wheel ships each GPU library (soname stem -> package), for the fix in a probe's reason. A CUDA 13
#: build of torch depends on the same nvidia-* wheels, so installing it brings the CUDA ones too.
LIBRARY_WHEELS = {
    "libcudart": "nvidia-cuda-runtime (onnxruntime-gpu[cuda])",
    "libcublas": "nvidia-cublas",
    "libcublasLt": "nvidia-cublas",
    "libcurand": "nvidia-curand (onnxruntime-gpu[cuda])",
    "libcufft": "nvidia-cufft (onnxruntime-gpu[cuda])",
    "libnvrtc": "nvidia-cuda-nvrtc (onnxruntime-gpu[cuda])",
    "libcudnn": "nvidia-cudnn-cu13 (onnxruntime-gpu[cudnn])",
    "libnvinfer": "tensorrt-cu13-libs (onnxbench[gpu])",
    "libnvinfer_plugin": "tensorrt-cu13-libs (onnxbench[gpu])",
    "libnvonnxparser": "tensorrt-cu13-libs (onnxbench[gpu])",
}
#: The CUDA 13 libraries ONNX Runtime's CUDA EP needs when its provider library cannot be read: its NEEDED list
#: in onnxruntime-gpu 1.31 (cuBLASLt, cuBLAS, cuRAND, cudart) plus cuDNN 9, which it loads for Conv/attention.
CUDA_EP_LIBRARIES = ("libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcudnn.so.9")
#: Libraries never worth probing: the C/C++ runtime and the driver (probed by :func:`cuda_driver`).
_SYSTEM_LIBRARIES = re.compile(r"lib(c|m|dl|rt|pthread|gcc_s|stdc\+\+|cuda|onnxruntime.*)\.so\.\d+|ld-linux.*")


def _soname_stem(soname: str) -> str:
    return soname.split(".so", 1)[0]


def library_dirs() -> list[Path]:
    """Folders of pip-installed GPU libraries on ``sys.path``: TensorRT's ``tensorrt_libs`` (``tensorrt-cuXX-libs``)
    and the nvidia-* wheels' ``nvidia/<component>/lib`` and ``nvidia/cuNN/lib`` (CUDA 13's consolidated layout),
    which carry no RUNPATH entry the dynamic loader would find by itself."""
    dirs = []
    for entry in sys.path:
        root = Path(entry or ".")
        for sub in ("tensorrt_libs", "tensorrt_cu13_libs", "tensorrt_cu12_libs"):
            if (root / sub).is_dir():
                dirs.append(root / sub)
        nvidia = root / "nvidia"
        if nvidia.is_dir():
            dirs.extend(sorted(p for p in nvidia.glob("*/lib") if p.is_dir()))
    return dirs


def load_library(soname: str, dirs: list[Path] | None = None, global_: bool = True) -> Probe:
    """Load ``soname`` with ctypes: first from ``dirs`` (default :func:`library_dirs`), then by name through the
    dynamic loader (``LD_LIBRARY_PATH``, ldconfig, or a library already loaded, e.g. by
    ``onnxruntime.preload_dlls()`` or ``import torch``). ``RTLD_GLOBAL`` lets a library loaded later (an ONNX
    Runtime EP without RUNPATH) find it by soname.

    Returns a Probe whose detail is the path that loaded, or why none did and which wheel provides it.
    """
    mode = ctypes.RTLD_GLOBAL if global_ else ctypes.DEFAULT_MODE
    candidates = [str(d / soname) for d in (library_dirs() if dirs is None else dirs) if (d / soname).exists()]
    errors = []
    for candidate in [*candidates, soname]:
        try:
            ctypes.CDLL(candidate, mode=mode)
            return Probe(True, candidate)
        except OSError as exc:
            errors.append(str(exc))
    wheel = LIBRARY_WHEELS.get(_soname_stem(soname))
    fix = f"pip install {wheel}, " if wheel else ""
    return Probe(False, f"{soname} not loadable ({errors[-1]}); {fix}or add its folder to LD_LIBRARY_PATH")


def load_libraries(sonames: list[str], dirs: list[Path] | None = None) -> Probe:
    """:func:`load_library` for each of ``sonames`` in order; ok when all load, else the reasons of the missing
    ones (each with its wheel)."""
    probes = {name: load_library(name, dirs) for name in sonames}
    missing = [p.detail for p in probes.values() if not p.ok]
    if missing:
        return Probe(False, "; ".join(missing))
    return Probe(True, ", ".join(f"{name} ({Path(p.detail).parent})" if "/" in p.detail else name
                                 for name, p in probes.items()))


@functools.lru_cache(maxsize=4)
def nvinfer(major: int) -> Probe:
    """Load ``libnvinfer.so.<major>`` (system path or a pip ``tensorrt_libs`` folder) and read its version."""
    loaded = load_library(f"libnvinfer.so.{major}")
    if not loaded.ok:
        return Probe(False, f"{loaded.detail} (install TensorRT {major}.x, e.g. `pip install 'tensorrt-cu13<"
                            f"{major + 1}'`)")
    try:
        version = decode_trt_version(int(ctypes.CDLL(loaded.detail).getInferLibVersion()))
    except Exception:
        version = "unknown version"
    return Probe(True, f"libnvinfer.so.{major} {version} ({loaded.detail})")


def tensorrt_ep_libraries(major: int, dirs: list[Path] | None = None) -> Probe:
    """Load what ONNX Runtime's TensorRT EP needs from TensorRT ``major``: ``libnvinfer``, ``libnvonnxparser``
    (both NEEDED, the EP library has no RUNPATH) and ``libnvinfer_plugin`` (``dlopen``ed by the EP), from one
    folder where possible, ``RTLD_GLOBAL`` so that the EP finds them when ONNX Runtime loads it."""
    return load_libraries([f"libnvinfer.so.{major}", f"libnvinfer_plugin.so.{major}", f"libnvonnxparser.so.{major}"],
                          dirs)


def ep_cuda_libraries(provider_library: str, default: tuple[str, ...] = CUDA_EP_LIBRARIES) -> list[str]:
    """The CUDA / cuDNN / TensorRT sonames an ONNX Runtime provider library links (its NEEDED list less the C
    runtime and the driver), plus cuDNN 9, which the CUDA EP loads at run time; ``default`` when the provider
    library cannot be read (e.g. the onnxruntime CPU wheel, which has none)."""
    capi = _ort_capi_dir()
    needed = elf_needed(capi / provider_library) if capi else []
    names = [n for n in needed if not _SYSTEM_LIBRARIES.fullmatch(n)]
    if not names:
        return list(default)
    if "libcudnn.so.9" not in names and provider_library == "libonnxruntime_providers_cuda.so":
        names.append("libcudnn.so.9")
    return names


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
        try:
            wheel = f"onnxruntime-gpu {importlib.metadata.version('onnxruntime-gpu')}"
        except importlib.metadata.PackageNotFoundError:
            wheel = f"the CPU-only onnxruntime {ort.__version__} wheel"
        return Probe(False, f"this onnxruntime build has no {provider} ({wheel} is installed; onnxruntime-gpu "
                            "provides it: install it in place of onnxruntime, never beside it)")
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


@functools.lru_cache(maxsize=1)
def ort_cuda_ep() -> Probe:
    """Can ONNX Runtime's CUDA EP run here: the EP is in the build, a CUDA device is present, and the CUDA 13
    libraries its provider library links (cuBLAS/cuBLASLt, cudart, cuRAND) and cuDNN 9 load (after
    ``onnxruntime.preload_dlls()``); otherwise ONNX Runtime drops the EP and runs every node on the CPU."""
    listed = _ort_ep_listed("CUDAExecutionProvider")
    if not listed.ok:
        return listed
    driver = cuda_driver()
    if not driver.ok:
        return Probe(False, f"{driver.detail}; onnxruntime-gpu would silently run on the CPU")
    preload_cuda_libraries()
    libs = load_libraries(ep_cuda_libraries("libonnxruntime_providers_cuda.so"))
    if not libs.ok:
        return Probe(False, f"ONNX Runtime's CUDA EP cannot load: {libs.detail} (a CUDA 13 build of torch brings "
                            "all of them)")
    return Probe(True, f"{listed.detail}; {driver.detail}; loads {libs.detail}")


@functools.lru_cache(maxsize=1)
def ort_tensorrt_ep() -> Probe:
    """Can ONNX Runtime's TensorRT EP run here: CUDA EP requirements, the CUDA/cuDNN libraries the TensorRT EP
    links, and the TensorRT it links (``libnvinfer``, ``libnvonnxparser``, ``libnvinfer_plugin`` of one major
    version), loaded ``RTLD_GLOBAL`` so that the EP finds them in this process."""
    cuda = ort_cuda_ep()
    if not cuda.ok:
        return cuda
    listed = _ort_ep_listed("TensorrtExecutionProvider")
    if not listed.ok:
        return listed
    major = ort_tensorrt_major()
    if major is None:
        return Probe(False, "cannot tell which libnvinfer ONNX Runtime's TensorRT EP links")
    trt_libs = tensorrt_ep_libraries(major)
    if not trt_libs.ok:
        return Probe(False, f"ONNX Runtime's TensorRT EP links TensorRT {major}: {trt_libs.detail}")
    others = [n for n in ep_cuda_libraries("libonnxruntime_providers_tensorrt.so", ())
              if _soname_stem(n) not in ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")]
    libs = load_libraries(others)
    if not libs.ok:
        return Probe(False, f"ONNX Runtime's TensorRT EP cannot load: {libs.detail}")
    return Probe(True, f"{listed.detail}; links {nvinfer(major).detail}")


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


def torch_cuda_runtime() -> Probe:
    """Can torch run the reference module on a GPU: the driver sees a device and torch is a CUDA build that
    sees it too."""
    driver = cuda_driver()
    if not driver.ok:
        return driver
    return torch_cuda()


def report() -> dict[str, Probe]:
    """Every GPU component this package looks for, by name (for ``onnxbench doctor`` and the GPU check): the
    driver, torch, each CUDA library ONNX Runtime's CUDA EP needs (with the wheel that provides it), the
    TensorRT libraries its TensorRT EP needs, and the tensorrt package."""
    major = ort_tensorrt_major() or 10
    rows = {"CUDA driver": cuda_driver(), "torch CUDA": torch_cuda(),
            "onnxruntime CUDA EP": _ort_ep_listed("CUDAExecutionProvider")}
    if rows["onnxruntime CUDA EP"].ok:
        preload_cuda_libraries()
        for soname in ep_cuda_libraries("libonnxruntime_providers_cuda.so"):
            rows[f"{soname} (ORT CUDA EP)"] = load_library(soname)
    for soname in (f"libnvinfer.so.{major}", f"libnvinfer_plugin.so.{major}", f"libnvonnxparser.so.{major}"):
        rows[f"{soname} (ORT TensorRT EP)"] = nvinfer(major) if soname.startswith("libnvinfer.") else \
            load_library(soname)
    rows["tensorrt (Python)"] = tensorrt_python()
    if os.environ.get("NVIDIA_TF32_OVERRIDE") is not None:
        rows["NVIDIA_TF32_OVERRIDE"] = Probe(True, os.environ["NVIDIA_TF32_OVERRIDE"])
    return rows


#: ``ONNXBENCH_REQUIRE_GPU``: "1" (or "all") makes every GPU runtime required, a comma-separated list of runtime
#: names makes those required; a required runtime's skip is a failure (rows ``failed``, tests fail), so that a
#: GPU check cannot pass by skipping (the GPU counterpart of ``ONNXBENCH_REQUIRE_CHROMIUM``).
REQUIRE_GPU_ENV = "ONNXBENCH_REQUIRE_GPU"


def required_gpu_runtimes(gpu_runtimes: list[str]) -> set[str]:
    """The runtimes of ``gpu_runtimes`` that ``$ONNXBENCH_REQUIRE_GPU`` makes required (see
    :data:`REQUIRE_GPU_ENV`); empty when it is unset, empty or ``0``.

    Raises:
        ValueError: for a name in the variable that is not one of ``gpu_runtimes``.
    """
    value = os.environ.get(REQUIRE_GPU_ENV, "").strip()
    if value in ("", "0"):
        return set()
    if value.lower() in ("1", "all"):
        return set(gpu_runtimes)
    names = {v.strip() for v in value.split(",") if v.strip()}
    unknown = names - set(gpu_runtimes)
    if unknown:
        raise ValueError(f"{REQUIRE_GPU_ENV}={value!r}: {sorted(unknown)} are not GPU runtimes; "
                         f"use 1 or some of {sorted(gpu_runtimes)}")
    return names
