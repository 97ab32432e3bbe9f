"""Runtimes: one file per runtime, one registry entry each.

``get(name)`` returns an instance; ``availability()`` lists every registered runtime with (ok, reason).
"""

from __future__ import annotations

from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, ShapeOutOfRange
from .ort import OrtCpu
from .ort_cuda import OrtCuda
from .ort_trt import OrtTrt
from .tensorrt import Tensorrt
from .torch_compile import TorchCompile
from .torch_eager import TorchEager

REGISTRY: dict[str, type[Runtime]] = {
    TorchEager.name: TorchEager,
    OrtCpu.name: OrtCpu,
    OrtCuda.name: OrtCuda,
    Tensorrt.name: Tensorrt,
    OrtTrt.name: OrtTrt,
    TorchCompile.name: TorchCompile,
}


def get(name: str) -> Runtime:
    """Instantiate the runtime registered as ``name``.

    Raises:
        KeyError: for an unknown name (lists the registered ones).
    """
    try:
        return REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; registered: {', '.join(REGISTRY)}") from None


def availability() -> dict[str, tuple[bool, str]]:
    """``{runtime name: (available, reason or detail)}`` for every registered runtime; never raises."""
    return {name: cls.availability() for name, cls in REGISTRY.items()}


__all__ = ["REGISTRY", "Runtime", "RuntimeOptions", "RuntimeUnavailable", "Session", "ShapeOutOfRange",
           "availability", "get"]
