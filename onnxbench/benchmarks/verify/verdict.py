"""A cell's agreement verdict: the absolute band against its reference, the error against float64 next to the
noise floor, self-comparison, and where in the network a failing cell first diverges (docs/agreement.md).

Verdicts (column ``verdict``): ``pass``; ``FAIL``; ``reference`` when the row's runtime and configuration are the
reference's own, so that the comparison cannot fail; ``floor`` when the row *is* the noise floor (torch at the
cell's precision against the float64 torch reference: its floor ratio is 1 by construction) and meets the band.
Neither ``reference`` nor ``floor`` is evidence either way: such a row's ``agree`` is empty and reports never count
it as a pass or a fail. Every verdict names the criteria it applied (column ``criteria``), and a ``FAIL`` each
criterion missed and by how much (:meth:`Verdict.reason`, in the row's ``reason``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..rows import AgreementColumns, ReferenceCheck
from .agreement import Agreement, Tolerance, check_outputs, worst
from .divergence import BoundaryNotFound, block_ratios, first_divergent_block
from .quantized import (
    INT4_WEIGHT_THRESHOLDS,
    INT8_DYNAMIC_THRESHOLDS,
    QuantAgreement,
    QuantThresholds,
    check_quantized,
    output_kind,
)
from .reference import Expected, Reference

#: Pass limits of each quantized precision (docs/quantization.md).
QUANT_THRESHOLDS: dict[str, QuantThresholds] = {"int8-dynamic": INT8_DYNAMIC_THRESHOLDS,
                                                "int4-weight": INT4_WEIGHT_THRESHOLDS}

#: Verdicts that judge nothing (the row compared the reference, or the noise floor, with itself).
NOT_JUDGED = ("reference", "floor")
#: Failures a row's reason lists before "and N more".
MAX_FAILURES = 6
#: Output names a ``criteria`` group lists before "and N more" (a decoder file has two KV outputs per layer).
MAX_NAMES = 3


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def criteria_text(groups: list[tuple[str, str]]) -> str:
    """The ``criteria`` column from ``(output label, criteria)`` pairs: outputs with the same criteria grouped,
    ``"logits: allclose ..., cosine >= 0.99999; present.0.key, ...: ..."``."""
    grouped: dict[str, list[str]] = {}
    for label, text in groups:
        names = grouped.setdefault(text, [])
        if label not in names:
            names.append(label)
    return "; ".join(f"{_names(names)}: {text}" for text, names in grouped.items())


def failure_text(failures: tuple[str, ...]) -> str:
    """``"FAIL: "`` and the failures, '; '-separated, at most :data:`MAX_FAILURES` of them."""
    shown = "; ".join(failures[:MAX_FAILURES])
    more = f"; and {len(failures) - MAX_FAILURES} more" if len(failures) > MAX_FAILURES else ""
    return f"FAIL: {shown}{more}"


def _output_failures(results: list[tuple[str, object]]) -> tuple[str, ...]:
    """``"output (path): failure"`` for every failure of every ``(path, agreement)``; path is "" for the checked
    run and "timed path" for the fast path's outputs, whose failure is listed only where it is not the checked
    run's own (the same values: the same outputs)."""
    out: list[str] = []
    for path, r in results:
        for f in r.failures():
            text = f"{r.output}{f' ({path})' if path else ''}: {f}"
            if f"{r.output}: {f}" not in out:
                out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class Verdict:
    """The agreement columns of one row.

    Attributes:
        agreement: the summarising output's comparison (:func:`onnxbench.benchmarks.verify.agreement.worst`).
        verdict: ``pass`` | ``FAIL`` | ``reference`` | ``floor``.
        reference_config: what the outputs were compared with (``Reference.label``).
        criteria: the criteria applied, per output (the ``criteria`` column).
        failures: each criterion missed, ``"output: criterion value > limit"``; on a ``reference`` row, what would
            have been missed.
    """

    agreement: Agreement
    verdict: str
    reference_config: str
    criteria: str = ""
    failures: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def reason(self) -> str:
        """What the row's ``reason`` says of the verdict: for a ``FAIL``, each criterion missed and by how much
        (never empty: a FAIL without a recorded failure says so); else ""."""
        if self.verdict == "FAIL":
            return failure_text(self.failures or ("no criterion recorded its failure",))
        return ""

    def parts(self, first_divergent_block: int | None = None) -> tuple[AgreementColumns, ReferenceCheck]:
        """The row parts of this verdict (``first_divergent_block`` where it was located)."""
        columns = AgreementColumns.of(self.agreement)
        if self.verdict in NOT_JUDGED:
            columns = dataclasses.replace(columns, agree=None)  # a comparison with itself is no evidence either way
        check = ReferenceCheck.of(self.agreement, self.verdict, self.reference_config, first_divergent_block)
        return columns, dataclasses.replace(check, criteria=self.criteria or None)


