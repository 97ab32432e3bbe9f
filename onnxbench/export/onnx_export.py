"""Export the reference transformer to ONNX, checked, annotated and cached.

The graph has one input ``input_ids`` int64 (batch, sequence) and one output ``logits`` float
(batch, sequence, vocab_size); both leading axes are dynamic. ``metadata_props`` records everything needed to
rebuild the reference (config, seed, attention variant, precision, opset, exporter, library versions).

Models whose weights exceed :data:`EXTERNAL_DATA_THRESHOLD_BYTES` keep them in an external-data file beside the
graph (``model.onnx.data``): a protobuf message cannot exceed 2 GiB, so such a model is checked, shape-inferred
and inspected through its path, never as one in-memory message (docs/export.md). An artifact's content hash
(:func:`content_sha256`) covers the graph and every external-data file it references.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from ..models import TransformerConfig, build
from .decoder_with_past import DECODER_WITH_PAST, export_decoder_with_past, finish_decoder_with_past
from .gqa_decoder import build_gqa_decoder, verify_inplace
from .opsets import UnsupportedOpset, check_opset, describe, supported_opsets
from .variants import finish_variant, get_variant

DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Example shape for tracing: neither axis is 1, because the dynamo exporter specialises a dimension whose
# example value is 1 (torch.export "0/1 specialisation"), and such a graph silently fails at other shapes.
EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 8
#: Weights above this many bytes go to an external-data file (torch's own switch-over for the dynamo exporter,
#: ``_LARGE_MODEL_THRESHOLD``, is 1.5 GiB too: it leaves room below protobuf's 2 GiB message limit for the graph).
EXTERNAL_DATA_THRESHOLD_BYTES = 1536 * 2**20


def default_cache_dir() -> Path:
    """Artifact cache: ``$ONNXBENCH_CACHE`` or ``~/.cache/onnxbench``."""
    return Path(os.environ.get("ONNXBENCH_CACHE", Path.home() / ".cache" / "onnxbench"))


#: Dynamic axis names bound to a cell's batch size and sequence length (feeds, optimization profiles).
BATCH_AXES = ("batch", "batch_size", "N")
SEQ_AXES = ("sequence", "seq", "seq_len", "sequence_length", "T")


@dataclass(frozen=True)
class TensorSpec:
    """Name, ONNX element dtype (numpy name, e.g. ``"int64"``) and shape; a str entry is a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ExportArtifact:
    """An exported ONNX model and what it was made from.

    Attributes:
        path: the ``.onnx`` file.
        sha256: content hash (:func:`content_sha256`): the graph file and every external-data file it references.
        opset: default-domain opset of the graph (read from its ``opset_import``).
        inputs / outputs: tensor specs read back from the graph.
        metadata: the ``metadata_props`` written into the graph (str -> str).
        config / seed / variant / precision: what the reference model was (``None`` for a foreign ONNX).
        checkpoint / checkpoint_sha256: the checkpoint directory (GPT-2, Llama or Qwen2) the weights came from
            and the hash of its files (``None`` when the weights came from ``seed``).
        export_s: wall time of the export in seconds (0.0 when served from the cache; ``cached`` says which).
        cached: whether this artifact came from the cache.
    """

    path: Path
    sha256: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    config: TransformerConfig | None = None
    seed: int | None = None
    variant: str = "decomposed"
    precision: str = "fp32"
    part: str = "model"
    export_s: float = 0.0
    cached: bool = False
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    @property
    def model_name(self) -> str:
        return self.metadata.get("onnxbench.model", self.path.stem)


