"""The reference transformer against an independent implementation: Hugging Face ``GPT2LMHeadModel``.

Both models are built locally from configs (no download). Tolerance: fp32 logits agree to
``atol = 1e-4 + 1e-4 * |y|`` (different kernels and summation order; measured differences are ~1e-6 on the tiny
shape and ~1e-5 on gpt2-small, see the printed figures with ``pytest -s``).
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is in the `test` extra")

from onnxbench.models import build, get_preset  # noqa: E402
from onnxbench.models.gpt2 import (  # noqa: E402
    checkpoint_config,
    checkpoint_sha256,
    config_from_gpt2,
    from_gpt2_state_dict,
    hf_config_kwargs,
    load_checkpoint,
    save_checkpoint,
    to_hf_model,
    to_hf_state_dict,
)

ATOL = RTOL = 1e-4


def _ids(config, batch, seq, seed=0):
    return torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _perturb(model, seed):
    """Random non-zero biases and LayerNorm affine parameters, so that a swapped or misplaced tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _max_abs(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("attention, hf_attention", [("explicit", "eager"), ("sdpa", "sdpa")])
@pytest.mark.parametrize("gelu", ["tanh", "none"])
def test_tiny_logits_match_gpt2lmheadmodel(attention, hf_attention, gelu):
    config = get_preset("tiny", attention=attention, gelu_approximate=gelu)
    ours = _perturb(build(config, seed=3), seed=4)
    hf = to_hf_model(ours, attn_implementation=hf_attention)
    assert not hf.training and hf.config.activation_function == ("gelu_new" if gelu == "tanh" else "gelu")
    ids = _ids(config, 3, 40)
    with torch.no_grad():
        ref, theirs = ours(ids), hf(ids).logits
    print(f"\ntiny {attention}/{hf_attention} gelu={gelu}: max abs logit diff {_max_abs(ref, theirs):.3e} "
          f"(|logits| max {ref.abs().max():.2f}; atol=rtol={ATOL})")
    torch.testing.assert_close(theirs, ref, atol=ATOL, rtol=RTOL)


def test_gelu_variant_matters_so_the_check_can_fail():
    # tanh vs erf GELU moves these logits by ~3e-4, 500x the ~6e-7 of a matching pair: the tolerance sees it
    ours = _perturb(build(get_preset("tiny"), seed=3), seed=4)
    exact = build(get_preset("tiny", gelu_approximate="none"))
    exact.load_state_dict(ours.state_dict())
    hf = to_hf_model(exact)  # GPT-2 with exact GELU, against our tanh GELU
    ids = _ids(ours.config, 2, 16)
    with torch.no_grad(), pytest.raises(AssertionError, match="Tensor-likes are not close"):
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=ATOL, rtol=RTOL)


def test_swapping_query_and_key_is_detected():
    ours = _perturb(build(get_preset("tiny"), seed=3), seed=4)
    sd = to_hf_state_dict(ours)
    d = ours.config.d_model
    w = sd["transformer.h.0.attn.c_attn.weight"]
    sd["transformer.h.0.attn.c_attn.weight"] = torch.cat([w[:, d:2 * d], w[:, :d], w[:, 2 * d:]], dim=1)
    swapped = from_gpt2_state_dict(sd, ours.config)
    ids = _ids(ours.config, 2, 16)
    with torch.no_grad():
        assert _max_abs(ours(ids), swapped(ids)) > 10 * ATOL


def test_hf_checkpoint_directory_loads_into_the_reference(tmp_path):
    """The other direction: weights made by transformers, saved with save_pretrained, loaded by us."""
    hf_config = transformers.GPT2Config(**hf_config_kwargs(get_preset("tiny")), attn_implementation="eager")
    torch.manual_seed(0)
    hf = _perturb(transformers.GPT2LMHeadModel(hf_config), seed=5).eval()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    ours = load_checkpoint(tmp_path)
    assert ours.config == get_preset("tiny")
    ids = _ids(ours.config, 2, 64)
    with torch.no_grad():
        ref, theirs = ours(ids), hf(ids).logits
    print(f"\nsave_pretrained -> load_checkpoint: max abs logit diff {_max_abs(ref, theirs):.3e}")
    torch.testing.assert_close(ref, theirs, atol=ATOL, rtol=RTOL)
    assert load_checkpoint(tmp_path, attention="sdpa").config.attention == "sdpa"


