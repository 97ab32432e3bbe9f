"""The generate scenario on the tiny preset: matrix axes and their errors, the decode loops of torch and ort-cpu
(tokens and logits against the torch reference's greedy decoding, reset, bad requests refused before any work,
all-padding rows without NaN), the per-step agreement (a planted diverging token is named), the generation
timing harness, and a run whose rows carry the generation columns and whose report has the generation section.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.cells import Cell
from onnxbench.benchmarks.measure.timing import TimingConfig, measure_generation
from onnxbench.benchmarks.scenarios.generate import first_divergent_step, judge_generation
from onnxbench.benchmarks.verify.reference import TorchFloat64Reference
from onnxbench.errors import MatrixError
from onnxbench.export import DECODER_WITH_PAST, to_onnx
from onnxbench.models import GenerationError, build, get_preset, greedy_generate
from onnxbench.runtimes import RuntimeOptions
from onnxbench.tolerance import CPU_BANDS, band
from tests.cli_run import run_cli
from tests.conftest import DATA

CONFIG = get_preset("tiny")
FAST = TimingConfig(warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=5.0)
_ARTIFACTS: dict = {}


def artifact(cache_dir, variant: str = "decomposed", precision: str = "fp32"):
    key = (variant, precision)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = to_onnx(CONFIG, seed=0, variant=variant, precision=precision, part=DECODER_WITH_PAST,
                                  cache_dir=cache_dir, model_name="tiny")
    return _ARTIFACTS[key]


def prompts(batch: int = 3, length: int = 6) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (batch, length))
    mask = np.ones_like(ids)
    for row in range(1, batch):  # rows of unequal length, left-padded
        mask[row, :2 * row] = 0
    ids[mask == 0] = 0
    return ids, mask


def generate(loop, record: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    loop.reset(record=record)
    loop.prefill()
    for _ in range(loop.new_tokens - 1):
        loop.step()
    return loop.tokens(), loop.logits() if record else None


def test_prefill_cell_ids_are_those_of_runs_recorded_before_the_scenario_existed():
    rows = [json.loads(line) for line in (DATA / "run_small" / "results.jsonl").read_text().splitlines()]
    keys = {f.name for f in dataclasses.fields(Cell)}
    for row in rows:
        cell = Cell(**{k: row[k] for k in keys if k in row})
        assert cell.cell_id == row["cell_id"]
    generate_cell = dataclasses.replace(cell, scenario="generate", new_tokens=4)
    assert generate_cell.cell_id != cell.cell_id


def test_the_generate_scenario_expands_decoder_cells_over_new_tokens_and_padding():
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1, 2], seq_lens=[8], scenarios=["prefill",
                      "generate"], new_tokens=[4, 16], paddings=[0.0, 0.5])
    cells = spec.build().cells
    gen = [c for c in cells if c.scenario == "generate"]
    assert len(cells) == 2 + 2 * 2 * 2 and len(gen) == 8
    assert {c.part for c in gen} == {DECODER_WITH_PAST} and {c.new_tokens for c in gen} == {4, 16}
    assert {c.part for c in cells if c.scenario == "prefill"} == {"model"}


@pytest.mark.parametrize("changes, message", [
    ({"new_tokens": [0]}, "new tokens must be >= 1"),
    ({"paddings": [1.0]}, "padding fractions must lie in [0, 1)"),
    ({"seq_lens": [100], "new_tokens": [64]}, "prompt length 100 + 64 new tokens = 164 exceeds tiny's "
                                              "max_positions=128; generate at most 28"),
    ({"seq_lens": [0]}, "must be >= 1"),
    ({"scenarios": ["decode"]}, "unknown scenario 'decode'"),
])
def test_bad_generation_axes_are_one_clear_error_each(changes, message):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], scenarios=["generate"])
    with pytest.raises(MatrixError, match=None) as info:
        dataclasses.replace(spec, **changes).build()
    assert message in str(info.value)


def test_cli_refuses_prompt_plus_new_tokens_over_max_positions_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--models", "tiny", "--runtimes", "ort-cpu", "--scenario", "generate", "--seq-lens",
                   "100", "--new-tokens", "64", "--out", str(out))
    assert proc.returncode == 2 and "max_positions=128" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("runtime", ["torch", "ort-cpu"])
def test_decode_loop_matches_the_reference_greedy_decoding(cache_dir, runtime):
    ids, mask = prompts()
    expected = greedy_generate(build(CONFIG, 0), torch.from_numpy(ids), 9, torch.from_numpy(mask))
    with runtimes.get(runtime).open(artifact(cache_dir), RuntimeOptions()) as session:
        loop = session.decoder(ids, mask, 9)
        tokens, logits = generate(loop)
        np.testing.assert_array_equal(tokens, expected.tokens.numpy())
        np.testing.assert_allclose(logits, expected.logits.numpy(), atol=1e-5, rtol=1e-5)
        again, _ = generate(loop, record=False)  # reset rewinds every buffer
        np.testing.assert_array_equal(again, tokens)
        with pytest.raises(IndexError):
            loop.step()


@pytest.mark.parametrize("runtime", ["torch", "ort-cpu"])
@pytest.mark.parametrize("request_, message", [
    ((np.zeros((2, 0), dtype=np.int64), np.zeros((2, 0), dtype=np.int64), 4), "empty prompt"),
    ((np.ones((2, 5), dtype=np.int64), np.ones((2, 5), dtype=np.int64), 0), "at least 1"),
    ((np.ones((2, 100), dtype=np.int64), np.ones((2, 100), dtype=np.int64), 64), "exceeds max_positions=128"),
    ((np.ones((2, 5), dtype=np.int64), np.ones((2, 6), dtype=np.int64), 4), "attention_mask has shape (2, 6)"),
])
def test_a_bad_request_is_refused_before_any_work(cache_dir, runtime, request_, message):
    with runtimes.get(runtime).open(artifact(cache_dir), RuntimeOptions()) as session:
        with pytest.raises(GenerationError) as info:
            session.decoder(*request_)
    assert message in str(info.value)


@pytest.mark.parametrize("runtime", ["torch", "ort-cpu"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_prompt_of_padding_alone_gives_no_nan(cache_dir, runtime, precision):
    ids, mask = prompts(2, 5)
    mask[0] = 0  # the whole prompt of row 0 is padding
    with runtimes.get(runtime).open(artifact(cache_dir, "sdpa", precision), RuntimeOptions()) as session:
        _, logits = generate(session.decoder(ids, mask, 4))
    assert np.isfinite(logits).all()


def test_a_diverging_token_is_named_and_fails_the_row(cache_dir):
    art = artifact(cache_dir)
    ids, mask = prompts()
    with runtimes.get("ort-cpu").open(art, RuntimeOptions()) as session:
        tokens, logits = generate(session.decoder(ids, mask, 8))
    reference = TorchFloat64Reference.of_artifact(art, cache_dir)
    tol = band(CPU_BANDS, "fp32")
    expected = reference.generation_expected(ids, mask, tokens, "fp32")
    verdict, step = judge_generation(tokens, logits, expected, tol, reference, "ort-cpu", {})
    assert (verdict.verdict, step) == ("pass", None) and verdict.agreement.floor.passed
    planted = tokens.copy()
    planted[1, 5] = (planted[1, 5] + 1) % CONFIG.vocab_size  # a wrong greedy choice at step 5, row 1
    expected = reference.generation_expected(ids, mask, planted, "fp32")
    assert first_divergent_step(planted, expected.fp64["logits"][0]) == 5
    verdict, step = judge_generation(planted, logits, expected, tol, reference, "ort-cpu", {})
    assert (verdict.verdict, step) == ("FAIL", 5) and verdict.agreement.agree is False


def test_generation_harness_times_each_step_of_each_generation():
    calls = {"reset": 0, "prefill": 0, "step": 0}

    def count(name):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    timed = measure_generation(count("reset"), count("prefill"), count("step"), 5, config=FAST)
    assert timed.generations == 2 and calls["prefill"] == 3 and calls["step"] == 15
    assert timed.tpot.iters == 10 and timed.ttft.iters == 2 and timed.e2e_ms >= timed.ttft.latency_ms_p50


def test_run_writes_generation_rows_and_the_report_section(tmp_path, cache_dir):
    from onnxbench.reports import write_report

    spec = MatrixSpec(models=["tiny"], runtimes=["torch", "ort-cpu", "torch-compile"], batches=[2], seq_lens=[6],
                      scenarios=["generate"], new_tokens=[5], paddings=[0.0, 0.5], timing=FAST)
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir, isolate=False,
                         ceilings={"cpu": {"gemm_gflops": 50.0, "mem_bw_gbs": 10.0}})
    rows = {(r["runtime"], r["padding"]): r for r in summary.rows}
    for runtime in ("torch", "ort-cpu"):
        for padding in (0.0, 0.5):
            row = rows[(runtime, padding)]
            assert row["status"] == "ok" and row["verdict"] == "pass", row["reason"]
            assert row["part"] == DECODER_WITH_PAST and row["new_tokens"] == 5
            assert row["first_divergent_step"] is None
            assert 0 < row["tpot_ms_p50"] <= row["tpot_ms_p99"] and row["ttft_ms"] > 0
            assert row["latency_ms_p50"] == row["tpot_ms_p50"] and row["iters"] == 2 * 4
            assert row["decode_tok_s"] == pytest.approx(2e3 / row["tpot_ms_p50"])
            assert row["bytes_moved"] > CONFIG.n_params * 4 and 0 < row["frac_peak_bw"]
    assert rows[("torch-compile", 0.0)]["status"] == "skipped"
    assert "no decode loop" in rows[("torch-compile", 0.0)]["reason"]
    report = write_report(tmp_path / "run")["markdown"].read_text()
    assert "## Generation" in report and "Lowest TTFT and TPOT per model and batch" in report
    assert "## Latency" not in report  # no prefill rows: no empty prefill tables
    assert (tmp_path / "run" / "plot_decode.png").stat().st_size > 0


def test_a_generate_group_gets_an_optimization_profile_over_the_cache_axes(cache_dir):
    from onnxbench.benchmarks.run.worker import session_ranges
    from onnxbench.runtimes.trt_profiles import input_profile

    cells = [Cell("tiny", "decomposed", "fp32", 18, "tensorrt", b, t, part=DECODER_WITH_PAST, scenario="generate",
                  new_tokens=n) for b, t, n in ((1, 16, 8), (4, 32, 4))]
    ranges = session_ranges(cells)
    assert ranges["sequence"] == (1, 1, 32) and ranges["past_sequence"][::2] == (0, 34)
    assert ranges["total_sequence"][::2] == (16, 35) and ranges["batch"][::2] == (1, 4)
    profile = input_profile(artifact(cache_dir).inputs, ranges)
    for b, t, n in ((1, 16, 8), (4, 32, 4)):  # every step of both generations lies inside the profile
        for s in range(n):
            past, step = (0, t) if s == 0 else (t + s - 1, 1)
            shapes = {"input_ids": (b, step), "attention_mask": (b, t + s), "past_key_values.0.key": (b, 4, past, 16)}
            for name, shape in shapes.items():
                assert profile[name].contains(shape), (name, shape, profile[name])
