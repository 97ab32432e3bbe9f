"""Matrix spec and expansion, model sources, the agreement and timing harnesses, executors and the matrix runner."""

from ..rundir import read_rows
from .cells import Cell
from .measure.timing import Timing, TimingConfig, measure
from .plan.matrix import ATTENTION_VARIANTS, Matrix, MatrixSpec, default_matrix
from .plan.sources import ModelSource
from .run.executors import Executor, InProcessExecutor, ProcessPerGroupExecutor
from .run.messages import Group
from .run.ray_executor import RayExecutor
from .run.runner import RunSummary, run_matrix
from .verify.agreement import TOLERANCES, Agreement, Tolerance, compare, compare_outputs, tolerance_for

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
    "compare",
    "compare_outputs",
    "default_matrix",
    "measure",
    "read_rows",
    "run_matrix",
    "tolerance_for",
]
