"""Outstanding-frame ledger: which frames are still in flight, and when credits come back.

Pure bookkeeping, no I/O, shared by the closed-loop load generator and `holistream.client`.
The server resolves every frame it receives as a result, an error naming the frame, or a drop
that is only *counted* (docs/protocol.md, "what happens to each frame"). Drops carry no frame id,
so the ledger attributes them: a result's `dropped` count releases the oldest outstanding frames
(the server processes a session's frames in order, so the dropped ones are always older than
whatever is still waiting). A `stats` message releases the remainder only when the server says
it holds nothing for the session (`pending == in_flight == 0`) and only among frames it has
received, so a frame still on the wire is never written off. A safety timeout returns the credit
of a frame nobody answers (e.g. lost with a worker and never reported) without forgetting it: a
late answer still matches it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FRAME_ID_MASK = 0xFFFFFFFF
RELEASED_MEMORY = 4096  # drop-attributed frames remembered, to re-attribute on a late result


@dataclass(slots=True)
class Resolution:
    """What one server answer meant for the ledger."""

    sent_at: float | None  # send time of the answered frame (None: not known to the ledger)
    released: int  # frames whose credit came back (answered + drops attributed)


class Ledger:
    """Frames sent and not yet resolved, oldest first, with a credit limit.

    `limit=None` means unlimited (open loop: a camera does not wait). Frame ids are assigned by
    the caller in send order; `index` (the 1-based send count) is what compares with the
    server's `received` counter.
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("in-flight limit must be >= 1")
        self.limit = limit
        self.sent = 0
        self.results = 0
        self.errors = 0
        self.drops_reported = 0  # Σ result.dropped, or the latest stats.dropped_total if higher
        self.drops_released = 0  # drops attributed to outstanding frames
        self.excess_drops = 0  # drops reported with no outstanding frame to attribute them to
        self.unmatched = 0  # answers for frames the ledger never had
        self.late = 0  # answers for frames whose credit had timed out
        self._dropped_in_results = 0
        # frame_id -> (index, sent_at); pending holds credits, expired no longer does.
        self._pending: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._expired: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._released: OrderedDict[int, tuple[int, float]] = OrderedDict()

    # ------------------------------------------------------------------ sending

    @property
    def in_flight(self) -> int:
        """Frames holding a credit."""
        return len(self._pending)

    @property
    def outstanding(self) -> int:
        """Frames not resolved yet, whether or not their credit timed out."""
        return len(self._pending) + len(self._expired)

    def has_credit(self) -> bool:
        return self.limit is None or len(self._pending) < self.limit

    def add(self, frame_id: int, sent_at: float) -> None:
        self.sent += 1
        self._pending[frame_id & FRAME_ID_MASK] = (self.sent, sent_at)

    # ------------------------------------------------------------------ answers

    def on_result(self, frame_id: int, dropped: int) -> Resolution:
        """A result for `frame_id` whose `dropped` counts drops since the previous result."""
        self.results += 1
        sent_at, released = self._resolve(frame_id & FRAME_ID_MASK)
        self._dropped_in_results += max(0, dropped)
        released += self._release_drops(max(self._dropped_in_results, self.drops_reported))
        return Resolution(sent_at, released)

    def on_error(self, frame_id: int) -> Resolution:
        """An error message carrying a frame id: that frame is resolved."""
        self.errors += 1
        sent_at, released = self._resolve(frame_id & FRAME_ID_MASK)
        return Resolution(sent_at, released)

    def on_stats(self, dropped_total: int, *, received: int, pending: int, in_flight: int) -> int:
        """Apply a `stats` message; returns the credits released."""
        if pending or in_flight:
            # Drops already happened but frames are also still being worked on: which ones were
            # dropped is ambiguous, so wait for the next result (or a quiet stats) to say.
            return 0
        return self._release_drops(max(dropped_total, self._dropped_in_results), received)

    def expire(self, now: float, timeout: float) -> int:
        """Return the credit of frames older than `timeout`; they stay matchable."""
        n = 0
        while self._pending:
            frame_id, (index, sent_at) = next(iter(self._pending.items()))
            if now - sent_at < timeout:
                break
            del self._pending[frame_id]
            self._expired[frame_id] = (index, sent_at)
            n += 1
        return n

    def oldest_pending_at(self) -> float | None:
        """Send time of the oldest frame holding a credit (when the next one can time out)."""
        for _, sent_at in self._pending.values():
            return sent_at
        return None

    # ------------------------------------------------------------------ internals

    def _resolve(self, frame_id: int) -> tuple[float | None, int]:
        if frame_id in self._pending:
            return self._pending.pop(frame_id)[1], 1
        if frame_id in self._expired:
            self.late += 1
            return self._expired.pop(frame_id)[1], 0
        if frame_id in self._released:
            # We wrote this frame off as dropped, wrongly: the drop was another outstanding
            # frame. Move the attribution to the oldest one so the counts stay exact.
            sent_at = self._released.pop(frame_id)[1]
            victim = self._oldest_before(None)
            if victim is None:
                self.drops_released -= 1
                return sent_at, 0
            released = self._write_off(victim)
            return sent_at, released
        self.unmatched += 1
        return None, 0

    def _release_drops(self, reported: int, received: int | None = None) -> int:
        self.drops_reported = max(self.drops_reported, reported)
        released = 0
        while self.drops_released + self.excess_drops < self.drops_reported:
            victim = self._oldest_before(None if received is None else received + 1)
            if victim is None:
                if received is not None:
                    break  # the rest may be frames still on their way; decide later
                self.excess_drops += 1
                continue
            released += self._write_off(victim)
            self.drops_released += 1
        return released

    def _oldest_before(self, index: int | None) -> int | None:
        """The oldest outstanding frame id whose send index is below `index` (None: any)."""
        for table in (self._expired, self._pending):
            for frame_id, (i, _) in table.items():
                if index is None or i < index:
                    return frame_id
                break
        return None

    def _write_off(self, frame_id: int) -> int:
        """Attribute a drop to `frame_id`; returns 1 if that gave a credit back."""
        held = frame_id in self._pending
        entry = self._pending.pop(frame_id) if held else self._expired.pop(frame_id)
        self._released[frame_id] = entry
        if len(self._released) > RELEASED_MEMORY:
            self._released.popitem(last=False)
        return 1 if held else 0
