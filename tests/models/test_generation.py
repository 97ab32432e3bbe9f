"""Generation with a KV cache in the torch reference: a cached decode equals recomputing the sequence, equals
Hugging Face ``GPT2LMHeadModel`` with ``past_key_values`` and a left-padded ``attention_mask`` (built locally, no
download), does not depend on the amount of padding, gives no NaN for all-padding rows, and refuses bad input.

Tolerances: fp32 logits of a cached step and of the full recomputation differ only by summation order
(measured <= 5e-7 on the tiny preset, |logits| <= 2); against GPT2LMHeadModel ``atol = rtol = 1e-4`` as in
tests/models/test_gpt2.py (measured <= 4e-7). Figures are printed with ``pytest -s``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from onnxbench.errors import OnnxbenchError
from onnxbench.models import GenerationError, build, check_generation, get_preset, greedy_generate, left_pad

ATTENTIONS = ["explicit", "sdpa"]
CACHE_ATOL = 1e-5


def _model(attention: str, seed: int = 1, perturb: bool = True):
    model = build(get_preset("tiny", attention=attention), seed=seed)
    if perturb:  # non-zero biases and LayerNorm affines, so that a misplaced tensor shows
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _prompts(lengths, seed=0, vocab=512):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("splits", [(20,), (1, 19), (12, 8), (12, 1, 1, 6), (5, 5, 5, 5)])
def test_cached_steps_equal_the_full_forward(attention, splits):
    """Prefill of the first chunk (T_past = 0), then steps of any length T >= 1 after a past."""
    model = _model(attention)
    ids = torch.randint(0, 512, (3, sum(splits)), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        chunks, past, start = [], None, 0
        for length in splits:
            logits, past = model(ids[:, start:start + length], past_key_values=past, use_cache=True)
            assert all(k.shape == v.shape == (3, 4, start + length, 16) for k, v in past)
            chunks.append(logits)
            start += length
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=CACHE_ATOL, rtol=CACHE_ATOL)


def test_empty_past_is_a_prefill():
    model = _model("explicit")
    ids = torch.randint(0, 512, (2, 7), generator=torch.Generator().manual_seed(3))
    empty = [(torch.zeros(2, 4, 0, 16), torch.zeros(2, 4, 0, 16)) for _ in range(2)]
    with torch.no_grad():
        logits, present = model(ids, torch.ones(2, 7, dtype=torch.int64), empty, use_cache=True)
        # Two code paths (an empty cache concatenated vs none): equal up to fp32 rounding, not bit for bit
        torch.testing.assert_close(logits, model(ids, use_cache=True)[0], atol=CACHE_ATOL, rtol=CACHE_ATOL)
    torch.testing.assert_close(logits, model(ids), atol=CACHE_ATOL, rtol=CACHE_ATOL)


def _hf_step(hf, ids, mask, cache):
    """One GPT2LMHeadModel step with HF generation's position ids (cumsum - 1, padding set to 1)."""
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -ids.shape[1]:]
    # transformers 5 renamed `past_key_values` (argument and output) to `cache`; the old name still works, warning
    key = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    out = hf(ids, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache})
    return out.logits, getattr(out, key)


