"""The Llama family of the reference transformer (RoPE, RMSNorm, SwiGLU, grouped-query attention) against Hugging
Face ``LlamaForCausalLM`` and ``Qwen2ForCausalLM`` built locally from configs (no download): prefill and 16 KV-cache
decode steps with left padding, eager and sdpa on both sides; planted differences that the check must see;
config rules and parameter counts; checkpoints written by ``save_pretrained`` (single file and sharded) read back,
and what the reference cannot represent refused.

Tolerances: fp32 logits against Hugging Face ``atol = rtol = 1e-4`` as in tests/models/test_gpt2.py (measured <= 1e-6 on
the tiny shape, |logits| <= 2; printed with ``pytest -s``); a cached step against the full recomputation 1e-5.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from onnxbench.models import (
    PRESETS,
    PUBLISHED_PARAMS,
    TransformerConfig,
    build,
    checkpoint_config,
    checkpoint_sha256,
    get_preset,
    greedy_generate,
    left_pad,
    load_checkpoint,
)
from onnxbench.models import llama as rope_ops
from onnxbench.models import transformer as transformer_module

ATOL = RTOL = 1e-4
CACHE_ATOL = 1e-5
ARCHITECTURES = {"llama": {}, "qwen2": {"qkv_bias": True}}
# (ours, Hugging Face's attn_implementation): all four pairings
ATTENTIONS = [("explicit", "eager"), ("sdpa", "sdpa"), ("explicit", "sdpa"), ("sdpa", "eager")]


def _model(arch: str = "llama", attention: str = "explicit", seed: int = 1, **overrides):
    """llama-tiny (2 K/V heads for 4 query heads) with every parameter moved off its initial value, so that a
    misplaced, transposed or unused tensor shows (norm gains are 1 and biases 0 after init_weights)."""
    model = build(get_preset("llama-tiny", attention=attention, **ARCHITECTURES[arch], **overrides), seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _prompts(lengths, seed=0, vocab=512):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def _hf_step(hf, ids, mask, cache):
    """One Hugging Face step with generation's position ids (cumsum - 1, padding set to 1)."""
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -ids.shape[1]:]
    # transformers 5 renamed `past_key_values` (argument and output) to `cache`; the old name still works, warning
    key = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    out = hf(ids, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache})
    return out.logits, getattr(out, key)


def _hf_generation(hf, ids, mask, tokens):
    """Prefill logits (B, T0, V) and the 17 last-position logits (B, 17, V) of HF fed our tokens."""
    with torch.no_grad():
        prefill, cache = _hf_step(hf, ids, mask, None)
        steps = [prefill[:, -1]]
        for step in range(tokens.shape[1] - 1):
            mask = torch.cat([mask, torch.ones(ids.shape[0], 1, dtype=torch.int64)], dim=1)
            logits, cache = _hf_step(hf, tokens[:, step:step + 1], mask, cache)
            steps.append(logits[:, -1])
    return prefill, torch.stack(steps, dim=1)


# --- config ----------------------------------------------------------------------------------------------------


def test_gpt2_configs_keep_their_dict_and_old_dicts_load():
    old_keys = ["vocab_size", "max_positions", "d_model", "n_heads", "n_layers", "d_ff", "layer_norm_eps",
                "attention", "gelu_approximate"]
    for name in ("tiny", "small", "gpt2-small", "gpt2-medium", "gpt2-large"):
        config = PRESETS[name]
        assert list(config.to_dict()) == old_keys, name
        assert TransformerConfig.from_dict(config.to_dict()) == config
        assert config.n_kv_heads == config.n_heads and config.family == "gpt2"
    assert PRESETS["gpt2-small"].n_params == 124_439_808
    # a config with as many K/V heads as query heads keeps that when n_heads changes
    assert get_preset("tiny").replace(n_heads=8).n_kv_heads == 8
    assert get_preset("tiny", n_heads=8).to_dict() == {**get_preset("tiny").to_dict(), "n_heads": 8}


def test_llama_config_roundtrips_and_names_its_features():
    config = get_preset("qwen2.5-0.5b", attention="sdpa")
    data = config.to_dict()
    assert data["family"] == "llama" and data["qkv_bias"] is True and data["n_kv_heads"] == 2
    assert "gelu_approximate" not in data and "tie_embeddings" not in data  # defaults left out
    assert TransformerConfig.from_dict(data) == config
    assert (config.positions, config.norm, config.ffn, config.kv_groups) == ("rope", "rmsnorm", "swiglu", 7)
    assert (PRESETS["tiny"].positions, PRESETS["tiny"].norm, PRESETS["tiny"].ffn) == ("learned", "layernorm", "gelu")


