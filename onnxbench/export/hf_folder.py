"""A model's weights as a local Hugging Face checkpoint folder, the input other tools' exporters read (Hugging Face
Optimum's ``optimum-cli export onnx --model DIR``, ONNX Runtime GenAI's model builder ``-i DIR``).

A preset is written from its config and seed by onnxbench's own writers (:func:`onnxbench.models.gpt2.
save_checkpoint`, :func:`onnxbench.models.hf_llama.save_checkpoint`: the same fp32 tensors the preset's torch
module and float64 reference are built from); a user's checkpoint folder is linked file by file, never written
into. Both get a tokenizer where they have none (the model builder loads one): a ``tokenizers`` WordLevel
tokenizer over the model's vocabulary, written offline (:func:`write_tokenizer`). Folders live in the export cache
under ``hf/`` and are made once, atomically (docs/export.md, "Export paths").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from ..models import TransformerConfig, build

#: Files whose presence means the folder already has a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def write_tokenizer(directory: str | Path, vocab_size: int) -> None:
    """Write an offline tokenizer into ``directory``: ``tokenizers`` WordLevel over ids 0-3 ``<unk> <s> </s>
    <pad>`` and ``t4`` .. ``t{vocab_size - 1}``, whitespace-split, as ``tokenizer.json`` +
    ``tokenizer_config.json`` (``PreTrainedTokenizerFast``). Token ids are what the benchmark feeds; the text
    side is never used.

    Raises:
        ImportError: without the ``tokenizers`` package (a dependency of transformers).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory = Path(directory)
    words = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", "<pad>"])}
    words.update({f"t{i}": i for i in range(4, vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>", "pad_token": "<pad>", "model_max_length": 4096}))


def weights_key(config: TransformerConfig, seed: int | None, checkpoint_sha256: str | None) -> str:
    """The identity of a model's weights for cache keys: the checkpoint's sha256, or the config (attention
    implementation left out: the weights do not depend on it) and the seed."""
    if checkpoint_sha256:
        return checkpoint_sha256
    payload = json.dumps({"config": config.replace(attention="explicit").to_dict(), "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def hf_folder(name: str, config: TransformerConfig, seed: int | None, checkpoint: str | None,
              cache_dir: str | Path) -> Path:
    """The checkpoint folder of a model (module docstring), made under ``cache_dir/hf`` on first use.

    Args:
        name: the model's name (the folder's prefix, for people reading the cache).
        config / seed: the preset's config and weight seed (used when ``checkpoint`` is None).
        checkpoint: a user's checkpoint directory, linked file by file.
        cache_dir: the export cache.

    Returns:
        The folder: ``config.json``, the weights, a tokenizer.

    Raises:
        FileNotFoundError / ValueError: for a checkpoint that cannot be read (:mod:`onnxbench.models.checkpoint`).
    """
    from ..models import checkpoint_sha256

    sha = checkpoint_sha256(checkpoint) if checkpoint else None
    target = Path(cache_dir) / "hf" / f"{name}-{weights_key(config, seed, sha)[:16]}"
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        if checkpoint:
            for item in Path(checkpoint).resolve().iterdir():
                if item.is_file():
                    (tmp / item.name).symlink_to(item)
        else:
            _save_preset(config, seed or 0, tmp)
        if not any((tmp / f).exists() for f in TOKENIZER_FILES):
            write_tokenizer(tmp, config.vocab_size)
        try:
            os.rename(tmp, target)  # atomic; another process may have made it meanwhile
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_preset(config: TransformerConfig, seed: int, directory: Path) -> None:
    from ..models import gpt2, hf_llama

    writer = gpt2 if config.family == "gpt2" else hf_llama
    writer.save_checkpoint(build(config, seed), directory)
