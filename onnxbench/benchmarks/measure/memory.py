"""Memory of the measuring process and of its GPU: the ``peak_rss_mb`` and ``device_mem_mb`` columns
(docs/schema.md says what each covers)."""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path

from ...runtimes import Session


def reset_peak_rss() -> None:
    """Reset this process's peak resident set size (Linux >= 4.0: writing 5 to ``/proc/self/clear_refs`` resets
    ``VmHWM``; proc(5)). Elsewhere a no-op, and :func:`peak_rss_mb` then reports the process-lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def trim_heap() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim(0)``, malloc_trim(3)), so that memory
    freed after earlier cells is not resident when the next cell's peak is reset. Elsewhere a no-op."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (``VmHWM`` of
    ``/proc/self/status``), else since the process started (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_memory_used(device: str) -> int | None:
    """Bytes in use on the whole CUDA device ``device`` (``"cuda:N"``) from the driver's ``cuMemGetInfo``
    (total - free), or None on the CPU or without a driver. Device-level rather than NVML's per-process
    accounting, whose PIDs are the host's and never match inside a container."""
    if not device.startswith("cuda"):
        return None
    from ...runtimes import cuda_driver

    try:
        return cuda_driver.memory_used(int(device.split(":")[1]) if ":" in device else 0)
    except Exception:  # no driver or not permitted: the column stays empty rather than wrong
        return None


def device_memory_free(device: str) -> int | None:
    """Bytes free on the whole CUDA device ``device`` (``"cuda:N"``) from the driver's ``cuMemGetInfo``, or None
    on the CPU or without a driver (the memory pre-check is then not made)."""
    if not device.startswith("cuda"):
        return None
    from ...runtimes import cuda_driver

    try:
        return cuda_driver.memory_info(int(device.split(":")[1]) if ":" in device else 0)[0]
    except Exception:  # no driver or not permitted: no check rather than a wrong one
        return None


def device_mem_mb(session: Session, baseline: int | None) -> float | None:
    """Device memory (MiB) the session added on its GPU: device-level used memory after the cell minus
    ``baseline``, the same measure taken before the session was opened (with the CUDA context already created,
    so the context itself is not counted). It covers weights, activations, workspaces, engines and what the
    runtimes' memory pools reserved (pools keep their peak, so this is close to the peak reservation); on a GPU
    shared with other processes their allocations in the interval count too. None on the CPU."""
    used = device_memory_used(session.device)
    if used is None or baseline is None:
        return None
    return (used - baseline) / 2**20