def _versions() -> dict[str, str]:
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def cache_key(config: TransformerConfig, seed: int, variant: str, precision: str, opset: int,
              exporter: str, part: str = "model", weights_sha256: str | None = None) -> str:
    """Deterministic key of an export: config, seed, variant, precision, opset, exporter, part and the
    torch/onnx/onnxscript versions (a new exporter may produce a different graph); for weights loaded from a
    checkpoint, the hash of the checkpoint's files replaces the seed. ``format`` changes with the artifact
    layout (2: external data for large models, the content hash recorded at export)."""
    fields = {"config": config.to_dict(), "seed": seed, "variant": variant, "precision": precision,
              "opset": opset, "exporter": exporter, "part": part, "versions": _versions(), "format": 2}
    if weights_sha256 is not None:
        fields.update(seed=None, weights_sha256=weights_sha256)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of ``graph`` that can hold external data: initializers (sparse ones too) and tensor
    attributes, in subgraphs as well."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for g in attr.graphs:
            yield from _tensors(g)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node)


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """Locations (relative to the model's folder, as stored) of the external-data files ``model`` references,
    sorted and each once; empty for a self-contained model (ONNX external data: https://onnx.ai/onnx/repo-docs/
    ExternalData.html)."""
    locations = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def content_sha256(path: str | Path, model: onnx.ModelProto | None = None) -> str:
    """Content hash of an ONNX model: sha256 over the graph file's bytes, then, for each external-data file it
    references (sorted by location), a NUL, the location in UTF-8, a NUL, the file's size as 8 little-endian
    bytes and the file's bytes. For a self-contained model this is the plain sha256 of the file (what
    ``sha256sum`` prints). Every cache keyed on a model (export cache, TensorRT engines, ORT TensorRT EP caches)
    uses it, so that new weights in an external file are never served a stale engine.

    Args:
        path: the ``.onnx`` file.
        model: the graph already loaded from ``path`` (without external data), to save parsing it again.

    Raises:
        FileNotFoundError: if a referenced external-data file is missing (names it).
        ValueError: if the file is not a loadable ONNX model.
    """
    path = Path(path)
    if model is None:
        model = _load_graph(path)
    h = hashlib.sha256()
    _hash_file(h, path)
    for location in external_data_files(model):
        data = path.parent / location
        if not data.is_file():
            raise FileNotFoundError(f"{path} references the external-data file {location}, which is missing "
                                    f"(expected at {data})")
        h.update(b"\0" + location.encode("utf-8") + b"\0" + data.stat().st_size.to_bytes(8, "little"))
        _hash_file(h, data)
    return h.hexdigest()


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _load_graph(path: Path) -> onnx.ModelProto:
    """The model at ``path`` without its external data (a graph over 2 GiB of weights stays small).

    Raises:
        ValueError: if the file is not a loadable ONNX model (names the file and the parser's reason).
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    if not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model with a graph (no nodes found)")
    return model


def tensor_specs(values) -> tuple[TensorSpec, ...]:
    """:class:`TensorSpec` of each ``onnx.ValueInfoProto`` in ``values`` (e.g. ``model.graph.output``)."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
        out.append(TensorSpec(v.name, dtype, shape))
    return tuple(out)


def read_artifact(path: str | Path, **fields) -> ExportArtifact:
    """Describe an existing ONNX file (ours or anyone's) as an :class:`ExportArtifact`.

    Raises:
        ValueError: if the file is not a loadable ONNX model (names the file and the parser's reason), or an
            external-data file it references is missing.
    """
    path = Path(path)
    model = _load_graph(path)
    sha256 = fields.pop("sha256", None)  # a caller that has just hashed the files passes the digest
    try:
        sha256 = sha256 or content_sha256(path, model)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    meta = {p.key: p.value for p in model.metadata_props}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    initializer_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    config = fields.pop("config", None)
    if config is None and "onnxbench.config" in meta:
        config = TransformerConfig.from_dict(json.loads(meta["onnxbench.config"]))
    seed = fields.pop("seed", None)
    if seed is None and "onnxbench.seed" in meta:
        seed = int(meta["onnxbench.seed"])
    for key in ("checkpoint", "checkpoint_sha256"):
        fields.setdefault(key, meta.get(f"onnxbench.{key}"))
    defaults = {
        "variant": meta.get("onnxbench.variant", "external"),
        "precision": meta.get("onnxbench.precision", "fp32"),
        "part": meta.get("onnxbench.part", "model"),
    }
    defaults.update(fields)
    return ExportArtifact(
        path=path, sha256=sha256, opset=opset, inputs=tensor_specs(inputs),
        outputs=tensor_specs(model.graph.output), metadata=meta, config=config, seed=seed, **defaults,
    )


def _annotate_and_check(path: Path, metadata: dict[str, str], transform=None) -> None:
    """Apply ``transform`` to the graph at ``path``, write ``metadata`` into it, then check it and infer shapes
    through the path, so that external data is never loaded (a model over 2 GiB cannot be serialised as one
    protobuf message): ``onnx.checker.check_model(path)`` and ``onnx.shape_inference.infer_shapes_path``.

    Raises:
        onnx.checker.ValidationError: if the graph is invalid.
    """
    model = onnx.load(str(path), load_external_data=False)
    if transform is not None:
        model = transform(model, metadata)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))  # the graph only: tensors that live in external data keep their references
    del model
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=False)


