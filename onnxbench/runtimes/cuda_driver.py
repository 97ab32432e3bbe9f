"""The few CUDA Driver API calls the GPU runtimes need without a torch CUDA context, through ctypes.

``libcuda.so.1`` comes with the NVIDIA driver, so these work on any machine with a GPU whatever else is
installed (a CPU build of torch, no cuda-python): the device name (``cuDeviceGetName``), device memory in use
(``cuMemGetInfo``), and for ONNX Runtime sessions a stream of our own (passed to the EP as
``user_compute_stream``), CUDA events on it (``cuEventRecord`` / ``cuEventElapsedTime``), page-locked host
buffers (``cuMemAllocHost``) and asynchronous copies (``cuMemcpyHtoDAsync`` / ``cuMemcpyDtoHAsync``).

Every call runs in the device's *primary* context (``cuDevicePrimaryContextRetain``), the context the CUDA
runtime API, and hence ONNX Runtime and torch, use, so streams, events and device pointers are shared with them
(CUDA Programming Guide, "Interoperability between Runtime and Driver APIs"). Docs:
https://docs.nvidia.com/cuda/cuda-driver-api/ (Initialization, Device, Primary Context, Memory, Stream, Event).

Nothing here is verified on a GPU yet (docs/gpu.md); the calls follow the documented signatures.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

CU_STREAM_NON_BLOCKING = 0x1
CU_EVENT_DEFAULT = 0x0


class CudaError(RuntimeError):
    """A CUDA Driver API call returned an error; the message names the call and the ``CUresult``."""


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcuda.so.1")
    rc = lib.cuInit(0)
    if rc != 0:
        raise CudaError(f"cuInit failed with CUresult {rc}")
    return lib


def _fn(*names: str) -> Callable[..., int]:
    """The first of ``names`` the driver exports (versioned entry points such as ``cuMemGetInfo_v2`` are what
    ``cuda.h`` maps the plain names to)."""
    lib = _lib()
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    raise CudaError(f"the CUDA driver exports none of {names}")


def check(rc: int, call: str) -> None:
    """Raise :class:`CudaError` for a non-zero ``CUresult`` (with its name from ``cuGetErrorName``)."""
    if rc == 0:
        return
    name = ctypes.c_char_p()
    try:
        _lib().cuGetErrorName(rc, ctypes.byref(name))
    except Exception:
        pass
    raise CudaError(f"{call} failed: CUresult {rc} ({(name.value or b'?').decode()})")


def available() -> bool:
    """Whether ``libcuda.so.1`` loads and ``cuInit`` succeeds (never raises)."""
    try:
        _lib()
        return True
    except Exception:
        return False


def device_name(device_id: int = 0) -> str:
    """``cuDeviceGetName`` of CUDA device ``device_id`` (e.g. ``"NVIDIA H200"``); creates no context.

    Raises:
        OSError / CudaError: without a driver or for a bad device id.
    """
    dev = ctypes.c_int()
    check(_fn("cuDeviceGet")(ctypes.byref(dev), device_id), "cuDeviceGet")
    buf = ctypes.create_string_buffer(256)
    check(_fn("cuDeviceGetName")(buf, len(buf), dev), "cuDeviceGetName")
    return buf.value.decode()


@functools.lru_cache(maxsize=8)
def primary_context(device_id: int = 0) -> int:
    """Retain device ``device_id``'s primary context (kept for the life of the process) and make it current on
    the calling thread; returns its handle. Retaining it first makes the runtime API of ORT / torch use it too.

    Raises:
        CudaError: if the driver refuses.
    """
    dev = ctypes.c_int()
    check(_fn("cuDeviceGet")(ctypes.byref(dev), device_id), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(_fn("cuDevicePrimaryContextRetain")(ctypes.byref(ctx), dev), "cuDevicePrimaryContextRetain")
    check(_fn("cuCtxSetCurrent")(ctx), "cuCtxSetCurrent")
    return ctx.value


def _current(device_id: int) -> None:
    check(_fn("cuCtxSetCurrent")(ctypes.c_void_p(primary_context(device_id))), "cuCtxSetCurrent")


def memory_info(device_id: int = 0) -> tuple[int, int]:
    """``(free, total)`` bytes of the whole device from ``cuMemGetInfo``. Retains the primary context (its own
    memory then counts as used).

    Raises:
        OSError / CudaError: without a driver or device.
    """
    _current(device_id)
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    check(_fn("cuMemGetInfo_v2", "cuMemGetInfo")(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
    return free.value, total.value


def memory_used(device_id: int = 0) -> int:
    """Device memory in use on the whole device, in bytes: ``total - free`` from ``cuMemGetInfo``
    (:func:`memory_info`).

    Device-level, so it works inside containers (where NVML's per-process accounting sees host PIDs that do
    not match the container's); it counts every process on the device, so a delta is exact only while this
    process is the device's only user. Retains the primary context (its own memory then counts as used).

    Raises:
        OSError / CudaError: without a driver or device.
    """
    free, total = memory_info(device_id)
    return total - free


class Stream:
    """A non-blocking CUDA stream on device ``device_id`` (``cuStreamCreate(CU_STREAM_NON_BLOCKING)``).

    ``handle`` is the ``CUstream`` / ``cudaStream_t`` address, e.g. for ONNX Runtime's ``user_compute_stream``.
    """

    def __init__(self, device_id: int = 0) -> None:
        self.device_id = device_id
        _current(device_id)
        stream = ctypes.c_void_p()
        check(_fn("cuStreamCreate")(ctypes.byref(stream), CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        self.handle: int = stream.value

    def synchronize(self) -> None:
        """Wait until all work queued on the stream has finished."""
        check(_fn("cuStreamSynchronize")(ctypes.c_void_p(self.handle)), "cuStreamSynchronize")

    def copy_to_device(self, dst_ptr: int, src_ptr: int, nbytes: int) -> None:
        """Queue a host-to-device copy (asynchronous when ``src_ptr`` is page-locked)."""
        check(_fn("cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync")(ctypes.c_uint64(dst_ptr), ctypes.c_void_p(src_ptr),
                                                              ctypes.c_size_t(nbytes), ctypes.c_void_p(self.handle)),
              "cuMemcpyHtoDAsync")

    def copy_to_host(self, dst_ptr: int, src_ptr: int, nbytes: int) -> None:
        """Queue a device-to-host copy (asynchronous when ``dst_ptr`` is page-locked)."""
        check(_fn("cuMemcpyDtoHAsync_v2", "cuMemcpyDtoHAsync")(ctypes.c_void_p(dst_ptr), ctypes.c_uint64(src_ptr),
                                                              ctypes.c_size_t(nbytes), ctypes.c_void_p(self.handle)),
              "cuMemcpyDtoHAsync")

    def close(self) -> None:
        if self.handle:
            _fn("cuStreamDestroy_v2", "cuStreamDestroy")(ctypes.c_void_p(self.handle))
            self.handle = 0


class EventTimer:
    """Device time between two CUDA events recorded on ``stream`` (ms), as trtexec's "GPU Compute Time" is
    measured: ``start()`` before the work is queued, ``stop()`` after, ``elapsed_ms()`` once the stream is
    synchronised (resolution about 0.5 µs, ``cuEventElapsedTime``)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        _current(stream.device_id)
        self._events = []
        for _ in range(2):
            event = ctypes.c_void_p()
            check(_fn("cuEventCreate")(ctypes.byref(event), CU_EVENT_DEFAULT), "cuEventCreate")
            self._events.append(event)

    def start(self) -> None:
        check(_fn("cuEventRecord")(self._events[0], ctypes.c_void_p(self.stream.handle)), "cuEventRecord")

    def stop(self) -> None:
        check(_fn("cuEventRecord")(self._events[1], ctypes.c_void_p(self.stream.handle)), "cuEventRecord")

    def elapsed_ms(self) -> float:
        check(_fn("cuEventSynchronize")(self._events[1]), "cuEventSynchronize")
        ms = ctypes.c_float()
        check(_fn("cuEventElapsedTime_v2", "cuEventElapsedTime")(ctypes.byref(ms), *self._events),
              "cuEventElapsedTime")
        return float(ms.value)


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (``cuMemAllocHost``), freed by :meth:`close`; ``ptr`` is its address.
    Copies from and to it are DMA transfers that can run asynchronously on a stream."""

    def __init__(self, nbytes: int, device_id: int = 0) -> None:
        _current(device_id)
        ptr = ctypes.c_void_p()
        check(_fn("cuMemAllocHost_v2", "cuMemAllocHost")(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))),
              "cuMemAllocHost")
        self.ptr: int = ptr.value
        self.nbytes = nbytes

    def view(self) -> memoryview:
        """The buffer as a writable memoryview of ``nbytes`` bytes (wrap it with ``numpy.frombuffer``)."""
        return memoryview((ctypes.c_byte * self.nbytes).from_address(self.ptr)).cast("B")

    def close(self) -> None:
        if self.ptr:
            _fn("cuMemFreeHost")(ctypes.c_void_p(self.ptr))
            self.ptr = 0
