"""Which ONNX opsets each exporter can produce for each attention variant: measured, not guessed.

The table ``opsets.json`` beside this module is written by ``scripts/measure_opsets.py``, which exports the
``tiny`` preset with every exporter, attention variant and opset and keeps an opset only when the file's
``opset_import`` is that opset and the graph holds the variant's attention (the measured table and what the other
opsets produce are in docs/export.md). Two checks use it:

- before anything is exported: :func:`check_opset` (``to_onnx``, ``onnxbench export``) and
  :func:`unsupported_reason` (matrix validation and skipped rows);
- after every export, ``to_onnx`` compares the file's opset with the one asked for, because torch's dynamo
  exporter falls back to its lowest implemented opset when its version conversion fails and only logs it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import OnnxbenchError

TABLE = Path(__file__).with_name("opsets.json")


class UnsupportedOpset(OnnxbenchError, ValueError):
    """The exporter cannot produce the opset asked for with this attention variant (the message names the
    supported ones)."""


@functools.cache
def _table() -> dict:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def supported_opsets(exporter: str, variant: str) -> tuple[int, ...]:
    """Opsets (ascending) at which ``exporter`` produces ``variant``, as measured (empty if none or unknown)."""
    return tuple(sorted(_table()["supported"].get(exporter, {}).get(variant, ())))


def measured_with() -> str:
    """The library versions the table was measured with, e.g. ``"torch 2.13.0+cpu, onnxscript 0.7.2, ..."``."""
    return ", ".join(f"{k} {v}" for k, v in sorted(_table()["measured_with"].items()))


def describe(opsets: tuple[int, ...] | list[int]) -> str:
    """``(17, 18, 19, 23)`` -> ``"17-19, 23"`` (``"none"`` when empty)."""
    runs: list[list[int]] = []
    for o in sorted(opsets):
        if runs and o == runs[-1][-1] + 1:
            runs[-1].append(o)
        else:
            runs.append([o])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


def unsupported_reason(exporter: str, variant: str, opset: int) -> str | None:
    """Why ``exporter`` cannot produce ``variant`` at ``opset`` (naming the supported opsets), or ``None``."""
    supported = supported_opsets(exporter, variant)
    if opset in supported:
        return None
    return (f"the {exporter} exporter cannot produce opset {opset} with {variant} attention; supported opsets: "
            f"{describe(supported)} (measured with torch {_table()['measured_with'].get('torch')}, "
            "docs/export.md)")


def check_opset(exporter: str, variant: str, opset: int) -> None:
    """Refuse an opset the exporter cannot produce for ``variant``.

    Raises:
        UnsupportedOpset: naming the supported opsets.
    """
    reason = unsupported_reason(exporter, variant, opset)
    if reason:
        raise UnsupportedOpset(reason)
