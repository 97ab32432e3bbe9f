"""pytest-benchmark suite over a small default matrix (the same cells ``onnxbench run`` measures).

Run it, then report it like any run directory (README "pytest-benchmark suite")::

    pytest bench/ --benchmark-enable --benchmark-json=bench.json
    onnxbench report bench.json            # report.md / report.html next to bench.json

``--benchmark-enable`` overrides the ``--benchmark-disable`` that pyproject.toml's addopts sets so that the unit
tests stay fast; the plain ``pytest`` (testpaths = tests) does not collect this directory. Set
``ONNXBENCH_BENCH_MATRIX=FILE.toml`` to benchmark another matrix. Each benchmark records its cell's key columns,
the provider that really ran and its agreement with the fp32 torch reference in ``extra_info``;
``onnxbench.reports.load`` turns them into rows of the result schema (pytest-benchmark's seconds become ms).
Runtimes that cannot run here are skipped with the reason.
"""

from __future__ import annotations

import json
import os

import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, compare_outputs, tolerance_for
from onnxbench.benchmarks.agreement import worst
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.matrix import ATTENTION_VARIANTS, load_matrix
from onnxbench.benchmarks.timing import harness_overhead_ms
from onnxbench.benchmarks.worker import ReferenceOutputs
from onnxbench.export import to_onnx
from onnxbench.models import get_preset
from onnxbench.runtimes import RuntimeOptions, RuntimeUnavailable


def _spec() -> MatrixSpec:
    path = os.environ.get("ONNXBENCH_BENCH_MATRIX")
    if path:
        return load_matrix(path)
    return MatrixSpec(models=["tiny"], runtimes=list(runtimes.registry()), batches=[1, 4], seq_lens=[32, 128])


SPEC = _spec()
CELLS = SPEC.expand()


class _Sessions:
    """One export per artifact, one session per (artifact, runtime), one reference per artifact."""

    def __init__(self) -> None:
        self.artifacts, self.sessions, self.references = {}, {}, {}

    def artifact(self, cell):
        if cell.artifact_key not in self.artifacts:
            config = get_preset(cell.model, attention=ATTENTION_VARIANTS[cell.attention])
            self.artifacts[cell.artifact_key] = to_onnx(config, seed=SPEC.seed, precision=cell.precision,
                                                        opset=cell.opset, exporter=SPEC.exporter,
                                                        model_name=cell.model)
        return self.artifacts[cell.artifact_key]

    def session(self, cell):
        key = (cell.artifact_key, cell.runtime)
        if key not in self.sessions:
            runtime = runtimes.get(cell.runtime)
            ok, why = runtime.availability()
            try:
                self.sessions[key] = runtime.open(self.artifact(cell), RuntimeOptions()) if ok else why
            except RuntimeUnavailable as exc:
                self.sessions[key] = str(exc)
        if isinstance(self.sessions[key], str):
            pytest.skip(self.sessions[key])
        return self.sessions[key]

    def reference(self, cell):
        if cell.artifact_key not in self.references:
            self.references[cell.artifact_key] = ReferenceOutputs(self.artifact(cell))
        return self.references[cell.artifact_key]

    def close(self) -> None:
        for session in self.sessions.values():
            if not isinstance(session, str):
                session.close()
        for reference in self.references.values():
            reference.close()


@pytest.fixture(scope="module")
def sessions():
    opened = _Sessions()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def overhead_ms():
    return harness_overhead_ms()


@pytest.mark.parametrize("cell", CELLS, ids=[f"{c.model}-{c.attention}-{c.precision}-op{c.opset}-{c.runtime}-"
                                             f"b{c.batch}-t{c.seq_len}" for c in CELLS])
def test_latency(benchmark, cell, sessions, overhead_ms):
    why = SPEC.unrunnable_reason(cell)
    if why:
        pytest.skip(why)
    session = sessions.session(cell)
    artifact = sessions.artifact(cell)
    feeds = make_feeds(session.inputs(), cell.batch, cell.seq_len, seed=SPEC.seed,
                       int_high=artifact.config.vocab_size)
    reference = sessions.reference(cell).get((cell.batch, cell.seq_len), feeds)
    agreement = worst(compare_outputs(session.run(feeds), reference, tolerance_for(cell.precision, cell.runtime)))
    run = session.prepare(feeds)

    def once():
        run()
        session.synchronize()

    for _ in range(SPEC.timing.warmup_iters):  # warm-up at the timed shape
        once()
    benchmark.extra_info.update(
        {"onnxbench_cell": True, "cell_id": cell.cell_id, "model": cell.model, "part": cell.part,
         "attention": cell.attention, "precision": cell.precision, "opset": cell.opset, "runtime": cell.runtime,
         "config_id": cell.config_id, "batch": cell.batch, "seq_len": cell.seq_len,
         "n_params": artifact.config.n_params, "provider_requested": session.provider_requested,
         "provider_actual": session.provider_actual, "device": session.device,
         "options": json.dumps(session.options, sort_keys=True, default=str), "build_s": session.build_s,
         "onnx_sha256": artifact.sha256, "warmup_iters": SPEC.timing.warmup_iters,
         "harness_overhead_ms": overhead_ms, "reference_runtime": "torch", **agreement.as_row()})
    benchmark(once)
    assert agreement.agree, f"{cell.runtime} disagrees with the torch reference: {agreement}"
