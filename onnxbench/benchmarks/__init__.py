"""Matrix spec and expansion, the agreement and timing harnesses, and the matrix runner."""

from .agreement import TOLERANCES, Agreement, Tolerance, compare, compare_outputs, tolerance_for
from .matrix import ATTENTION_VARIANTS, Cell, MatrixSpec, default_matrix
from .runner import RunSummary, read_rows, run_matrix
from .timing import Timing, TimingConfig, measure

__all__ = [
    "ATTENTION_VARIANTS",
    "TOLERANCES",
    "Agreement",
    "Cell",
    "MatrixSpec",
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