def judge(outputs: dict[str, np.ndarray], expected: Expected, tol: Tolerance, reference: Reference,
          runtime: str, options: dict, fast_outputs: dict[str, np.ndarray] | None = None) -> Verdict:
    """Compare a runtime's ``outputs`` (and ``fast_outputs``, those of its timed fast path, where it has one)
    with ``expected``; outputs the reference does not have, such as block boundaries or a user graph's extra
    outputs, are ignored. The worst comparison summarises the row. A row of the reference's own configuration is
    ``reference``; a row that is the noise floor (:meth:`Reference.is_floor`) and meets every criterion is ``floor``
    (it cannot miss the floor rule, so its pass would be no evidence); one that misses the band or cosine against
    float64 (an fp16 overflow, other weights than the reference's) is a ``FAIL`` like any other.

    Raises:
        ValueError: if no output of the runtime matches a reference output by name, or shapes differ.
    """
    results: list[tuple[str, Agreement]] = []
    for path, values in (("", outputs), ("timed path", fast_outputs)):
        if values is None:
            continue
        matched = {k: v for k, v in values.items() if k in expected.outputs}
        if not matched:
            if len(values) != len(expected.outputs):
                raise ValueError(f"outputs {sorted(values)} do not match the reference's {sorted(expected.outputs)}")
            matched, reference_outputs = values, expected.outputs  # same count, other names: by position
        else:
            reference_outputs = {k: v for k, v in expected.outputs.items() if k in matched}
        results += [(path, a) for a in check_outputs(matched, reference_outputs, tol, expected.fp64)]
    agreement = worst([a for _, a in results])
    if reference.is_self(runtime, options):
        verdict = "reference"
    elif reference.is_floor(runtime, options) and agreement.agree:
        verdict = "floor"  # it passes by construction; where it misses the band (other weights ran) it FAILs
    else:
        verdict = "pass" if agreement.agree else "FAIL"
    return Verdict(agreement, verdict, reference.label, criteria_text([(a.output, a.criteria()) for _, a in results]),
                   _output_failures(results))


@dataclass(frozen=True)
class QuantVerdict:
    """The agreement columns of a quantized row (:mod:`onnxbench.benchmarks.verify.quantized`).

    Attributes:
        agreement: the summarising output's comparison (the first failing one, else the lowest cosine).
        reference_config: what the outputs were compared with (``Reference.label``).
        criteria: the criteria applied, per output and its kind (the ``criteria`` column).
        failures: each criterion missed, ``"output: criterion value > limit"``.
    """

    agreement: QuantAgreement
    reference_config: str
    criteria: str = ""
    failures: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return "pass" if self.agreement.agree else "FAIL"

    @property
    def failed(self) -> bool:
        return not self.agreement.agree

    def reason(self) -> str:
        """For a ``FAIL``, each criterion missed and by how much; else ""."""
        return failure_text(self.failures or ("no criterion recorded its failure",)) if self.failed else ""

    def parts(self, first_divergent_block: int | None = None) -> tuple[AgreementColumns, ReferenceCheck]:
        """The row parts: cosine, relative RMS error, top-1 and KL mean/max (vocabulary logits), max abs error,
        NaN count, the criteria and the verdict; the float bands' columns (atol, rtol, required atol, noise
        floor) stay empty."""
        a = self.agreement
        return (AgreementColumns(max_abs_err=a.max_abs_err, cosine=a.cosine, top1_agree=a.top1_agree,
                                 nan_count=a.nan_count, kl_mean=a.kl_mean, kl_max=a.kl_max,
                                 rel_rms_err=a.rel_rms_err, agree=a.agree),
                ReferenceCheck(verdict=self.verdict, reference_config=self.reference_config,
                               first_divergent_block=first_divergent_block, criteria=self.criteria or None))


