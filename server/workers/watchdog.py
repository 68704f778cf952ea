"""Hung-worker detection: a worker with work out that is stopped, or silent far too long.

Pure bookkeeping, no I/O: the pool reports what it hears, which workers have work out, how much
CPU time each process has used and whether the kernel has it stopped, and asks which ones are
hung. A killed worker is noticed by its socket's EOF. A stopped one (SIGSTOP, a debugger) keeps
its socket open and uses no CPU: it is replaced after `timeout_s`. Silence alone is not proof:
on an oversubscribed machine a worker may get no CPU for seconds, or wait on a socket the server
has not drained, so a worker that is not stopped is replaced only after `ceiling_s` without a
reply (a deadlock, a loop that never ends). The pool then kills it and replaces it like a dead one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MIN_CPU_S = 0.02  # CPU seconds that count as "still computing" between two looks


@dataclass
class _Seen:
    progress: float  # last reply, idle moment, or moment it was seen running
    replied: float  # last reply or idle moment
    cpu_s: float


@dataclass
class Watchdog:
    timeout_s: float
    ceiling_factor: float = 10.0
    _seen: dict[int, _Seen] = field(default_factory=dict)

    @property
    def ceiling_s(self) -> float:
        return max(self.timeout_s * self.ceiling_factor, 30.0)

    def heard(self, worker: int, now: float) -> None:
        """The worker answered something (or has just started)."""
        seen = self._seen.get(worker)
        if seen is None:
            self._seen[worker] = _Seen(now, now, 0.0)
        else:
            seen.progress = seen.replied = now

    def hung(self, now: float, workers: Mapping[int, tuple[bool, float, bool]]) -> list[int]:
        """Workers (index -> (has work out, CPU seconds used so far, stopped by the kernel))
        that had work out and were stopped, using no CPU, for `timeout_s`; or that answered
        nothing for `ceiling_s` whatever their state."""
        quiet = []
        for worker, (has_work, cpu_s, stopped) in workers.items():
            seen = self._seen.setdefault(worker, _Seen(now, now, cpu_s))
            if not has_work:
                seen.progress = seen.replied = now
            elif cpu_s - seen.cpu_s >= MIN_CPU_S or not stopped:
                seen.progress = now
            seen.cpu_s = cpu_s
            if has_work and (
                now - seen.progress > self.timeout_s or now - seen.replied > self.ceiling_s
            ):
                quiet.append(worker)
                seen.progress = seen.replied = now  # reported once per timeout
        return quiet