#: Graph input and output names by part: the full model maps token ids to logits; the standalone attention maps
#: hidden states (B, T, d_model) to the attention output (B, T, d_model) (the forward argument is ``x``).
PART_IO = {"model": ("input_ids", "logits", "input_ids"), "attention": ("hidden_states", "attention_output", "x")}
#: Every exportable part: the two above and the decoder with a KV cache (:mod:`.decoder_with_past`).
PARTS = (*PART_IO, DECODER_WITH_PAST)


def _torch_export(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
                  exporter: str, part: str = "model", max_positions: int | None = None) -> None:
    input_name, output_name, arg_name = PART_IO[part]
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    with _quiet_version_conversion(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: "batch", 1: "sequence"},
                              output_name: {0: "batch", 1: "sequence"}},
            )
            return
        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("sequence", min=1, max=max_positions or module.config.max_positions)
        # The exporter prints progress and draft-export reports on stdout, and warns about torchvision
        # operators it cannot register; neither concerns this model, so keep the CLI's output readable.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
                output_names=[output_name], dynamic_shapes={arg_name: {0: batch, 1: seq}},
                optimize=True, verbose=False,
            )
        # Large weights go to one external-data file, ``<name>.data`` (torch switches over above 1.5 GiB too).
        program.save(str(path), external_data=_weight_bytes(module) > EXTERNAL_DATA_THRESHOLD_BYTES)


