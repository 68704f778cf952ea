"""A session's send buffer: control messages in order, results latest-wins.

Pure, no I/O. A client that reads slower than results are produced loses results (each counted
by the caller), never memory: at most one result and `max_control` control messages of at most
`max_control_bytes` in all are held, whatever the client asks for and however little it reads.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

R = TypeVar("R")

MAX_CONTROL_BYTES = 256 * 1024  # control messages (replies, errors, stats) held per connection


class Outbox(Generic[R]):
    def __init__(self, max_control: int = 64, max_control_bytes: int = MAX_CONTROL_BYTES) -> None:
        self._control: deque[str] = deque()
        self._max_control = max_control
        self._max_control_bytes = max_control_bytes
        self.control_bytes = 0
        self._result: R | None = None
        self.control_dropped = 0

    def put_control(self, message: str) -> bool:
        """Queue a text message; False (and counted) when the buffer is full."""
        size = len(message)
        if (
            len(self._control) >= self._max_control
            or self.control_bytes + size > self._max_control_bytes
        ):
            self.control_dropped += 1
            return False
        self._control.append(message)
        self.control_bytes += size
        return True

    def put_result(self, result: R) -> R | None:
        """Hold `result` for sending; returns the unsent result it replaced, if any."""
        old, self._result = self._result, result
        return old

    def pop(self) -> str | R | None:
        """Control messages first (they are small and ordered), then the latest result."""
        if self._control:
            message = self._control.popleft()
            self.control_bytes -= len(message)
            return message
        result, self._result = self._result, None
        return result

    def __len__(self) -> int:
        return len(self._control) + (self._result is not None)
