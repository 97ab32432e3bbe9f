"""Export the reference transformer to ONNX, checked, annotated and cached.

The graph has one input ``input_ids`` int64 (batch, sequence) and one output ``logits`` float
(batch, sequence, vocab_size); both leading axes are dynamic. ``metadata_props`` records everything needed to
rebuild the reference (config, seed, attention variant, precision, opset, exporter, library versions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from ..models import TransformerConfig, build
from .decoder_with_past import DECODER_WITH_PAST, export_decoder_with_past, finish_decoder_with_past
from .variants import finish_variant, get_variant

DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Example shape for tracing: neither axis is 1, because the dynamo exporter specialises a dimension whose
# example value is 1 (torch.export "0/1 specialisation"), and such a graph silently fails at other shapes.
EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 8


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
        sha256: hex digest of the file's bytes.
        opset: default-domain opset of the graph.
        inputs / outputs: tensor specs read back from the graph.
        metadata: the ``metadata_props`` written into the graph (str -> str).
        config / seed / variant / precision: what the reference model was (``None`` for a foreign ONNX).
        checkpoint / checkpoint_sha256: the GPT-2-style checkpoint directory the weights came from and the
            hash of its files (``None`` when the weights came from ``seed``).
        export_s: wall time of the export in seconds (0.0 when served from the cache).
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
    checkpoint, the hash of the checkpoint's files replaces the seed."""
    fields = {"config": config.to_dict(), "seed": seed, "variant": variant, "precision": precision,
              "opset": opset, "exporter": exporter, "part": part, "versions": _versions(), "format": 1}
    if weights_sha256 is not None:
        fields.update(seed=None, weights_sha256=weights_sha256)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        ValueError: if the file is not a loadable ONNX model (names the file and the parser's reason).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    if not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model with a graph (no nodes found)")
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
        path=path, sha256=file_sha256(path), opset=opset, inputs=tensor_specs(inputs),
        outputs=tensor_specs(model.graph.output), metadata=meta, config=config, seed=seed, **defaults,
    )


def artifact_dir(key: str, cache_dir: str | Path | None = None) -> Path:
    """Cache directory of the artifact with cache key ``key``: ``<cache_dir>/artifacts/<key>`` (``cache_dir``
    defaults to :func:`default_cache_dir`); the model is ``model.onnx`` in it."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "artifacts" / key


def cached_model(directory: Path) -> Path | None:
    """``directory/model.onnx`` if a finished artifact is there (its ``done`` marker is written only after the
    model was moved into place), else None."""
    path = directory / "model.onnx"
    return path if path.is_file() and (directory / "done").is_file() else None


def temp_model_path(directory: Path) -> Path:
    """A file name in ``directory`` that only this process writes (concurrent writers never share one)."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"model.tmp{os.getpid()}.onnx"


def publish(tmp: Path, directory: Path, build_s: float) -> Path:
    """Move the finished model ``tmp`` to ``directory/model.onnx`` (atomic rename: readers see the old file or
    the new one, never half of one), then write the ``done`` marker with the build time in seconds."""
    path = directory / "model.onnx"
    os.replace(tmp, path)
    (directory / "done").write_text(json.dumps({"export_s": build_s}))
    return path


def _annotate_and_check(path: Path, metadata: dict[str, str], transform=None) -> None:
    model = onnx.load(str(path))
    if transform is not None:
        model = transform(model, metadata)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=False)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    onnx.save(model, str(path))


#: Graph input and output names by part: the full model maps token ids to logits; the standalone attention maps
#: hidden states (B, T, d_model) to the attention output (B, T, d_model) (the forward argument is ``x``).
PART_IO = {"model": ("input_ids", "logits", "input_ids"), "attention": ("hidden_states", "attention_output", "x")}
#: Every exportable part: the two above and the decoder with a KV cache (:mod:`.decoder_with_past`).
PARTS = (*PART_IO, DECODER_WITH_PAST)


