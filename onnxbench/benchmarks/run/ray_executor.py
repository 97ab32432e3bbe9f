"""A Ray executor: each (artifact, runtime) group is one Ray task, scheduled on a Ray cluster (or a local Ray
instance) with resources that make it exclusive where it must be, its messages streamed back to the driver
(docs/scaling.md).

- **Resources.** A GPU runtime's group asks for one whole GPU (``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES``
  to it, so two cells never share a GPU) and one CPU; a CPU runtime's group asks for its thread count in CPUs
  (``intra_op_threads`` where its options set one, else every CPU of the largest node, since the runtimes' default
  thread pools span the machine). A cluster without GPUs runs GPU groups with ``num_gpus=0``, so that they become
  ``skipped`` rows with the runtime's reason rather than tasks that never schedule.
- **Isolation.** The task runs the group through a :class:`~onnxbench.benchmarks.run.executors.ProcessPerGroupExecutor`
  on its node: the measuring worker is a subprocess of the Ray worker, so a worker killed mid-cell (the
  out-of-memory killer, ``ONNXBENCH_FAULT=kill:...``) costs that cell alone, with the process executor's semantics
  and reasons. Should the Ray task itself die (its Ray worker or its node lost), the driver fails the cell that was
  being measured and submits the group's remaining cells again as a new task (cell-level bookkeeping; Ray's own
  task retries are off because they would measure finished cells twice).
- **Artifacts** are exported once, by the driver, into the export cache, and reach the tasks by path: the cache
  must be on a filesystem every node mounts (``ONNXBENCH_CACHE``), as the cached float64 references and TensorRT
  engines then are too. A task whose node does not see the artifact fails its group's cells naming the host and
  the fix.
- **Rows** come back as the tasks' streamed messages (Ray streaming generators, ``num_returns="streaming"``); the
  runner in the driver writes every row, so ``results.jsonl``, ``--resume``, reports and ``compare`` are as with
  the local executors.

The driver's ``ONNXBENCH_*`` variables (fault injection, required GPUs, runtime plugins, the cache) are set in
the measuring workers; ``OMP_NUM_THREADS`` is the driver's (Ray sets it to the task's CPU count otherwise, which
would change torch's thread pool from the local executors').
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ... import runtimes
from ...runtimes import RuntimeOptions
from ..rows import Measurement, Placement
from .executors import Executor, ProcessPerGroupExecutor
from .messages import CellFinished, CellStarted, Group, GroupFinished, Message

#: Variables of the driver's environment forwarded to the measuring workers.
FORWARDED_PREFIXES = ("ONNXBENCH_",)

#: How often a group whose Ray task died is submitted again (each time without the cell it died on).
MAX_RESUBMITS = 3


def ray_module():
    """The ``ray`` module.

    Raises:
        ImportError: naming the extra to install.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray executor needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')") from exc
    return ray


def measure_remote(group: Group, env: dict[str, str | None]) -> Iterator:
    """The body of a group's Ray task (a streaming generator): first ``{"host", "gpu_name"}`` of the node it runs
    on (for the driver's bookkeeping should the task die), then the group's messages as a
    :class:`ProcessPerGroupExecutor` on this node produces them."""
    device = runtimes.runtime_class(group.runtime).device
    here = Placement.here(device)
    yield {"host": here.host, "gpu_name": here.gpu_name}
    missing = [p for p in (group.artifact.path,) if not Path(p).exists()]
    if missing:
        reason = (f"artifact {missing[0]} is not visible on host {here.host}: put the export cache on a filesystem "
                  "every Ray node mounts (ONNXBENCH_CACHE or --cache-dir; docs/scaling.md)")
        for cell in group.cells:
            yield CellFinished(cell.cell_id, Measurement.failed(reason).placed(here))
        yield GroupFinished()
        return
    # fresh interpreters: a task measures one group, so a fork server would save nothing but the restart after a
    # killed cell, and the worker's parent is then this Ray worker (the kill-supervisor fault relies on it)
    yield from ProcessPerGroupExecutor(warm=False, env=env).supervise(group)


@dataclass
class _Task:
    """A submitted group: its cells still without a row, the cell being measured, where it runs."""

    group: Group
    pending: list = field(default_factory=list)
    current: str | None = None
    placement: Placement | None = None
    resubmits: int = 0


