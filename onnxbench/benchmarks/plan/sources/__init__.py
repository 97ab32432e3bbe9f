"""Model sources: the kinds of model a matrix can benchmark, one class each (contract: :mod:`.base`).

==========================  ===================  ==============================================================
class                       ``MatrixSpec`` field  what it is
==========================  ===================  ==============================================================
:class:`PresetSource`       ``models``           a named preset of the reference transformer, seeded weights
:class:`CheckpointSource`   ``checkpoints``      the reference transformer with a local checkpoint's weights
:class:`OnnxFileSource`     ``onnx``             any ONNX file, run as it is, unoptimized ORT CPU (or a
                            (:class:`OnnxFiles`) ``reference_models`` entry's float64 torch) as its reference
==========================  ===================  ==============================================================

A new kind of model is one :class:`ModelSource` subclass with its options, one entry in :data:`SOURCE_KINDS`,
and the ``MatrixSpec`` field that holds its options (plus a CLI flag if users name them on the command line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ....errors import MatrixError
from .base import ModelSource, SourceSettings
from .onnx_file import OnnxFiles, OnnxFileSource
from .transformer import CheckpointSource, PresetSource, TransformerSource

#: Every kind of model source, in the order their models appear in a matrix.
SOURCE_KINDS: tuple[type[ModelSource], ...] = (PresetSource, CheckpointSource, OnnxFileSource)


def build_sources(options: Mapping[str, Any], settings: SourceSettings) -> dict[str, ModelSource]:
    """``{model name: source}`` of every model the matrix lists, in :data:`SOURCE_KINDS` order.

    Args:
        options: each kind's options by its ``spec_field`` (the matrix's ``models``, ``checkpoints``, ``onnx``).
        settings: what all sources share (seed, exporter).

    Raises:
        ValueError / FileNotFoundError: for an entry no source accepts (see each kind's ``from_options``).
        MatrixError: (a ValueError) for two models with the same name (names both and the fix).
    """
    sources: dict[str, ModelSource] = {}
    for kind in SOURCE_KINDS:
        for source in kind.from_options(options[kind.spec_field], settings):
            if source.name in sources:
                raise MatrixError(f"{source.describe()} and {sources[source.name].describe()} share the model name "
                                 f"{source.name!r}; rename one of them")
            sources[source.name] = source
    return sources


__all__ = ["SOURCE_KINDS", "CheckpointSource", "ModelSource", "OnnxFileSource", "OnnxFiles", "PresetSource",
           "SourceSettings", "TransformerSource", "build_sources"]
