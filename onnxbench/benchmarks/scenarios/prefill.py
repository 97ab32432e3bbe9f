"""The ``prefill`` scenario: one forward pass over B sequences of T tokens, checked against the reference and timed.

Order (docs/measurement.md, docs/agreement.md): the cell's inputs from the model's source; the reference's expected
outputs for them; memory kept for earlier shapes released and the peak reset; one run whose outputs are judged; the
timing harness over the session's timed path (IOBinding, a replayed CUDA graph), whose outputs are judged too;
the GPU split where the session offers one; on a FAIL (or with ``locate_divergence``) the first diverging block.
The ``latency_ms_*`` columns are one inference; ``throughput_tok_s`` is B·T / p50.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ... import runtimes
from ...runtimes import RuntimeOptions, RuntimeUnavailable
from ...tolerance import tf32_allowed
from ..inputs import padding_note
from ..measure.timing import measure, measure_stages
from ..rows import GpuStages, Measurement, Throughput
from ..verify.divergence import BoundaryNotFound
from ..verify.reference import Expected
from ..verify.verdict import (
    NOT_JUDGED,
    QUANT_THRESHOLDS,
    Verdict,
    judge,
    judge_quantized,
    locate,
    runtime_block_states,
)
from .base import CellContext, Scenario

if TYPE_CHECKING:
    from ...runtimes import Session
    from ...tolerance import Tolerance
    from ..cells import Cell


class Prefill(Scenario):
    """One forward pass over the prompt (the rows of every run before generation existed)."""

    name = "prefill"
    columns = ("latency_ms_p50", "throughput_tok_s")

    def measure(self, cell: Cell, session: Session, context: CellContext) -> Measurement:
        """Agreement with the reference, latency, throughput and memory of one forward pass.

        The inputs come from ``context.source.feeds`` (the reference transformer: ``input_ids`` int64 (B, T) in
        [0, vocab_size)). ``peak_rss_mb`` covers the checked run and the timing, with the session, the inputs and
        the reference's expected outputs resident (the reference's modules run in another process, docs/schema.md).

        Raises:
            Exception: whatever the runtime raises; the worker turns it into a ``failed`` row.
        """
        feeds = context.source.cell_feeds(session.inputs(), cell)
        expected = context.reference.expected(feeds, cell.precision)
        session.release_memory(feeds)  # memory held for earlier cells' shapes goes back first (docs/schema.md)
        context.start_peak()
        outputs = session.run(feeds)
        quantized = cell.precision in QUANT_THRESHOLDS
        tol = None if quantized else runtimes.runtime_class(cell.runtime).tolerance(
            cell.precision, tf32_allowed(session.options))
        t0 = time.perf_counter()
        timing, _ = measure(session.prepare(feeds), session.synchronize, context.timing)
        stages = _gpu_stages(session, feeds, context)
        context.harness_s += time.perf_counter() - t0
        resources = context.resources(session)
        # the timed path (IOBinding, a replayed CUDA graph) must agree too, not only run()
        fast, notes = session.fetch_outputs(), []
        positions = context.source.real_positions(cell, feeds)
        if positions is not None:  # a padded batch is judged at its real positions only (docs/agreement.md)
            outputs, fast = positions.restrict(outputs), positions.restrict(fast)
            expected = positions.restrict_expected(expected)
            notes += [n for n in (padding_note(cell.padding, positions.mask), positions.note()) if n]
        if quantized:  # judged on what quantization should preserve (docs/quantization.md), not the float bands
            verdict = judge_quantized(outputs, expected, cell.precision, context.reference, fast)
        else:
            verdict = judge(outputs, expected, tol, context.reference, cell.runtime, session.options, fast)
        block = None
        if (verdict.failed or context.locate_divergence) and verdict.verdict not in NOT_JUDGED and not quantized:
            # after the resources are read: the second session must not count in this cell's peak memory
            block, note = _first_divergent_block(cell, session, context, feeds, expected, tol, verdict)
            notes += [note] if note else []
        if verdict.reason():  # a FAIL names each criterion missed and by how much
            notes.insert(0, verdict.reason())
        if expected.note:
            notes.append(f"note: no noise floor ({expected.note[:300]})")
        if getattr(verdict.agreement, "ref_nonfinite", 0):
            notes.append(f"note: the reference output has {verdict.agreement.ref_nonfinite} NaN/Inf values; "
                         "positions where this output differs from them are not judged")
        agreement, check = verdict.parts(block)
        return context.ok(session, timing.as_row(), notes, timing=timing,
                          throughput=Throughput.of(cell.batch, cell.seq_len, timing.latency_ms_p50),
                          agreement=agreement, reference_check=check, stages=stages, resources=resources)


def _gpu_stages(session: Session, feeds: dict[str, np.ndarray], context: CellContext) -> GpuStages | None:
    """``h2d_ms`` / ``compute_ms`` / ``d2h_ms`` for sessions that offer the stages (GPU runtimes), else None."""
    stages = session.prepare_stages(feeds)
    if not stages:
        return None
    medians = measure_stages(stages, session.synchronize, context.timing, session.device_timer())
    return GpuStages(**{f"{name}_ms": ms for name, ms in medians.items()})


def _first_divergent_block(cell: Cell, session: Session, context: CellContext, feeds: dict[str, np.ndarray],
                           expected: Expected, tol: Tolerance | None, verdict: Verdict) -> tuple[int | None, str]:
    """The first diverging block and an empty note, or None and the note saying why it is unknown."""
    if not expected.fp64_blocks or context.artifact is None:
        return None, "divergence not located: the reference has no block states (" + (
            expected.note or "not a block-structured reference transformer") + ")"
    try:
        states = runtime_block_states(session, context.artifact, cell.runtime, context.options or RuntimeOptions(),
                                      feeds, context.reference.n_layers, context.cache_dir)
        return locate(states, expected, tol, verdict.agreement), ""
    except (BoundaryNotFound, ValueError, RuntimeUnavailable) as exc:
        return None, f"divergence not located: {exc}"
