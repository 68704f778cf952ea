"""Enforce a session's granted rate: frames go to inference no faster than the grant. Pure.

A token bucket: tokens accrue at the granted rate up to `burst`; a frame that finds a token goes
on at once (it takes the token); one that finds none waits in the session's slot until the next
token (`wait`), and a newer frame replacing it meanwhile drops it as `over_grant`. A client that
sends at its grant never waits on jitter (the bucket holds `burst` frames of slack); one that
sends a frame only after each result is slowed to its grant, never dropped; one that sends
faster gets its grant and the rest is dropped before it costs anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RatePacer:
    rate: float  # frames per second let in, on average; 0 = no limit (nothing granted yet)
    burst: float = 2.0
    tokens: float = 2.0
    last: float | None = None  # monotonic seconds of the last refill

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0 - 1e-6:  # a timer set for `wait` may fire a hair early
            self.tokens = max(self.tokens - 1.0, 0.0)
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0 when one is)."""
        if self.rate <= 0:
            return 0.0
        tokens = self.tokens
        if self.last is not None:
            tokens = min(self.burst, tokens + (now - self.last) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
