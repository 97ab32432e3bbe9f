"""A scenario defined outside the package, in one file, to show (and test) the scenario contract: ``run-api``
times the session's plain ``run()`` call (inputs copied in and outputs copied out on every call), the latency a
caller who never binds inputs sees, beside ``prefill``'s timed path (IOBinding where the session has it).

Registered with :func:`onnxbench.benchmarks.scenarios.register`; docs/extending.md, "A scenario"."""

from __future__ import annotations

from onnxbench import runtimes
from onnxbench.benchmarks.measure.timing import measure
from onnxbench.benchmarks.rows import Measurement, Throughput
from onnxbench.benchmarks.scenarios import CellContext, Scenario
from onnxbench.benchmarks.verify.verdict import judge
from onnxbench.tolerance import tf32_allowed


class RunApi(Scenario):
    """One forward pass over B x T tokens through ``Session.run`` (float precisions only)."""

    name = "run-api"
    columns = ("latency_ms_p50", "throughput_tok_s")

    def measure(self, cell, session, context: CellContext) -> Measurement:
        """Agreement of one ``run()`` with the reference, then ``run()`` timed by the harness."""
        feeds = context.source.cell_feeds(session.inputs(), cell)
        expected = context.reference.expected(feeds, cell.precision)
        context.start_peak()
        outputs = session.run(feeds)
        tol = runtimes.runtime_class(cell.runtime).tolerance(cell.precision, tf32_allowed(session.options))
        timing, _ = measure(lambda: session.run(feeds), session.synchronize, context.timing)
        resources = context.resources(session)
        verdict = judge(outputs, expected, tol, context.reference, cell.runtime, session.options)
        agreement, check = verdict.parts(None)
        notes = [verdict.reason()] if verdict.reason() else []
        return context.ok(session, timing.as_row(), notes, timing=timing,
                          throughput=Throughput.of(cell.batch, cell.seq_len, timing.latency_ms_p50),
                          agreement=agreement, reference_check=check, resources=resources)


RUN_API = RunApi()