@pytest.mark.parametrize("fields, message", [
    ({"family": "llama", "n_heads": 4, "n_kv_heads": 3}, "n_heads=4 is not divisible by n_kv_heads=3"),
    ({"family": "llama", "d_model": 36, "n_heads": 4}, "d_head=9 .* is odd; RoPE"),
    ({"family": "llama", "rope_theta": 0.0}, "rope_theta must be positive"),
    ({"family": "llama", "gelu_approximate": "none"}, "gelu_approximate='none' applies to family='gpt2'"),
    ({"n_kv_heads": 2}, "n_kv_heads=2 needs family='llama'"),
    ({"qkv_bias": True}, "qkv_bias=True needs family='llama'"),
    ({"tie_embeddings": False}, "tie_embeddings=False needs family='llama'"),
    ({"rope_theta": 5e5}, "rope_theta=500000.0 needs family='llama'"),
    ({"family": "mistral"}, "family must be one of"),
    ({"family": "llama", "n_kv_heads": 0}, "n_kv_heads must be positive"),
])
def test_config_errors_name_the_problem(fields, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**fields)


@pytest.mark.parametrize("overrides", [{}, {"qkv_bias": True}, {"tie_embeddings": False},
                                       {"n_kv_heads": 1}, {"n_kv_heads": 4, "qkv_bias": True}])
def test_parameter_count_formula_matches_the_module(overrides):
    config = get_preset("llama-tiny", **overrides)
    model = build(config)
    assert sum(p.numel() for p in model.parameters()) == config.n_params
    names = {n for n, _ in model.named_parameters()}
    assert ("lm_head.weight" in names) == (not config.tie_embeddings)
    assert ("blocks.0.attn.q_proj.bias" in names) == config.qkv_bias
    assert not any(n.endswith("bias") and ".attn.q_proj" not in n and ".attn.k_proj" not in n
                   and ".attn.v_proj" not in n for n in names)  # no other bias in the llama family
    assert model.blocks[0].attn.k_proj.weight.shape == (config.n_kv_heads * config.d_head, config.d_model)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_real_shapes_have_their_published_parameter_counts(name):
    config = PRESETS[name]  # counted from the config only: the modules are not built
    published = PUBLISHED_PARAMS[name]
    print(f"\n{name}: formula {config.n_params:,}, published {published:,.0f} "
          f"({100 * (config.n_params / published - 1):+.2f} %)")
    assert abs(config.n_params / published - 1) < 0.03


# The public config.json of each checkpoint (Hugging Face Hub), as far as the architecture goes: read through the
# checkpoint reader, they must give the preset (up to the benchmark's max_positions, see presets.py).
PUBLIC_CONFIGS = {
    "smollm-135m": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152,
                     "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_act": "silu",
                     "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                     "rope_scaling": None, "tie_word_embeddings": True, "attention_bias": False,
                     "mlp_bias": False}, {}),
    "qwen2.5-0.5b": ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936,
                      "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                      "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu",
                      "max_position_embeddings": 32768, "max_window_layers": 24, "rms_norm_eps": 1e-6,
                      "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": False,
                      "tie_word_embeddings": True}, {"max_positions": 4096}),
    "llama-3.2-1b": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256,
                      "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "hidden_act": "silu",
                      "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                      "rope_scaling": None,  # the checkpoint's llama3 scaling is refused; the preset is its shape
                      "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False},
                     {"max_positions": 8192}),
}


@pytest.mark.parametrize("name", sorted(PUBLIC_CONFIGS))
def test_presets_have_the_shapes_of_the_public_configs(name):
    from onnxbench.models.hf_llama import config_from_hf

    data, overrides = PUBLIC_CONFIGS[name]
    assert config_from_hf(data, **overrides) == PRESETS[name]


# --- the model ---------------------------------------------------------------------------------------------------


