"""Admission control: admit a session only while CPU, memory and count budgets all hold.

Pure arithmetic over measured costs (calibrated by the workers at start-up), no I/O. A session
reserves `fps × cpu_ms_per_frame` of CPU time per second and one landmarker's memory; the
pipelines differ by up to 7× in cost, so a box admits many more face-only sessions than holistic
ones. Costs are CPU time, not wall time: MediaPipe spreads a frame over ~1.35 cores, and CPU time
stays true when other processes share the machine.

A session's landmarker lives in one worker for its whole life, so besides the box's total, each
worker has a bin (its share of the total, with 10 % headroom: MediaPipe's threads let a busy
worker use what an idle neighbour leaves) and a session is admitted only into a bin where it fits:
a box whose total has room but whose workers each have too little would otherwise admit sessions
that cannot get their rate. The bin chosen is the worker the session is placed on.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from holistream.protocol import DEFAULT_FPS


@dataclass(frozen=True, slots=True)
class PipelineCost:
    ms_per_frame: float  # CPU time per frame (all of the worker's threads)
    memory_bytes: int  # resident memory one landmarker adds


# Measured on a 2-core box at 640×480 over whole sessions (docs/profiles.md); start-up
# calibration replaces the CPU figures, and raises (never lowers) the memory ones.
DEFAULT_COSTS: dict[str, PipelineCost] = {
    "holistic": PipelineCost(45.0, 145 << 20),
    "face": PipelineCost(6.5, 24 << 20),
    "pose": PipelineCost(21.0, 80 << 20),
    "hands": PipelineCost(28.0, 70 << 20),
}


@dataclass(frozen=True, slots=True)
class Budget:
    cores: float  # CPU cores inference may use
    memory_bytes: int
    max_sessions: int
    cpu_overcommit: float = 1.0
    workers: int = 1

    @property
    def cpu_ms_per_s(self) -> float:
        return self.cores * 1000.0 * self.cpu_overcommit

    @property
    def worker_ms_per_s(self) -> float:
        return 1.1 * self.cpu_ms_per_s / max(self.workers, 1)


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    reason: str = ""
    worker: int = -1  # the bin (worker index) the session fits in


@dataclass(frozen=True, slots=True)
class _Reservation:
    pipeline: str
    fps: float
    worker: int


class AdmissionPolicy:
    def __init__(self, budget: Budget, costs: Mapping[str, PipelineCost] = DEFAULT_COSTS) -> None:
        self.budget = budget
        self.costs = dict(costs)
        self._held: dict[Hashable, _Reservation] = {}
        self.reserved_bytes = 0  # memory set aside for other work (the single-image landmarkers)

    def cpu_ms_per_s(self, pipeline: str, fps: float) -> float:
        return fps * self.costs[pipeline].ms_per_frame

    @property
    def sessions(self) -> int:
        return len(self._held)

    @property
    def cpu_used(self) -> float:
        return sum(self.cpu_ms_per_s(r.pipeline, r.fps) for r in self._held.values())

    @property
    def memory_used(self) -> int:
        return sum(self.costs[r.pipeline].memory_bytes for r in self._held.values())

    def worker_loads(self, exclude: Hashable | None = None) -> list[float]:
        """Reserved CPU ms per second in each worker's bin."""
        loads = [0.0] * max(self.budget.workers, 1)
        for key, r in self._held.items():
            if key != exclude:
                loads[r.worker] += self.cpu_ms_per_s(r.pipeline, r.fps)
        return loads

    def check(
        self,
        pipeline: str,
        fps: float,
        *,
        replacing: Hashable | None = None,
        keep_worker: bool = False,
    ) -> Decision:
        """Would a session fit? `keep_worker`: only in the bin `replacing` already holds."""
        held = dict(self._held)
        previous = held.pop(replacing, None) if replacing is not None else None
        if len(held) >= self.budget.max_sessions:
            return Decision(False, f"session limit reached ({self.budget.max_sessions})")
        loads = self.worker_loads(exclude=replacing)
        if keep_worker and previous is not None:
            candidates = [previous.worker]
        else:
            candidates = sorted(range(len(loads)), key=lambda w: (loads[w], w))
            if previous is not None:  # stay put when it still fits there
                candidates.remove(previous.worker)
                candidates.insert(0, previous.worker)
        demand = self.cpu_ms_per_s(pipeline, fps)
        fits = [w for w in candidates if loads[w] + demand <= self.budget.worker_ms_per_s]
        if not fits or sum(loads) + demand > self.budget.cpu_ms_per_s:
            return Decision(False, f"no CPU left for a {pipeline} session at {fps:g} fps")
        memory = sum(self.costs[r.pipeline].memory_bytes for r in held.values())
        if (
            memory + self.costs[pipeline].memory_bytes
            > self.budget.memory_bytes - self.reserved_bytes
        ):
            return Decision(False, f"no memory left for a {pipeline} session")
        return Decision(True, worker=fits[0])

    def admit(
        self, key: Hashable, pipeline: str, fps: float, *, keep_worker: bool = False
    ) -> Decision:
        """Reserve for `key`, or change its reservation; on refusal the old one is kept."""
        decision = self.check(pipeline, fps, replacing=key, keep_worker=keep_worker)
        if decision.admitted:
            self._held[key] = _Reservation(pipeline, fps, decision.worker)
        return decision

    def worker_of(self, key: Hashable) -> int | None:
        held = self._held.get(key)
        return None if held is None else held.worker

    def release(self, key: Hashable) -> None:
        self._held.pop(key, None)

    def capacity(self, pipeline: str, fps: float = DEFAULT_FPS) -> int:
        """Sessions of one kind an empty box admits: the figure published in metrics and ready."""
        cost = self.costs[pipeline]
        demand = max(fps * cost.ms_per_frame, 1e-9)
        per_worker = self.budget.worker_ms_per_s // demand
        by_cpu = min(per_worker * max(self.budget.workers, 1), self.budget.cpu_ms_per_s // demand)
        by_memory = (self.budget.memory_bytes - self.reserved_bytes) / max(cost.memory_bytes, 1)
        return int(min(by_cpu, by_memory, self.budget.max_sessions))
