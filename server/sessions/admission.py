"""Admission control and rate grants over measured costs; pure arithmetic, no I/O.

A session asks for a rate; it is admitted while every session (itself included) can still be
granted its floor (`floor_fps`, or its request if lower) and while memory and the session count
hold; it is placed on the worker where its grant is highest. Grants are then shared fairly
(server/sessions/grants.py) and recomputed whenever a session comes, goes, or its measured cost
moves.

Costs are CPU time, not wall time: MediaPipe spreads a frame over ~1.3 cores, and CPU time stays
true when other processes share the machine. Each pipeline starts from its start-up calibration;
every processed frame then reports its worker's CPU time, which becomes the session's own cost
(a moving average) and moves the pipeline's estimate that prices new sessions. So content
cheaper than the calibration image (a face close-up for holistic) turns into higher grants and
more sessions, and dearer content into lower ones.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace

from holistream.protocol import DEFAULT_FPS
from server.sessions.grants import Capacity, Want, admissible, place, share


@dataclass(frozen=True, slots=True)
class PipelineCost:
    ms_per_frame: float  # CPU time per frame (all of the worker's threads)
    memory_bytes: int  # resident memory one landmarker adds
    parallelism: float = 1.0  # CPU ms per wall ms of one frame (cores one frame keeps busy)


# Measured on a 2-core box at 640×480 over whole sessions (docs/profiles.md); start-up
# calibration replaces the CPU figures, and raises (never lowers) the memory ones.
DEFAULT_COSTS: dict[str, PipelineCost] = {
    "holistic": PipelineCost(45.0, 145 << 20, 1.3),
    "holistic_lite": PipelineCost(37.0, 140 << 20, 1.25),
    "face": PipelineCost(6.5, 24 << 20, 1.1),
    "pose": PipelineCost(21.0, 80 << 20, 1.2),
    "hands": PipelineCost(28.0, 70 << 20, 1.2),
}
SESSION_ALPHA = 0.05  # weight of one frame in a session's cost average
PIPELINE_ALPHA = 0.05  # ... and in its pipeline's estimate
WORKER_BUSY_MS = 1000.0  # of each second a worker can spend on frames
LONE_HEADROOM = 1.1  # a session alone on its worker: granted 10 % over the worker's time
FRONT_ALPHA = 0.2  # weight of one second in the front end's CPU average
SERVED_ALPHA = 0.2  # weight of one saturated second in the served share's average
SATURATED = 0.9  # the grants use this much of the box or more: the box is saturated
LOST_REASONS = ("superseded", "stale")  # drops for want of worker time (not a client's doing)


@dataclass(frozen=True, slots=True)
class Budget:
    cores: float  # CPU cores inference may use
    memory_bytes: int
    max_sessions: int
    cpu_overcommit: float = 1.0
    workers: int = 1
    floor_fps: float = 10.0  # refuse a session only when not even this can be granted
    front_cores: float = 0.0  # what the server's own front end (sockets, JSON) measurably uses

    @property
    def cpu_ms_per_s(self) -> float:
        """CPU ms per second the workers may use: the cores less the front end's share
        (never below half the cores: a front end that busy is refusing, not serving)."""
        inference = max(self.cores - self.front_cores, 0.5 * self.cores)
        return inference * 1000.0 * self.cpu_overcommit

    @property
    def capacity(self) -> Capacity:
        return Capacity(
            self.cpu_ms_per_s, WORKER_BUSY_MS * self.cpu_overcommit, self.workers, LONE_HEADROOM
        )


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    reason: str = ""
    worker: int = -1  # the worker the session is placed on
    grant: float = 0.0  # the rate granted now (fps)


@dataclass(frozen=True, slots=True)
class _Held:
    pipeline: str
    requested: float
    worker: int
    cost_ms: float | None = None  # measured (moving average); None until the first frame


class AdmissionPolicy:
    def __init__(self, budget: Budget, costs: Mapping[str, PipelineCost] = DEFAULT_COSTS) -> None:
        self.budget = budget
        self.costs = dict(costs)
        self._held: dict[Hashable, _Held] = {}
        self.grants: dict[Hashable, float] = {}
        self.reserved_bytes = 0  # memory set aside for other work (the single-image landmarkers)
        # Of the frames a saturated box is sent within the grants, the share it answers (the
        # rest wait past their successor and are superseded): a moving average over saturated
        # seconds, 1 until the box has been saturated. It scales the published capacity_fps.
        self.served_share = 1.0
        self._processed = 0  # frames answered since the last second
        self._lost = 0  # ... and dropped for want of worker time

    # -- costs -----------------------------------------------------------------------------
    def _want(self, held: _Held) -> Want:
        estimate = self.costs[held.pipeline]
        cost = estimate.ms_per_frame if held.cost_ms is None else held.cost_ms
        return Want(held.requested, cost, held.worker, cost / max(estimate.parallelism, 1.0))

    def _wants(self, exclude: Hashable | None = None) -> dict[Hashable, Want]:
        return {k: self._want(h) for k, h in self._held.items() if k != exclude}

    def observe(self, key: Hashable, cpu_ms: float, wall_ms: float = 0.0) -> None:
        """One processed frame of session `key` cost its worker `cpu_ms` of CPU time (and
        `wall_ms` of its time): update the session's cost and its pipeline's estimate."""
        self._processed += 1
        held = self._held.get(key)
        if held is None or cpu_ms <= 0:
            return
        # The first frame starts from the pipeline's estimate, not at its own (a new
        # landmarker's first frames cost up to half again what the following ones do).
        own = self._want(held).cost_ms
        self._held[key] = replace(held, cost_ms=own + SESSION_ALPHA * (cpu_ms - own))
        est = self.costs[held.pipeline]
        ms = est.ms_per_frame + PIPELINE_ALPHA * (cpu_ms - est.ms_per_frame)
        parallelism = est.parallelism
        if wall_ms > 0 and self.cpu_used < 0.75 * self.budget.cpu_ms_per_s:
            # Only while the grants leave the box room (a lone holistic session takes ~65 % of
            # two cores): under contention wall time stretches with the others' work.
            sample = min(max(cpu_ms / wall_ms, 1.0), self.budget.cores)
            parallelism += PIPELINE_ALPHA * (sample - parallelism)
        self.costs[held.pipeline] = PipelineCost(ms, est.memory_bytes, parallelism)

    def observe_front(self, cores: float) -> None:
        """The front end (the event loop's process) used `cores` over the last second: what
        the workers may use follows its moving average."""
        front = self.budget.front_cores + FRONT_ALPHA * (max(cores, 0.0) - self.budget.front_cores)
        self.budget = replace(self.budget, front_cores=front)

    def observe_drop(self, reason: str) -> None:
        if reason in LOST_REASONS:
            self._lost += 1

    def observe_second(self) -> None:
        """A second has passed: if the grants kept the box saturated, what share of its
        frames it answered moves the served share."""
        done, lost = self._processed, self._lost
        self._processed = self._lost = 0
        if done + lost >= 10 and self.cpu_used >= SATURATED * self.budget.cpu_ms_per_s:
            self.served_share += SERVED_ALPHA * (done / (done + lost) - self.served_share)

    def cost_of(self, key: Hashable) -> float | None:
        held = self._held.get(key)
        return None if held is None else self._want(held).cost_ms

    # -- admission -------------------------------------------------------------------------
    @property
    def sessions(self) -> int:
        return len(self._held)

    @property
    def cpu_used(self) -> float:
        """CPU ms per second the current grants allow (what the sessions may take)."""
        wants = self._wants()
        return sum(w.cost_ms * self.grants.get(k, 0.0) for k, w in wants.items())

    @property
    def memory_used(self) -> int:
        return sum(self.costs[h.pipeline].memory_bytes for h in self._held.values())

    def worker_loads(self, exclude: Hashable | None = None) -> list[float]:
        """Granted CPU ms per second on each worker."""
        loads = [0.0] * max(self.budget.workers, 1)
        for key, want in self._wants(exclude).items():
            loads[want.worker] += want.cost_ms * self.grants.get(key, 0.0)
        return loads

    def check(
        self,
        pipeline: str,
        fps: float,
        *,
        replacing: Hashable | None = None,
        keep_worker: bool = False,
    ) -> Decision:
        """Would a session fit, and at what grant? (Nothing is held.)"""
        return self._place(pipeline, fps, replacing=replacing, keep_worker=keep_worker)[0]

    def _place(
        self,
        pipeline: str,
        fps: float,
        *,
        replacing: Hashable | None = None,
        keep_worker: bool = False,
    ) -> tuple[Decision, dict[Hashable, float]]:
        """Would a session fit, at what grant, and what would everyone's grants be?"""
        others = self._wants(exclude=replacing)
        if len(others) >= self.budget.max_sessions:
            return Decision(False, f"session limit reached ({self.budget.max_sessions})"), {}
        memory = sum(
            self.costs[h.pipeline].memory_bytes for k, h in self._held.items() if k != replacing
        )
        if (
            memory + self.costs[pipeline].memory_bytes
            > self.budget.memory_bytes - self.reserved_bytes
        ):
            return Decision(False, f"no memory left for a {pipeline} session"), {}
        previous = self._held.get(replacing) if replacing is not None else None
        candidates = None
        if keep_worker and previous is not None:
            candidates = [previous.worker]
        estimate = self.costs[pipeline]
        key = replacing if replacing is not None else object()
        placed = place(
            others,
            key,
            fps,
            estimate.ms_per_frame,
            self.budget.capacity,
            self.budget.floor_fps,
            busy_ms=estimate.ms_per_frame / max(estimate.parallelism, 1.0),
            workers=candidates,
        )
        if placed is None:
            floor = min(self.budget.floor_fps, fps)
            return Decision(False, f"no CPU left for a {pipeline} session at {floor:g} fps"), {}
        return Decision(True, worker=placed.worker, grant=placed.grants[key]), placed.grants

    def admit(
        self, key: Hashable, pipeline: str, fps: float, *, keep_worker: bool = False
    ) -> Decision:
        """Admit `key` (or change its pipeline/rate); on refusal the old admission is kept."""
        decision, grants = self._place(pipeline, fps, replacing=key, keep_worker=keep_worker)
        if decision.admitted:
            self._held[key] = _Held(pipeline, fps, decision.worker)
            self.grants = grants
        return decision

    def switch(self, key: Hashable, pipeline: str) -> None:
        """The session now runs `pipeline` (a fallback): same worker and request, best effort;
        its measured cost starts over."""
        held = self._held.get(key)
        if held is not None and held.pipeline != pipeline:
            self._held[key] = _Held(pipeline, held.requested, held.worker)
            self.regrant()

    def worker_of(self, key: Hashable) -> int | None:
        held = self._held.get(key)
        return None if held is None else held.worker

    def grant_of(self, key: Hashable) -> float:
        return self.grants.get(key, 0.0)

    def release(self, key: Hashable) -> None:
        if self._held.pop(key, None) is not None:
            self.regrant()

    def regrant(self) -> dict[Hashable, float]:
        """Share the capacity again over the current sessions and costs. An admitted session
        keeps at least its floor: if measured costs rise past the box after admission, the box
        is over-committed (frames drop as the slots replace them) and new sessions are refused
        until it is not, rather than a session that was promised its floor losing it."""
        wants = self._wants()
        floor = self.budget.floor_fps
        shared = share(wants, self.budget.capacity)
        self.grants = {k: max(g, wants[k].floor(floor)) for k, g in shared.items()}
        return self.grants

    # -- published capacity ----------------------------------------------------------------
    def capacity(self, pipeline: str, fps: float = DEFAULT_FPS) -> int:
        """Sessions of one kind, each asking `fps`, that an empty box admits (each granted at
        least the floor): the figure published in metrics, ready and /readyz."""
        cost = self.costs[pipeline]
        floor = max(min(self.budget.floor_fps, fps), 1e-9)
        cap = self.budget.capacity
        by_box = cap.box_ms // (floor * cost.ms_per_frame)
        by_memory = (self.budget.memory_bytes - self.reserved_bytes) // max(cost.memory_bytes, 1)
        busy = cost.ms_per_frame / max(cost.parallelism, 1.0)
        workers = max(cap.workers, 1)

        def fits(n: int) -> bool:  # n such sessions, spread as placement spreads them
            wants = {i: Want(fps, cost.ms_per_frame, i % workers, busy) for i in range(n)}
            return admissible(wants, cap, self.budget.floor_fps) is not None

        lo, hi = 0, int(max(min(by_box, by_memory, self.budget.max_sessions), 0))
        while lo < hi:  # the most that fit (fewer always fit)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def capacity_fps(self, pipeline: str) -> float:
        """Results per second the box serves for sessions of one kind, once enough of them
        ask: the box's CPU over the measured cost per frame (or the workers' time), times the
        share of frames a saturated box has measurably answered (`served_share`)."""
        cost = self.costs[pipeline]
        cap = self.budget.capacity
        busy = cost.ms_per_frame / max(cost.parallelism, 1.0)
        cpu_bound = min(cap.box_ms / cost.ms_per_frame, cap.workers * cap.worker_ms / busy)
        return cpu_bound * self.served_share