def _torch_export(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
                  exporter: str, part: str = "model", max_positions: int | None = None) -> None:
    input_name, output_name, arg_name = PART_IO[part]
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("sequence", min=1, max=max_positions or module.config.max_positions)
        # The exporter prints progress and draft-export reports on stdout, and warns about torchvision
        # operators it cannot register; neither concerns this model, so keep the CLI's output readable.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
                output_names=[output_name], dynamic_shapes={arg_name: {0: batch, 1: seq}},
                optimize=True, verbose=False,
            )
        program.save(str(path))
    elif exporter == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: "batch", 1: "sequence"},
                              output_name: {0: "batch", 1: "sequence"}},
            )
    else:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")


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
    GPT-2-style ``checkpoint`` directory, to ONNX, or reuse a cached export.

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
        opset: default-domain ONNX opset (17-23 exercised).
        exporter: ``"dynamo"`` (torch.export based, the default since torch 2.9) or ``"torchscript"``.
        cache_dir: where artifacts live (default :func:`default_cache_dir`).
        model_name: label stored in metadata (e.g. the preset name).
        force: re-export even if the cache has the artifact.
        checkpoint: directory with ``config.json`` + ``model.safetensors`` (``GPT2LMHeadModel.save_pretrained``
            layout, see :mod:`onnxbench.models.gpt2`); ``config`` must be its config (any attention), ``seed`` is
            then unused and the cache key holds the hash of the checkpoint's files.
        variant: attention variant (see :mod:`onnxbench.export.variants`); it overrides ``config.attention``
            and may dictate the opset (``onnx-attention`` is always opset 23; the artifact's ``opset`` says
            which one was used). ``None`` keeps ``config.attention`` (``explicit`` -> ``decomposed``).
        part: ``"model"`` (``input_ids`` -> ``logits``), ``"attention"``: block 0's attention alone,
            ``hidden_states`` (batch, sequence, d_model) -> ``attention_output`` (batch, sequence, d_model), or
            ``"decoder-with-past"``: the model with a KV cache, ``input_ids``, ``attention_mask`` and
            ``past_key_values.{i}.key/value`` -> ``logits`` and ``present.{i}.key/value`` (one graph for prefill
            and decode; names and shapes in :mod:`onnxbench.export.decoder_with_past`).

    Returns:
        An :class:`ExportArtifact`; ``cached`` tells whether the export was skipped.

    Raises:
        ValueError: for an unknown precision, exporter, variant or part, a variant the exporter cannot
            produce (``onnx-attention`` / ``ort-fused`` need the dynamo exporter), or a ``config`` that differs
            from the checkpoint's.
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
    config = config.replace(attention=recipe.implementation)
    opset = recipe.resolve_opset(opset)
    digest = None
    if checkpoint is not None:
        from ..models.gpt2 import checkpoint_config, checkpoint_sha256

        checkpoint = str(Path(checkpoint).resolve())
        if checkpoint_config(checkpoint, attention=config.attention) != config:
            raise ValueError(f"config differs from the one in {checkpoint}/config.json; use "
                             "onnxbench.models.gpt2.checkpoint_config(directory) to get it")
        digest = checkpoint_sha256(checkpoint)
    key = cache_key(config, seed, variant, precision, opset, exporter, part, weights_sha256=digest)
    directory = artifact_dir(key, cache_dir)
    fields = {"config": config, "seed": seed, "variant": variant, "precision": precision, "part": part,
              "checkpoint": checkpoint, "checkpoint_sha256": digest}
    if (done := cached_model(directory)) is not None and not force:
        return dataclasses.replace(read_artifact(done, **fields), cached=True)

    if checkpoint is not None:
        from ..models.gpt2 import load_checkpoint

        module = load_checkpoint(checkpoint, dtype=PRECISIONS[precision], attention=config.attention)
    else:
        module = build(config, seed, dtype=PRECISIONS[precision])
    start = time.perf_counter()
    tmp = temp_model_path(directory)
    if part == DECODER_WITH_PAST:
        export_decoder_with_past(module, tmp, opset, exporter)
    else:
        if part == "attention":
            module = module.blocks[0].attn
            example = torch.randn(EXAMPLE_BATCH, EXAMPLE_SEQ, config.d_model, dtype=PRECISIONS[precision])
        else:
            example = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SEQ), dtype=torch.int64)
        _torch_export(module, example, tmp, opset, exporter, part, config.max_positions)
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
    _annotate_and_check(tmp, metadata, lambda m, meta: finish(m, variant, precision, n_blocks, meta))
    export_s = time.perf_counter() - start
    path = publish(tmp, directory, export_s)
    return dataclasses.replace(read_artifact(path, **fields), export_s=export_s, cached=False)
