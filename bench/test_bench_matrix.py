"""pytest-benchmark suite over a small default matrix (the same cells ``onnxbench run`` measures).

Run it, then report it like any run directory (docs/usage.md, "The pytest-benchmark suite")::

    pytest bench/ --benchmark-enable --benchmark-json=bench.json
    onnxbench report bench.json            # report.md / report.html next to bench.json

``--benchmark-enable`` overrides the ``--benchmark-disable`` that pyproject.toml's addopts sets so that the unit
tests stay fast; the plain ``pytest`` (testpaths = tests) does not collect this directory. Set
``ONNXBENCH_BENCH_MATRIX=FILE.toml`` to benchmark another matrix. Each benchmark records its cell's key columns,
the provider that really ran and its agreement with the float64 torch reference in ``extra_info``;
``onnxbench.reports.load`` turns them into rows of the result schema (pytest-benchmark's seconds become ms).
Runtimes that cannot run here are skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, tolerance_for
from onnxbench.benchmarks.measure.timing import harness_overhead_ms
from onnxbench.benchmarks.plan.matrix import load_matrix
from onnxbench.benchmarks.rows import CellKey, ModelInfo, SessionInfo
from onnxbench.benchmarks.run.worker import session_ranges
from onnxbench.benchmarks.verify.verdict import judge
from onnxbench.runtimes import RuntimeOptions, RuntimeUnavailable


def _spec() -> MatrixSpec:
    path = os.environ.get("ONNXBENCH_BENCH_MATRIX")
    if path:
        return load_matrix(path)
    return MatrixSpec(models=["tiny"], runtimes=list(runtimes.registry()), batches=[1, 4], seq_lens=[32, 128])


SPEC = _spec()
MATRIX = SPEC.build()
CELLS = MATRIX.cells


class _Sessions:
    """One export per artifact, one session per (artifact, runtime), one reference per artifact."""

    def __init__(self) -> None:
        self.artifacts, self.sessions, self.references = {}, {}, {}

    def artifact(self, cell):
        if cell.artifact_key not in self.artifacts:
            self.artifacts[cell.artifact_key] = MATRIX.source(cell).artifact(cell)
        return self.artifacts[cell.artifact_key]

    def session(self, cell):
        key = (cell.artifact_key, cell.runtime)
        if key not in self.sessions:
            runtime = runtimes.get(cell.runtime)
            ok, why = runtime.availability()
            # As `onnxbench run` opens it: one session per (artifact, runtime) whose optimization profile spans
            # exactly the shapes of that group's cells.
            group = [c for c in CELLS if (c.artifact_key, c.runtime) == key]
            options = RuntimeOptions(profile_ranges=session_ranges(group or [cell]))
            try:
                self.sessions[key] = runtime.open(self.artifact(cell), options) if ok else why
            except RuntimeUnavailable as exc:
                self.sessions[key] = str(exc)
        if isinstance(self.sessions[key], str):
            pytest.skip(self.sessions[key])
        return self.sessions[key]

    def reference(self, cell):
        if cell.artifact_key not in self.references:
            self.references[cell.artifact_key] = MATRIX.source(cell).reference(self.artifact(cell))
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
    source = MATRIX.source(cell)
    why = source.unrunnable_reason(cell)
    if why:
        pytest.skip(why)
    session = sessions.session(cell)
    artifact = sessions.artifact(cell)
    feeds = source.feeds(session.inputs(), cell.batch, cell.seq_len)
    reference = sessions.reference(cell)
    # The tolerance as `onnxbench run` picks it: by runtime, precision and the TF32 the session really used.
    tol = tolerance_for(cell.precision, cell.runtime, bool(session.options.get("tf32", False)))
    verdict = judge(session.run(feeds), reference.expected(feeds, cell.precision), tol, reference, cell.runtime,
                    session.options)
    run = session.prepare(feeds)

    def once():
        run()
        session.synchronize()

    for _ in range(SPEC.timing.warmup_iters):  # warm-up at the timed shape
        once()
    model = ModelInfo(source.n_params, source.reference_runtime, artifact.sha256, artifact.export_s)
    benchmark.extra_info.update({"onnxbench_cell": True, "warmup_iters": SPEC.timing.warmup_iters,
                                 "harness_overhead_ms": overhead_ms})
    for part in (CellKey.of(cell), model, SessionInfo.of(session), *verdict.parts()):
        benchmark.extra_info.update(dataclasses.asdict(part))
    benchmark(once)
    assert verdict.verdict != "FAIL", f"{cell.runtime} disagrees with the {reference.label} reference: {verdict}"
