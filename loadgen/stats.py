"""Measurement arithmetic: latency histograms, per-session books, fairness, the stage summary.

No I/O here. Latencies go into HDR histograms (constant memory and O(1) per sample, exact to 3
significant digits) because hundreds of clients at 15 fps make millions of samples per run; a
list sort would make the generator its own bottleneck.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

US_PER_MS = 1000
MAX_TRACKABLE_MS = 300_000  # 5 minutes: anything slower is clamped, not lost
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class Histogram:
    """Millisecond values stored as integer microseconds in an HdrHistogram."""

    def __init__(self, digits: int = 3) -> None:
        self._h = HdrHistogram(1, MAX_TRACKABLE_MS * US_PER_MS, digits)

    def record(self, ms: float) -> None:
        us = int(ms * US_PER_MS)
        self._h.record_value(min(max(us, 1), MAX_TRACKABLE_MS * US_PER_MS))

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        return float(self._h.get_value_at_percentile(p)) / US_PER_MS

    def add(self, other: Histogram) -> None:
        self._h.add(other._h)

    def reset(self) -> None:
        self._h.reset()

    def summary(self) -> dict[str, float | int | None]:
        """count, min, mean, p50 … p99.9, max in ms (None when empty)."""
        n = self.count
        out: dict[str, float | int | None] = {"count": n}
        out["min"] = self._h.get_min_value() / US_PER_MS if n else None
        out["mean"] = round(self._h.get_mean_value() / US_PER_MS, 3) if n else None
        for p in PERCENTILES:
            out[f"p{p:g}".replace(".", "_")] = self.percentile(p)
        out["max"] = self._h.get_max_value() / US_PER_MS if n else None
        return out


def jain(values: Iterable[float]) -> float | None:
    """Jain's fairness index (Σx)² / (n·Σx²): 1 when all equal, 1/n when one takes everything.

    None when undefined (no values, or all zero).
    """
    xs = list(values)
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * squares)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """min / median / mean / max of a few thousand per-session figures (not latencies)."""
    if not values:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


@dataclass(slots=True)
class Books:
    """One session's closing accounts: every frame sent ends up in exactly one column.

    `dropped` is the server's own count (Σ result.dropped, topped up by the final stats'
    `dropped_total`); `unanswered` is what the ledger still holds after that. They come from
    independent sources, so `balanced` is a real check, not an identity.
    """

    sent: int = 0
    results: int = 0
    frame_errors: int = 0
    dropped_in_results: int = 0
    dropped_final: int = 0  # the final stats' remainder: drops after the last result
    unanswered: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_in_results + self.dropped_final

    @property
    def discrepancy(self) -> int:
        return self.sent - (self.results + self.frame_errors + self.dropped + self.unanswered)

    @property
    def balanced(self) -> bool:
        return self.discrepancy == 0

    def add(self, other: Books) -> None:
        self.sent += other.sent
        self.results += other.results
        self.frame_errors += other.frame_errors
        self.dropped_in_results += other.dropped_in_results
        self.dropped_final += other.dropped_final
        self.unanswered += other.unanswered

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "results": self.results,
            "frame_errors": self.frame_errors,
            "dropped": self.dropped,
            "dropped_in_results": self.dropped_in_results,
            "dropped_final": self.dropped_final,
            "unanswered": self.unanswered,
            "balanced": self.balanced,
            "discrepancy": self.discrepancy,
        }


@dataclass(slots=True)
class SessionRecord:
    """What one client saw, start to finish."""

    index: int
    outcome: str = "pending"  # ok | refused | failed | pending
    connect_ms: float | None = None
    active_s: float = 0.0  # first frame sent -> stopped sending
    books: Books = field(default_factory=Books)
    skipped: int = 0  # camera frames never sent (closed loop: no credit; open loop: lag)
    final_stats: bool = False  # the closing stats reply arrived
    server_received: int | None = None  # the server's `received` in the final stats
    rejections: int = 0
    close_code: int | None = None
    drop_reasons: dict[str, int] = field(default_factory=dict)  # from the closing stats
    granted_fps: float | None = None  # the server's latest grant (ready, then `grant` messages)
    grant_changes: int = 0  # `grant` messages received

    @property
    def result_fps(self) -> float:
        return self.books.results / self.active_s if self.active_s > 0 else 0.0


@dataclass(slots=True)
class Totals:
    """Live aggregates all sessions of a stage write into (one event loop, no locks needed)."""

    latency: Histogram = field(default_factory=Histogram)
    window: Histogram = field(default_factory=Histogram)  # since the last progress tick
    server_ms: Histogram = field(default_factory=Histogram)  # result.timing.total_ms
    connect: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)  # woke this late for a frame's grid time
    send_block: Histogram = field(default_factory=Histogram)  # time a frame's send() waited
    connected: int = 0
    sent: int = 0
    results: int = 0
    dropped: int = 0
    frame_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


def pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


def summarize(
    records: Sequence[SessionRecord],
    totals: Totals,
    *,
    elapsed_s: float,
    steady: tuple[float, int, int] | None = None,
) -> dict[str, Any]:
    """The figures of one stage, JSON-ready.

    `steady` = (seconds, frames sent, results) of the window after the ramp and a warm-up; the
    rates come from it when there is one, so a slow ramp does not dilute them.
    """
    books = Books()
    for r in records:
        books.add(r.books)
    outcomes = Counter(r.outcome for r in records)
    admitted = [r for r in records if r.outcome == "ok"]
    fps = [r.result_fps for r in admitted if r.books.sent and r.active_s >= 0.5]
    grants = [r.granted_fps for r in admitted if r.granted_fps is not None]
    span, sent, results = (
        steady if steady and steady[0] > 0 else (elapsed_s, books.sent, books.results)
    )
    steady_s = steady[0] if steady else None
    return {
        "clients": len(records),
        "elapsed_s": round(elapsed_s, 3),
        "steady_s": None if steady_s is None else round(steady_s, 3),
        "sessions": {
            "ok": outcomes["ok"],
            "refused": outcomes["refused"],
            "failed": outcomes["failed"],
            "unfinished": outcomes["pending"],
            "rejections": dict(totals.rejections),
            "final_stats_missing": sum(1 for r in admitted if not r.final_stats),
            "unbalanced": sum(1 for r in admitted if not r.books.balanced),
        },
        "frames": {
            **books.to_json(),
            "skipped_local": sum(r.skipped for r in records),
            "dropped_by_reason": dict(sum((Counter(r.drop_reasons) for r in records), Counter())),
        },
        "rates": {
            "sent_per_s": round(sent / span, 3) if span else 0.0,
            "results_per_s": round(results / span, 3) if span else 0.0,
        },
        "drop_pct": pct(books.dropped, books.sent),
        "error_pct": pct(books.frame_errors + books.unanswered, books.sent),
        "latency_ms": totals.latency.summary(),
        "server_total_ms": totals.server_ms.summary(),
        "connect_ms": totals.connect.summary(),
        "per_session_fps": {**spread(fps), "jain": jain(fps)},
        "granted_fps": {
            "sum": round(sum(grants), 3),
            **spread(grants),
            "changes": sum(r.grant_changes for r in admitted),
        },
        "errors": dict(totals.errors),
    }
