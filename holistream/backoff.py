"""When to reconnect, and how long to wait first (docs/protocol.md, "Reconnecting"). Pure policy.

Exponential back-off with jitter, at least the server's `Retry-After`; what a retry cannot fix
(a refused hello, a bad request, a missing token) is not retried.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from holistream.messages import ErrorMsg, Rejected, SessionClosed

# Fatal errors and HTTP refusals that only a change on the client's side can fix.
PERMANENT_ERRORS = frozenset({"bad_hello", "unsupported_protocol", "read_only"})
PERMANENT_STATUS = frozenset({400, 401, 403, 404})
TRY_AGAIN_LATER = 1013  # close code of `server_full` after the upgrade
TRY_AGAIN_LATER_MIN_S = 1.0


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1]
    attempt: int = 0

    def next_delay(
        self, retry_after: float | None = None, rng: Callable[[], float] = random.random
    ) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return max(base * (1.0 - self.jitter * rng()), retry_after or 0.0)

    def reset(self) -> None:
        self.attempt = 0


def retry_after(failure: BaseException | ErrorMsg | None) -> float | None:
    """Seconds to wait at least before trying again after `failure`, or None: do not retry."""
    if isinstance(failure, Rejected):
        if failure.status in PERMANENT_STATUS:
            return None
        return failure.retry_after or 0.0
    if isinstance(failure, SessionClosed):
        if failure.error is not None and failure.error.code in PERMANENT_ERRORS:
            return None
        if failure.code != TRY_AGAIN_LATER:
            return 0.0
        told = failure.error.retry_after_s if failure.error is not None else None
        return max(TRY_AGAIN_LATER_MIN_S, told or 0.0)
    if isinstance(failure, ErrorMsg):
        return None if failure.code in PERMANENT_ERRORS else 0.0
    return 0.0  # a network error, a timeout, a server going away: try again
