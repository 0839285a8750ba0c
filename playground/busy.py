"""How busy the machine is while something is timed: timings taken under load are noise, and say so.

A learner reads "605 ms per token" as a fact about the method. On a shared server it is also a
fact about the class: other students' runs take the same cores. ``Load`` reads the system's
load average (runnable threads, averaged over the last minute) against the cores this process
may use, and says in words when a timing was taken on a busy machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BUSY_PER_CORE = 0.75  # above this many runnable threads per core, timings wobble by tens of percent


@dataclass(frozen=True)
class Load:
    """The 1-minute load average and the cores available to this process."""

    average: float  # runnable threads, 1-minute average (0.0 where the system does not report it)
    cores: int

    @property
    def busy(self) -> bool:
        return self.average > BUSY_PER_CORE * self.cores

    def note(self) -> str:
        """'' on an idle machine; else one sentence a learner can act on."""
        if not self.busy:
            return ""
        return (f"The machine was busy while timing (load {self.average:.1f} on {self.cores} "
                f"core{'s' * (self.cores != 1)}): timings are noisy, so measure again before trusting a small gap.")


def machine_load() -> Load:
    """The load now (read in microseconds: no sampling)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        average = 0.0
    return Load(average, cores)


def busier(a: Load, b: Load) -> Load:
    """The busier of two readings (before and after a measurement)."""
    return a if a.average >= b.average else b
