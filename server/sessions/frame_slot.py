"""Per-session frame slot: at most one frame in inference and one waiting; latest frame wins.

Pure bookkeeping, no I/O. The session owns one slot; the worker pool asks it for the next frame
when the session's turn comes. Every frame offered leaves either through `take` (to inference)
or as a counted drop, so `received == processed + dropped + pending + in_flight` always holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    frame_id: int
    received_at: float  # monotonic seconds
    payload: T


@dataclass(slots=True)
class FrameSlot(Generic[T]):
    waiting: Pending[T] | None = None
    in_flight: Pending[T] | None = None
    received: int = 0
    processed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    # Drops not yet reported to the client in a result's `dropped` field.
    unreported_drops: int = 0
    on_drop: Callable[[str], None] | None = None  # e.g. a metrics counter
    # The waiting frame may not be taken before this (monotonic s; 0 = now): it came sooner than
    # the session's granted rate allows. A newer frame replacing it then is dropped `over_grant`.
    gated_until: float = 0.0

    def offer(self, frame: Pending[T], *, gate: float = 0.0) -> Pending[T] | None:
        """Put a new frame in the waiting place, not to be taken before `gate`; returns the
        frame it superseded, if any."""
        self.received += 1
        old, self.waiting = self.waiting, frame
        if old is not None:
            self._drop("over_grant" if self.gated_until > frame.received_at else "superseded")
        self.gated_until = gate
        return old

    def refuse(self, reason: str) -> None:
        """A frame received and dropped at once."""
        self.received += 1
        self._drop(reason)

    def take(self, now: float, max_age_s: float) -> Pending[T] | None:
        """Move the waiting frame into inference, unless it is stale or one is in flight."""
        if self.in_flight is not None or self.waiting is None or now < self.gated_until:
            return None
        frame, self.waiting = self.waiting, None
        if now - frame.received_at > max_age_s:
            self._drop("stale")
            return None
        self.in_flight = frame
        return frame

    def finish(self, frame_id: int) -> Pending[T] | None:
        """The in-flight frame came back processed; returns it (None if it was not ours)."""
        frame = self.in_flight
        if frame is None or frame.frame_id != frame_id:
            return None
        self.in_flight = None
        self.processed += 1
        return frame

    def fail_in_flight(self, reason: str) -> Pending[T] | None:
        """The in-flight frame is lost (worker died, frame refused) and is counted as `reason`."""
        frame, self.in_flight = self.in_flight, None
        if frame is not None and reason:
            self._drop(reason)
        return frame

    def clear(self, reason: str) -> int:
        """Drop everything still held (session closing or reconfigured); returns how many."""
        n = 0
        self.gated_until = 0.0
        if self.waiting is not None:
            self.waiting = None
            self._drop(reason)
            n += 1
        if self.in_flight is not None:
            self.in_flight = None
            self._drop(reason)
            n += 1
        return n

    def count_drop(self, reason: str, *, report: bool = True) -> None:
        """A drop that happened outside the slot (e.g. a result replaced in the send buffer);
        `report=False` when the caller carries it into a result's `dropped` itself."""
        self._drop(reason, report=report)

    def take_unreported(self) -> int:
        n, self.unreported_drops = self.unreported_drops, 0
        return n

    @property
    def has_waiting(self) -> bool:
        return self.waiting is not None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def _drop(self, reason: str, *, report: bool = True) -> None:
        self.dropped[reason] += 1
        if report:
            self.unreported_drops += 1
        if self.on_drop is not None:
            self.on_drop(reason)