def judge_quantized(outputs: dict[str, np.ndarray], expected: Expected, precision: str, reference: Reference,
                    fast_outputs: dict[str, np.ndarray] | None = None) -> QuantVerdict:
    """Judge a quantized graph's float ``outputs`` (and ``fast_outputs``, its timed path's) against the float
    reference by :func:`~onnxbench.benchmarks.verify.quantized.check_quantized` with ``precision``'s
    thresholds (:data:`QUANT_THRESHOLDS`), each output by the criteria of its kind
    (:func:`~onnxbench.benchmarks.verify.quantized.output_kind` with the reference's ``vocab_size``). Outputs are
    matched by name (by position when no name matches and the counts are equal); integer outputs are not judged;
    a rank-0 output counts as one value. A row of a quantized graph is never the reference itself.

    Raises:
        KeyError: for a precision without thresholds.
        ValueError: if no float output matches a reference output, or shapes differ.
    """
    thresholds = QUANT_THRESHOLDS[precision]
    results: list[tuple[str, QuantAgreement]] = []
    for path, values in (("", outputs), ("timed path", fast_outputs)):
        if values is None:
            continue
        matched = {k: v for k, v in values.items() if k in expected.outputs}
        if not matched and len(values) == len(expected.outputs):
            matched = dict(zip(expected.outputs, values.values(), strict=True))
        for name, y in matched.items():
            y_ref = np.asarray(expected.outputs[name])
            y = np.asarray(y)
            if not (np.issubdtype(y.dtype, np.floating) and np.issubdtype(y_ref.dtype, np.floating)):
                continue
            kind = output_kind(y_ref.shape, reference.vocab_size)
            results.append((path, check_quantized(y, y_ref, thresholds, name, kind)))
    if not results:
        raise ValueError(f"no float output of {sorted(outputs)} matches the reference's {sorted(expected.outputs)}")
    failing = [r for _, r in results if not r.agree]
    summary = failing[0] if failing else min((r for _, r in results), key=lambda r: r.cosine)
    criteria = criteria_text([(f"{r.output} ({r.kind})", r.criteria()) for _, r in results])
    return QuantVerdict(summary, reference.label, criteria, _output_failures(results))


def locate(block_states: list[np.ndarray], expected: Expected, tol: Tolerance,
           agreement: Agreement) -> int | None:
    """The first block whose residual stream leaves the noise floor: the index of the first block whose error
    ratio to its floor exceeds ``tol.floor_factor``; ``len(blocks)`` (after the last block: the final LayerNorm
    and unembedding) when every block stays within it but the output's own floor check failed; ``None``
    otherwise.

    Args:
        block_states: the runtime's residual stream after each block, (B, T, d_model) each.
        expected: the reference's float64 block states and per-block floors.
        tol: the row's tolerance (its ``floor_factor``).
        agreement: the row's output comparison.

    Raises:
        ValueError: if the runtime and the reference have different numbers of blocks.
    """
    if len(block_states) != len(expected.fp64_blocks):
        raise ValueError(f"{len(block_states)} block outputs vs {len(expected.fp64_blocks)} in the reference")
    ratios = block_ratios(block_states, expected.fp64_blocks, expected.floor_blocks)
    block = first_divergent_block(ratios, tol.floor_factor)
    if block is None and agreement.floor is not None and not agreement.floor.passed:
        return len(block_states)
    return block


def runtime_block_states(session, artifact, runtime_name: str, options, feeds: dict[str, np.ndarray],
                         n_layers: int, cache_dir=None) -> list[np.ndarray]:
    """The residual stream after each block as the runtime computes it: for a session running an eager torch
    module (:meth:`~onnxbench.runtimes.Session.eager_module`), forward hooks on that module; otherwise a session
    of the same runtime, opened with the same options, on the graph with the block boundaries as extra outputs
    (``divergence.block_outputs_artifact``).

    Raises:
        BoundaryNotFound: when the graph does not show where blocks end, or the runtime does not return the
            boundary outputs (it does not run the graph as given, e.g. a compiled torch module).
    """
    from ... import runtimes
    from .divergence import block_outputs_artifact
    from .fp64 import torch_forward

    module = session.eager_module()
    if module is not None:
        if not hasattr(module, "blocks"):
            raise BoundaryNotFound(f"{runtime_name} runs a module without blocks (e.g. the attention part)")
        return torch_forward(module, feeds).blocks
    blocks_artifact, names = block_outputs_artifact(artifact, n_layers, cache_dir)
    with runtimes.get(runtime_name).open(blocks_artifact, options) as blocks_session:
        values = blocks_session.run(feeds)
    missing = [name for name in names if name not in values]
    if missing:
        raise BoundaryNotFound(f"{runtime_name} did not return the block-boundary outputs {missing[:3]} of the "
                               "edited graph (it does not run the graph as given)")
    return [np.asarray(values[name]) for name in names]
