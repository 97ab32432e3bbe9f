"""Command line: ``onnxbench export | run | merge | report | compare | inspect | doctor``.

One module per group of commands (:mod:`.run`, :mod:`.export`, :mod:`.reports`, :mod:`.inspect`); what they share
is :mod:`.console` (the error funnel: bad input is one line on stderr and exit status 2, never a traceback) and
:mod:`.flags` (flag parsers). The commands only translate flags into the library's calls and render what comes
back: matrix overrides are applied by :meth:`onnxbench.benchmarks.MatrixSpec.with_overrides`, the code that reads
matrix files, and run-directory preconditions are checked by :func:`onnxbench.rundir.claim`.

Exit statuses (README "Exit status"): 0 success; 1 some cells failed (or, for ``compare``, a regression);
2 bad input; 3 nothing was measured; 4 some outputs disagreed with the reference (a FAIL verdict); 130 interrupted.
"""

from __future__ import annotations

from . import export as _export  # noqa: F401  (registers the command)
from . import inspect as _inspect  # noqa: F401
from . import reports as _reports  # noqa: F401
from . import run as _run  # noqa: F401
from .console import app

__all__ = ["app"]
