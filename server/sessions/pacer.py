"""Enforce a session's granted rate at the door: frames beyond it are dropped. Pure.

A token bucket: tokens accrue at the granted rate up to `burst`; a frame that finds a token is
let in (it takes the token), one that finds none is dropped as `over_grant`. A client that sends
at its grant never loses a frame to jitter (the bucket holds `burst` frames of slack); one that
sends faster gets the grant and the rest is dropped before it costs anything.
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
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def set_rate(self, rate: float) -> None:
        self.rate = rate