@contextlib.contextmanager
def _quiet_version_conversion():
    """Silence the exporters' version-conversion messages (a logged traceback when a conversion fails):
    :func:`to_onnx` reads the opset of the file written and refuses a mismatch with one clear error instead."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._compat", "onnxscript.version_converter")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def to_onnx(
    config: TransformerConfig,
    *,
    seed: int = 0,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    cache_dir: str | Path | None = None,
    model_name: str | None = None,
    force: bool = False,
    checkpoint: str | Path | None = None,
    variant: str | None = None,
    part: str = "model",
) -> ExportArtifact:
    """Export the reference transformer built from (``config``, ``seed``), or with the weights of a local
    ``checkpoint`` directory (GPT-2, Llama or Qwen2), to ONNX, or reuse a cached export.

    The graph takes ``input_ids`` int64 (batch, sequence) and returns ``logits`` (batch, sequence,
    vocab_size) in the dtype of ``precision``; batch and sequence are dynamic (sequence up to
    ``config.max_positions``). After export the file is checked with ``onnx.checker``, shape inference is
    run, and ``metadata_props`` gets the keys ``onnxbench.*`` (config JSON, seed, variant, precision, opset,
    exporter, library versions).

    Args:
        config: the model; ``config.attention`` selects the attention implementation.
        seed: weight seed (see :func:`onnxbench.models.build`).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``; the module is cast before export so that the
            precision lives in the graph (TensorRT 10+ strongly-typed networks read it from there).
        opset: default-domain ONNX opset; one the exporter cannot produce for the variant is refused before
            anything is exported (measured table: :mod:`onnxbench.export.opsets`, docs/export.md).
        exporter: ``"dynamo"`` (torch.export based, the default since torch 2.9) or ``"torchscript"``.
        cache_dir: where artifacts live (default :func:`default_cache_dir`).
        model_name: label stored in metadata (e.g. the preset name).
        force: re-export even if the cache has the artifact.
        checkpoint: a GPT-2, Llama or Qwen2 checkpoint directory (``config.json`` + ``model.safetensors`` as
            ``save_pretrained`` writes it, see :mod:`onnxbench.models.checkpoint`); ``config`` must be its config
            (any attention), ``seed`` is then unused and the cache key holds the hash of the checkpoint's files.
        variant: attention variant (see :mod:`onnxbench.export.variants`); it overrides ``config.attention``
            and may dictate the opset (``onnx-attention`` is always opset 23; the artifact's ``opset`` says
            which one was used). ``None`` keeps ``config.attention`` (``explicit`` -> ``decomposed``).
        part: ``"model"`` (``input_ids`` -> ``logits``), ``"attention"``: block 0's attention alone,
            ``hidden_states`` (batch, sequence, d_model) -> ``attention_output`` (batch, sequence, d_model), or
            ``"decoder-with-past"``: the model with a KV cache, ``input_ids``, ``attention_mask`` and
            ``past_key_values.{i}.key/value`` -> ``logits`` and ``present.{i}.key/value`` (one graph for prefill
            and decode; names and shapes in :mod:`onnxbench.export.decoder_with_past`).

    Returns:
        An :class:`ExportArtifact`; ``cached`` tells whether the export was skipped. Weights over
        :data:`EXTERNAL_DATA_THRESHOLD_BYTES` are in ``model.onnx.data`` beside the graph.

    The export is written into a private temporary folder of the cache and published by renaming the folder
    once checked, so an export that fails (or is interrupted) leaves nothing behind; temporary folders of
    exporters that died (killed by the OOM killer, say) are removed by the next export into the same cache.

    Raises:
        ValueError: for an unknown precision, exporter, variant or part, a variant the exporter cannot
            produce (``onnx-attention`` / ``ort-fused`` need the dynamo exporter) or not for this model family
            (``ort-fused`` for the llama family, ``ort-gqa-inplace`` for GPT-2), a part the variant has no graph
            for (``ort-gqa-inplace``: decoder-with-past only), a precision the written ``ort-gqa-inplace`` graph
            lacks (bf16), or a ``config`` that differs from the checkpoint's.
        onnxbench.export.opsets.UnsupportedOpset (a ValueError): for an opset the exporter cannot produce with
            this variant, before the export or, should the measured table not hold for the installed torch,
            when the file written has another opset (nothing is cached then).
        FileNotFoundError: if a checkpoint file is missing.
        onnx.checker.ValidationError: if the exported graph is invalid.
        onnxbench.export.variants.VariantMismatch: if the graph does not hold the variant's attention
            (checked after every export; nothing is cached then).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if variant is None:
        variant = "sdpa" if config.attention == "sdpa" else "decomposed"
    recipe = get_variant(variant)
    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
    if recipe.dynamo_only and exporter != "dynamo":
        raise ValueError(f"attention variant {variant!r} needs the dynamo exporter (got {exporter!r})")
    recipe.check_family(config.family)
    if (reason := recipe.part_reason(part)) is not None:
        raise ValueError(reason)
    config = config.replace(attention=recipe.implementation)
    opset = recipe.resolve_opset(opset)
    if not recipe.written:
        check_opset(exporter, variant, opset)
    elif (reason := recipe.precision_reason(precision)) is not None:
        raise ValueError(reason)
    digest = None
    if checkpoint is not None:
        from ..models import checkpoint_config, checkpoint_sha256

        checkpoint = str(Path(checkpoint).resolve())
        if checkpoint_config(checkpoint, attention=config.attention) != config:
            raise ValueError(f"config differs from the one in {checkpoint}/config.json; use "
                             "onnxbench.models.checkpoint_config(directory) to get it")
        digest = checkpoint_sha256(checkpoint)
    key = cache_key(config, seed, variant, precision, opset, exporter, part, weights_sha256=digest)
    directory = artifact_dir(key, cache_dir)
    fields = {"config": config, "seed": seed, "variant": variant, "precision": precision, "part": part,
              "checkpoint": checkpoint, "checkpoint_sha256": digest}
    if not force and (hit := _verified_entry(directory)) is not None:
        return dataclasses.replace(read_artifact(hit[0], sha256=hit[1], **fields), cached=True)

    tmp = temp_model_path(directory)
    try:
        export_s = _export_into(tmp, config, seed, precision, opset, exporter, model_name, checkpoint, digest,
                                variant, part)
        path = publish(tmp, directory, export_s)
    finally:
        discard(tmp)  # nothing left to remove after a publish; the remains of a failure otherwise
    return dataclasses.replace(read_artifact(path, sha256=_recorded_sha256(directory), **fields),
                               export_s=export_s, cached=False)


