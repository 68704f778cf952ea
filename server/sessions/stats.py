"""Small rolling statistics for per-session figures (fps, median inference time). Pure."""

from __future__ import annotations

import statistics
from collections import deque


class RollingRate:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()


class RollingMedian:
    """Median of the last `size` samples."""

    def __init__(self, size: int = 64) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def median(self) -> float:
        return statistics.median(self._samples) if self._samples else 0.0
