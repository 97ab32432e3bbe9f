"""Model sources: the kinds of model a matrix can benchmark, one class each (contract: :mod:`.base`).

==========================  ===================  ==============================================================
class                       ``MatrixSpec`` field  what it is
==========================  ===================  ==============================================================
:class:`PresetSource`       ``models``           a named preset of the reference transformer, seeded weights
:class:`CheckpointSource`   ``checkpoints``      the reference transformer with a local checkpoint's weights
:class:`OnnxFileSource`     ``onnx_models``      any ONNX file, run as it is, unoptimized ORT CPU (or a
                                                 ``reference_models`` entry's float64 torch) as its reference
==========================  ===================  ==============================================================

A new kind of model is one :class:`ModelSource` subclass and one entry in :data:`SOURCE_KINDS` (plus the
``MatrixSpec`` field that lists its models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....errors import MatrixError
from .base import ModelSource
from .onnx_file import OnnxFileSource
from .transformer import CheckpointSource, PresetSource, TransformerSource

if TYPE_CHECKING:
    from ..matrix import MatrixSpec

#: Every kind of model source, in the order their models appear in a matrix.
SOURCE_KINDS: tuple[type[ModelSource], ...] = (PresetSource, CheckpointSource, OnnxFileSource)


def build_sources(spec: MatrixSpec) -> dict[str, ModelSource]:
    """``{model name: source}`` of every model ``spec`` lists, in :data:`SOURCE_KINDS` order.

    Raises:
        ValueError / FileNotFoundError: for an entry no source accepts (see each kind's ``from_spec``).
        MatrixError: (a ValueError) for two models with the same name (names both and the fix).
    """
    sources: dict[str, ModelSource] = {}
    for kind in SOURCE_KINDS:
        for source in kind.from_spec(spec):
            if source.name in sources:
                raise MatrixError(f"{source.describe()} and {sources[source.name].describe()} share the model name "
                                 f"{source.name!r}; rename one of them")
            sources[source.name] = source
    return sources


__all__ = ["SOURCE_KINDS", "CheckpointSource", "ModelSource", "OnnxFileSource", "PresetSource",
           "TransformerSource", "build_sources"]