def artifact_dir(key: str, cache_dir: str | Path | None = None) -> Path:
    """Cache directory of the artifact with cache key ``key``: ``<cache_dir>/artifacts/<key>`` (``cache_dir``
    defaults to :func:`default_cache_dir`); the model is ``model.onnx`` in it (with ``model.onnx.data`` for
    large weights) and ``done`` records the build time and content hash."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "artifacts" / key


def cached_model(directory: Path) -> Path | None:
    """``directory/model.onnx`` if a finished artifact is there whose files still have the content hash recorded
    when it was made, else None (a damaged or edited entry is made again rather than served)."""
    hit = _verified_entry(directory)
    return hit[0] if hit else None


def _recorded_sha256(directory: Path) -> str | None:
    try:
        return json.loads((directory / "done").read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def _verified_entry(directory: Path) -> tuple[Path, str] | None:
    """(model path, content hash) of the finished entry in ``directory``, or None."""
    path = directory / "model.onnx"
    if not (path.is_file() and (directory / "done").is_file()):
        return None
    recorded = _recorded_sha256(directory)
    try:
        actual = content_sha256(path)
    except (OSError, ValueError):
        return None
    return (path, actual) if recorded in (None, actual) else None


def temp_model_path(directory: Path) -> Path:
    """``model.onnx`` in a new folder beside ``directory`` that only this process writes
    (``<key>.tmp-<pid>-<random>@<host>``, external data goes beside it); :func:`publish` renames the folder to
    ``directory``, :func:`discard` removes it after a failure. Temporary folders left by processes of this host
    that no longer exist (an export killed by the OOM killer, say) are removed first."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_exports(directory.parent)
    work = directory.parent / _tmp_name(directory.name, uuid.uuid4().hex[:8])
    work.mkdir()
    return work / "model.onnx"


def publish(tmp: Path, directory: Path, build_s: float) -> Path:
    """Record ``done`` (the build time in seconds and the content hash) beside the finished model ``tmp`` and
    rename its folder to ``directory`` (readers see the old entry or the complete new one, never half of one);
    returns ``directory/model.onnx``. When another process published the same key first, its entry is kept."""
    (tmp.parent / "done").write_text(json.dumps({"export_s": build_s, "sha256": content_sha256(tmp)}))
    _publish(tmp.parent, directory)
    return directory / "model.onnx"


def discard(tmp: Path) -> None:
    """Remove the temporary folder of ``tmp`` (from :func:`temp_model_path`) and everything in it; nothing to
    do once it was published."""
    if _TMP_MARK in tmp.parent.name:
        shutil.rmtree(tmp.parent, ignore_errors=True)


#: Marks a cache folder being written by one process: ``<key>.tmp-<pid>-<tag>@<host>``.
_TMP_MARK = ".tmp-"


def _tmp_name(key: str, tag: str) -> str:
    # The host name keeps a cache shared between machines (or PID namespaces) from judging another host's pids.
    return f"{key}{_TMP_MARK}{os.getpid()}-{tag}@{socket.gethostname()}"


def _remove_abandoned_exports(root: Path) -> None:
    """Remove temporary export folders whose process is gone (an export killed before it could clean up)."""
    import psutil

    for entry in root.glob(f"*{_TMP_MARK}*@{socket.gethostname()}"):
        pid = entry.name.rpartition(_TMP_MARK)[2].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _publish(work: Path, directory: Path) -> None:
    """Make the finished export in ``work`` the cache entry ``directory``: one rename of the folder, so a
    reader sees either the old entry or the complete new one. When another process published the same key
    first, its entry (the same export) is kept."""
    if directory.exists():  # a stale entry (no ``done``, damaged) or ``force``: move it aside, then drop it
        old = directory.with_name(_tmp_name(directory.name, "old"))
        try:
            os.rename(directory, old)
        except OSError:
            pass  # another process moved or replaced it meanwhile
        else:
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(work, directory)
    except OSError:
        if not (directory / "done").is_file():
            raise