class RayExecutor(Executor):
    """Measures each group as a Ray task (see the module docstring for resources, isolation and artifacts).

    Args:
        address: the Ray cluster to join (``ray.init(address=...)``: ``"auto"``, ``"ray://HOST:10001"``, ...);
            None joins the instance this process already initialised, else starts a local one.
        init_kwargs: further ``ray.init`` arguments when this executor starts Ray (e.g. ``num_cpus``).

    Ray is initialised when :meth:`run` starts, unless it already is, and shut down at the end if this executor
    started it.

    Raises:
        ImportError: (from :meth:`run`) without Ray installed.
    """

    def __init__(self, address: str | None = None, **init_kwargs) -> None:
        self.address = address
        self.init_kwargs = init_kwargs

    def run(self, groups: Iterable[Group]) -> Iterator[tuple[Group, Message]]:
        ray = ray_module()
        started = False
        if not ray.is_initialized():
            kwargs = dict(self.init_kwargs)
            if self.address is None:
                kwargs.setdefault("include_dashboard", False)
            ray.init(address=self.address, **kwargs)
            started = True
        in_flight: dict = {}
        try:
            yield from self._run(ray, groups, in_flight)
        finally:
            for generator in in_flight:
                ray.cancel(generator)  # a KeyboardInterrupt in the task: its supervisor ends the worker
            if started:
                ray.shutdown()

    def _run(self, ray, groups: Iterable[Group], in_flight: dict) -> Iterator[tuple[Group, Message]]:
        env = self.worker_env()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        max_cpus = max((int(r.get("CPU", 0)) for r in nodes), default=1) or 1
        has_gpu = any(r.get("GPU", 0) >= 1 for r in nodes)
        remote = ray.remote(num_returns="streaming", max_retries=0)(measure_remote)

        def submit(task: _Task) -> None:
            group = dataclasses.replace(task.group, cells=tuple(c for c in task.group.cells
                                                                if c.cell_id in set(task.pending)))
            in_flight[remote.options(**self.resources(group, max_cpus, has_gpu)).remote(group, env)] = task

        pulled = iter(groups)
        exhausted = False
        while not exhausted or in_flight:
            if not exhausted:
                group = next(pulled, None)  # exports the group's artifact in the driver (the runner's iterable)
                if group is None:
                    exhausted = True
                else:
                    submit(_Task(group, [c.cell_id for c in group.cells]))
            if not in_flight:
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0 if not exhausted else None)
            for generator in ready:
                task = in_flight[generator]
                try:
                    item = ray.get(next(generator))
                except StopIteration:
                    del in_flight[generator]
                    yield from self._unfinished(task, "the Ray task ended without a row for this cell")
                    continue
                except ray.exceptions.RayError as exc:  # the task's Ray worker or node died
                    del in_flight[generator]
                    yield from self._task_died(task, exc, submit)
                    continue
                if isinstance(item, dict):
                    task.placement = Placement(item.get("host"), item.get("gpu_name"))
                    continue
                if isinstance(item, CellStarted):
                    task.current = item.cell_id
                elif isinstance(item, CellFinished):
                    task.pending = [c for c in task.pending if c != item.cell_id]
                    task.current = None
                elif isinstance(item, GroupFinished):
                    del in_flight[generator]
                    yield from self._unfinished(task, "the Ray task sent no row for this cell")
                yield task.group, item

    @staticmethod
    def worker_env() -> dict[str, str | None]:
        """The driver's variables set in the measuring workers (see the module docstring)."""
        env: dict[str, str | None] = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
        env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
        return env

    @staticmethod
    def resources(group: Group, max_cpus: int, has_gpu: bool) -> dict:
        """Ray resources of ``group``'s task: one whole GPU (and one CPU) for a GPU runtime where the cluster has
        a GPU; the thread count in CPUs (capped at the largest node's) for a CPU runtime."""
        if runtimes.runtime_class(group.runtime).device == "cuda":
            return {"num_gpus": 1 if has_gpu else 0, "num_cpus": 1}
        threads = (group.options or RuntimeOptions()).intra_op_threads
        return {"num_gpus": 0, "num_cpus": min(threads, max_cpus) if threads > 0 else max_cpus}

    def _unfinished(self, task: _Task, reason: str) -> Iterator[tuple[Group, Message]]:
        for cell_id in task.pending:  # never drop a cell silently
            yield task.group, CellFinished(cell_id, self._failed(task, reason))
        task.pending = []

    def _failed(self, task: _Task, reason: str) -> Measurement:
        placement = task.placement or Placement()
        return Measurement.failed(reason).placed(placement)

    def _task_died(self, task: _Task, exc: Exception, submit) -> Iterator[tuple[Group, Message]]:
        where = task.placement.host if task.placement else "an unknown host"
        reason = f"Ray task died on {where} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        if task.current is None or task.resubmits >= MAX_RESUBMITS:
            # died before measuring (start-up, session creation) or again and again: the rest shares its fate
            yield from self._unfinished(task, f"{reason} before measuring this cell")
            yield task.group, GroupFinished()
            return
        yield task.group, CellFinished(task.current, self._failed(task, f"{reason} while measuring this cell"))
        task.pending = [c for c in task.pending if c != task.current]
        task.current = None
        if not task.pending:
            yield task.group, GroupFinished()
            return
        task.resubmits += 1
        submit(task)
