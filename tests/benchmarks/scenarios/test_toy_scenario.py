"""A scenario from one file (tests/toy_scenario.py) plus one registration runs a matrix: its cells are keyed apart
from prefill's, measured in the worker processes, judged, and shown in the end-of-run table and the report."""

import pytest

from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks import scenarios as scenario_registry
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.reports import write_report
from onnxbench.rundir import read_rows
from tests.toy_scenario import RUN_API


@pytest.fixture
def run_api():
    scenario_registry.register(RUN_API)
    yield RUN_API
    scenario_registry.unregister(RUN_API.name)


def test_a_scenario_from_one_file_runs_a_matrix(run_api, tmp_path, cache_dir):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu", "torch"], scenarios=["prefill", "run-api"],
                      batches=[2], seq_lens=[8], timing=TimingConfig(warmup_iters=1, min_iters=5, min_time_s=0.05))
    cells = spec.expand()
    assert sorted(c.scenario for c in cells) == ["prefill", "prefill", "run-api", "run-api"]
    assert len({c.cell_id for c in cells}) == 4  # the scenario is part of the key
    run_matrix(spec, tmp_path, cache_dir=cache_dir)  # the default executor: worker processes
    rows = [r for r in read_rows(tmp_path) if r["scenario"] == "run-api"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    # ort-cpu judged; torch is the noise floor, also when the reference runs in the worker's child process
    assert {(r["runtime"], r["verdict"]) for r in rows} == {("ort-cpu", "pass"), ("torch", "floor")}
    assert all(r["latency_ms_p50"] > 0 and r["throughput_tok_s"] > 0 for r in rows)
    report = write_report(tmp_path)["markdown"].read_text()
    assert "run-api" in report


def test_a_scenario_name_cannot_be_taken_twice(run_api):
    from onnxbench.errors import MatrixError

    class Other(type(RUN_API)):
        pass

    with pytest.raises(MatrixError, match="taken"):
        scenario_registry.register(Other())
    assert scenario_registry.register(RUN_API) is RUN_API  # the same instance again: a no-op
