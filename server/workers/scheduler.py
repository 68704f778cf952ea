"""Round-robin turn order over one worker's sessions: no session starves another.

Pure and tiny on purpose. A session enters the queue when it has a frame waiting and is not
already queued; the worker takes the head whenever it is free. Because a session holds at most
one waiting frame, FIFO order over sessions is exactly round-robin.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class FairScheduler(Generic[K]):
    def __init__(self) -> None:
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def __contains__(self, key: object) -> bool:
        return key in self._queued

    def ready(self, key: K) -> None:
        """Mark `key` as having work; idempotent, keeps its place if already queued."""
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)

    def next(self) -> K | None:
        """The key whose turn it is, removed from the queue (None when nobody waits)."""
        if not self._queue:
            return None
        key = self._queue.popleft()
        self._queued.discard(key)
        return key

    def remove(self, key: K) -> None:
        if key in self._queued:
            self._queued.discard(key)
            self._queue.remove(key)
