"""Mapping between the reference transformer and the GPT-2 layout of Hugging Face ``transformers``.

Two uses: checking our logits against an independent implementation (``GPT2LMHeadModel``), and loading a
local GPT-2-style checkpoint directory (``config.json`` + ``model.safetensors`` as written by
``GPT2LMHeadModel.save_pretrained``) into the reference transformer so that real weights are benchmarked.
Nothing here downloads anything, and ``transformers`` is imported only by :func:`to_hf_model` (it is a test /
optional dependency, never needed at import time).

Layout (HF source: ``transformers/models/gpt2/modeling_gpt2.py``; ``Conv1D`` computes ``x @ W + b`` with W of
shape (in, out), while ``nn.Linear`` stores W as (out, in), so every matrix is transposed)::

    ours                              GPT-2 (HF GPT2LMHeadModel)                shape in GPT-2
    wte.weight                        transformer.wte.weight                     (V, d_model)
    wpe.weight                        transformer.wpe.weight                     (T_max, d_model)
    blocks.N.ln_1.{weight,bias}       transformer.h.N.ln_1.{weight,bias}          (d_model,)
    blocks.N.attn.{q,k,v}_proj        transformer.h.N.attn.c_attn                 (d_model, 3 d_model) =
                                                                                  [W^Q | W^K | W^V] (transposed)
    blocks.N.attn.o_proj              transformer.h.N.attn.c_proj                 (d_model, d_model)
    blocks.N.ln_2                     transformer.h.N.ln_2                        (d_model,)
    blocks.N.mlp.fc_in                transformer.h.N.mlp.c_fc                    (d_model, d_ff)
    blocks.N.mlp.fc_out               transformer.h.N.mlp.c_proj                  (d_ff, d_model)
    ln_f                              transformer.ln_f                            (d_model,)
    (tied: logits = x @ wte^T)        lm_head.weight (tied to transformer.wte)    (V, d_model)

Architectural differences, and how they are closed:

- GELU: GPT-2 uses the tanh approximation (``activation_function="gelu_new"``); the reference does too by
  default (``gelu_approximate="tanh"``). A checkpoint with ``"gelu"`` (exact erf form) maps to
  ``gelu_approximate="none"``. Other activations are rejected.
- Dropout (``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``): GPT-2 has it, the reference has none; it is the
  identity in eval mode, and :func:`hf_config_kwargs` sets all three to 0 as well.
- GPT-2 options the reference does not implement are rejected with ``ValueError``: ``scale_attn_weights=False``,
  ``scale_attn_by_inverse_layer_idx``, ``reorder_and_upcast_attn`` (changes fp16 numerics only, but is refused
  to stay exact), ``add_cross_attention``, untied ``lm_head``.
- GPT-2's causal mask buffers (``attn.bias``, ``attn.masked_bias`` in old checkpoints) are not parameters and
  are ignored when loading.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from .transformer import Transformer, TransformerConfig

#: GPT-2 ``activation_function`` values -> our ``gelu_approximate`` (HF ``transformers/activations.py``:
#: gelu_new, gelu_fast and gelu_pytorch_tanh are all the tanh approximation; gelu is the erf form).
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}
CHECKPOINT_FILES = ("config.json", "model.safetensors")
_IGNORED = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")


def hf_config_kwargs(config: TransformerConfig) -> dict:
    """``GPT2Config`` keyword arguments for the same architecture as ``config`` (dropout 0, exact scaling).

    ``attn_implementation`` is not included; pass it to ``GPT2Config`` / ``from_config`` separately.
    """
    activation = "gelu_new" if config.gelu_approximate == "tanh" else "gelu"
    return {
        "vocab_size": config.vocab_size, "n_positions": config.max_positions, "n_embd": config.d_model,
        "n_layer": config.n_layers, "n_head": config.n_heads, "n_inner": config.d_ff,
        "activation_function": activation, "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "add_cross_attention": False, "tie_word_embeddings": True, "use_cache": False,
        "bos_token_id": None, "eos_token_id": None,  # a tokenizer's business; GPT-2's 50256 may exceed V
    }


def config_from_gpt2(data: dict, **overrides) -> TransformerConfig:
    """Our :class:`TransformerConfig` from a GPT-2 ``config.json`` dict (``GPT2Config.to_dict()`` output).

    ``n_inner=None`` means ``4 * n_embd`` (GPT-2's default). ``overrides`` (e.g. ``attention="sdpa"``) are
    applied last.

    Raises:
        ValueError: for a non-GPT-2 ``model_type``, an unsupported activation, or a GPT-2 option the reference
            does not implement (named, with the value found).
    """
    model_type = data.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"config.json has model_type={model_type!r}; only GPT-2-style checkpoints ('gpt2') load")
    activation = data.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation_function={activation!r} is not supported; known: {', '.join(ACTIVATIONS)}")
    unsupported = {
        "scale_attn_weights": (data.get("scale_attn_weights", True), True),
        "scale_attn_by_inverse_layer_idx": (data.get("scale_attn_by_inverse_layer_idx", False), False),
        "reorder_and_upcast_attn": (data.get("reorder_and_upcast_attn", False), False),
        "add_cross_attention": (data.get("add_cross_attention", False), False),
        "tie_word_embeddings": (data.get("tie_word_embeddings", True), True),
    }
    for key, (value, required) in unsupported.items():
        if bool(value) != required:
            raise ValueError(f"config.json sets {key}={value!r}; the reference transformer needs {required}")
    d_model = data.get("n_embd", data.get("hidden_size", 768))
    values = {
        "vocab_size": data.get("vocab_size", 50257),
        "max_positions": data.get("n_positions", data.get("max_position_embeddings", 1024)),
        "d_model": d_model,
        "n_heads": data.get("n_head", data.get("num_attention_heads", 12)),
        "n_layers": data.get("n_layer", data.get("num_hidden_layers", 12)),
        "d_ff": data.get("n_inner") or 4 * d_model,
        "layer_norm_eps": data.get("layer_norm_epsilon", 1e-5),
        "gelu_approximate": ACTIVATIONS[activation],
    }
    values.update(overrides)
    return TransformerConfig(**values)


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameters under ``GPT2LMHeadModel`` state-dict names and shapes (fresh contiguous tensors).

    W^Q, W^K, W^V (each (d_model, d_model) as (out, in)) become ``c_attn.weight`` (d_model, 3 d_model) as
    (in, out); ``lm_head.weight`` is E itself (tied).
    """
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"transformer.wte.weight": sd["wte.weight"], "transformer.wpe.weight": sd["wpe.weight"],
           "transformer.ln_f.weight": sd["ln_f.weight"], "transformer.ln_f.bias": sd["ln_f.bias"],
           "lm_head.weight": sd["wte.weight"]}
    for n in range(model.config.n_layers):
        ours, hf = f"blocks.{n}.", f"transformer.h.{n}."
        for ln in ("ln_1", "ln_2"):
            out[f"{hf}{ln}.weight"] = sd[f"{ours}{ln}.weight"]
            out[f"{hf}{ln}.bias"] = sd[f"{ours}{ln}.bias"]
        qkv = [f"{ours}attn.{p}_proj" for p in "qkv"]
        out[f"{hf}attn.c_attn.weight"] = torch.cat([sd[f"{p}.weight"].T for p in qkv], dim=1)
        out[f"{hf}attn.c_attn.bias"] = torch.cat([sd[f"{p}.bias"] for p in qkv])
        for theirs, mine in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.fc_in"),
                             ("mlp.c_proj", "mlp.fc_out")):
            out[f"{hf}{theirs}.weight"] = sd[f"{ours}{mine}.weight"].T
            out[f"{hf}{theirs}.bias"] = sd[f"{ours}{mine}.bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_gpt2_state_dict(state_dict: dict[str, torch.Tensor], config: TransformerConfig) -> Transformer:
    """Build the reference transformer (eval mode, in the tensors' dtype) from GPT-2 weights.

    Accepts HF ``GPT2LMHeadModel`` names (``transformer.h.N...``, optional ``lm_head.weight``) and bare GPT-2
    names (``h.N...``, as in the original ``gpt2`` checkpoint). Mask buffers (``attn.bias``/``masked_bias``)
    are ignored.

    Raises:
        ValueError: for missing or unexpected tensors, wrong shapes (names the tensor and both shapes), or an
            ``lm_head.weight`` that differs from ``wte`` (an untied head the reference cannot represent).
    """
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items() if not _IGNORED.search(k)}
    head = sd.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in sd and not torch.equal(head, sd["wte.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight: the checkpoint's unembedding is not tied")
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        model = Transformer(config)
    expected = to_hf_state_dict(model)
    expected = {k.removeprefix("transformer."): v for k, v in expected.items() if k != "lm_head.weight"}
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match config: missing {missing[:5]}, unexpected {unexpected[:5]}"
                         f" ({len(missing)} missing, {len(unexpected)} unexpected)")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}")
    ours: dict[str, torch.Tensor] = {"wte.weight": sd["wte.weight"], "wpe.weight": sd["wpe.weight"],
                                     "ln_f.weight": sd["ln_f.weight"], "ln_f.bias": sd["ln_f.bias"]}
    d = config.d_model
    for n in range(config.n_layers):
        hf, mine = f"h.{n}.", f"blocks.{n}."
        for ln in ("ln_1", "ln_2"):
            ours[f"{mine}{ln}.weight"] = sd[f"{hf}{ln}.weight"]
            ours[f"{mine}{ln}.bias"] = sd[f"{hf}{ln}.bias"]
        w, b = sd[f"{hf}attn.c_attn.weight"], sd[f"{hf}attn.c_attn.bias"]
        for i, p in enumerate("qkv"):
            ours[f"{mine}attn.{p}_proj.weight"] = w[:, i * d:(i + 1) * d].T
            ours[f"{mine}attn.{p}_proj.bias"] = b[i * d:(i + 1) * d]
        for theirs, name in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.fc_in"),
                             ("mlp.c_proj", "mlp.fc_out")):
            ours[f"{mine}{name}.weight"] = sd[f"{hf}{theirs}.weight"].T
            ours[f"{mine}{name}.bias"] = sd[f"{hf}{theirs}.bias"]
    model.load_state_dict({k: v.contiguous() for k, v in ours.items()}, strict=True, assign=True)
    return model.eval()


