"""Every FAIL names the criterion it failed and by how much (docs/agreement.md, "The verdict"): faults planted in
exported graphs (tests/planted_faults.py) give prefill FAIL rows whose ``reason`` holds each missed criterion with
its measured value against its limit; a generation whose tokens all stay the reference's but whose logits leave the
noise floor, and one whose token diverges, say the same."""

from __future__ import annotations

import re

import numpy as np

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.plan.sources import OnnxFiles
from onnxbench.benchmarks.scenarios.generate import judge_generation
from onnxbench.benchmarks.verify.reference import TorchFloat64Reference
from onnxbench.export import DECODER_WITH_PAST, to_onnx
from onnxbench.models import get_preset
from onnxbench.runtimes import RuntimeOptions
from onnxbench.tolerance import CPU_BANDS, band
from tests.planted_faults import plant

FAST = TimingConfig(warmup_iters=0, min_iters=1, min_time_s=0.0, max_iters=2)
CONFIG = get_preset("tiny")
#: "criterion measured > limit" or "criterion measured < limit", as the reason writes a missed criterion
MISSED = re.compile(r"(?P<name>[a-z_0-9]+) (?P<value>[-+.\deinf]+) (?P<op>[<>]) (?:(?P<limit_name>[a-z_]+) )?"
                    r"(?P<limit>[-+.\de]+)")


def _missed(reason: str) -> list[dict]:
    """Every missed criterion of the ``FAIL: ...`` entry of a row's reason."""
    assert reason.startswith("FAIL: "), reason
    return [m.groupdict() for m in MISSED.finditer(reason)]


def test_every_planted_fault_fails_with_the_criterion_and_its_value_in_the_reason(tiny_artifact, tmp_path,
                                                                                   cache_dir):
    files = {"clean": tmp_path / "clean.onnx"}
    files["clean"].write_bytes(tiny_artifact.path.read_bytes())
    for i, (fault, block) in enumerate({"swap-query-heads": 1, "layernorm-eps-x1000": 0,
                                        "softmax-scale-1/d": 1}.items()):
        files[fault] = plant(tiny_artifact.path, tmp_path / f"fault{i}.onnx", fault, block, CONFIG.d_head)
    names = {path.stem: label for label, path in files.items()}
    spec = MatrixSpec(models=[], runtimes=["ort-cpu"], batches=[2], seq_lens=[16], timing=FAST,
                      onnx=OnnxFiles(files=[str(p) for p in files.values()],
                                     reference_models={stem: "tiny" for stem in names}))
    rows = {names[r["model"]]: r for r in run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False,
                                                    ceilings=False).rows}
    assert rows["clean"]["verdict"] == "pass" and "FAIL" not in (rows["clean"]["reason"] or ""), rows["clean"]
    failing = [r for label, r in rows.items() if label != "clean"]
    assert len(failing) == 3 and all(r["verdict"] == "FAIL" for r in failing), [r["reason"] for r in failing]
    for row in failing:
        missed = _missed(row["reason"])
        assert missed, row["reason"]
        for m in missed:  # each value is the row's own figure, beyond its limit
            value, limit = float(m["value"]), float(m["limit"])
            assert value > limit if m["op"] == ">" else value < limit, m
            if m["name"] in row and isinstance(row[m["name"]], float):
                np.testing.assert_allclose(value, row[m["name"]], rtol=1e-3)
        by_name = {m["name"]: m for m in missed}
        assert "floor_ratio" in by_name, row["reason"]  # every one leaves the floor (docs/agreement.md)
        np.testing.assert_allclose(float(by_name["floor_ratio"]["limit"]), row["floor_factor"])
        assert row["reason"].startswith("FAIL: logits: ") and row["criteria"].startswith("logits: allclose ")


def _generation(cache_dir):
    art = to_onnx(CONFIG, seed=0, part=DECODER_WITH_PAST, cache_dir=cache_dir, model_name="tiny")
    ids = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (2, 6))
    mask = np.ones_like(ids)
    with runtimes.get("ort-cpu").open(art, RuntimeOptions()) as session:
        loop = session.decoder(ids, mask, 6)
        loop.reset(record=True)
        loop.prefill()
        for _ in range(5):
            loop.step()
        tokens, logits = loop.tokens(), loop.logits()
    return art, ids, mask, tokens, logits


def test_a_generation_fail_names_its_criterion_whether_or_not_a_token_diverged(cache_dir):
    art, ids, mask, tokens, logits = _generation(cache_dir)
    reference = TorchFloat64Reference.of_artifact(art, cache_dir)
    tol = band(CPU_BANDS, "fp32")
    expected = reference.generation_expected(ids, mask, tokens, "fp32")
    clean, step = judge_generation(tokens, logits, expected, tol, reference, "ort-cpu", {})
    assert (clean.verdict, step, clean.reason()) == ("pass", None, "")
    # logits off by a constant 1e-4: inside the fp32 band and the argmax unchanged, far above the noise floor
    shifted, step = judge_generation(tokens, logits + 1e-4, expected, tol, reference, "ort-cpu", {})
    assert shifted.verdict == "FAIL" and step is None
    (missed,) = _missed(shifted.reason())
    assert missed["name"] == "floor_ratio" and float(missed["value"]) > tol.floor_factor
    np.testing.assert_allclose(float(missed["value"]), shifted.agreement.floor.floor_ratio, rtol=1e-3)
    assert "greedy tokens: equal to the reference's at every step" in shifted.criteria
    # a diverging token is named as the criterion it failed
    planted = tokens.copy()
    planted[0, 3] = (planted[0, 3] + 1) % CONFIG.vocab_size
    expected = reference.generation_expected(ids, mask, planted, "fp32")
    diverged, step = judge_generation(planted, logits, expected, tol, reference, "ort-cpu", {})
    assert diverged.verdict == "FAIL" and step == 3
    assert "greedy tokens: first_divergent_step 3" in diverged.reason()
