"""The ``builder`` export path: ONNX Runtime GenAI's model builder (``python -m onnxruntime_genai.models.builder``)
turning a local checkpoint folder into its decoder (``GroupQueryAttention`` over a past/present buffer the
Generator shares, ``SimplifiedLayerNormalization``, RoPE caches; int4 ``MatMulNBits`` weights with ``-p int4``)
plus ``genai_config.json`` and the tokenizer files: a folder the ``ort-genai`` runtime opens as it is, and whose
``model.onnx`` the ONNX runtimes run (decoder layout ``builder``, :mod:`onnxbench.export.decoder_layout`).

The builder runs in this interpreter (``sys.executable``), from the package ``onnxruntime-genai-cuda`` (beside
``onnxruntime-gpu``; the CPU wheel ``onnxruntime-genai`` pulls in ``onnxruntime``, which must never sit beside it).
Its output is cached in the export cache under ``paths/builder/`` by the weights, the precision and the
package's version (docs/export.md, "Export paths").
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: The package the path needs, as a user installs it.
PACKAGE = "onnxruntime-genai-cuda"
#: Model families the builder writes (its ``LlamaForCausalLM`` and ``Qwen2ForCausalLM`` models; it has no GPT-2).
FAMILIES = ("llama",)
#: The matrix's precisions -> the builder's ``--precision`` (CPU execution provider: fp32, or int4 weights
#: with ``accuracy_level`` 4, the builder's default on the CPU).
PRECISIONS = {"fp32": "fp32", "int4-weight": "int4"}


@functools.lru_cache(maxsize=1)
def version() -> str | None:
    """The installed onnxruntime-genai's version, or None where the module is absent."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return None
    for dist in (PACKAGE, "onnxruntime-genai"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def unavailable_reason() -> str | None:
    """Why the builder cannot run in this interpreter (a ``skipped`` row's reason naming the package), or None."""
    if version() is None:
        return (f"export path builder needs {PACKAGE} (ONNX Runtime GenAI's model builder, python -m "
                f"onnxruntime_genai.models.builder), which is not installed in {sys.executable}: pip install "
                f"{PACKAGE} beside onnxruntime-gpu (docs/usage.md, \"Export paths\")")
    if importlib.util.find_spec("transformers") is None:
        return (f"export path builder needs transformers (the model builder reads the checkpoint with it) in "
                f"{sys.executable}")
    return None


def build(checkpoint: Path, out: Path, precision: str, timeout_s: float = 3600) -> Path:
    """Run the model builder on the checkpoint folder ``checkpoint`` (which holds a tokenizer) for the CPU
    execution provider, offline, writing into ``out``.

    Args:
        checkpoint: a Hugging Face checkpoint folder (``config.json``, weights, tokenizer).
        out: the output folder (created).
        precision: a key of :data:`PRECISIONS`.
        timeout_s: seconds before the builder is killed.

    Returns:
        ``out/model.onnx``.

    Raises:
        RuntimeError: when the builder fails (its exit status and the tail of its stderr) or writes no model.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    # the builder's own cache folder (-c, temporary tensors) is private to this build: concurrent builds must not
    # share it
    with tempfile.TemporaryDirectory(prefix=f"{out.name}.work-", dir=out.parent) as work_dir:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
               "-p", PRECISIONS[precision], "-e", "cpu", "-c", work_dir]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    model = out / "model.onnx"
    if proc.returncode != 0 or not model.is_file():
        raise RuntimeError(f"the model builder failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return model
