"""Export paths: the ways a preset or a local checkpoint becomes an ONNX graph, the values of the matrix's
``export_path`` axis (docs/export.md, "Export paths").

============== ====================================================================== ==============
path           what makes the graph                                                   decoder layout
============== ====================================================================== ==============
``onnxbench``  onnxbench's own export (:func:`onnxbench.export.to_onnx`), each attention  ``onnxbench``
               variant (the default: cells of runs before the axis)
``optimum``    Hugging Face Optimum's exporter (:mod:`onnxbench.export.optimum`)      ``optimum``
``optimum-opt`` that export after ONNX Runtime's transformer optimizer                ``optimum``
``builder``    ONNX Runtime GenAI's model builder (:mod:`onnxbench.export.builder`)    ``builder``
============== ====================================================================== ==============

The other tools read the model's weights as a Hugging Face checkpoint folder (:mod:`onnxbench.export.hf_folder`),
so every path runs the same weights and is compared with the same float64 torch reference. Each writes a decoder
with a KV cache (its ``model.onnx``), which serves both scenarios: a prefill feeds it an empty cache, a generation
runs the runtime's decode loop for its layout. Outputs are cached under ``<cache>/paths/<path>/<key>/``, the key
covering the weights, precision, opset and the tools' versions; a folder is written under a temporary name and
renamed, so a concurrent run never reads half of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..models import TransformerConfig
from . import builder, optimum
from .hf_folder import hf_folder, weights_key
from .onnx_export import ExportArtifact, default_cache_dir, read_artifact

#: The default path: onnxbench's own export (cells recorded before the axis existed ran it).
DEFAULT_EXPORT_PATH = "onnxbench"
#: The ``attention`` column of a cell of another tool's export: a label (the graph holds whatever attention the
#: tool wrote), as for a user's ONNX file.
EXTERNAL_ATTENTION = "external"


@dataclass(frozen=True)
class ExportPath:
    """One value of the ``export_path`` axis.

    Attributes:
        name: the axis value (the ``export_path`` column).
        layout: the decoder layout of its graph (the ``decoder_layout`` column).
        precisions: the matrix precisions it makes (None: those of onnxbench's export, checked by its source).
        families: the model families it writes (None: all).
        uses_opset: whether the matrix's opset is passed to the tool (else the tool chooses; the row's ``opset``
            column says which it wrote).
        what: one phrase for messages.
    """

    name: str
    layout: str
    precisions: tuple[str, ...] | None
    families: tuple[str, ...] | None
    uses_opset: bool
    what: str

    def unavailable_reason(self) -> str | None:
        """Why the path's tool cannot run here (a ``skipped`` row's reason naming the package), or None."""
        if self.name in ("optimum", "optimum-opt"):
            return optimum.unavailable_reason()
        if self.name == "builder":
            return builder.unavailable_reason()
        return None

    def reason(self, config: TransformerConfig, precision: str, part: str) -> str | None:
        """Why this path cannot make the graph of a cell of ``config`` at ``precision`` and ``part``, or None."""
        if self.families is not None and config.family not in self.families:
            return f"export path {self.name} ({self.what}) does not write the {config.family} family"
        if self.precisions is not None and precision not in self.precisions:
            return f"export path {self.name} makes {', '.join(self.precisions)}, not {precision}"
        if part == "attention":
            return f"export path {self.name} exports the whole model (part model), not one block's attention"
        return self.unavailable_reason()


EXPORT_PATHS: dict[str, ExportPath] = {p.name: p for p in (
    ExportPath("onnxbench", "onnxbench", None, None, True,
               "onnxbench's own export"),
    ExportPath("optimum", "optimum", ("fp32",), None, True, "Hugging Face Optimum's ONNX exporter"),
    ExportPath("optimum-opt", "optimum", ("fp32",), None, True,
               "Optimum's export after ONNX Runtime's transformer optimizer"),
    ExportPath("builder", "builder", tuple(builder.PRECISIONS), builder.FAMILIES, False,
               "ONNX Runtime GenAI's model builder"),
)}


def get(name: str) -> ExportPath:
    """The export path ``name``.

    Raises:
        KeyError: for an unknown name (lists the known ones).
    """
    if name not in EXPORT_PATHS:
        raise KeyError(f"unknown export path {name!r}; known: {', '.join(EXPORT_PATHS)}")
    return EXPORT_PATHS[name]


def export_with(path: str, name: str, config: TransformerConfig, seed: int | None, checkpoint: str | None,
                precision: str = "fp32", opset: int | None = None,
                cache_dir: str | Path | None = None) -> ExportArtifact:
    """The graph export path ``path`` (not ``onnxbench``) makes of a model, from the cache or made now.

    Args:
        path: ``optimum``, ``optimum-opt`` or ``builder``.
        name: the model's name (folder prefixes in the cache).
        config / seed / checkpoint: the model (a preset's config and seed, or a checkpoint directory and its
            config); the artifact carries them, so that its reference is the same float64 torch model.
        precision: a precision the path makes (:attr:`ExportPath.precisions`).
        opset: the opset asked for (paths with :attr:`ExportPath.uses_opset`).
        cache_dir: the export cache (default :func:`onnxbench.export.default_cache_dir`).

    Returns:
        The artifact (``model.onnx`` in the path's folder; ``export_s`` the tools' wall time, ``cached`` when it
        was already there).

    Raises:
        RuntimeError: when the tool fails (its message), or the path cannot run here (the reason).
        KeyError: for an unknown path.
    """
    spec = get(path)
    why = spec.reason(config, precision, "model")
    if why:
        raise RuntimeError(why)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    from ..models import checkpoint_sha256

    sha = checkpoint_sha256(checkpoint) if checkpoint else None
    tools = optimum.versions() if path.startswith("optimum") else {"onnxruntime-genai": builder.version()}
    key = hashlib.sha256(json.dumps({"weights": weights_key(config, seed, sha), "precision": precision,
                                     "opset": opset if spec.uses_opset else None, "tools": tools, "format": 1},
                                    sort_keys=True).encode()).hexdigest()[:16]
    t0 = time.perf_counter()
    if path == "optimum-opt":
        source = export_with("optimum", name, config, seed, checkpoint, precision, opset, cache)
        make = lambda out: optimum.optimize(source.path, out, config.n_heads, config.d_model)  # noqa: E731
    else:
        folder = hf_folder(name, config, seed, checkpoint, cache)
        if path == "optimum":
            make = lambda out: optimum.export(folder, out, opset)  # noqa: E731
        else:
            make = lambda out: builder.build(folder, out, precision)  # noqa: E731
    model, cached = _cached(cache / "paths" / path / f"{name}-{key}", make)
    artifact = read_artifact(model, config=config, seed=None if checkpoint else seed, checkpoint=checkpoint,
                             checkpoint_sha256=sha, variant=EXTERNAL_ATTENTION, precision=precision, part="model")
    return dataclasses.replace(artifact, cached=cached, export_s=0.0 if cached else time.perf_counter() - t0)


def _cached(target: Path, make: Callable[[Path], Path]) -> tuple[Path, bool]:
    """``target/model.onnx``, made by ``make(folder)`` into a temporary folder renamed to ``target`` when it is
    not there yet; (the model, whether it was there)."""
    if (target / "model.onnx").is_file():
        return target / "model.onnx", True
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        made = make(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model.onnx").is_file():
                raise
        return target / made.name, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
