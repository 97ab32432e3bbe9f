"""Runtimes: one file per runtime, one registry line each.

``get(name)`` returns an instance; ``registry()`` maps names to classes; ``availability()`` lists every
registered runtime with (ok, reason).

Adding a runtime: write a module with a :class:`Runtime` subclass (class attributes ``name``, ``device``,
``options_type``, ``tolerances``; methods ``availability`` and ``_open``; optionally ``tuning_grid`` and a
session with ``attention_placement``) and register it in one of three ways:

* a built-in: one line in :data:`_BUILTIN` below;
* in-process: ``onnxbench.runtimes.register(MyRuntime)`` (also usable as a class decorator); the matrix runner
  passes the module to its worker processes, which import it again (so it must be importable, not ``__main__``);
* a plug-in: an entry point in the ``onnxbench.runtimes`` group naming the class (``pkg.module:MyRuntime``), or a
  module listed in ``$ONNXBENCH_RUNTIMES`` (comma-separated module names) that calls ``register`` on import.
  Plug-ins load on first use of the registry, in every process, workers included.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ..errors import OnnxbenchError
from .base import Runtime, RuntimeOptions, RuntimeUnavailable, Session, ShapeOutOfRange, TypedOptions
from .ort import OrtCpu
from .ort_cuda import OrtCuda
from .ort_genai import OrtGenai, OrtGenaiCuda
from .ort_trt import OrtTrt
from .tensorrt import Tensorrt
from .torch_compile import TorchCompile, TorchCompileCuda
from .torch_cuda import TorchCuda
from .torch_eager import TorchEager

#: Environment variable: comma-separated modules that register runtimes when imported.
PLUGIN_ENV = "ONNXBENCH_RUNTIMES"
#: Entry-point group whose entries are :class:`Runtime` subclasses.
ENTRY_POINT_GROUP = "onnxbench.runtimes"

_BUILTIN: tuple[type[Runtime], ...] = (TorchEager, OrtCpu, OrtCuda, Tensorrt, OrtTrt, TorchCompile, TorchCuda,
                                      TorchCompileCuda, OrtGenai, OrtGenaiCuda)
_REGISTRY: dict[str, type[Runtime]] = {cls.name: cls for cls in _BUILTIN}
_plugins_loaded = False


class PluginError(OnnxbenchError, ImportError):
    """A runtime plug-in that cannot be loaded or registered (names the plug-in and the cause)."""


def register(cls: type[Runtime]) -> type[Runtime]:
    """Add ``cls`` to the registry under ``cls.name`` and return it (so it also works as a class decorator).
    Registering the same class again is a no-op.

    Raises:
        PluginError: if ``cls`` is not a concrete :class:`Runtime` subclass with a name and a
            :class:`TypedOptions` options type, or another class already has the name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Runtime)) or getattr(cls, "__abstractmethods__", None):
        raise PluginError(f"{cls!r} is not a concrete onnxbench.runtimes.Runtime subclass "
                          "(it needs availability() and _open())")
    if not cls.name or not (isinstance(cls.options_type, type) and issubclass(cls.options_type, TypedOptions)):
        raise PluginError(f"{cls.__qualname__} needs a non-empty `name` and an `options_type` derived from "
                          "onnxbench.runtimes.TypedOptions")
    if cls.device not in ("cpu", "cuda"):
        raise PluginError(f"{cls.__qualname__}.device must be 'cpu' or 'cuda', got {cls.device!r}")
    present = _REGISTRY.get(cls.name)
    if present is not None and present is not cls:
        raise PluginError(f"runtime name {cls.name!r} is taken by {present.__module__}.{present.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a runtime added with :func:`register` (built-ins stay).

    Raises:
        KeyError: if ``name`` is not a registered plug-in.
    """
    if name not in _REGISTRY or _REGISTRY[name] in _BUILTIN:
        raise KeyError(f"{name!r} is not a registered plug-in runtime")
    del _REGISTRY[name]


def load_plugins() -> None:
    """Import the plug-ins of ``$ONNXBENCH_RUNTIMES`` and the ``onnxbench.runtimes`` entry points, once.

    Raises:
        PluginError: naming the plug-in that failed to import or register, and why.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"runtime plug-in module {module!r} (from ${PLUGIN_ENV}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as exc:
            raise PluginError(f"runtime entry point {entry.name!r} ({entry.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        register(cls)


def registry() -> Mapping[str, type[Runtime]]:
    """``{name: Runtime subclass}`` of every registered runtime (built-ins first, then plug-ins), read-only."""
    load_plugins()
    return MappingProxyType(_REGISTRY)


def runtime_class(name: str) -> type[Runtime]:
    """The class registered as ``name``.

    Raises:
        KeyError: for an unknown name (lists the registered ones).
    """
    known = registry()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; registered: {', '.join(known)}") from None


def get(name: str) -> Runtime:
    """Instantiate the runtime registered as ``name``.

    Raises:
        KeyError: for an unknown name (lists the registered ones).
    """
    return runtime_class(name)()


def availability() -> dict[str, tuple[bool, str]]:
    """``{runtime name: (available, reason or detail)}`` for every registered runtime; never raises."""
    return {name: cls.availability() for name, cls in registry().items()}


def plugin_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a worker process, extended so that the worker registers the same runtimes as this
    process: the modules of runtimes registered in-process are appended to ``$ONNXBENCH_RUNTIMES`` and their
    import roots to ``$PYTHONPATH``.

    Raises:
        PluginError: for a runtime defined in ``__main__`` (a worker cannot import it).
    """
    env = dict(environ)
    modules = [m.strip() for m in env.get(PLUGIN_ENV, "").split(",") if m.strip()]
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    for cls in registry().values():
        if cls in _BUILTIN or cls.__module__ in modules:
            continue
        if cls.__module__ == "__main__":
            raise PluginError(f"runtime {cls.name!r} is defined in __main__, which worker processes cannot "
                              "import; move it into a module (or run the matrix with isolate=False)")
        modules.append(cls.__module__)
        source = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if source:  # the folder that holds the module's top-level package
            depth = cls.__module__.count(".") + (Path(source).name == "__init__.py")
            root = str(Path(source).resolve().parents[depth])
            if root not in paths:
                paths.append(root)
    if modules:
        env[PLUGIN_ENV] = ",".join(modules)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_ENV", "PluginError", "Runtime", "RuntimeOptions", "RuntimeUnavailable",
           "Session", "ShapeOutOfRange", "TypedOptions", "availability", "get", "load_plugins",
           "plugin_environment", "register", "registry", "runtime_class", "unregister"]