def test_rope_rotations_keep_norms_and_make_scores_depend_on_distance_only():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=gen, dtype=torch.float64), torch.randn(1, 1, 1, 16, generator=gen,
                                                                                      dtype=torch.float64)

    def rotated(x, position):
        cos, sin = rope_ops.rope_cos_sin(torch.tensor([[position]]), 16, 10000.0, torch.float64)
        return rope_ops.apply_rope(x, cos, sin)

    torch.testing.assert_close(rotated(q, 37).norm(), q.norm())
    score = (rotated(q, 9) * rotated(k, 4)).sum()
    torch.testing.assert_close((rotated(q, 105) * rotated(k, 100)).sum(), score)  # m - n = 5 both times
    assert abs((rotated(q, 10) * rotated(k, 4)).sum() - score) > 1e-3  # and a different distance differs


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_explicit_and_sdpa_compute_the_same_function(arch):
    ids, mask = left_pad(_prompts([13, 6, 9]))
    explicit, sdpa = _model(arch, "explicit"), _model(arch, "sdpa")
    with torch.no_grad():
        torch.testing.assert_close(explicit(ids), sdpa(ids), atol=CACHE_ATOL, rtol=CACHE_ATOL)
        real = mask.bool()
        torch.testing.assert_close(explicit(ids, mask)[real], sdpa(ids, mask)[real], atol=CACHE_ATOL, rtol=CACHE_ATOL)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
@pytest.mark.parametrize("splits", [(20,), (1, 19), (12, 1, 1, 6)])
def test_cached_steps_equal_the_full_forward(attention, splits):
    model = _model("qwen2", attention)
    ids = torch.randint(0, 512, (3, sum(splits)), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        chunks, past, start = [], None, 0
        for length in splits:
            logits, past = model(ids[:, start:start + length], past_key_values=past, use_cache=True)
            # the cache is n_kv_heads wide: (B, 2, T_past + T, d_head), not n_heads = 4
            assert all(k.shape == v.shape == (3, 2, start + length, 16) for k, v in past)
            chunks.append(logits)
            start += length
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=CACHE_ATOL, rtol=CACHE_ATOL)
    with pytest.raises(ValueError, match=r"\(B, n_kv_heads, T_past, d_head\) = \(3, 2, 20, 16\)"):
        model(ids[:, :1], past_key_values=[(torch.zeros(3, 4, 20, 16),) * 2] * 2, use_cache=True)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_logits_of_tokens_do_not_depend_on_left_padding(attention):
    model = _model("llama", attention)
    prompt = _prompts([7])[0]
    with torch.no_grad():
        alone = model(torch.tensor([prompt]))
        for pad in (1, 5):
            ids = torch.tensor([[0] * pad + prompt])
            mask = torch.tensor([[0] * pad + [1] * len(prompt)])
            torch.testing.assert_close(model(ids, attention_mask=mask)[:, pad:], alone, atol=CACHE_ATOL,
                                       rtol=CACHE_ATOL)
            assert (model(ids)[:, pad:] - alone).abs().max() > 1e-2  # padding read as tokens moves them


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_all_padding_row_gives_no_nan(attention, dtype):
    model = _model("qwen2", attention).to(dtype)
    ids = torch.randint(0, 512, (2, 5))
    mask = torch.tensor([[0] * 5, [1] * 5])
    with torch.no_grad():
        logits, past = model(ids, attention_mask=mask, use_cache=True)
        step, _ = model(ids[:, :1], torch.cat([mask, torch.tensor([[0], [1]])], 1), past, use_cache=True)
    assert torch.isfinite(logits).all() and torch.isfinite(step).all()


# --- against Hugging Face --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention, hf_attention", ATTENTIONS)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_prefill_and_16_decode_steps_match_hugging_face_with_left_padding(arch, attention, hf_attention):
    pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.hf_llama import to_hf_model

    model = _model(arch, attention, tie_embeddings=arch == "llama")  # Qwen2 case untied: lm_head mapped too
    hf = to_hf_model(model, attn_implementation=hf_attention)
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
    ids, mask = left_pad(_prompts([11, 4, 8]))
    real = mask.bool()
    ours = greedy_generate(model, ids, max_new_tokens=17, attention_mask=mask)  # prefill + 16 decode steps
    with torch.no_grad():
        prefill_ours = model(ids, attention_mask=mask)
    prefill_hf, steps_hf = _hf_generation(hf, ids, mask, ours.tokens)
    prefill_diff = (prefill_ours - prefill_hf)[real].abs().max().item()
    step_diff = (ours.logits - steps_hf).abs().max().item()
    print(f"\n{arch} {attention}/{hf_attention}: prefill max abs diff {prefill_diff:.2e}, 16 decode steps "
          f"{step_diff:.2e} (|logits| max {ours.logits.abs().max():.2f})")
    torch.testing.assert_close(prefill_ours[real], prefill_hf[real], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ours.logits, steps_hf, atol=ATOL, rtol=RTOL)
    assert torch.equal(steps_hf.argmax(-1), ours.tokens)


