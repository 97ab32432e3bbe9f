"""The CPU load of other processes while a cell's measured part runs (the ``cpu_busy_pct`` column).

A neighbour on the cores slows a cell throughout, so its timings stay consistent and their confidence interval
narrow: the noise rule (:mod:`onnxbench.noise`) cannot see it. What can: the CPU time the whole system spent
(``/proc/stat`` through ``psutil.cpu_times``: user, nice, system, irq, softirq, steal) minus the time the measuring
process spent (``psutil.Process().cpu_times``, all its threads: the runtime's intra-op pool included), over the
window's wall time and all logical cores. The run's header keeps the highest value of its rows
(``cpu_busy_pct_during``) beside the load before the run (``cpu_busy_pct_at_start``), and one rule
(:func:`onnxbench.noise.busy_pct`) reads both (docs/measurement.md, "A busy machine").

``/proc/stat`` counts in ticks of 10 ms (USER_HZ = 100), so a window shorter than :data:`MIN_WINDOW_S` tells too
little and records nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dependency; without it nothing is recorded
    psutil = None

#: Shortest window whose load is recorded (s): at 10 ms per tick on 2 cores, 0.25 s resolves 2 %.
MIN_WINDOW_S = 0.25


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _own_seconds() -> float:
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class OtherLoad:
    """A window over which other processes' CPU load is measured: :meth:`start` it, :meth:`stop` it.

    Attributes:
        own_pct: after :meth:`stop`, percent of all logical cores this process used in the window (None before,
            or when nothing was recorded).
    """

    _t0: float = 0.0
    _busy0: float = 0.0
    _own0: float = 0.0
    own_pct: float | None = field(default=None)

    @classmethod
    def start(cls) -> OtherLoad:
        """A window starting now (it records nothing without psutil)."""
        if psutil is None:
            return cls(-1.0)
        return cls(time.monotonic(), _busy_seconds(), _own_seconds())

    def stop(self) -> float | None:
        """Percent (0..100) of all logical cores' time that other processes used since :meth:`start`; None when
        the window was shorter than :data:`MIN_WINDOW_S` or psutil is missing."""
        if psutil is None or self._t0 < 0:
            return None
        wall = time.monotonic() - self._t0
        if wall < MIN_WINDOW_S:
            return None
        capacity = wall * (psutil.cpu_count() or 1)
        own = _own_seconds() - self._own0
        self.own_pct = 100.0 * own / capacity
        other = (_busy_seconds() - self._busy0) - own
        return round(min(max(100.0 * other / capacity, 0.0), 100.0), 1)
