"""The benchmark layer, one sub-package per concern (docs/design.md, "Life of a cell"):

==============  ==========================================================================================
sub-package     what lives there
==============  ==========================================================================================
``plan``        what to run: the matrix (axes, default, TOML files, flag overrides) and the model sources
``scenarios``   what one cell measures: prefill, generate (one module each, one contract)
``measure``     how fast and how much: timing harness, ceilings, work model, memory, tuning
``verify``      is it right: references, float64 and the noise floor, agreement, verdicts, divergence
``run``         where and in what order: runner, worker loop, executors, fork server, Ray, resume, merge
==============  ==========================================================================================

Beside them, the vocabulary every concern shares: :mod:`.cells` (a cell, the axes a model's cells come from,
shards), :mod:`.rows` (the typed parts of a result row) and :mod:`.inputs` (deterministic inputs).
"""

from ..rundir import read_rows
from ..tolerance import CPU_BANDS, band
from .cells import Cell
from .measure.timing import Timing, TimingConfig, measure
from .plan.matrix import ATTENTION_VARIANTS, Matrix, MatrixSpec, default_matrix
from .plan.sources import ModelSource
from .run.executors import Executor, InProcessExecutor, ProcessPerGroupExecutor
from .run.messages import Group
from .run.ray_executor import RayExecutor
from .run.runner import RunSummary, run_matrix
from .verify.agreement import TOLERANCES, Agreement, Tolerance, check, check_outputs

#: Names this package exported before its sub-packages existed, kept so that users' imports keep working:
#: ``compare`` and ``compare_outputs`` are :func:`.verify.agreement.check` and ``check_outputs``.
compare, compare_outputs = check, check_outputs


def tolerance_for(precision: str, runtime: str | None = None, tf32: bool = False) -> Tolerance:
    """The agreement band of ``runtime`` (:meth:`onnxbench.runtimes.Runtime.tolerance`, the one place bands are
    chosen) for a graph of ``precision`` with TF32 allowed or not; without a runtime, the CPU bands. Kept for
    users' imports of this package.

    Raises:
        KeyError: for an unknown runtime or a precision without a band (lists the known ones).
    """
    from .. import runtimes

    if runtime is None:
        return band(CPU_BANDS, precision, tf32)
    return runtimes.runtime_class(runtime).tolerance(precision, tf32)


__all__ = [
    "ATTENTION_VARIANTS",
    "TOLERANCES",
    "Agreement",
    "Cell",
    "Executor",
    "Group",
    "InProcessExecutor",
    "Matrix",
    "MatrixSpec",
    "ModelSource",
    "ProcessPerGroupExecutor",
    "RayExecutor",
    "RunSummary",
    "Timing",
    "TimingConfig",
    "Tolerance",
    "check",
    "check_outputs",
    "compare",
    "compare_outputs",
    "default_matrix",
    "measure",
    "read_rows",
    "run_matrix",
    "tolerance_for",
]
