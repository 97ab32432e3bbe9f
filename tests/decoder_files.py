"""Decoder ONNX files in the layouts users bring, made here without downloading anything (docs/generation.md,
"ONNX decoders you bring"):

- :func:`optimum_layout_file`: the reference transformer exported by torch (TorchScript) with Hugging Face
  Optimum's I/O (``position_ids`` an input, ``batch_size`` / ``sequence_length`` / ``past_sequence_length`` axes);
  positions come from ``position_ids`` only, so a loop that feeds them wrong gives wrong logits;
- :func:`builder_layout_file`: a one-block decoder written node by node in the ORT model builder's form (packed
  QKV into ``com.microsoft.GroupQueryAttention`` with RoPE fused, ``seqlens_k`` and ``total_sequence_length``
  computed from the mask, ``kv_cache_dim`` symbolic, ``genai_config.json`` beside it);
- :func:`optimum_export` / :func:`builder_export`: the real tools, in interpreters named by
  ``ONNXBENCH_OPTIMUM_PYTHON`` (optimum-onnx 0.1 with transformers < 4.58) and ``ONNXBENCH_GENAI_PYTHON``
  (onnxruntime-genai with transformers 5; by default this interpreter, where the `test` extra installed the
  builder); tests that need them skip with the reason when they are absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxbench.models import TransformerConfig, build, get_preset
from onnxbench.models.llama import rope_cos_sin
from onnxbench.models.transformer import causal_mask

IR_VERSION = 10  # onnx 1.23 writes IR 14 by default, newer than onnxruntime 1.31 reads
OPTIMUM_ENV = "ONNXBENCH_OPTIMUM_PYTHON"
GENAI_ENV = "ONNXBENCH_GENAI_PYTHON"


def perturbed(name: str, seed: int = 1, **overrides):
    """The preset ``name`` built from ``seed`` with every parameter moved off its initial value (norm gains 1 and
    biases 0 after init would hide a dropped or misplaced tensor)."""
    model = build(get_preset(name, **overrides), seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def save_checkpoint(model, directory: Path) -> Path:
    """``model`` written as a Hugging Face checkpoint folder (``config.json`` + ``model.safetensors``, the
    transformers 4.x spelling that optimum-onnx's transformers reads) by onnxbench's own writers."""
    from onnxbench.models import gpt2, hf_llama

    writer = hf_llama if model.config.family == "llama" else gpt2
    return writer.save_checkpoint(model, directory)


class _OptimumLayout(torch.nn.Module):
    """``(input_ids, attention_mask, position_ids, past_key_values.*) -> (logits, present.*)`` over the reference
    transformer's own blocks; positions from ``position_ids`` (the mask only masks)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        m, config = self.model, self.model.config
        past_length, length = past[0].shape[2], input_ids.shape[1]
        mask = causal_mask(past_length, length)[None, None] & attention_mask.bool()[:, None, None, :]
        if config.positions == "learned":
            x, rope = m.wte(input_ids) + m.wpe(position_ids), None
        else:
            x = m.wte(input_ids)
            rope = rope_cos_sin(position_ids, config.d_head, config.rope_theta, x.dtype)
        present = []
        for n, block in enumerate(m.blocks):
            x, kv = block(x, mask, (past[2 * n], past[2 * n + 1]), True, rope)
            present += list(kv)
        x = m.ln_f(x)
        logits = x @ m.wte.weight.T if config.tie_embeddings else m.lm_head(x)
        return (logits, *present)


def optimum_layout_file(model, path: Path, opset: int = 18) -> Path:
    """Export ``model`` (a :class:`onnxbench.models.Transformer`) with Optimum's decoder I/O names and axis names
    to ``path`` (TorchScript exporter, traced at past length 5; it runs at past length 0 too)."""
    config: TransformerConfig = model.config
    names_in = ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(config.n_layers) for kv in ("key", "value")]
    names_out = ["logits"] + [f"present.{i}.{kv}" for i in range(config.n_layers) for kv in ("key", "value")]
    batch, seq, past, total = "batch_size", "sequence_length", "past_sequence_length", \
        "past_sequence_length + sequence_length"
    axes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
            "position_ids": {0: batch, 1: seq}, "logits": {0: batch, 1: seq}}
    axes.update({name: {0: batch, 2: past} for name in names_in[3:]})
    axes.update({name: {0: batch, 2: total} for name in names_out[1:]})
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (2, 3), generator=gen)
    shape = (2, config.n_kv_heads, 5, config.d_head)
    past_kv = [torch.randn(shape, generator=gen) for _ in range(2 * config.n_layers)]
    args = (ids, torch.ones(2, 8, dtype=torch.int64), torch.arange(5, 8)[None].expand(2, 3), *past_kv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_OptimumLayout(model).eval(), args, str(path), dynamo=False, opset_version=opset,
                          input_names=names_in, output_names=names_out, dynamic_axes=axes)
    return path


