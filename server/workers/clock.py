"""MediaPipe's VIDEO-mode clock for one session: strictly increasing integer milliseconds.

A VIDEO-mode landmarker refuses a timestamp that does not increase, and clients send whatever
their camera says (repeats, jumps back). The pool keeps one clock per session it has placed, so
the clock starts with the session's landmarker and ends with it. Pure.
"""

from __future__ import annotations

# A pause longer than this counts as this long on MediaPipe's clock (tracking resumes as after
# a short gap; the client's own `ts` is echoed untouched).
MAX_MP_STEP_MS = 5_000


class MediaPipeClock:
    def __init__(self) -> None:
        self._first_ts: float | None = None
        self._last = -1

    def stamp(self, client_ts: float) -> int:
        """The MediaPipe timestamp (ms) of a frame the client stamped `client_ts`: `ts -
        ts_first`, at least one more than the last, and never more than MAX_MP_STEP_MS beyond it
        (a leap re-anchors the clock there), so whatever finite `ts` a client sends (back,
        repeated, 1e300), MediaPipe's clock moves by a bounded step and stays in range."""
        if self._first_ts is None:
            self._first_ts = client_ts
        target = client_ts - self._first_ts
        last = self._last
        if target > last + MAX_MP_STEP_MS:
            ts = last + MAX_MP_STEP_MS
            self._first_ts = client_ts - ts
        elif target >= last + 1:
            ts = round(target)
        else:
            ts = last + 1
        self._last = ts
        return ts
