"""What one cell measures: one module per scenario behind one contract (:mod:`.base`), one registry line each.

==============  ======================================================================================
scenario        what a cell measures
==============  ======================================================================================
``prefill``     one forward pass over B x T tokens (:mod:`.prefill`)
``generate``    greedy decoding of N tokens after a prompt, with the KV cache: TTFT, TPOT (:mod:`.generate`)
==============  ======================================================================================

Adding a scenario: a module with a :class:`Scenario` subclass and a line in :data:`SCENARIOS` (or, from outside
the package, :func:`register`; the scenario travels to the worker processes with the groups it measures, so its
module must be importable there, not ``__main__``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ...errors import MatrixError
from .base import CellContext, Scenario
from .generate import Generate
from .prefill import Prefill

_REGISTRY: dict[str, Scenario] = {s.name: s for s in (Prefill(), Generate())}

#: ``{name: scenario}`` of every registered scenario, read-only.
SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_REGISTRY)


def register(scenario: Scenario) -> Scenario:
    """Add ``scenario`` (an instance of a :class:`Scenario` subclass) under its ``name``; registering the same
    instance again is a no-op.

    Raises:
        MatrixError: for a scenario without a name, or a name taken by another scenario.
    """
    if not isinstance(scenario, Scenario) or not scenario.name:
        raise MatrixError(f"{scenario!r} is not a named onnxbench Scenario instance")
    present = _REGISTRY.get(scenario.name)
    if present is not None and present is not scenario:
        raise MatrixError(f"scenario name {scenario.name!r} is taken by {type(present).__qualname__}")
    _REGISTRY[scenario.name] = scenario
    return scenario


def unregister(name: str) -> None:
    """Remove a scenario added with :func:`register`.

    Raises:
        KeyError: for a name that is not registered.
    """
    del _REGISTRY[name]


def get(name: str) -> Scenario:
    """The scenario registered as ``name``.

    Raises:
        MatrixError: for an unknown name (lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MatrixError(f"unknown scenario {name!r}; known: {', '.join(_REGISTRY)}") from None


__all__ = ["SCENARIOS", "CellContext", "Scenario", "get", "register", "unregister"]
