import pytest
import torch

from onnxbench.models import PRESETS, TransformerConfig, build, get_preset, load, save


def test_causality_future_token_does_not_change_past_logits():
    model = build(get_preset("tiny"), seed=1)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    t = 9
    changed = ids.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 7) % 512
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    # and the change does reach the position it was made at: the test could fail
    assert not torch.allclose(a[:, t + 1], b[:, t + 1])


@pytest.mark.parametrize("gelu", ["tanh", "none"])
def test_explicit_and_sdpa_attention_compute_the_same_function(gelu):
    ids = torch.randint(0, 512, (3, 33), generator=torch.Generator().manual_seed(1))
    explicit = build(get_preset("tiny", gelu_approximate=gelu), seed=3)
    sdpa = build(get_preset("tiny", attention="sdpa", gelu_approximate=gelu), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(explicit(ids), sdpa(ids), atol=1e-5, rtol=1e-5)


def test_weights_are_deterministic_per_seed():
    a, b, c = (build(get_preset("tiny"), seed=s) for s in (5, 5, 6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_unembedding_is_tied_to_token_embedding():
    model = build(get_preset("tiny"))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        x = model.wte(ids) + model.wpe(torch.arange(3))
        for block in model.blocks:
            x = block(x)
        expected = model.ln_f(x) @ model.wte.weight.T
        torch.testing.assert_close(model(ids), expected)


# The presets of more than 12 blocks are not built here (seconds and GBs each): the formula they share is checked
# on the others; the Llama-family ones are also checked against their published counts in test_llama.py.
@pytest.mark.parametrize("name", [name for name, config in PRESETS.items() if config.n_layers <= 12])
def test_parameter_count_formula_matches_module(name):
    config = PRESETS[name]
    assert build(config).num_parameters() == config.n_params


def test_gpt2_small_preset_has_124m_parameters():
    assert PRESETS["gpt2-small"].n_params == 124_439_808  # GPT-2 small, tied embedding counted once


def test_save_and_load_roundtrip(tmp_path):
    model = build(get_preset("tiny", attention="sdpa"), seed=11)
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.config == model.config
    ids = torch.randint(0, 512, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))


def test_config_validation_errors_name_the_problem():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        TransformerConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="attention must be one of"):
        TransformerConfig(attention="flash")
    with pytest.raises(KeyError, match="known presets"):
        get_preset("gpt5")


def test_sequence_longer_than_max_positions_is_rejected():
    model = build(get_preset("tiny"))
    with pytest.raises(ValueError, match="max_positions=128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_flops_match_kaplan_approximation_for_gpt2_small():
    from onnxbench.models.flops import flops_per_token, forward_flops

    config = get_preset("gpt2-small")
    # Kaplan et al. 2020: C_forward ~= 2 N + 2 n_layer n_ctx d_attn, N = non-embedding params + unembedding
    n_matmul = config.n_layers * (4 * config.d_model**2 + 2 * config.d_model * config.d_ff)
    n_matmul += config.d_model * config.vocab_size
    expected = 2 * n_matmul + 2 * config.n_layers * 128 * config.d_model * 2
    assert flops_per_token(config, 128) == pytest.approx(expected)
    f1, f2 = forward_flops(config, 1, 64), forward_flops(config, 2, 64)
    assert f2.total == pytest.approx(2 * f1.total)
    # attention score work is quadratic in T, the projections linear
    assert forward_flops(config, 1, 128).scores == pytest.approx(4 * forward_flops(config, 1, 64).scores)
