"""Pacing a producer's frames: the slot the server's grant allows next, and a credit to spend.

A frame waits for both before it is sent: for the grant's next slot (`granted_fps`, from `ready`
and later `grant` messages; a faster frame would only be dropped as `over_grant`), and for one of
the `max_in_flight` credits (docs/protocol.md, Flow control), which come back on an answer or, as
a safety net, after `credit_timeout` seconds nobody answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from holistream.credits import Ledger


class GrantPacer:
    """The monotonic time the grant allows the next frame at."""

    def __init__(self) -> None:
        self.next_send = 0.0

    async def wait(self, fps: float | None) -> None:
        """Sleep until the next slot (no wait without a grant)."""
        if fps:
            delay = self.next_send - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def sent(self, now: float, fps: float | None) -> None:
        """A frame went at `now`: the next slot is one interval on; time lost waiting is not
        made up in a burst."""
        if fps:
            interval = 1 / fps
            self.next_send = max(self.next_send + interval, now + 0.5 * interval)


async def wait_for_credit(
    ledger: Ledger, credit: asyncio.Event, timeout: float, check: Callable[[], None]
) -> None:
    """Until `ledger` has a credit, or the oldest unanswered frame's credit expires; `check`
    raises when no answer can come any more (the session is over)."""
    while not ledger.has_credit():
        check()
        now = time.monotonic()
        if ledger.expire(now, timeout):
            return
        oldest = ledger.oldest_pending_at()
        wait = timeout - (now - oldest) if oldest is not None else 0.05
        credit.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.001, wait)):
                await credit.wait()
