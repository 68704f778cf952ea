"""Frame-rate grants: what rate each session gets from the CPU the box really has. Pure.

A session asks for a rate (hello's `fps`); it is granted the largest rate that is fair to every
other session and fits in two kinds of capacity, both in CPU milliseconds per second:

- the box: the cores inference may use;
- each worker process: a session is pinned to one worker (its tracking state lives there), and a
  worker runs one frame at a time, so its sessions together keep it busy at most 1000 ms per
  second. A frame keeps a worker busy for its CPU time divided by its parallelism (MediaPipe
  spreads a holistic frame over ~1.3 cores): a lone session gets what one process can give, not
  a worker's share of the box. A session alone on its worker is granted `lone_headroom` (10 %)
  over that worker's measured time: no other session there can lose by it, and a client that
  keeps frames in flight is then paced by the worker itself, not by an estimate of it that
  content and neighbours move by a few per cent either way.

A session costs `rate × cost_ms` of the box (its own CPU time per frame, measured as it runs) and
`rate × busy_ms` of its worker. Rates are
shared max-min fairly (progressive filling): every session's rate rises together until it reaches
its request or a capacity it needs is full; then the others go on rising. So two equal sessions
get equal rates, a session asking little gets all it asks, and no CPU is left unused while some
session still wants more.

A session is admitted only if, with it, every session still gets its floor (the configured floor,
or its request if that is lower) and the sessions sharing a worker fit at their floors in an
equal part of the box (`floors_fit_workers`); it is placed on the worker where its own grant is
highest.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Want:
    """One session as the grant policy sees it."""

    requested: float  # fps the client asked for
    cost_ms: float  # CPU ms per frame (all threads of its worker, decode included)
    worker: int
    busy_ms: float | None = None  # ms its worker is busy per frame (None: cost_ms)

    @property
    def busy(self) -> float:
        return self.cost_ms if self.busy_ms is None else self.busy_ms

    def floor(self, floor_fps: float) -> float:
        return min(floor_fps, self.requested)


@dataclass(frozen=True, slots=True)
class Capacity:
    box_ms: float  # CPU ms per second all workers together may use
    worker_ms: float  # busy ms per second of one worker (it runs one frame at a time)
    workers: int
    lone_headroom: float = 1.0  # × worker_ms for a session alone on its worker


def share(wants: Mapping[K, Want], cap: Capacity) -> dict[K, float]:
    """Max-min fair rates (fps) within the box's and each worker's CPU (see module doc)."""
    grants: dict[K, float] = {}
    active = {k for k, w in wants.items() if w.requested > 0}
    for k, w in wants.items():
        if w.requested <= 0:
            grants[k] = 0.0
    # (limit, members, ms per frame of each member against that limit)
    groups: list[tuple[float, set[K], dict[K, float]]] = [
        (cap.box_ms, set(wants), {k: w.cost_ms for k, w in wants.items()})
    ]
    for worker in sorted({w.worker for w in wants.values()}):
        members = {k for k, w in wants.items() if w.worker == worker}
        limit = cap.worker_ms * (cap.lone_headroom if len(members) == 1 else 1.0)
        groups.append((limit, members, {k: wants[k].busy for k in members}))
    while active:
        level = min(wants[k].requested for k in active)
        tight: set[K] = set()
        for limit, members, ms in groups:
            live = members & active
            if not live:
                continue
            used = sum(grants[k] * ms[k] for k in members - live)
            per_fps = sum(max(ms[k], _EPS) for k in live)
            reach = max(limit - used, 0.0) / per_fps
            if reach < level - _EPS:
                level, tight = reach, set(live)
            elif reach <= level + _EPS:
                tight |= live
        done = {k for k in active if wants[k].requested <= level + _EPS} | tight
        for k in done:
            grants[k] = min(level, wants[k].requested)
        active -= done
    return grants


def meets_floors(wants: Mapping[K, Want], grants: Mapping[K, float], floor_fps: float) -> bool:
    return all(grants[k] >= w.floor(floor_fps) * (1 - 1e-6) for k, w in wants.items())


def floors_fit_workers(wants: Mapping[K, Want], floor_fps: float, cap: Capacity) -> bool:
    """Whether the sessions sharing a worker fit, at their floors, in an equal part of the box
    (the box over the workers that have sessions). The OS shares the cores about equally
    between busy processes: a worker asked for more than its part falls behind however the
    others' grants leave room on paper (measured: two sessions sharing one of three workers on
    two cores were served 7.8 fps each against grants of 10.4, their p99 latency 3.9× the
    median inference, while the box had room for all four at 10 fps)."""
    loads: dict[int, float] = {}
    members: dict[int, int] = {}
    for w in wants.values():
        loads[w.worker] = loads.get(w.worker, 0.0) + w.floor(floor_fps) * w.cost_ms
        members[w.worker] = members.get(w.worker, 0) + 1
    part = cap.box_ms / max(len(loads), 1)
    return all(loads[n] <= part * (1 + 1e-6) for n in loads if members[n] > 1)


def admissible(wants: Mapping[K, Want], cap: Capacity, floor_fps: float) -> dict[K, float] | None:
    """Everyone's grants if these sessions may all be admitted together (every session at its
    floor or better, the sessions sharing a worker within its part of the box), else None."""
    if not floors_fit_workers(wants, floor_fps, cap):
        return None
    grants = share(wants, cap)
    return grants if meets_floors(wants, grants, floor_fps) else None


@dataclass(frozen=True, slots=True)
class Placement:
    worker: int
    grants: dict[Hashable, float]  # every session's grant with the new one placed


def place(
    wants: Mapping[Hashable, Want],
    key: Hashable,
    requested: float,
    cost_ms: float,
    cap: Capacity,
    floor_fps: float,
    *,
    busy_ms: float | None = None,
    workers: list[int] | None = None,
) -> Placement | None:
    """The worker where a new session `key` gets the highest grant with every session at its
    floor or better; None when no worker can take it. `workers` narrows the candidates."""
    others = {k: w for k, w in wants.items() if k != key}
    best: tuple[tuple[float, float, int], Placement] | None = None
    for worker in workers if workers is not None else range(cap.workers):
        trial = dict(others)
        trial[key] = Want(requested, cost_ms, worker, busy_ms)
        grants = admissible(trial, cap, floor_fps)
        if grants is None:
            continue
        load = sum(w.cost_ms * grants[k] for k, w in others.items() if w.worker == worker)
        rank = (-round(grants[key], 6), load, worker)
        if best is None or rank < best[0]:
            best = (rank, Placement(worker, grants))
    return None if best is None else best[1]


def changed(old: float | None, new: float, *, rel: float = 0.1, step: float = 1.0) -> bool:
    """Whether a grant moved enough to tell the client. A rise is told once it is worth it (10 %
    and 1 fps); a fall at once beyond 3 %, so a client never runs much over its real share."""
    if old is None:
        return True
    if new < old:
        return old - new >= max(0.1, 0.03 * old)
    return new - old >= max(step, rel * old)


def round_fps(fps: float) -> float:
    """Grants on the wire: one decimal, rounded down so a client at the grant is never over."""
    return max(int(fps * 10 + 1e-6) / 10, 0.0)
