"""The memory pre-check: a cell whose estimated peak memory cannot fit is a ``skipped`` row naming the estimate
and what is available, before anything is exported or allocated for it; ordinary cells run."""

import re
import time

import pytest

from onnxbench.benchmarks import MatrixSpec, read_rows, run_matrix
from onnxbench.benchmarks.measure.footprint import MIB, PROCESS_BASE_BYTES, footprint, host_available, memory_reason
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.plan.matrix import default_matrix
from onnxbench.models import PRESETS


def test_a_cell_that_cannot_fit_is_skipped_with_its_estimate_before_any_work(tmp_path, cache_dir):
    # gpt2-small at B = 4096, T = 1024: the logits alone are 4096·1024·50257·4 bytes = 786 GiB per copy
    spec = MatrixSpec(models=["tiny", "gpt2-small"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8],
                      shapes={"gpt2-small": {"batches": [4096], "seq_lens": [1024]}},
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02))
    t0 = time.perf_counter()
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir)
    rows = {r["model"]: r for r in read_rows(tmp_path)}
    huge, tiny = rows["gpt2-small"], rows["tiny"]
    assert tiny["status"] == "ok" and tiny["agree"]  # an ordinary cell still runs
    assert huge["status"] == "skipped", huge
    assert summary.exports == 1  # only tiny's artifact: nothing was exported for the refused cell
    match = re.search(r"estimated peak memory ([\d,]+) MiB exceeds the host's available ([\d,]+) MiB", huge["reason"])
    assert match, huge["reason"]
    estimate, available = (int(g.replace(",", "")) for g in match.groups())
    expected = footprint(PRESETS["gpt2-small"], "model", 4096, 1024, "fp32").host("cpu") / MIB
    assert estimate == pytest.approx(expected, rel=1e-3) and estimate > 3 * 786 * 1024  # three copies of logits
    assert 0 < available < estimate
    assert "reference" in huge["reason"] and "docs/work_model.md" in huge["reason"]
    assert time.perf_counter() - t0 < 300  # refused at once: the run is tiny's cell


def test_the_estimate_covers_the_terms_and_the_default_matrix_fits():
    config = PRESETS["gpt2-small"]
    small = footprint(config, "model", 1, 128, "fp32")
    # the session holds the weights at the graph's precision, the reference the model in float64 and fp32
    assert small.weights == 2 * config.n_params * 4
    assert small.reference > config.n_params * 12
    assert footprint(config, "model", 1, 128, "fp16").weights == small.weights / 2
    # a generation adds the KV cache: 2 · n_layers · B · (T0 + N) · d_kv per copy
    gen = footprint(config, "model", 4, 128, "fp32", new_tokens=64)
    cache = 2 * config.n_layers * 4 * (128 + 64) * config.d_model * 4
    assert gen.working >= 3 * cache
    # the default matrix asks for at most ~3 GiB per cell: the check leaves it alone on any ordinary machine
    matrix = default_matrix().build()
    worst = max(matrix.source(c).footprint(c).host("cpu") for c in matrix.cells)
    assert worst < 4 * 2**30, worst / MIB
    assert memory_reason(small, "cpu", host_available()) is None or host_available() < small.host("cpu")
    assert memory_reason(small, "cpu", int(small.host("cpu")) - 1).startswith("estimated peak memory")
    # on a GPU the working memory is the device's: the host needs weights, outputs, reference and the processes
    assert small.host("cuda") == small.weights + small.outputs + small.reference + PROCESS_BASE_BYTES
    assert "GPU's free 100 MiB" in memory_reason(small, "cuda", None, 100 * MIB)
