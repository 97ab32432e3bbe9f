"""Mapping between the Llama family of the reference transformer and Hugging Face ``LlamaForCausalLM`` /
``Qwen2ForCausalLM``.

Two uses, as :mod:`onnxbench.models.gpt2` for GPT-2: checking our logits against an independent implementation,
and loading a local checkpoint directory (``config.json`` + ``model.safetensors``, or a sharded
``model.safetensors.index.json`` with its shards, as ``save_pretrained`` writes them) into the reference so that
real weights are benchmarked. Nothing here downloads anything; ``transformers`` is imported only by
:func:`to_hf_model`.

Layout (HF source: ``transformers/models/llama/modeling_llama.py``, ``.../qwen2/modeling_qwen2.py``; both use
``nn.Linear``, so no matrix is transposed)::

    ours                              Hugging Face                                  shape
    wte.weight                        model.embed_tokens.weight                     (V, d_model)
    blocks.N.ln_1.weight              model.layers.N.input_layernorm.weight         (d_model,)
    blocks.N.attn.q_proj.weight       model.layers.N.self_attn.q_proj.weight        (d_model, d_model)
    blocks.N.attn.k_proj.weight       model.layers.N.self_attn.k_proj.weight        (n_kv_heads d_head, d_model)
    blocks.N.attn.v_proj.weight       model.layers.N.self_attn.v_proj.weight        (n_kv_heads d_head, d_model)
    blocks.N.attn.{q,k,v}_proj.bias   model.layers.N.self_attn.{q,k,v}_proj.bias    Qwen2 only
    blocks.N.attn.o_proj.weight       model.layers.N.self_attn.o_proj.weight        (d_model, d_model)
    blocks.N.ln_2.weight              model.layers.N.post_attention_layernorm.weight
    blocks.N.mlp.w1.weight            model.layers.N.mlp.gate_proj.weight           (d_ff, d_model)
    blocks.N.mlp.w3.weight            model.layers.N.mlp.up_proj.weight             (d_ff, d_model)
    blocks.N.mlp.w2.weight            model.layers.N.mlp.down_proj.weight           (d_model, d_ff)
    ln_f.weight                       model.norm.weight                             (d_model,)
    lm_head.weight (untied only)      lm_head.weight (absent or = embed when tied)  (V, d_model)

``qkv_bias=True`` is ``Qwen2ForCausalLM`` (its q/k/v biases are always on and W^O has none); ``False`` is
``LlamaForCausalLM`` with ``attention_bias=False``. Positions: HF's default RoPE (``rope_type="default"``) with
``rotate_half``, the same convention as ours. What a checkpoint may hold that the reference cannot represent is
refused with ``ValueError`` naming it (:func:`config_from_hf`; docs/models.md lists them and why).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .transformer import DEFAULT_ROPE_THETA, Transformer, TransformerConfig

#: ``model_type`` -> the ``*ForCausalLM`` class whose layout this module maps.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
#: Hugging Face's defaults where ``config.json`` leaves a key out (``LlamaConfig`` / ``Qwen2Config``, transformers
#: 4.4x-5.x): tie_word_embeddings is False for both, rms_norm_eps 1e-6.
_HF_DEFAULTS = {
    "llama": {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32},
    "qwen2": {"max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32},
}
_LAYER_NAMES = (  # (ours, Hugging Face) below blocks.N. / model.layers.N.
    ("ln_1.weight", "input_layernorm.weight"),
    ("attn.q_proj.weight", "self_attn.q_proj.weight"),
    ("attn.k_proj.weight", "self_attn.k_proj.weight"),
    ("attn.v_proj.weight", "self_attn.v_proj.weight"),
    ("attn.q_proj.bias", "self_attn.q_proj.bias"),
    ("attn.k_proj.bias", "self_attn.k_proj.bias"),
    ("attn.v_proj.bias", "self_attn.v_proj.bias"),
    ("attn.o_proj.weight", "self_attn.o_proj.weight"),
    ("ln_2.weight", "post_attention_layernorm.weight"),
    ("mlp.w1.weight", "mlp.gate_proj.weight"),
    ("mlp.w3.weight", "mlp.up_proj.weight"),
    ("mlp.w2.weight", "mlp.down_proj.weight"),
)
#: Non-parameter tensors some checkpoints carry (old transformers saved the RoPE frequencies as a buffer).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_model_type(config: TransformerConfig) -> str:
    """``"qwen2"`` for a config with q/k/v biases, ``"llama"`` otherwise.

    Raises:
        ValueError: for a GPT-2-family config (see :mod:`onnxbench.models.gpt2`).
    """
    if config.family != "llama":
        raise ValueError(f"family={config.family!r}: only llama-family configs map to LlamaForCausalLM / "
                         "Qwen2ForCausalLM (GPT-2: onnxbench.models.gpt2)")
    return "qwen2" if config.qkv_bias else "llama"


def hf_config_kwargs(config: TransformerConfig) -> dict:
    """``LlamaConfig`` / ``Qwen2Config`` keyword arguments (and ``config.json`` keys) for the same architecture
    as ``config``, in the transformers 4.x spelling (``rope_theta``, ``rope_scaling: null``), which
    transformers 5 still reads. ``attn_implementation`` is not included.

    Raises:
        ValueError: for a GPT-2-family config.
    """
    model_type = hf_model_type(config)
    kwargs = {
        "vocab_size": config.vocab_size, "hidden_size": config.d_model, "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads, "hidden_act": "silu",
        "max_position_embeddings": config.max_positions, "rms_norm_eps": config.layer_norm_eps,
        "rope_theta": config.rope_theta, "rope_scaling": None, "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": 0.0, "use_cache": False,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # a tokenizer's business
    }
    if model_type == "llama":
        kwargs.update(attention_bias=False, mlp_bias=False, head_dim=config.d_head)
    else:
        kwargs.update(use_sliding_window=False, sliding_window=None)
    return kwargs


def _rope_theta(data: dict) -> float:
    """RoPE base of a config.json, refusing any scaling: transformers 4.x writes ``rope_theta`` and
    ``rope_scaling``, 5.x ``rope_parameters`` (``rope_type``, ``rope_theta``)."""
    for key in ("rope_scaling", "rope_parameters"):
        params = data.get(key)
        if params is None:
            continue
        if not isinstance(params, dict):
            raise ValueError(f"config.json has {key}={params!r}; expected a dict or null")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"config.json sets {key} with rope_type={rope_type!r}; the reference implements "
                             "the default (unscaled) RoPE only: no llama3, linear, dynamic, yarn or longrope scaling")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(f"config.json sets partial_rotary_factor={params['partial_rotary_factor']}; the "
                             "reference rotates every dimension of each head")
    params = data.get("rope_parameters") or {}
    return float(params.get("rope_theta", data.get("rope_theta", DEFAULT_ROPE_THETA)))


def config_from_hf(data: dict, **overrides) -> TransformerConfig:
    """Our :class:`TransformerConfig` from a Llama or Qwen2 ``config.json`` dict (``to_dict()`` output of
    ``LlamaConfig`` / ``Qwen2Config``, transformers 4.x or 5.x). A key left out takes Hugging Face's default.
    ``overrides`` (e.g. ``attention="sdpa"``) are applied last.

    Raises:
        ValueError: for a ``model_type`` or architecture other than Llama/Qwen2 causal LMs, or a feature the
            reference cannot represent, naming it and the value found: RoPE scaling or partial rotary,
            ``hidden_act`` other than silu, ``head_dim`` other than hidden_size / num_attention_heads, biases on
            W^O or the MLP (``attention_bias``, ``mlp_bias``), sliding-window attention, mixture of experts.
    """
    model_type = data.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"config.json has model_type={model_type!r}; the llama family reads "
                         f"{', '.join(repr(t) for t in ARCHITECTURES)}")
    architectures = data.get("architectures") or [ARCHITECTURES[model_type]]
    if architectures != [ARCHITECTURES[model_type]]:
        raise ValueError(f"config.json lists architectures={architectures}; the reference is a causal LM "
                         f"({ARCHITECTURES[model_type]}) with a tied or untied unembedding")
    defaults = _HF_DEFAULTS[model_type]
    get = lambda key: data.get(key, defaults.get(key))  # noqa: E731
    for key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size"):
        if data.get(key):
            raise ValueError(f"config.json sets {key}={data[key]!r}: a mixture-of-experts FFN, which the reference "
                             "(one dense SwiGLU per block) cannot represent")
    if get("hidden_act") not in (None, "silu"):
        raise ValueError(f"config.json sets hidden_act={data['hidden_act']!r}; the reference's SwiGLU uses silu")
    hidden, heads = get("hidden_size"), get("num_attention_heads")
    head_dim = data.get("head_dim")
    if head_dim is not None and head_dim * heads != hidden:
        raise ValueError(f"config.json sets head_dim={head_dim} with hidden_size={hidden} and "
                         f"num_attention_heads={heads}; the reference needs head_dim = hidden_size / "
                         f"num_attention_heads = {hidden / heads:g}")
    if model_type == "llama":
        for key in ("attention_bias", "mlp_bias"):
            if data.get(key):
                what = "W^Q, W^K, W^V and W^O" if key == "attention_bias" else "the MLP's three matrices"
                raise ValueError(f"config.json sets {key}=True (biases on {what}); the reference has biases only "
                                 "on W^Q, W^K, W^V, and only as Qwen2 (model_type 'qwen2')")
    if data.get("use_sliding_window") or "sliding_attention" in (data.get("layer_types") or []):
        raise ValueError("config.json enables sliding-window attention (use_sliding_window / layer_types); the "
                         "reference attends over the whole past")
    if model_type == "llama" and data.get("sliding_window"):
        raise ValueError(f"config.json sets sliding_window={data['sliding_window']}; the reference attends over "
                         "the whole past")
    values = {
        "family": "llama",
        "vocab_size": get("vocab_size"),
        "max_positions": get("max_position_embeddings"),
        "d_model": hidden,
        "n_heads": heads,
        "n_kv_heads": data.get("num_key_value_heads") or defaults.get("num_key_value_heads") or heads,
        "n_layers": get("num_hidden_layers"),
        "d_ff": get("intermediate_size"),
        "layer_norm_eps": float(get("rms_norm_eps")),
        "rope_theta": _rope_theta(data),
        "qkv_bias": model_type == "qwen2",
        "tie_embeddings": bool(get("tie_word_embeddings")),
    }
    values.update(overrides)
    return TransformerConfig(**values)


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameters under ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` names (fresh contiguous tensors);
    ``lm_head.weight`` is E itself when the unembedding is tied."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["ln_f.weight"],
           "lm_head.weight": sd["wte.weight" if model.config.tie_embeddings else "lm_head.weight"]}
    for n in range(model.config.n_layers):
        for ours, theirs in _LAYER_NAMES:
            if f"blocks.{n}.{ours}" in sd:
                out[f"model.layers.{n}.{theirs}"] = sd[f"blocks.{n}.{ours}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], config: TransformerConfig) -> Transformer:
    """Build the reference transformer (eval mode, in the tensors' dtype) from Llama/Qwen2 weights.

    Raises:
        ValueError: for missing or unexpected tensors, wrong shapes (names the tensor and both shapes), or an
            ``lm_head.weight`` that differs from the embedding when the config says the unembedding is tied.
    """
    sd = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    head = sd.pop("lm_head.weight", None)
    embed = sd.get("model.embed_tokens.weight")
    if config.tie_embeddings:
        if head is not None and embed is not None and not torch.equal(head, embed):
            raise ValueError("lm_head.weight differs from model.embed_tokens.weight, but config.json sets "
                             "tie_word_embeddings=True")
    elif head is None:
        raise ValueError("lm_head.weight is missing; config.json sets tie_word_embeddings=False")
    else:
        sd["lm_head.weight"] = head
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        model = Transformer(config)
    expected = to_hf_state_dict(model)
    if config.tie_embeddings:
        del expected["lm_head.weight"]
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match config: missing {missing[:5]}, unexpected {unexpected[:5]}"
                         f" ({len(missing)} missing, {len(unexpected)} unexpected)")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}")
    ours = {"wte.weight": sd["model.embed_tokens.weight"], "ln_f.weight": sd["model.norm.weight"]}
    if not config.tie_embeddings:
        ours["lm_head.weight"] = sd["lm_head.weight"]
    for n in range(config.n_layers):
        for mine, theirs in _LAYER_NAMES:
            if f"model.layers.{n}.{theirs}" in sd:
                ours[f"blocks.{n}.{mine}"] = sd[f"model.layers.{n}.{theirs}"]
    model.load_state_dict({k: v.contiguous() for k, v in ours.items()}, strict=True, assign=True)
    return model.eval()


def to_hf_model(model: Transformer, attn_implementation: str = "eager"):
    """An independent ``transformers.LlamaForCausalLM`` (or ``Qwen2ForCausalLM`` for ``qkv_bias``), eval mode,
    holding ``model``'s weights. Built locally from a config (no download); ``attn_implementation`` is HF's
    (``"eager"`` or ``"sdpa"``).

    Raises:
        ImportError: if ``transformers`` is not installed (``pip install onnxbench[test]``).
        ValueError: for a GPT-2-family model.
    """
    import transformers

    model_type = hf_model_type(model.config)
    hf_class = getattr(transformers, ARCHITECTURES[model_type])
    config_class = transformers.LlamaConfig if model_type == "llama" else transformers.Qwen2Config
    hf = hf_class(config_class(**hf_config_kwargs(model.config), attn_implementation=attn_implementation))
    state = to_hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith(_IGNORED_SUFFIXES)] or unexpected:
        raise RuntimeError(f"{ARCHITECTURES[model_type]} layout changed: missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).dtype).eval()


def save_checkpoint(model: Transformer, directory: str | Path) -> Path:
    """Write ``model`` as a Llama/Qwen2 checkpoint (``config.json`` + ``model.safetensors`` in the names
    ``save_pretrained`` uses, a tied head not stored) without needing ``transformers``.

    Raises:
        ValueError: for a GPT-2-family model.
    """
    from safetensors.torch import save_file

    model_type = hf_model_type(model.config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {"model_type": model_type, "architectures": [ARCHITECTURES[model_type]], **hf_config_kwargs(model.config)}
    (directory / "config.json").write_text(json.dumps(data, indent=2))
    tensors = to_hf_state_dict(model)
    if model.config.tie_embeddings:
        del tensors["lm_head.weight"]
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
