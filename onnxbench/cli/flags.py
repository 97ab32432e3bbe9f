"""Parsers of the command line's list and key=value flags. Each raises :class:`FlagError` (one line, exit status 2)
naming the flag and the form it expects."""

from __future__ import annotations

from pathlib import Path

from ..errors import OnnxbenchError


class FlagError(OnnxbenchError, ValueError):
    """A flag's value cannot be read; the message names the flag and the expected form."""


def csv(values: str | None, flag: str, cast=str, example: str | None = None) -> list | None:
    """``"a,b"`` -> ``[cast(a), cast(b)]``; None when the flag was not given.

    Raises:
        FlagError: for a value ``cast`` cannot read, an empty value among others (``--batches 1,,2``), or a list
            with no value at all (``--runtimes ""``).
    """
    if values is None:
        return None
    parts = [v.strip() for v in values.split(",")]
    if any(parts) and not all(parts):  # "1,,2" or "1,": a value left out is refused, not dropped
        raise FlagError(f"{flag}: an empty value in {values!r}; separate the values by single commas")
    try:
        items = [cast(v) for v in parts if v]
    except ValueError:
        raise FlagError(f"{flag}: could not read {values!r} as a comma-separated list of {_kind(cast)}") from None
    if not items:
        raise FlagError(f"{flag} is empty: give at least one value, e.g. {flag} {example or _EXAMPLE.get(cast, 'a,b')}")
    return items


_EXAMPLE = {int: "1,4", float: "0,0.25", str: "a,b"}


def _kind(cast) -> str:
    return {int: "integers", float: "numbers", str: "names"}.get(cast, cast.__name__)


def key_values(items: list[str] | None, flag: str, form: str, cast, default_key: str | None = None) -> dict:
    """Repeated ``KEY=VALUE`` flags -> ``{KEY: cast(VALUE)}`` (``VALUE`` alone is stored under ``default_key``
    when given).

    Raises:
        FlagError: naming the item and ``form``.
    """
    out = {}
    for item in items or []:
        key, sep, value = item.rpartition("=")
        if not sep and default_key is not None:
            key = default_key
        try:
            if not key:
                raise ValueError
            out[key] = cast(value)
        except ValueError:
            raise FlagError(f"could not read {flag} {item!r}; expected {form}") from None
    return out


def dim(text: str) -> int | list[int]:
    """``SIZE`` or ``MIN:OPT:MAX`` of ``--dim`` (sizes >= 0; checked against the graph later)."""
    parts = [int(p) for p in text.split(":")]
    if len(parts) not in (1, 3):
        raise ValueError(text)
    return parts[0] if len(parts) == 1 else parts


def shape(text: str) -> list[int | str]:
    """``d0,d1,...`` of ``--shape``: sizes or axis names."""
    dims = [int(d) if d.strip().lstrip("-").isdigit() else d.strip() for d in text.split(",")]
    if not text or any(d == "" for d in dims):
        raise ValueError(text)
    return dims


def int_range(text: str) -> list[int]:
    """``LO:HI`` of ``--int-range``."""
    lo, _, hi = text.partition(":")
    return [int(lo), int(hi)]


def reference_models(onnx: list[Path], references: list[str]) -> dict[str, str]:
    """``--reference-model`` values paired with the ``--onnx`` files (by model name, the file's stem): one for
    all, or one per file in order.

    Raises:
        FlagError: for references without files, or a count that is neither 1 nor the number of files.
    """
    if not onnx:
        raise FlagError("--reference-model applies to --onnx files; give the ONNX file to compare with --onnx FILE")
    if len(references) not in (1, len(onnx)):
        raise FlagError(f"{len(references)} --reference-model values for {len(onnx)} --onnx files; give one for "
                        "all files or one per file, in the same order")
    pairs = zip(onnx, references * len(onnx) if len(references) == 1 else references, strict=True)
    return {Path(path).stem: reference for path, reference in pairs}