def _planted_gap(model, hf) -> float:
    ids, mask = left_pad(_prompts([12, 5]))
    with torch.no_grad():
        return (model(ids, attention_mask=mask) - _hf_step(hf, ids, mask, None)[0])[mask.bool()].abs().max().item()


@pytest.mark.parametrize("plant", ["rope_theta", "rotate_half", "kv_head_order", "rms_eps", "qkv_bias"])
def test_a_planted_difference_is_detected(plant, monkeypatch):
    """The comparison above can fail: each planted change moves the logits far beyond its tolerance."""
    pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.hf_llama import to_hf_model

    arch = "qwen2" if plant == "qkv_bias" else "llama"
    model = _model(arch)
    hf = to_hf_model(model)
    assert _planted_gap(model, hf) < ATOL  # the unplanted pair agrees
    if plant == "rope_theta":  # a base of 5e5 where HF has 1e4
        model = _model(arch, rope_theta=500000.0)
    elif plant == "rotate_half":  # RoFormer's interleaved pairs (2i, 2i+1) instead of HF's halves (i, i + d/2)
        monkeypatch.setattr(rope_ops, "rotate_half",
                            lambda x: torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2))
        monkeypatch.setattr(transformer_module, "rope_cos_sin", _interleaved_cos_sin)
    elif plant == "kv_head_order":  # query head h reads K/V head h % n_kv_heads instead of h // group
        monkeypatch.setattr(transformer_module, "repeat_kv", lambda x, groups: x.repeat(1, groups, 1, 1))
    elif plant == "rms_eps":  # an epsilon 1e-2 where HF has 1e-5
        for module in model.modules():
            if isinstance(module, rope_ops.RMSNorm):
                module.eps = 1e-2
    elif plant == "qkv_bias":  # the biases dropped
        with torch.no_grad():
            for block in model.blocks:
                for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj):
                    proj.bias.zero_()
    gap = _planted_gap(model, hf)
    print(f"\nplanted {plant}: max abs logit diff {gap:.2e} (tolerance {ATOL})")
    assert gap > 10 * ATOL


