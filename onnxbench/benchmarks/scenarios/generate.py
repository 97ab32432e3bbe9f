"""Measuring a ``generate`` cell: greedy decoding run by the runtime's decode loop, checked step by step against
the reference recomputing the whole sequence without a cache, and timed by the harness (TTFT, TPOT, end to end).

The order (docs/generation.md, "The generate scenario"):

1. the runtime's decode loop for the cell's prompts (:meth:`onnxbench.runtimes.Session.decoder`); a bad request
   is refused here, before any work, and a runtime without a loop makes the cell ``skipped``;
2. one recorded generation: its tokens (B, N) and the logits each was chosen from (B, N, vocab_size);
3. the reference's logits for the same inputs (teacher-forced float64 forward without a cache,
   :meth:`onnxbench.benchmarks.verify.reference.Reference.generation_expected`); the runtime's logits at every step are
   compared with them under the row's tolerance and the noise-floor rule (docs/agreement.md), and its greedy
   tokens must equal the reference's at every step: the first step where they differ is ``first_divergent_step``
   and fails the row;
4. timed generations (:func:`onnxbench.benchmarks.measure.timing.measure_generation`); their tokens must equal the
   recorded generation's (a loop that does not reset its state would not).

A quantized cell (``int8-dynamic``, ``int4-weight``) is judged in step 3 by the quantized criteria instead
(:func:`~onnxbench.benchmarks.verify.verdict.judge_quantized` over the logits of every step, teacher-forced on its
own tokens, so each step is compared on the same inputs): its greedy tokens may leave the float reference's where
two tokens are nearly tied, which the top-1 criterion judges; ``first_divergent_step`` still says where
(docs/quantization.md, "int4-weight").
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import runtimes
from ...errors import MatrixError
from ...runtimes import RuntimeUnavailable
from ...tolerance import tf32_allowed
from ..inputs import padding_note
from ..measure.timing import measure_generation
from ..rows import GenerateColumns, Measurement, Throughput
from ..verify.agreement import check
from ..verify.reference import Reference
from ..verify.verdict import QUANT_THRESHOLDS, QuantVerdict, Verdict, judge_quantized
from .base import CellContext, Scenario

if TYPE_CHECKING:
    from ...runtimes import Session
    from ..cells import Cell
    from ..plan.matrix import MatrixSpec


def first_divergent_step(tokens: np.ndarray, reference_logits: np.ndarray) -> int | None:
    """The first step s whose token differs, in any row, from the argmax of the reference's step-s logits.

    Args:
        tokens: int64 (B, N), the runtime's greedy tokens.
        reference_logits: (B, N, vocab_size), the reference's logits given the runtime's inputs.

    Returns:
        The step (0 = the prefill's token), or None when every token is the reference's greedy choice.
    """
    differs = (tokens != reference_logits.argmax(-1)).any(axis=0)  # (N,)
    return int(np.argmax(differs)) if differs.any() else None


def judge_generation(tokens: np.ndarray, logits: np.ndarray, expected, tol, reference: Reference, runtime: str,
                     options: dict) -> tuple[Verdict, int | None]:
    """The verdict of a generation: logits of steps 0 .. d compared with the reference's (d: the first diverging
    step, or the last step), where the inputs are still the same as the reference's greedy run; a diverging
    token fails the row whatever the logits.

    Returns:
        (the verdict, the first diverging step or None).
    """
    # without a float64 reference (a foreign ONNX file too large for onnx's evaluator, or with contrib
    # operators), the greedy choice is judged against the reference's own logits and there is no floor rule
    y64, floor = expected.fp64.get("logits", (expected.outputs["logits"], None))
    step = first_divergent_step(tokens, y64)
    upto = logits.shape[1] if step is None else step + 1
    agreement = check(logits[:, :upto], expected.outputs["logits"][:, :upto], tol, "logits",
                      fp64=(y64[:, :upto], floor) if floor is not None else None)
    if reference.is_self(runtime, options):
        verdict = "reference"
    else:
        verdict = "pass" if agreement.agree and step is None else "FAIL"
    failures = tuple(f"logits of steps 0..{upto - 1}: {f}" for f in agreement.failures())
    if step is not None:
        agreement = dataclasses.replace(agreement, agree=False)
        failures += (f"greedy tokens: first_divergent_step {step} (every step's token must be the reference's "
                     "greedy choice)",)
    criteria = f"logits: {agreement.criteria()}; greedy tokens: equal to the reference's at every step"
    return Verdict(agreement, verdict, reference.label, criteria, failures), step


class Generate(Scenario):
    """Greedy decoding of ``new_tokens`` tokens after prompts of ``seq_len`` tokens with the KV cache
    (docs/generation.md); ``padding`` is the fraction of left padding in the batch's last row."""

    name = "generate"
    key_fields = ("new_tokens", "padding")
    columns = ("padding", "ttft_ms", "tpot_ms_p50", "decode_tok_s")
    decoder = True

    def axes(self, spec: MatrixSpec) -> list[dict[str, Any]]:
        """Every (new tokens, padding) of the matrix."""
        return [{"new_tokens": n, "padding": float(p)} for n in spec.new_tokens for p in spec.paddings]

    def validate(self, spec: MatrixSpec) -> None:
        """At least one new token, padding in [0, 1) so that every row keeps a token (a prompt of padding alone has
        nothing to continue).

        Raises:
            MatrixError: naming the bad values and an example of good ones.
        """
        if not spec.new_tokens or any(n < 1 for n in spec.new_tokens):
            raise MatrixError(f"new tokens must be >= 1 (a generation makes at least one token), got "
                              f"{spec.new_tokens}; use e.g. --new-tokens 64")
        if not spec.paddings or any(not 0 <= p < 1 for p in spec.paddings):
            raise MatrixError(f"padding fractions must lie in [0, 1) (every row keeps at least one prompt token), "
                              f"got {spec.paddings}; use e.g. --padding 0,0.25")

    def measure(self, cell: Cell, session: Session, context: CellContext) -> Measurement:
        """Measure one generate cell on an open session of its decoder-with-past artifact (the steps: module
        docstring); the ``latency_ms_*`` columns hold the decode steps' statistics (TPOT), ``throughput_tok_s``
        the decode tokens/s.

        ``peak_rss_mb`` covers the timed generations (the decode loop's buffers included), not the reference's
        float64 forward, which runs before the peak is reset (in another process, docs/schema.md).

        Raises:
            GenerationError: for a request that cannot run (before any work).
            Exception: whatever the runtime raises; the worker turns it into a ``failed`` row.
        """
        input_ids, mask = context.source.prompt(cell)
        try:
            loop = session.decoder(input_ids, mask, cell.new_tokens)
        except RuntimeUnavailable as exc:
            return Measurement.skipped(str(exc))
        steps = cell.new_tokens - 1
        loop.reset(record=True)
        loop.prefill()
        for _ in range(steps):
            loop.step()
        session.synchronize()
        tokens, logits = loop.tokens(), loop.logits()
        expected = context.reference.generation_expected(input_ids, mask, tokens, cell.precision)
        quantized = cell.precision in QUANT_THRESHOLDS
        if quantized:
            verdict = judge_quantized({"logits": logits}, expected, cell.precision, context.reference)
            step = first_divergent_step(tokens, expected.outputs["logits"])
        else:
            tol = runtimes.runtime_class(cell.runtime).tolerance(cell.precision, tf32_allowed(session.options))
            verdict, step = judge_generation(tokens, logits, expected, tol, context.reference, cell.runtime,
                                             session.options)
        context.start_peak()
        t0 = time.perf_counter()
        timed = measure_generation(loop.reset, loop.prefill, loop.step, steps, session.synchronize, context.timing)
        context.harness_s += time.perf_counter() - t0
        resources = context.resources(session)
        notes = [note] if (note := padding_note(cell.padding, mask)) else []
        if not np.array_equal(loop.tokens(), tokens):
            notes.append("warning: the timed generations chose other tokens than the checked one")
            verdict = _failed(verdict, "timed generations: their tokens differ from the checked generation's "
                              f"at {int((loop.tokens() != tokens).sum())} of {tokens.size} positions (0 allowed)")
        if step is not None:
            notes.append(f"greedy tokens diverge from the reference at step {step}"
                         + (" (judged by top1_agree, not failed by it)" if quantized else ""))
        if verdict.reason():  # a FAIL names each criterion missed and by how much
            notes.insert(0, verdict.reason())
        if expected.note:
            notes.append(f"note: no noise floor ({expected.note[:300]})")
        tpot = timed.tpot
        decode_tok_s = cell.batch * 1e3 / tpot.latency_ms_p50 if steps and tpot.latency_ms_p50 > 0 else None
        decode = GenerateColumns(timed.ttft.latency_ms_p50, tpot.latency_ms_p50 if steps else None,
                               tpot.latency_ms_p90 if steps else None, tpot.latency_ms_p99 if steps else None,
                               decode_tok_s, timed.e2e_ms, step)
        agreement, check = verdict.parts()
        # a generation of one token has no decode step: its latency columns are the prefill's
        timing = tpot if steps else timed.ttft
        return context.ok(session, tpot.as_row() if steps else None, notes, timing=timing,
                          throughput=Throughput(None, decode_tok_s), agreement=agreement, reference_check=check,
                          resources=resources, decode=decode)


def _failed(verdict: Verdict | QuantVerdict, failure: str) -> Verdict | QuantVerdict:
    """``verdict`` turned into a FAIL with ``failure`` added to its failures (a reference row stays one)."""
    failures = (*verdict.failures, failure)
    if isinstance(verdict, QuantVerdict):
        return dataclasses.replace(verdict, agreement=dataclasses.replace(verdict.agreement, agree=False),
                                   failures=failures)
    return dataclasses.replace(verdict, verdict="FAIL" if verdict.verdict == "pass" else verdict.verdict,
                               failures=failures)
