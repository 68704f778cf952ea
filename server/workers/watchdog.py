"""Hung-worker detection: a worker with work outstanding that says nothing for too long.

Pure bookkeeping, no I/O: the pool reports what it hears and which workers have work out, and
asks which ones have gone quiet. A killed worker is noticed by its socket's EOF; one that is
stopped (SIGSTOP), deadlocked or stuck in native code keeps its socket open, and only silence
shows it. The pool then kills it and replaces it like a dead one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Watchdog:
    timeout_s: float
    _progress: dict[int, float] = field(default_factory=dict)

    def heard(self, worker: int, now: float) -> None:
        """The worker answered something (or has just started)."""
        self._progress[worker] = now

    def hung(self, now: float, busy: Mapping[int, bool]) -> list[int]:
        """Workers that had work outstanding and answered nothing for `timeout_s`. An idle
        worker's clock starts when it is next seen busy (checks come often, so at most one
        check interval late)."""
        quiet = []
        for worker, has_work in busy.items():
            since = self._progress.setdefault(worker, now)
            if not has_work:
                self._progress[worker] = now
            elif now - since > self.timeout_s:
                quiet.append(worker)
                self._progress[worker] = now  # reported once per timeout
        return quiet
