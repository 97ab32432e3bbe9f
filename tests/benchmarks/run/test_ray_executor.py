"""The Ray executor on a local Ray instance (one ``ray.init(num_cpus=2)`` for the module: start-up costs seconds):
the tiny matrix gives the process executor's cells, statuses and verdicts; a worker killed mid-cell costs that
cell alone. Faults go through the real worker's ``ONNXBENCH_FAULT`` hook, forwarded from the driver."""

import socket
import time

import pytest

from onnxbench.benchmarks import MatrixSpec, ProcessPerGroupExecutor, read_rows, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.benchmarks.run.faults import FAULT_ENV
from onnxbench.benchmarks.run.messages import Group
from onnxbench.runtimes import RuntimeOptions

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'; the test extra has it)")
from onnxbench.benchmarks.run.ray_executor import RayExecutor  # noqa: E402 - after the skip

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init(num_cpus=2): {time.perf_counter() - t0:.1f} s")
    yield
    ray.shutdown()


def _spec(**kw) -> MatrixSpec:
    axes = {"models": ["tiny"], "runtimes": ["torch", "ort-cpu"], "batches": [1], "seq_lens": [8, 16],
            "timing": TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02)}
    return MatrixSpec(**{**axes, **kw})


def _outcomes(rows):
    return {r["cell_id"]: (r["runtime"], r["seq_len"], r["status"], r["verdict"]) for r in rows}


def test_the_tiny_matrix_through_ray_matches_the_process_executor(local_ray, tmp_path, cache_dir):
    spec = _spec()
    run_matrix(spec, tmp_path / "process", cache_dir=cache_dir, executor=ProcessPerGroupExecutor())
    summary = run_matrix(spec, tmp_path / "ray", cache_dir=cache_dir, executor=RayExecutor())
    process_rows, ray_rows = read_rows(tmp_path / "process"), read_rows(tmp_path / "ray")
    assert len(ray_rows) == len(spec.expand()) == 4  # no duplicate, none missing
    assert _outcomes(ray_rows) == _outcomes(process_rows)
    assert all(r["status"] == "ok" and r["verdict"] == "pass" for r in ray_rows if r["runtime"] == "ort-cpu")
    assert {r["host"] for r in ray_rows} == {socket.gethostname()} and {r["gpu_name"] for r in ray_rows} == {None}
    assert summary.worker_start_s > 0 and summary.session_s > 0  # the workers' messages reached the driver


def test_a_worker_killed_mid_cell_under_ray_costs_only_that_cell(local_ray, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "kill:runtime=ort-cpu,seq_len=8")
    spec = _spec()
    run_matrix(spec, tmp_path, cache_dir=cache_dir, executor=RayExecutor())
    rows = read_rows(tmp_path)
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in spec.expand())
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1, [(r["runtime"], r["seq_len"], r["status"], r["reason"]) for r in rows]
    assert (failed[0]["runtime"], failed[0]["seq_len"]) == ("ort-cpu", 8)
    assert "worker killed by signal 9 (SIGKILL" in failed[0]["reason"] and failed[0]["host"] == socket.gethostname()
    # the killed cell's group went on in a fresh worker on the Ray node
    assert all(r["status"] == "ok" for r in rows if r is not failed[0])


def test_ray_resources_make_a_gpu_group_exclusive_and_a_cpu_group_take_its_threads(tiny_artifact):
    spec = _spec()
    cells = spec.expand()
    source = spec.build().sources["tiny"]

    def group(runtime, options=None):
        import dataclasses

        return Group(source, tiny_artifact, tuple(dataclasses.replace(c, runtime=runtime) for c in cells[:1]), spec,
                     options=options)

    assert RayExecutor.resources(group("ort-cuda"), max_cpus=16, has_gpu=True) == {"num_gpus": 1, "num_cpus": 1}
    # a cluster without GPUs: the group runs and its runtime reports itself unavailable (skipped rows)
    assert RayExecutor.resources(group("ort-cuda"), max_cpus=16, has_gpu=False)["num_gpus"] == 0
    assert RayExecutor.resources(group("ort-cpu"), max_cpus=16, has_gpu=True) == {"num_gpus": 0, "num_cpus": 16}
    threads = RuntimeOptions(intra_op_threads=4)
    assert RayExecutor.resources(group("ort-cpu", threads), max_cpus=16, has_gpu=False)["num_cpus"] == 4
    assert RayExecutor.resources(group("ort-cpu", RuntimeOptions(intra_op_threads=64)), 16, False)["num_cpus"] == 16


def test_a_ray_task_that_dies_mid_cell_costs_that_cell_and_its_group_goes_on(local_ray, tmp_path, cache_dir,
                                                                             monkeypatch):
    """The Ray worker running the group's task is killed (as when its node is lost): the driver fails the cell
    being measured and submits the group's other cells again as a new task."""
    monkeypatch.setenv(FAULT_ENV, "kill-supervisor:runtime=ort-cpu,seq_len=8")
    spec = _spec()
    run_matrix(spec, tmp_path, cache_dir=cache_dir, executor=RayExecutor())
    rows = read_rows(tmp_path)
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in spec.expand())
    by_cell = {(r["runtime"], r["seq_len"]): r for r in rows}
    died = by_cell.pop(("ort-cpu", 8))
    assert died["status"] == "failed" and "Ray task died on" in died["reason"], died["reason"]
    assert "while measuring this cell" in died["reason"] and died["host"] == socket.gethostname()
    assert {k: r["status"] for k, r in by_cell.items()} == dict.fromkeys(by_cell, "ok")
