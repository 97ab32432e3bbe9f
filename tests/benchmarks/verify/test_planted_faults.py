"""Faults planted in exported ONNX graphs (tests/planted_faults.py; the torch side is untouched) fail the
agreement check and are located in the block they were planted in; clean exports of every attention variant and
both exporters pass, with their error within the floor factor of the noise floor (docs/agreement.md)."""

from __future__ import annotations

import dataclasses

import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.plan.matrix import ATTENTION_VARIANTS
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.verify.reference import TorchFloat64Reference
from onnxbench.benchmarks.verify.verdict import judge, locate, runtime_block_states
from onnxbench.export import VARIANTS, read_artifact, to_onnx
from onnxbench.models import build, get_preset
from onnxbench.models.gpt2 import checkpoint_config, save_checkpoint
from onnxbench.runtimes import RuntimeOptions
from tests.planted_faults import plant

FAST = TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.0, max_iters=2)
# the variants GPT-2 has (ort-gqa-inplace is the Llama family's decoder only)
GPT2_VARIANTS = [v for v in ATTENTION_VARIANTS if VARIANTS[v].family_reason("gpt2") is None]
COMBINATIONS = [("dynamo", v) for v in GPT2_VARIANTS] + [("torchscript", "decomposed"), ("torchscript", "sdpa")]


@pytest.fixture(scope="module")
def deep_tiny(tmp_path_factory, cache_dir):
    """tiny with 4 blocks, saved as a GPT-2-style checkpoint, and its dynamo export."""
    directory = tmp_path_factory.mktemp("ckpt") / "tiny4"
    save_checkpoint(build(get_preset("tiny").replace(n_layers=4), seed=3), directory)
    artifact = to_onnx(checkpoint_config(directory), checkpoint=directory, cache_dir=cache_dir, model_name="tiny4")
    return directory, artifact


def test_planted_faults_fail_and_are_located_through_reference_model(deep_tiny, tmp_path, cache_dir):
    """`run --onnx FILE --reference-model CHECKPOINT`: the clean export passes, each fault fails in its block."""
    directory, artifact = deep_tiny
    planted = {"swap-query-heads": 1, "layernorm-eps-x1000": 2, "softmax-scale-1/d": 3}
    files = {"clean": tmp_path / "clean.onnx"}
    files["clean"].write_bytes(artifact.path.read_bytes())
    for i, (fault, block) in enumerate(planted.items()):
        files[fault] = plant(artifact.path, tmp_path / f"fault{i}.onnx", fault, block, 16)
    names = {path.stem: label for label, path in files.items()}
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[2], seq_lens=[16], timing=FAST,
                      onnx=OnnxFiles(files=[str(p) for p in files.values()],
                                     reference_models={stem: str(directory) for stem in names}))
    rows = {names[r["model"]]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir,
                                                    isolate=False).rows}
    clean = rows["clean"]
    assert clean["status"] == "ok" and clean["verdict"] == "pass", clean
    assert clean["reference_runtime"] == "torch" and clean["reference_config"] == "torch float64"
    assert clean["floor_ratio"] <= clean["floor_factor"] and clean.get("first_divergent_block") is None
    for fault, block in planted.items():
        row = rows[fault]
        assert row["status"] == "ok" and row["verdict"] == "FAIL" and row["agree"] is False, (fault, row["reason"])
        assert row["floor_ratio"] > 100 * row["floor_factor"], (fault, row["floor_ratio"])
        assert row["first_divergent_block"] == block, (fault, row["first_divergent_block"], row["reason"])


@pytest.mark.parametrize("exporter, variant", COMBINATIONS)
def test_faults_are_located_in_every_variant_and_exporter(exporter, variant, tmp_path, cache_dir):
    config = get_preset("tiny", attention=ATTENTION_VARIANTS[variant])
    artifact = to_onnx(config, seed=0, variant=variant, exporter=exporter, cache_dir=cache_dir, model_name="tiny")
    reference = TorchFloat64Reference.of_artifact(artifact, cache_dir)
    feeds = make_feeds(artifact.inputs, 2, 16, seed=0, int_high=config.vocab_size)
    expected = reference.expected(feeds, "fp32")
    tol = runtimes.runtime_class("ort-cpu").tolerance("fp32")
    for fault, block in (("swap-query-heads", 1), ("layernorm-eps-x1000", 0), ("softmax-scale-1/d", 1)):
        path = plant(artifact.path, tmp_path / f"{fault.replace('/', '')}.onnx", fault, block, config.d_head)
        faulty = dataclasses.replace(artifact, path=path, sha256=read_artifact(path).sha256)
        with runtimes.get("ort-cpu").open(faulty) as session:
            verdict = judge(session.run(feeds), expected, tol, reference, "ort-cpu", session.options)
            states = runtime_block_states(session, faulty, "ort-cpu", RuntimeOptions(), feeds, config.n_layers,
                                          cache_dir)
        assert verdict.verdict == "FAIL", (fault, verdict)
        assert locate(states, expected, tol, verdict.agreement) == block, fault


def _clean_rows(models, exporter, variants, tmp_path, cache_dir, batch, seq_len):
    spec = MatrixSpec(models=models, attention=variants, runtimes=["torch", "ort-cpu"], batches=[batch],
                      seq_lens=[seq_len], exporter=exporter, timing=FAST, locate_divergence=True)
    return run_matrix(spec, tmp_path / exporter, cache_dir=cache_dir, isolate=False).rows


def _assert_clean(rows, expected_rows):
    assert len(rows) == expected_rows
    for row in rows:
        label = (row["model"], row["attention"], row["runtime"])
        floor = row["runtime"] == "torch"  # torch at the cell's precision is the noise floor itself
        assert row["status"] == "ok" and row["verdict"] == ("floor" if floor else "pass"), (label, row["reason"])
        assert row["agree"] is (None if floor else True), label
        assert 0 < row["floor_ratio"] <= row["floor_factor"], (label, row["floor_ratio"])
        assert row.get("first_divergent_block") is None, label
        assert row["reference_config"] == "torch float64" and row["required_atol"] < row["atol"]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_clean_exports_of_every_variant_pass_within_the_floor_factor_on_tiny(exporter, tmp_path, cache_dir):
    variants = GPT2_VARIANTS if exporter == "dynamo" else ["decomposed", "sdpa"]
    _assert_clean(_clean_rows(["tiny"], exporter, variants, tmp_path, cache_dir, 2, 16), 2 * len(variants))


@pytest.mark.slow
def test_gpt2_small_clean_variants_pass_and_a_planted_fault_is_located(tmp_path, cache_dir):
    for exporter in ("dynamo", "torchscript"):
        variants = GPT2_VARIANTS if exporter == "dynamo" else ["decomposed", "sdpa"]
        _assert_clean(_clean_rows(["gpt2-small"], exporter, variants, tmp_path, cache_dir, 1, 8),
                      2 * len(variants))
    artifact = to_onnx(get_preset("gpt2-small"), seed=0, cache_dir=cache_dir, model_name="gpt2-small")
    path = plant(artifact.path, tmp_path / "gpt2-fault.onnx", "softmax-scale-1/d", 7, 64)
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[1], seq_lens=[8], timing=FAST,
                      onnx=OnnxFiles(files=[str(path)], reference_models={"gpt2-fault": "gpt2-small"}))
    (row,) = run_matrix(spec, tmp_path / "fault", cache_dir=cache_dir, isolate=False).rows
    assert row["verdict"] == "FAIL" and row["first_divergent_block"] == 7, row
