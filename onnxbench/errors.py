"""The package's user-facing errors: bad input that the caller can fix.

Every class derives from :class:`OnnxbenchError`, so the command line turns them all into one error line and
exit status 2 in one place (``onnxbench.cli``). Where callers already catch a builtin (``ValueError``,
``KeyError``), the class keeps it as a second base. A runtime that cannot run here is not such an error: it
raises ``onnxbench.runtimes.RuntimeUnavailable`` and the cell becomes a ``skipped`` row.
"""

from __future__ import annotations


class OnnxbenchError(Exception):
    """Base of the package's errors about bad input (a matrix, an option, a model); the message names the limit
    or the fix."""


class OptionError(OnnxbenchError, ValueError):
    """A runtime option that is unknown to the runtime or has the wrong type or value (names the known keys)."""


class MatrixError(OnnxbenchError, ValueError):
    """An invalid benchmark matrix: an unknown axis value or key, or a size beyond a model's limits."""