def builder_layout_file(directory: Path, vocab: int = 64, d_model: int = 64, n_heads: int = 4, n_kv: int = 2,
                        seed: int = 0, write_config: bool = True) -> Path:
    """A one-block decoder in the ORT model builder's layout, ``directory/model.onnx`` (+ ``genai_config.json``
    unless ``write_config`` is False): Gather -> MatMul (packed QKV) -> GroupQueryAttention (RoPE fused, past and
    present ``past_key_values.0.*`` / ``present.0.*``, ``kv_cache_dim`` symbolic) -> MatMul (W^O) -> MatMul
    (unembedding) -> ``logits``. ``seqlens_k`` = rows' valid lengths - 1 and ``total_sequence_length`` = the mask's
    width, both computed from the mask as the builder writes them. d_head = d_model / n_heads must be a multiple
    of 16 (GroupQueryAttention's CPU kernel with rotary)."""
    rng = np.random.default_rng(seed)
    d_head, max_pos = d_model // n_heads, 256
    qkv = (n_heads + 2 * n_kv) * d_head
    inv = 1.0 / (10000 ** (np.arange(0, d_head, 2) / d_head))
    angles = np.arange(max_pos)[:, None] * inv[None]
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in (
        ("embed", rng.normal(0, 0.5, (vocab, d_model))), ("w_qkv", rng.normal(0, 0.2, (d_model, qkv))),
        ("w_o", rng.normal(0, 0.2, (n_heads * d_head, d_model))), ("w_u", rng.normal(0, 0.5, (d_model, vocab))),
        ("cos_cache", np.cos(angles)), ("sin_cache", np.sin(angles)))]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.array(1, np.int64), "one_scalar")]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["x"]),
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv"]),
        helper.make_node("ReduceSum", ["attention_mask", "one"], ["lengths"], keepdims=0),
        helper.make_node("Sub", ["lengths", "one_scalar"], ["seqlens64"]),
        helper.make_node("Cast", ["seqlens64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Gather", ["mask_shape", "one_scalar"], ["total64"], axis=0),
        helper.make_node("Cast", ["total64"], ["total"], to=TensorProto.INT32),
        helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_key_values.0.key", "past_key_values.0.value",
                                                 "seqlens_k", "total", "cos_cache", "sin_cache"],
                         ["attn", "present.0.key", "present.0.value"], domain="com.microsoft",
                         num_heads=n_heads, kv_num_heads=n_kv, do_rotary=1, rotary_interleaved=0,
                         scale=float(d_head ** -0.5), local_window_size=-1),
        helper.make_node("MatMul", ["attn", "w_o"], ["h"]),
        helper.make_node("Add", ["x", "h"], ["y"]),
        helper.make_node("MatMul", ["y", "w_u"], ["logits"]),
    ]
    cache = ["batch_size", n_kv, "past_sequence_length", "kv_cache_dim"]
    present = ["batch_size", n_kv, "total_sequence_length", "kv_cache_dim"]
    graph = helper.make_graph(
        nodes, "builder-layout",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
         helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, cache),
         helper.make_tensor_value_info("past_key_values.0.value", TensorProto.FLOAT, cache)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab]),
         helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, present),
         helper.make_tensor_value_info("present.0.value", TensorProto.FLOAT, present)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              ir_version=IR_VERSION)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    if write_config:
        decoder = {"head_size": d_head, "hidden_size": d_model, "num_attention_heads": n_heads,
                   "num_key_value_heads": n_kv, "num_hidden_layers": 1, "filename": "model.onnx"}
        config = {"model": {"context_length": max_pos, "decoder": decoder, "vocab_size": vocab, "pad_token_id": 0,
                            "type": "llama"}, "search": {"past_present_share_buffer": True}}
        (directory / "genai_config.json").write_text(json.dumps(config))
    return path


def _interpreter(env: str) -> str | None:
    path = os.environ.get(env)
    return path if path and Path(path).is_file() else None


def optimum_python() -> str | None:
    """The interpreter named by ``ONNXBENCH_OPTIMUM_PYTHON`` (optimum-onnx 0.1.0 with transformers 4.57), or
    None."""
    return _interpreter(OPTIMUM_ENV)


def genai_python() -> str | None:
    """The interpreter named by ``ONNXBENCH_GENAI_PYTHON`` (onnxruntime-genai's model builder, transformers 5),
    else this one where it has the builder (the `test` extra installs onnxruntime-genai-cuda), or None."""
    import importlib.util
    import sys

    named = _interpreter(GENAI_ENV)
    if named or importlib.util.find_spec("onnxruntime_genai") is None:
        return named
    return sys.executable


def _run(cmd: list[str], what: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-3000:]}")


def optimum_export(checkpoint: Path, out: Path) -> Path:
    """``optimum-cli export onnx --task text-generation-with-past`` of the checkpoint folder into ``out``
    (offline, in the interpreter of ``ONNXBENCH_OPTIMUM_PYTHON``); returns ``out/model.onnx``."""
    _run([optimum_python(), "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(checkpoint),
          "--task", "text-generation-with-past", str(out)], "optimum export")
    return out / "model.onnx"


def write_tokenizer(directory: Path, vocab: int) -> None:
    """An offline tokenizer (the builder loads one): ``tokenizers`` WordLevel, ids 0-3 ``<unk> <s> </s> <pad>``,
    then ``t4`` .. ``t{vocab-1}``, written as ``tokenizer.json`` + ``tokenizer_config.json``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", "<pad>"])}
    words.update({f"t{i}": i for i in range(4, vocab)})
    tokenizer = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>", "pad_token": "<pad>", "model_max_length": 4096}))


def builder_export(checkpoint: Path, out: Path, precision: str = "fp32") -> Path:
    """``python -m onnxruntime_genai.models.builder -e cpu`` of the checkpoint folder (a tokenizer written into
    it first) into ``out`` (in the interpreter of ``ONNXBENCH_GENAI_PYTHON``); returns ``out/model.onnx``."""
    write_tokenizer(checkpoint, json.loads((checkpoint / "config.json").read_text())["vocab_size"])
    _run([genai_python(), "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
          "-p", precision, "-e", "cpu", "-c", str(out.parent / "builder-cache")], "model builder")
    return out / "model.onnx"
