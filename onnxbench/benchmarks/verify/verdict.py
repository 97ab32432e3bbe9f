"""A cell's agreement verdict: the absolute band against its reference, the error against float64 next to the
noise floor, self-comparison, and where in the network a failing cell first diverges (docs/agreement.md).

Verdicts (column ``verdict``): ``pass``; ``FAIL``; ``reference`` when the row's runtime and configuration are the
reference's own, so that the comparison cannot fail: such a row's ``agree`` is empty and reports never count it as
a pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..rows import AgreementColumns, ReferenceCheck
from .agreement import Agreement, Tolerance, check_outputs, worst
from .divergence import BoundaryNotFound, block_ratios, first_divergent_block
from .quantized import INT8_DYNAMIC_THRESHOLDS, QuantAgreement, QuantThresholds, check_quantized
from .reference import Expected, Reference

#: Pass limits of each quantized precision (docs/quantization.md).
QUANT_THRESHOLDS: dict[str, QuantThresholds] = {"int8-dynamic": INT8_DYNAMIC_THRESHOLDS}


@dataclass(frozen=True)
class Verdict:
    """The agreement columns of one row.

    Attributes:
        agreement: the summarising output's comparison (:func:`onnxbench.benchmarks.verify.agreement.worst`).
        verdict: ``pass`` | ``FAIL`` | ``reference``.
        reference_config: what the outputs were compared with (``Reference.label``).
    """

    agreement: Agreement
    verdict: str
    reference_config: str

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def parts(self, first_divergent_block: int | None = None) -> tuple[AgreementColumns, ReferenceCheck]:
        """The row parts of this verdict (``first_divergent_block`` where it was located)."""
        columns = AgreementColumns.of(self.agreement)
        if self.verdict == "reference":
            columns = dataclasses.replace(columns, agree=None)  # a comparison with itself is no evidence either way
        return columns, ReferenceCheck.of(self.agreement, self.verdict, self.reference_config, first_divergent_block)


def judge(outputs: dict[str, np.ndarray], expected: Expected, tol: Tolerance, reference: Reference,
          runtime: str, options: dict, fast_outputs: dict[str, np.ndarray] | None = None) -> Verdict:
    """Compare a runtime's ``outputs`` (and ``fast_outputs``, those of its timed fast path, where it has one)
    with ``expected``; outputs the reference does not have, such as block boundaries or a user graph's extra
    outputs, are ignored. The worst comparison summarises the row.

    Raises:
        ValueError: if no output of the runtime matches a reference output by name, or shapes differ.
    """
    agreements = []
    for values in (outputs, fast_outputs):
        if values is None:
            continue
        matched = {k: v for k, v in values.items() if k in expected.outputs}
        if not matched:
            if len(values) != len(expected.outputs):
                raise ValueError(f"outputs {sorted(values)} do not match the reference's {sorted(expected.outputs)}")
            matched, reference_outputs = values, expected.outputs  # same count, other names: by position
        else:
            reference_outputs = {k: v for k, v in expected.outputs.items() if k in matched}
        agreements += check_outputs(matched, reference_outputs, tol, expected.fp64)
    agreement = worst(agreements)
    if reference.is_self(runtime, options):
        verdict = "reference"
    else:
        verdict = "pass" if agreement.agree else "FAIL"
    return Verdict(agreement, verdict, reference.label)


@dataclass(frozen=True)
class QuantVerdict:
    """The agreement columns of a quantized row (:mod:`onnxbench.benchmarks.verify.quantized`).

    Attributes:
        agreement: the summarising output's comparison (the first failing one, else the lowest cosine).
        reference_config: what the outputs were compared with (``Reference.label``).
    """

    agreement: QuantAgreement
    reference_config: str

    @property
    def verdict(self) -> str:
        return "pass" if self.agreement.agree else "FAIL"

    @property
    def failed(self) -> bool:
        return not self.agreement.agree

    def parts(self, first_divergent_block: int | None = None) -> tuple[AgreementColumns, ReferenceCheck]:
        """The row parts: cosine, top-1, KL mean/max, max abs error, NaN count and the verdict; the float
        bands' columns (atol, rtol, required atol, noise floor) stay empty."""
        a = self.agreement
        return (AgreementColumns(max_abs_err=a.max_abs_err, cosine=a.cosine, top1_agree=a.top1_agree,
                                 nan_count=a.nan_count, kl_mean=a.kl_mean, kl_max=a.kl_max, agree=a.agree),
                ReferenceCheck(verdict=self.verdict, reference_config=self.reference_config,
                               first_divergent_block=first_divergent_block))


def judge_quantized(outputs: dict[str, np.ndarray], expected: Expected, precision: str, reference: Reference,
                    fast_outputs: dict[str, np.ndarray] | None = None) -> QuantVerdict:
    """Judge a quantized graph's float ``outputs`` (and ``fast_outputs``, its timed path's) against the float
    reference by :func:`~onnxbench.benchmarks.verify.quantized.check_quantized` with ``precision``'s
    thresholds (:data:`QUANT_THRESHOLDS`). Outputs are matched by name (by position when no name matches and the
    counts are equal); integer outputs are not judged; a rank-1 output counts as one position. A row of a
    quantized graph is never the reference itself.

    Raises:
        KeyError: for a precision without thresholds.
        ValueError: if no float output matches a reference output, or shapes differ.
    """
    thresholds = QUANT_THRESHOLDS[precision]
    results = []
    for values in (outputs, fast_outputs):
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
            if y.ndim < 2:
                y, y_ref = y.reshape(1, -1), y_ref.reshape(1, -1)
            results.append(check_quantized(y, y_ref, thresholds, name))
    if not results:
        raise ValueError(f"no float output of {sorted(outputs)} matches the reference's {sorted(expected.outputs)}")
    failing = [r for r in results if not r.agree]
    summary = failing[0] if failing else min(results, key=lambda r: r.cosine)
    return QuantVerdict(summary, reference.label)


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