def _export_into(path: Path, config: TransformerConfig, seed: int, precision: str, opset: int, exporter: str,
                 model_name: str | None, checkpoint: str | None, digest: str | None, variant: str,
                 part: str) -> float:
    """Export, finish and check one artifact at ``path`` (a private folder of its own); returns the export's
    wall time in seconds."""
    if checkpoint is not None:
        from ..models import load_checkpoint

        module = load_checkpoint(checkpoint, dtype=PRECISIONS[precision], attention=config.attention)
    else:
        module = build(config, seed, dtype=PRECISIONS[precision])
    start = time.perf_counter()
    if get_variant(variant).written:
        build_gqa_decoder(module, path)  # the only written variant (the exporter is not involved)
    elif part == DECODER_WITH_PAST:
        with _quiet_version_conversion():
            export_decoder_with_past(module, path, opset, exporter)
    else:
        if part == "attention":
            module = module.blocks[0].attn
            example = torch.randn(EXAMPLE_BATCH, EXAMPLE_SEQ, config.d_model, dtype=PRECISIONS[precision])
        else:
            example = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SEQ), dtype=torch.int64)
        _torch_export(module, example, path, opset, exporter, part, config.max_positions)
    del module  # the weights are on disk now; the checks below only read the graph
    written = next((o.version for o in _load_graph(path).opset_import if o.domain in ("", "ai.onnx")), 0)
    if written != opset:
        raise UnsupportedOpset(
            f"the {exporter} exporter wrote opset {written} when opset {opset} was asked for (its version "
            f"conversion failed); supported opsets for {variant} attention: "
            f"{describe(supported_opsets(exporter, variant))}")
    metadata = {
        "onnxbench.model": model_name or "custom",
        "onnxbench.config": json.dumps(config.to_dict(), sort_keys=True),
        "onnxbench.seed": str(seed),
        "onnxbench.variant": variant,
        "onnxbench.precision": precision,
        "onnxbench.part": part,
        "onnxbench.opset": str(opset),
        "onnxbench.exporter": exporter,
        "onnxbench.versions": json.dumps(_versions(), sort_keys=True),
    }
    if checkpoint is not None:
        metadata.update({"onnxbench.checkpoint": checkpoint, "onnxbench.checkpoint_sha256": digest})
    finish = finish_decoder_with_past if part == DECODER_WITH_PAST else finish_variant
    n_blocks = 1 if part == "attention" else config.n_layers

    def checked(m, meta):
        m = finish(m, variant, precision, n_blocks, meta, base_dir=path.parent)
        if get_variant(variant).written:
            verify_inplace(m, config.n_layers, config.n_heads, config.n_kv_heads)
        return m

    _annotate_and_check(path, metadata, checked)
    return time.perf_counter() - start


def is_onnxbench_artifact(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX file written by :func:`to_onnx` (it carries ``onnxbench.model`` metadata)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any file onnx cannot parse is not ours
        return False
    return any(p.key == "onnxbench.model" for p in model.metadata_props)


def check_copy_target(target: str | Path, overwrite: bool = False) -> None:
    """Check that :func:`copy_artifact` may write ``target``: its folder exists (it is never created) and, unless
    ``overwrite``, ``target`` is absent or an onnxbench artifact.

    Raises:
        FileNotFoundError: if the folder of ``target`` does not exist.
        FileExistsError: if ``target`` exists and is not an onnxbench artifact (or is a folder).
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {target.parent} does not exist; create it first (the export does not "
                                "create folders)")
    if target.is_dir():
        raise FileExistsError(f"{target} is a folder")
    if target.exists() and not overwrite and not is_onnxbench_artifact(target):
        raise FileExistsError(f"{target} exists and is not an onnxbench artifact; pass --overwrite to replace it")


def copy_artifact(source: str | Path, target: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the ONNX model at ``source`` to ``target`` with its external data: one data file becomes
    ``<target name>.data`` beside it (several: ``<target name>.data.N``) and the graph's locations are rewritten
    to match, so copies under different names in one folder never share a data file. Files are written under
    temporary names and renamed into place at the end; a failure leaves no partial file.

    Returns:
        The paths written, the graph first.

    Raises:
        FileNotFoundError / FileExistsError: see :func:`check_copy_target`; a data file that exists, is not one
            the current ``target`` artifact references and ``overwrite`` is off also raises FileExistsError.
        OSError: if a file cannot be written.
    """
    source, target = Path(source), Path(target)
    check_copy_target(target, overwrite)
    model = _load_graph(source)
    locations = external_data_files(model)
    names = {loc: f"{target.name}.data" + (f".{i}" if len(locations) > 1 else "") for i, loc in enumerate(locations)}
    kept = set(external_data_files(_load_graph(target))) if target.exists() and not overwrite else set()
    for name in names.values():
        if (target.parent / name).exists() and not overwrite and name not in kept:
            raise FileExistsError(f"{target.parent / name} exists and is not external data of {target}; pass "
                                  "--overwrite to replace it")
    suffix = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    plan: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        for loc, name in names.items():
            final = target.parent / name
            plan.append((final.with_name(final.name + suffix), final))
            shutil.copyfile(source.parent / loc, plan[-1][0])
        graph_tmp = target.with_name(target.name + suffix)
        plan.insert(0, (graph_tmp, target))
        if names:
            for tensor in _all_tensors(model):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = names[entry.value]
            onnx.save(model, str(graph_tmp))
        else:
            shutil.copyfile(source, graph_tmp)
        for tmp, final in reversed(plan):  # data first, the graph that references it last
            os.replace(tmp, final)
    finally:
        for tmp, _ in plan:
            tmp.unlink(missing_ok=True)
    return [final for _, final in plan]