def test_our_checkpoint_writer_is_read_by_transformers(tmp_path):
    ours = _perturb(build(get_preset("tiny"), seed=7), seed=8)
    save_checkpoint(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, local_files_only=True).eval()
    ids = _ids(ours.config, 1, 20)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=ATOL, rtol=RTOL)
    digest = checkpoint_sha256(tmp_path)
    save_checkpoint(_perturb(ours, seed=9), tmp_path)
    assert checkpoint_sha256(tmp_path) != digest


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "relu"}, "activation_function='relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"model_type": "bert"}, "model_type='bert'"),
    ],
)
def test_unsupported_gpt2_options_are_refused(change, message):
    data = {"model_type": "gpt2", **hf_config_kwargs(get_preset("tiny")), **change}
    with pytest.raises(ValueError, match=message):
        config_from_gpt2(data)


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint_config(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_head": 4}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        checkpoint_config(tmp_path)
    save_checkpoint(build(get_preset("tiny")), tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "n_layer": 3}))
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path)


@pytest.mark.slow
def test_gpt2_small_logits_match_gpt2lmheadmodel():
    config = get_preset("gpt2-small")
    ours = build(config, seed=1)
    hf = to_hf_model(ours)
    ids = _ids(config, 1, 64)
    with torch.no_grad():
        ref = ours(ids)
        del ours  # keep at most ~1 GB of weights alive
        theirs = hf(ids).logits
    print(f"\ngpt2-small: max abs logit diff {_max_abs(ref, theirs):.3e} "
          f"(|logits| max {ref.abs().max():.2f}; atol=rtol={ATOL})")
    torch.testing.assert_close(theirs, ref, atol=ATOL, rtol=RTOL)


def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "onnxbench.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})


def test_checkpoint_export_is_keyed_by_weights_and_torch_reference_loads_them(tmp_path, cache_dir):
    import numpy as np

    from onnxbench.export import read_artifact, to_onnx
    from onnxbench.runtimes import get

    config = get_preset("tiny")
    ckpt = save_checkpoint(_perturb(build(config, seed=0), seed=1), tmp_path / "mine")
    a = to_onnx(checkpoint_config(ckpt), checkpoint=ckpt, exporter="torchscript", cache_dir=cache_dir)
    seeded = to_onnx(config, seed=0, exporter="torchscript", cache_dir=cache_dir)
    assert a.path != seeded.path and a.sha256 != seeded.sha256
    assert a.checkpoint_sha256 == checkpoint_sha256(ckpt)
    assert read_artifact(a.path).checkpoint == str(ckpt.resolve())
    ids = _ids(config, 2, 12)
    with get("torch").open(a) as session:
        torch_logits = session.run({"input_ids": ids.numpy()})["logits"]
    with torch.no_grad():
        expected = load_checkpoint(ckpt)(ids).numpy()
    np.testing.assert_array_equal(torch_logits, expected)
    with get("ort-cpu").open(a) as session:
        np.testing.assert_allclose(session.run({"input_ids": ids.numpy()})["logits"], expected, atol=1e-4)

    save_checkpoint(_perturb(load_checkpoint(ckpt), seed=2), ckpt)  # new weights, same directory
    b = to_onnx(checkpoint_config(ckpt), checkpoint=ckpt, exporter="torchscript", cache_dir=cache_dir)
    assert not b.cached and b.path != a.path
    with pytest.raises(ValueError, match="changed since"):
        get("torch").open(a)


def test_cli_runs_and_exports_a_checkpoint(tmp_path, cache_dir):
    ckpt = save_checkpoint(_perturb(build(get_preset("tiny"), seed=0), seed=3), tmp_path / "my-gpt")
    out = tmp_path / "run"
    proc = _cli("run", "--checkpoint", str(ckpt), "--runtimes", "torch,ort-cpu", "--batches", "1",
                "--seq-lens", "8,16", "--exporter", "torchscript", "--min-time", "0.05", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # perturbed weights: the rows agree only if torch eager ran the checkpoint, not the seed-0 weights (a torch
    # row is the noise floor only where it meets the band: with other weights it would FAIL)
    assert len(rows) == 4 and all(r["status"] == "ok" and r["verdict"] == ("floor" if r["runtime"] == "torch"
                                                                          else "pass") for r in rows), rows
    assert {r["model"] for r in rows} == {"my-gpt"} and {r["reference_runtime"] for r in rows} == {"torch"}
    proc = _cli("export", "--checkpoint", str(ckpt), "--exporter", "torchscript", "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0 and "my-gpt" in proc.stdout, proc.stdout + proc.stderr
    proc = _cli("run", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
