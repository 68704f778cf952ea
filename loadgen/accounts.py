"""What one session's incoming messages mean for its books and the stage totals (no I/O).

Reads only the few fields the measurements need, through the protocol codec: a JSON message is
parsed once by `parse_message`; a binary result only has its fixed header unpacked, because the
landmarks themselves are irrelevant to a load test and hundreds of sessions must stay cheap.
"""

from __future__ import annotations

from typing import Any

from holistream.credits import Ledger
from holistream.protocol import RESULT_HEADER, RESULT_MAGIC, ProtocolError, parse_message
from loadgen.stats import SessionRecord, Totals


class Accounts:
    """A session's ledger plus the counters its books are closed from."""

    def __init__(self, record: SessionRecord, totals: Totals, limit: int | None) -> None:
        self.record, self.totals = record, totals
        self.ledger = Ledger(limit)
        self.dropped_in_results = 0
        self.final_dropped: int | None = None  # dropped_total of the closing stats
        self.last_stats: dict[str, Any] | None = None

    def sent(self, now: float) -> int:
        """Book a frame about to be sent; returns its frame id (ids follow send order)."""
        frame_id = self.ledger.sent
        self.ledger.add(frame_id, now)
        self.totals.sent += 1
        return frame_id

    def message(self, data: str | bytes, now: float) -> str:
        """Account for one server message; returns its type ('' when unreadable)."""
        if isinstance(data, bytes):
            if len(data) < RESULT_HEADER.size or data[:4] != RESULT_MAGIC:
                self.totals.error("bad_server_message")
                return ""
            fields = RESULT_HEADER.unpack_from(data)
            self._result(fields[3], fields[6], fields[12], now)
            return "result"
        try:
            msg = parse_message(data)
        except ProtocolError:
            self.totals.error("bad_server_message")
            return ""
        kind: str = msg["type"]
        if kind == "result":
            frame, timing = msg.get("frame"), msg.get("timing") or {}
            if not isinstance(frame, int):
                self.totals.error("bad_server_message")
                return ""
            self._result(frame, int(msg.get("dropped", 0)), timing.get("total_ms"), now)
        elif kind == "stats":
            self.last_stats = msg
            self.ledger.on_stats(
                int(msg.get("dropped_total", 0)),
                received=int(msg.get("received", 0)),
                pending=int(msg.get("pending", 0)),
                in_flight=int(msg.get("in_flight", 0)),
            )
        elif kind == "error":
            self.totals.error(f"error:{msg.get('code')}")
            frame = msg.get("frame")
            if isinstance(frame, int):
                self.ledger.on_error(frame)
                self.totals.frame_errors += 1
        elif kind == "grant":
            fps = msg.get("fps")
            if isinstance(fps, int | float) and fps > 0:
                self.record.granted_fps = float(fps)
                self.record.grant_changes += 1
        elif kind == "warning":
            self.totals.error(f"warning:{msg.get('code')}")
        return kind

    def _result(self, frame: int, dropped: int, server_ms: float | None, now: float) -> None:
        res = self.ledger.on_result(frame, dropped)
        if res.sent_at is not None:
            ms = (now - res.sent_at) * 1000.0
            self.totals.latency.record(ms)
            self.totals.window.record(ms)
        if server_ms is not None:
            self.totals.server_ms.record(float(server_ms))
        self.totals.results += 1
        self.totals.dropped += dropped
        self.dropped_in_results += dropped

    def final_stats(self, msg: dict[str, Any]) -> bool:
        """Take the closing stats; True when the server holds nothing more for this session."""
        self.record.final_stats = True
        self.record.server_received = int(msg.get("received", 0))
        self.final_dropped = int(msg.get("dropped_total", 0))
        reasons = msg.get("dropped")
        if isinstance(reasons, dict):
            self.record.drop_reasons = {str(k): int(v) for k, v in reasons.items() if v}
        return not msg.get("pending") and not msg.get("in_flight")

    def close_books(self) -> None:
        """sent = results + frame_errors + dropped + unanswered, each from its own source."""
        b, led = self.record.books, self.ledger
        b.sent, b.results, b.frame_errors = led.sent, led.results, led.errors
        b.dropped_in_results = self.dropped_in_results
        if self.final_dropped is not None:
            b.dropped_final = max(0, self.final_dropped - self.dropped_in_results)
            self.totals.dropped += b.dropped_final
        # Drops the server reported but the ledger could not pin on a frame yet (the server was
        # still busy with another) are counted in `dropped` already, so not as unanswered.
        unattributed = max(0, b.dropped - led.drops_released - led.excess_drops)
        b.unanswered = max(0, led.outstanding - unattributed)
