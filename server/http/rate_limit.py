"""Per-client-address limits: a token bucket for new connections and a cap on live sessions.

Pure (time is passed in). Keys are the real client address (X-Forwarded-For from a trusted
proxy), so one greedy address cannot take a whole instance; loopback is exempt by default so a
local load generator or a proxy's health checks are not throttled.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class AddressLimits:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_sessions: int,
        exempt: Iterable[str] = ("127.0.0.0/8", "::1"),
        max_tracked: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sessions = max_sessions
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in exempt if n.strip()]
        self.max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}
        self.sessions: Counter[str] = Counter()

    def is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.exempt)

    def check(self, address: str, now: float) -> tuple[str, float] | None:
        """None to let a new connection in (and charge it), or (reason, retry_after_s)."""
        if self.is_exempt(address):
            return None
        if self.max_sessions and self.sessions[address] >= self.max_sessions:
            return (f"{self.max_sessions} sessions from this address already", 5.0)
        if self.rate <= 0:
            return None
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget_full(now)
            bucket = self._buckets[address] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return ("too many new connections from this address", (1.0 - bucket.tokens) / self.rate)
        bucket.tokens -= 1.0
        return None

    def opened(self, address: str) -> None:
        self.sessions[address] += 1

    def closed(self, address: str) -> None:
        self.sessions[address] -= 1
        if self.sessions[address] <= 0:
            del self.sessions[address]

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they carry no state worth keeping."""
        full = [a for a, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate
                >= self.burst]
        for address in full:
            del self._buckets[address]