def to_hf_model(model: Transformer, attn_implementation: str = "eager"):
    """An independent ``transformers.GPT2LMHeadModel`` (eval mode) holding ``model``'s weights.

    Built locally from a ``GPT2Config`` (no download). ``attn_implementation`` is HF's: ``"eager"``
    (explicit softmax) or ``"sdpa"``.

    Raises:
        ImportError: if ``transformers`` is not installed (``pip install onnxbench[test]``).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(**hf_config_kwargs(model.config), attn_implementation=attn_implementation)
    hf = GPT2LMHeadModel(hf_config)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # GPT-2 registers no other parameters; only its non-persistent buffers may be reported
    if [k for k in missing if not _IGNORED.search(k)] or unexpected:
        raise RuntimeError(f"GPT2LMHeadModel layout changed: missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).dtype).eval()


def save_checkpoint(model: Transformer, directory: str | Path) -> Path:
    """Write ``model`` as a GPT-2-style checkpoint (``config.json`` + ``model.safetensors`` in the names and
    layout ``GPT2LMHeadModel.save_pretrained`` uses, tied head stored once) without needing ``transformers``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **hf_config_kwargs(model.config)}
    (directory / "config.json").write_text(json.dumps(data, indent=2))
    tensors = {k: v for k, v in to_hf_state_dict(model).items() if k != "lm_head.weight"}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def check_checkpoint_dir(directory: str | Path) -> Path:
    """Return ``directory`` as a Path after checking it holds ``config.json`` and ``model.safetensors``.

    Raises:
        FileNotFoundError: naming the missing file and what is expected (``save_pretrained`` output).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    for name in CHECKPOINT_FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: a checkpoint directory holds config.json and model.safetensors "
                "(as written by GPT2LMHeadModel.save_pretrained; sharded or .bin checkpoints are not read)"
            )
    return directory


def checkpoint_config(directory: str | Path, **overrides) -> TransformerConfig:
    """Our config for the checkpoint in ``directory`` (see :func:`config_from_gpt2`).

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
        ValueError: if ``config.json`` is not valid JSON or describes an unsupported model.
    """
    directory = check_checkpoint_dir(directory)
    try:
        data = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{directory / 'config.json'} is not valid JSON: {exc}") from exc
    return config_from_gpt2(data, **overrides)


def checkpoint_sha256(directory: str | Path) -> str:
    """sha256 over ``config.json`` and ``model.safetensors`` (the identity of the weights, for cache keys).

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
    """
    directory = check_checkpoint_dir(directory)
    h = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        with open(directory / name, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32, **overrides) -> Transformer:
    """Load a local GPT-2-style checkpoint directory into the reference transformer (eval mode, ``dtype``).

    Args:
        directory: holds ``config.json`` (``GPT2Config``) and ``model.safetensors``.
        dtype: parameter dtype after loading.
        overrides: config fields to change, e.g. ``attention="sdpa"`` (the weights do not depend on it).

    Raises:
        FileNotFoundError: if a checkpoint file is missing.
        ValueError: for an unsupported config or weights that do not fit it.
    """
    from safetensors.torch import load_file

    config = checkpoint_config(directory, **overrides)
    tensors = load_file(str(Path(directory) / "model.safetensors"))
    return from_gpt2_state_dict(tensors, config).to(dtype).eval()
