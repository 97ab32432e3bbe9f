"""The environment a run was measured in: host, CPU, memory, GPU, library versions, git sha."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

try:  # optional at import: a bare GPU test machine may lack it; the fallbacks below say less, never wrong
    import psutil
except ImportError:  # pragma: no cover - exercised by scripts/gpu_check.py on such machines
    psutil = None

LIBRARIES = ("onnxbench", "torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime-gpu", "onnxruntime",
             "tensorrt", "tensorrt-cu13", "polygraphy", "numpy", "pandas", "transformers")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def gpus() -> list[dict[str, str]]:
    """GPUs as nvidia-smi reports them (name, driver, memory); [] where there is no NVIDIA driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return rows


def cpu_counts() -> tuple[int | None, int | None]:
    """(logical, physical) CPU counts: psutil's, or ``os.cpu_count()`` and None without psutil."""
    if psutil is None:
        return os.cpu_count(), None
    return psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)


def memory_gb() -> float | None:
    """Physical memory in GiB (psutil, else ``sysconf``), rounded to 0.1."""
    if psutil is not None:
        return round(psutil.virtual_memory().total / 2**30, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def cpu_busy_pct(interval: float = 0.5) -> float | None:
    """System-wide CPU utilisation (%) over ``interval`` seconds (``psutil.cpu_percent``); None without psutil."""
    return psutil.cpu_percent(interval=interval) if psutil is not None else None


def versions() -> dict[str, str]:
    """Installed versions of the libraries that matter to the numbers (absent ones left out)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def collect() -> dict:
    """Environment record stored in every run header (JSON-able)."""
    import torch

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count_logical": cpu_counts()[0],
        "cpu_count_physical": cpu_counts()[1],
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": memory_gb(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus(),
        "versions": versions(),
        "git_sha": _git_sha(),
    }
