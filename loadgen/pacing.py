"""When to start clients and when to send frames: pure schedule arithmetic, no clocks read.

A camera produces frames on a fixed grid whatever the network does; a generator that falls behind
must skip grid points rather than burst, or it would measure its own catch-up instead of the
server. Lag (how late a frame left against its grid point) is kept so the report can say when
the generator, not the server, was the bottleneck.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

GOLDEN = (math.sqrt(5) - 1) / 2

_RAMP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min))?\s*$", re.IGNORECASE)


def parse_ramp(text: str | None) -> float:
    """Clients started per second: '20/s', '600/m', '20' (per second); '0' or 'none' = at once.

    Returns math.inf for "all at once".
    """
    if text is None or text.strip().lower() in ("", "0", "none", "off", "inf"):
        return math.inf
    match = _RAMP.match(text)
    if not match:
        raise ValueError(f"bad ramp {text!r}: use e.g. '20/s' or '600/m'")
    value = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    rate = value / 60.0 if unit in ("m", "min") else value
    return math.inf if rate == 0 else rate


def parse_steps(text: str) -> list[int]:
    """'10,20,40' -> [10, 20, 40]: the client count of each stage, strictly positive."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"bad steps {text!r}: use e.g. '10,20,40'") from None
    if not steps or any(n < 1 for n in steps):
        raise ValueError(f"bad steps {text!r}: client counts must be >= 1")
    return steps


def start_offsets(clients: int, rate: float) -> list[float]:
    """Seconds after the stage start at which each client connects."""
    if math.isinf(rate):
        return [0.0] * clients
    return [i / rate for i in range(clients)]


def phase(client_index: int, interval: float) -> float:
    """Spread clients' frame grids over one interval (real cameras are not synchronised).

    The golden-ratio sequence keeps any number of clients evenly spread without knowing the total.
    """
    return ((client_index * GOLDEN) % 1.0) * interval


def frame_offset(client_index: int, n_frames: int) -> int:
    """Each client starts at a different frame of the source, so sessions do not send the same
    image at the same time (a server-side cache would otherwise flatter the numbers)."""
    return (client_index * 7919) % max(1, n_frames)


@dataclass(slots=True)
class FrameClock:
    """An open-loop frame grid: frame k is due at `start + k / fps`.

    `next_due(now)` returns the next grid point to send at, skipping those already more than one
    interval late (a real camera would have overwritten them), and counts the skips.
    """

    fps: float
    start: float
    k: int = 0
    skipped: int = 0

    @property
    def interval(self) -> float:
        return 1.0 / self.fps

    def due(self) -> float:
        return self.start + self.k * self.interval

    def next_due(self, now: float) -> float:
        """The time the next frame should leave; advances past grid points already missed."""
        due = self.due()
        if now - due > self.interval:
            missed = int((now - due) / self.interval)
            self.k += missed
            self.skipped += missed
            due = self.due()
        return due

    def sent(self) -> None:
        """The frame due now has been sent."""
        self.k += 1
