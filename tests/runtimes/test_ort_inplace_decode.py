"""The ORT decode loop over a KV cache updated in place (docs/generation.md, "A KV cache updated in place"):
llama-tiny exported as ``ort-gqa-inplace`` generates through ``ort-cpu`` with one buffer per cache tensor bound
once as past and present; every step's token equals the float64 reference's and its logits agree within the fp32
band, left-padded rows included; a request beyond the in-place buffer is refused before any work; the CLI runs the
variant's generate cells to ok rows and refuses an over-length request with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onnxbench import runtimes
from onnxbench.export import DECODER_WITH_PAST, to_onnx
from onnxbench.export.decoder_layout import detect_layout
from onnxbench.models import GenerationError, build, get_preset, greedy_generate
from onnxbench.runtimes.ort_decode import OrtInPlaceDecodeLoop
from tests.cli_run import run_cli

CONFIG = get_preset("llama-tiny")
FP32 = {"atol": 1e-3, "rtol": 1e-3}  # the fp32 band (docs/design.md, "Tolerances")
NEW = 12


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    artifact = to_onnx(CONFIG, variant="ort-gqa-inplace", part=DECODER_WITH_PAST,
                       cache_dir=tmp_path_factory.mktemp("cache"))
    with runtimes.get("ort-cpu").open(artifact) as opened:
        yield opened


def _prompts():
    """3 rows of 10 tokens, rows 1 and 2 left-padded by 3 and 6."""
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (3, 10))
    mask = np.ones_like(ids)
    for row, pad in ((1, 3), (2, 6)):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def _generate(loop, record=True):
    loop.reset(record=record)
    loop.prefill()
    for _ in range(loop.new_tokens - 1):
        loop.step()
    return loop.tokens(), (loop.logits() if record else None)


def test_generation_matches_float64_at_every_step_with_one_buffer_bound_once(session):
    ids, mask = _prompts()
    loop = session.decoder(ids, mask, NEW)
    assert isinstance(loop, OrtInPlaceDecodeLoop)
    # one buffer per cache tensor, (B, n_kv_heads, T0 + N - 1, d_head), not a ping-pong pair
    assert sorted(loop.cache) == sorted(detect_layout(session._artifact_path).cache_names)
    assert all(b.shape == (3, 2, 10 + NEW - 1, 16) for b in loop.cache.values())
    addresses = {name: b.data_ptr() for name, b in loop.cache.items()}
    tokens, logits = _generate(loop)
    reference = greedy_generate(build(CONFIG, 0, dtype=torch.float64), torch.from_numpy(ids), NEW,
                                torch.from_numpy(mask))
    for step in range(NEW):  # the token and the logits it was chosen from, at every step
        np.testing.assert_array_equal(tokens[:, step], reference.tokens[:, step].numpy(), err_msg=f"step {step}")
        np.testing.assert_allclose(logits[:, step], reference.logits[:, step].numpy(), **FP32,
                                   err_msg=f"step {step}")
    assert {name: b.data_ptr() for name, b in loop.cache.items()} == addresses
    # the buffer was written in place: row 0 (no padding) holds keys at all T0 + N - 1 positions
    assert np.abs(loop.cache["0.key"][0].numpy()).sum(axis=(0, 2)).min() > 0
    again, _ = _generate(loop, record=False)  # reset rewinds: a second generation chooses the same tokens
    np.testing.assert_array_equal(again, tokens)


def test_a_request_beyond_the_in_place_buffer_is_refused_before_work(session, monkeypatch):
    ids, mask = _prompts()
    layout = detect_layout(session._artifact_path)
    allocated = []
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: allocated.append(a) or torch.empty(0))
    with pytest.raises(GenerationError, match=r"needs 17 cache positions but the in-place KV cache buffer holds 16"):
        OrtInPlaceDecodeLoop(session.session, layout, ids, mask, 8, "cpu", buffer_len=16)
    with pytest.raises(GenerationError, match="max_positions=128"):  # the rotary table's rows bound it too
        session.decoder(ids, mask, 128)
    assert not allocated  # refused before any buffer


def test_cli_generates_with_the_variant_and_refuses_an_over_length_request(tmp_path):
    out = tmp_path / "run"
    common = ["run", "--models", "llama-tiny", "--attention", "ort-gqa-inplace", "--runtimes", "ort-cpu",
              "--scenario", "prefill,generate", "--batches", "2", "--min-iters", "1", "--min-time", "0",
              "--no-ceilings", "--no-report", "--cache-dir", str(tmp_path / "cache")]
    proc = run_cli(*common, "--seq-lens", "8", "--new-tokens", "4", "--padding", "0,0.25", "--out", str(out))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    generate = [r for r in rows if r["scenario"] == "generate"]
    assert len(generate) == 2 and all(r["status"] == "ok" and r["verdict"] == "pass" for r in generate), (
        proc.stderr[-2000:], [r["reason"] for r in generate])
    assert all(r["attention"] == "ort-gqa-inplace" and r["first_divergent_step"] is None for r in generate)
    prefill = [r for r in rows if r["scenario"] == "prefill"]
    assert prefill and all(r["status"] == "skipped" and "only as part decoder-with-past" in r["reason"]
                           for r in prefill)
    too_long = tmp_path / "too-long"
    proc = run_cli(*common, "--seq-lens", "100", "--new-tokens", "64", "--out", str(too_long))
    assert proc.returncode == 2 and "max_positions=128" in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not too_long.exists()