def _interleaved_cos_sin(positions, d_head, theta, dtype):
    freqs = positions[..., None].to(torch.float64) * rope_ops.rope_inverse_frequencies(d_head, theta).double()
    angles = freqs.repeat_interleave(2, dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


# --- checkpoints -----------------------------------------------------------------------------------------------


def _hf_checkpoint(arch, directory, **save_kwargs):
    """A random LlamaForCausalLM / Qwen2ForCausalLM made and saved by transformers (the other direction)."""
    transformers = pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.hf_llama import hf_config_kwargs

    config = get_preset("llama-tiny", **ARCHITECTURES[arch], tie_embeddings=arch == "llama")
    hf_class = transformers.LlamaForCausalLM if arch == "llama" else transformers.Qwen2ForCausalLM
    config_class = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    torch.manual_seed(5)
    hf = hf_class(config_class(**hf_config_kwargs(config), attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in hf.parameters():  # non-unit RMSNorm gains and non-zero biases too
            p.add_(torch.randn(p.shape) * 0.05)
    hf.save_pretrained(directory, **save_kwargs)
    return hf, config


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_save_pretrained_checkpoint_loads_into_the_reference(arch, tmp_path):
    hf, config = _hf_checkpoint(arch, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    print(f"\n{arch}: config.json rope keys {sorted(k for k in data if 'rope' in k)}")
    assert checkpoint_config(tmp_path) == config
    ours = load_checkpoint(tmp_path, attention="sdpa")
    assert ours.config == config.replace(attention="sdpa")
    ids, mask = left_pad(_prompts([9, 3]))
    real = mask.bool()
    with torch.no_grad():
        theirs = _hf_step(hf, ids, mask, None)[0]
        torch.testing.assert_close(ours(ids, attention_mask=mask)[real], theirs[real], atol=ATOL, rtol=RTOL)
    assert load_checkpoint(tmp_path, dtype=torch.float64).wte.weight.dtype == torch.float64


def test_sharded_checkpoint_loads_and_is_hashed_over_its_shards(tmp_path):
    hf, config = _hf_checkpoint("qwen2", tmp_path, max_shard_size="100KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file(), shards
    ours = load_checkpoint(tmp_path)
    ids = torch.randint(0, 512, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=RTOL)
    digest = checkpoint_sha256(tmp_path)
    (tmp_path / shards[-1]).write_bytes((tmp_path / shards[-1]).read_bytes()[:-1] + b"\0")
    assert checkpoint_sha256(tmp_path) != digest
    (tmp_path / shards[0]).unlink()
    with pytest.raises(FileNotFoundError, match=shards[0]):
        checkpoint_config(tmp_path)


def test_our_checkpoint_writer_is_read_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.hf_llama import save_checkpoint

    for arch, hf_class in (("llama", transformers.LlamaForCausalLM), ("qwen2", transformers.Qwen2ForCausalLM)):
        ours = _model(arch, tie_embeddings=arch == "qwen2")
        save_checkpoint(ours, tmp_path / arch)
        hf = hf_class.from_pretrained(tmp_path / arch, local_files_only=True).eval()
        ids = torch.randint(0, 512, (1, 12))
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits, ours(ids), atol=ATOL, rtol=RTOL)
        assert load_checkpoint(tmp_path / arch).config == ours.config


def test_gpt2_checkpoints_still_go_through_the_one_reader(tmp_path):
    from onnxbench.models import gpt2

    model = build(get_preset("tiny"), seed=2)
    gpt2.save_checkpoint(model, tmp_path)
    assert checkpoint_config(tmp_path) == get_preset("tiny")
    assert checkpoint_sha256(tmp_path) == gpt2.checkpoint_sha256(tmp_path)  # export cache keys unchanged
    ids = torch.randint(0, 512, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(tmp_path)(ids), model(ids))


LLAMA_JSON = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512, "hidden_size": 64,
              "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": True}


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 32.0}}, "rope_type='llama3'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type='yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_type='linear'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor=0.5"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"mlp_bias": True}, "mlp_bias=True"),
    ({"head_dim": 32}, "head_dim=32"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"num_experts": 8}, "num_experts=8: a mixture-of-experts"),
    ({"num_local_experts": 8}, "num_local_experts=8"),
    ({"sliding_window": 64}, "sliding_window=64"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True,
      "sliding_window": 64}, "sliding-window"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
      "layer_types": ["full_attention", "sliding_attention"]}, "sliding-window"),
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "model_type='mistral'.*llama"),
    ({"architectures": ["LlamaForSequenceClassification"]}, "LlamaForSequenceClassification"),
    ({"num_attention_heads": 5}, "not divisible by n_heads"),
])
def test_what_the_reference_cannot_represent_is_refused(tmp_path, change, message):
    from onnxbench.models.gpt2 import save_checkpoint as save_gpt2

    save_gpt2(build(get_preset("tiny")), tmp_path)  # any weights: the config is refused before they are read
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_JSON, **change}))
    with pytest.raises(ValueError, match=message):
        checkpoint_config(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path)


def test_checkpoint_that_does_not_fit_its_config_is_refused(tmp_path):
    from onnxbench.models.hf_llama import save_checkpoint

    save_checkpoint(_model("llama"), tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "num_key_value_heads": 4}))
    with pytest.raises(ValueError, match=r"k_proj.weight has shape \(32, 64\), config expects \(64, 64\)"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**data, "tie_word_embeddings": False}))
    with pytest.raises(ValueError, match="lm_head.weight is missing"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**data, "model_type": None, "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match=r"architectures=\['BertModel'\]"):
        checkpoint_config(tmp_path)


def test_rope_frequencies_are_hugging_faces():
    transformers = pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.hf_llama import hf_config_kwargs

    config = get_preset("llama-tiny", rope_theta=500000.0)
    hf_rope = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(
        transformers.LlamaConfig(**hf_config_kwargs(config)))
    torch.testing.assert_close(rope_ops.rope_inverse_frequencies(config.d_head, config.rope_theta), hf_rope.inv_freq)
    assert math.isclose(hf_rope.attention_scaling, 1.0)


@pytest.mark.parametrize("name", ["llama-tiny", "qwen2.5-0.5b"])
def test_forward_flops_count_gqa_projections_and_three_swiglu_matrices(name):
    from onnxbench.models.flops import flops_per_token, forward_flops

    config = get_preset(name)
    d, kv = config.d_model, config.n_kv_heads * config.d_head
    # Kaplan et al. 2020 Table 1: 2 N_matmul + 4 n_layers T d_attn per token, N_matmul counted from the matrices
    n_matmul = config.n_layers * (2 * d * d + 2 * d * kv + 3 * d * config.d_ff) + d * config.vocab_size
    assert flops_per_token(config, 64) == pytest.approx(2 * n_matmul + 4 * config.n_layers * 64 * d)
    assert forward_flops(config, 1, 8).qkv < forward_flops(config.replace(n_kv_heads=config.n_heads), 1, 8).qkv
