"""The pool's records: of each worker, of each placed session, of each single-image job.

Only the pool (workers/pool.py) writes them. A session's placement (its worker) and its MediaPipe
clock live here, in the pool's record of it, not on the session: the session belongs to the
sessions layer, which the pool reads (its slot) but never writes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Generic, Protocol, TypeVar

from server.sessions.frame_slot import FrameSlot, Pending
from server.sessions.session import FramePayload
from server.workers import messages as m
from server.workers.clock import MediaPipeClock
from server.workers.scheduler import FairScheduler


class PoolSession(Protocol):
    """What the pool needs of a session (server.sessions.session.Session provides it)."""

    @property
    def id(self) -> str: ...

    @property
    def pipeline(self) -> str: ...

    @property
    def wanted(self) -> tuple[str, ...]: ...

    @property
    def slot(self) -> FrameSlot[FramePayload]: ...


S = TypeVar("S", bound=PoolSession)


@dataclass(slots=True)
class Callbacks(Generic[S]):
    result: Callable[[S, Pending[FramePayload], m.FrameResult], None]
    frame_error: Callable[[S, Pending[FramePayload], str, str], None]
    worker_lost: Callable[[S], None]


@dataclass(eq=False)
class PredictJob:
    """One single-image request; it takes turns with the streaming sessions of its worker."""

    key: str
    pipeline: str
    wanted: tuple[str, ...]
    data: bytes
    future: asyncio.Future[m.Predicted | m.PredictError]
    exact: bool = False
    started: bool = False


@dataclass(eq=False)
class Placed(Generic[S]):
    """A session the pool has placed on a worker."""

    session: S
    worker: int
    clock: MediaPipeClock = field(default_factory=MediaPipeClock)


@dataclass(eq=False)
class WorkerHandle:
    index: int
    process: BaseProcess | None = None
    pid: int = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    alive: bool = False
    # Keys (session ids, image job keys) whose work is in the worker, in order: the one in
    # inference and at most one queued behind it, so the worker never idles between frames.
    in_flight: deque[str] = field(default_factory=deque)
    sessions: set[str] = field(default_factory=set)
    scheduler: FairScheduler[str] = field(default_factory=FairScheduler)
    # Numbered requests awaiting their reply: request number -> (request, its future).
    waiters: dict[int, tuple[m.ToWorker, asyncio.Future[m.Reply]]] = field(default_factory=dict)
    images: deque[PredictJob] = field(default_factory=deque)  # single images, in arrival order
    restarts: int = 0
    up: asyncio.Event = field(default_factory=asyncio.Event)  # set while the process serves

    def has_work(self) -> bool:
        """Something is out that the worker must answer (calibration, start-up only, aside)."""
        return bool(self.in_flight) or any(
            not isinstance(req, m.Calibrate) for req, _ in self.waiters.values()
        )
