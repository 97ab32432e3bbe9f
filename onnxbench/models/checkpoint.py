"""Local Hugging Face checkpoints of any family the reference represents: one reader for the benchmark.

A checkpoint directory holds ``config.json`` and its weights as ``save_pretrained`` writes them: one
``model.safetensors``, or a ``model.safetensors.index.json`` whose ``weight_map`` names the shards. Its family
comes from ``config.json``'s ``model_type`` (or, without one, ``architectures``):

=============  ===========================  ======================================
model_type     architecture                 mapping
=============  ===========================  ======================================
``gpt2``       ``GPT2LMHeadModel``          :mod:`onnxbench.models.gpt2`
``llama``      ``LlamaForCausalLM``         :mod:`onnxbench.models.hf_llama`
``qwen2``      ``Qwen2ForCausalLM``         :mod:`onnxbench.models.hf_llama`
=============  ===========================  ======================================

A ``config.json`` with neither key is read as GPT-2 (what the GPT-2 loader always did). Everything else is
refused with the list above. The export cache, the float64 reference and torch eager all go through
:func:`checkpoint_config`, :func:`checkpoint_sha256` and :func:`load_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import gpt2, hf_llama
from .transformer import Transformer, TransformerConfig

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
#: ``model_type`` values read, and the architecture each one names in ``architectures``.
MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", **hf_llama.ARCHITECTURES}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def weight_files(directory: str | Path) -> list[Path]:
    """The files holding the weights of the checkpoint in ``directory``: ``[model.safetensors]``, or the index
    followed by its shards (sorted, each once).

    Raises:
        FileNotFoundError: for a missing directory, ``config.json``, weights file or shard (named).
        ValueError: for an index without a ``weight_map``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory / CONFIG_FILE} not found: a checkpoint directory holds config.json and "
                                "model.safetensors (or model.safetensors.index.json and its shards), as written by "
                                "save_pretrained")
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    if not (directory / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{directory / WEIGHTS_FILE} not found: a checkpoint directory holds config.json and "
                                "model.safetensors (or model.safetensors.index.json and its shards), as written by "
                                "save_pretrained; .bin checkpoints are not read")
    weight_map = _read_json(directory / INDEX_FILE).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{directory / INDEX_FILE} has no weight_map")
    shards = [directory / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise FileNotFoundError(f"{shard} not found (named in {INDEX_FILE})")
    return [directory / INDEX_FILE, *shards]


def checkpoint_model_type(data: dict) -> str:
    """The ``model_type`` a ``config.json`` dict describes: its ``model_type``, else the one whose architecture
    ``architectures`` lists, else ``"gpt2"``.

    Raises:
        ValueError: for a model type the reference does not represent (lists the supported ones).
    """
    model_type = data.get("model_type")
    if model_type is None:
        by_architecture = {arch: t for t, arch in MODEL_TYPES.items()}
        found = [by_architecture[a] for a in data.get("architectures") or [] if a in by_architecture]
        model_type = found[0] if found else ("gpt2" if not data.get("architectures") else None)
    if model_type not in MODEL_TYPES:
        what = f"model_type={model_type!r}" if model_type else f"architectures={data.get('architectures')}"
        known = ", ".join(f"{t} ({a})" for t, a in MODEL_TYPES.items())
        raise ValueError(f"config.json has {what}; the reference transformer reads {known}")
    return model_type


def config_from_dict(data: dict, **overrides) -> TransformerConfig:
    """Our config for a ``config.json`` dict of any supported family (see :func:`checkpoint_model_type`).

    Raises:
        ValueError: for an unsupported model type or a feature the reference cannot represent.
    """
    if checkpoint_model_type(data) == "gpt2":
        return gpt2.config_from_gpt2({"model_type": "gpt2", **data}, **overrides)
    return hf_llama.config_from_hf({"model_type": checkpoint_model_type(data), **data}, **overrides)


def checkpoint_config(directory: str | Path, **overrides) -> TransformerConfig:
    """Our config for the checkpoint in ``directory``, GPT-2 or Llama/Qwen2 by its ``config.json``.

    Args:
        directory: a checkpoint directory (module docstring).
        overrides: config fields to change, e.g. ``attention="sdpa"``.

    Raises:
        FileNotFoundError: if the directory, ``config.json`` or a weights file is missing.
        ValueError: if ``config.json`` is not valid JSON or describes a model the reference cannot represent
            (the message names what it lacks).
    """
    weight_files(directory)
    return config_from_dict(_read_json(Path(directory) / CONFIG_FILE), **overrides)


def checkpoint_sha256(directory: str | Path) -> str:
    """sha256 over ``config.json`` and the weight files (:func:`weight_files`), in that order: the identity of
    the weights for cache keys. For a single-file checkpoint this is the digest
    :func:`onnxbench.models.gpt2.checkpoint_sha256` always gave.

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
    """
    files = [Path(directory) / CONFIG_FILE, *weight_files(directory)]
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors file(s), by name, in the stored dtype.

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
        ValueError: if two shards hold a tensor of the same name.
    """
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        if path.name == INDEX_FILE:
            continue
        shard = load_file(str(path))
        clash = set(shard) & set(tensors)
        if clash:
            raise ValueError(f"{path.name} repeats tensors of another shard: {sorted(clash)[:5]}")
        tensors.update(shard)
    return tensors


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32, **overrides) -> Transformer:
    """Load the checkpoint in ``directory`` (any supported family) into the reference transformer, eval mode,
    parameters in ``dtype``.

    Args:
        directory: a checkpoint directory (module docstring).
        dtype: parameter dtype after loading (a bf16 checkpoint loads into fp32 by default).
        overrides: config fields to change, e.g. ``attention="sdpa"`` (the weights do not depend on it).

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
        ValueError: for an unsupported config or weights that do not fit it.
    """
    config = checkpoint_config(directory, **overrides)
    tensors = read_state_dict(directory)
    if config.family == "gpt2":
        model = gpt2.from_gpt2_state_dict(tensors, config)
    else:
        model = hf_llama.from_hf_state_dict(tensors, config)
    return model.to(dtype).eval()