@pytest.mark.parametrize("attention, hf_attention", [("explicit", "eager"), ("sdpa", "sdpa")])
def test_prefill_and_16_decode_steps_match_gpt2lmheadmodel_with_left_padding(attention, hf_attention):
    pytest.importorskip("transformers", reason="transformers is in the `test` extra")
    from onnxbench.models.gpt2 import to_hf_model

    model = _model(attention)
    hf = to_hf_model(model, attn_implementation=hf_attention)
    ids, mask = left_pad(_prompts([11, 4, 8]))
    real = mask.bool()  # prompt positions that are tokens
    ours = greedy_generate(model, ids, max_new_tokens=17, attention_mask=mask)  # prefill + 16 decode steps
    with torch.no_grad():
        prefill_ours = model(ids, attention_mask=mask)
        prefill_hf, cache = _hf_step(hf, ids, mask, None)
        steps_hf = [prefill_hf[:, -1]]
        for step in range(16):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.int64)], dim=1)
            logits, cache = _hf_step(hf, ours.tokens[:, step:step + 1], mask, cache)
            steps_hf.append(logits[:, -1])
    prefill_diff = (prefill_ours - prefill_hf)[real].abs().max().item()
    steps_hf = torch.stack(steps_hf, dim=1)
    step_diff = (ours.logits - steps_hf).abs().max().item()
    print(f"\n{attention}/{hf_attention}: prefill max abs diff {prefill_diff:.2e}, 16 decode steps {step_diff:.2e} "
          f"(|logits| max {ours.logits.abs().max():.2f})")
    torch.testing.assert_close(prefill_ours[real], prefill_hf[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.logits, steps_hf, atol=1e-4, rtol=1e-4)
    assert torch.equal(steps_hf.argmax(-1), ours.tokens)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_with_cache_equals_recomputing_without(attention):
    model = _model(attention)
    ids, mask = left_pad(_prompts([9, 2, 5, 9]))
    cached = greedy_generate(model, ids, 16, mask)
    recomputed = greedy_generate(model, ids, 16, mask, use_cache=False)
    diff = (cached.logits - recomputed.logits).abs().max().item()
    print(f"\n{attention}: cached vs recomputed logits, 16 steps: max abs diff {diff:.2e}")
    assert torch.equal(cached.tokens, recomputed.tokens)
    torch.testing.assert_close(cached.logits, recomputed.logits, atol=CACHE_ATOL, rtol=CACHE_ATOL)
    assert cached.tokens.shape == (4, 16) and cached.attention_mask.shape == (4, 9 + 16)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_logits_of_tokens_do_not_depend_on_the_amount_of_padding(attention):
    model = _model(attention)
    prompt = _prompts([7])[0]
    with torch.no_grad():
        alone = model(torch.tensor([prompt]))  # (1, 7, V), no padding, no mask
        for pad in (1, 4, 13):
            ids = torch.tensor([[0] * pad + prompt])
            mask = torch.tensor([[0] * pad + [1] * len(prompt)])
            padded = model(ids, attention_mask=mask)[:, pad:]
            torch.testing.assert_close(padded, alone, atol=CACHE_ATOL, rtol=CACHE_ATOL)
            # the check can fail: the same padding read as tokens (mask of ones) moves the logits
            assert (model(ids)[:, pad:] - alone).abs().max() > 1e-2
    # and through decoding, batched with a longer prompt that forces the padding
    ids, mask = left_pad([prompt, _prompts([15], seed=4)[0]])
    batched = greedy_generate(model, ids, 10, mask)
    single = greedy_generate(model, torch.tensor([prompt]), 10)
    assert torch.equal(batched.tokens[0], single.tokens[0])
    torch.testing.assert_close(batched.logits[0], single.logits[0], atol=CACHE_ATOL, rtol=CACHE_ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_all_padding_row_gives_no_nan(attention, dtype):
    model = _model(attention).to(dtype)
    ids = torch.randint(0, 512, (2, 6), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[0] * 6, [1] * 6])
    with torch.no_grad():
        logits, past = model(ids, attention_mask=mask, use_cache=True)
        step, _ = model(ids[:, :1], attention_mask=torch.cat([mask, torch.zeros(2, 1, dtype=torch.int64)], 1),
                        past_key_values=past, use_cache=True)
        assert torch.isfinite(logits).all() and torch.isfinite(step).all()
        assert all(torch.isfinite(t).all() for kv in past for t in kv)
        # the padded row does not leak into the other one
        torch.testing.assert_close(logits[1], model(ids[1:])[0], atol=1e-2 if dtype == torch.float16 else 1e-5,
                                   rtol=1e-2 if dtype == torch.float16 else 1e-5)


def test_forward_refuses_bad_input_with_one_clear_error():
    model = _model("explicit", perturb=False)
    ids = torch.zeros(2, 5, dtype=torch.int64)
    past = [(torch.zeros(2, 4, 124, 16),) * 2 for _ in range(2)]
    with pytest.raises(ValueError, match=r"past 124 \+ new 5 tokens exceeds max_positions=128"):
        model(ids, past_key_values=past)
    with pytest.raises(ValueError, match=r"no tokens \(T = 0\)"):
        model(torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\); expected \(B, T_past \+ T\) = \(2, 5\)"):
        model(ids, attention_mask=torch.ones(2, 4, dtype=torch.int64))
    short = [(torch.zeros(2, 4, 3, 16),) * 2 for _ in range(2)]
    with pytest.raises(ValueError, match=r"expected \(B, T_past \+ T\) = \(2, 8\)"):
        model(ids, attention_mask=torch.ones(2, 5, dtype=torch.int64), past_key_values=short)
    with pytest.raises(ValueError, match="n_layers=2"):
        model(ids, past_key_values=short[:1])
    with pytest.raises(ValueError, match=r"past_key_values\[1\] has shapes"):
        model(ids, past_key_values=[short[0], (torch.zeros(2, 4, 3, 8),) * 2])


@pytest.mark.parametrize(
    "ids_shape, new, mask_shape, message",
    [
        ((1, 100), 29, None, r"prompt length 100 \+ 29 new tokens = 129 exceeds max_positions=128; .* at most 28"),
        ((1, 0), 4, None, "empty prompt"),
        ((0, 5), 4, None, "empty prompt"),
        ((2, 5), 4, (2, 6), r"attention_mask has shape \(2, 6\); it must match input_ids \(2, 5\)"),
        ((2, 5), 0, None, "max_new_tokens must be at least 1, got 0"),
    ],
)
def test_generation_requests_are_refused_before_any_work(ids_shape, new, mask_shape, message):
    model = _model("explicit", perturb=False)
    ids = torch.zeros(ids_shape, dtype=torch.int64)
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.int64)
    with pytest.raises(GenerationError, match=message) as error:
        check_generation(model.config, ids, new, mask)
    assert isinstance(error.value, ValueError) and isinstance(error.value, OnnxbenchError)  # CLI: exit 2
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=message):
        greedy_generate(model, ids, new, mask)
    assert not calls  # refused before the prefill


def test_left_pad_builds_ids_and_mask():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=3)
    assert ids.tolist() == [[5, 6, 7], [3, 3, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="no empty prompt"):
        left_pad([[1], []])
