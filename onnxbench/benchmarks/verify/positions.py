"""Judging a padded batch over its real positions only.

A padded batch's outputs at padded positions (attention mask 0) are whatever the graph computes for tokens that
are not there: no contract holds for them, so the agreement check must not judge them (docs/agreement.md,
"Padded batches"). :class:`RealPositions` names the real positions of a batch and the outputs laid out along the
mask's (batch, sequence) axes; its :meth:`~RealPositions.restrict` keeps those outputs' values at the real
positions (flattened to (n_real, ...)) for the runtime's outputs and the reference's alike, and leaves every other
output whole (a pooled (batch, d) output is computed from real positions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .reference import Expected


@dataclass(frozen=True)
class RealPositions:
    """The real positions of a padded batch and the outputs judged there only.

    Attributes:
        mask: bool (B, T), True at real positions (the attention mask's nonzero entries).
        outputs: names of the outputs whose two leading axes are the mask's (batch, sequence).
    """

    mask: np.ndarray
    outputs: tuple[str, ...]

    def _take(self, name: str, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if name in self.outputs and values.shape[:2] == self.mask.shape:
            return values[self.mask]  # (n_real, ...)
        return values

    def restrict(self, values: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        """``values`` (outputs by name; None stays None) with :attr:`outputs` kept at the real positions only."""
        if values is None:
            return None
        return {name: self._take(name, y) for name, y in values.items()}

    def restrict_expected(self, expected: Expected) -> Expected:
        """The reference's outputs and float64 outputs restricted likewise. The noise floors stay those the
        reference computed over every position: a floor is a maximum, so over fewer positions it can only be
        lower, and the floor check is then at most as strict as over the real positions alone."""
        fp64 = {name: (self._take(name, y64), floor) for name, (y64, floor) in expected.fp64.items()}
        return dataclasses.replace(expected, outputs=self.restrict(expected.outputs), fp64=fp64)

    def note(self) -> str:
        """What the row's ``reason`` says about how the outputs were judged."""
        if not self.outputs:
            return ("note: padded batch: no output has the attention mask's (batch, sequence) axes, every output "
                    "judged whole")
        return f"note: padded batch: {', '.join(self.outputs)} judged at the real positions only (mask 1)"
