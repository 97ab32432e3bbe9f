"""Matrix spec and expansion, model sources, the agreement and timing harnesses, executors and the matrix runner."""

from ..rundir import read_rows
from .agreement import TOLERANCES, Agreement, Tolerance, compare, compare_outputs, tolerance_for
from .cells import Cell
from .executors import Executor, InProcessExecutor, ProcessPerGroupExecutor
from .matrix import ATTENTION_VARIANTS, Matrix, MatrixSpec, default_matrix
from .messages import Group
from .ray_executor import RayExecutor
from .runner import RunSummary, run_matrix
from .sources import ModelSource
from .timing import Timing, TimingConfig, measure

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
