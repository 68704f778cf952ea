"""A well-behaved session that streams throughout a hostile test: what the others must not hurt.

It runs in its own thread and event loop, sends a face-only frame at a steady rate and records
when each result arrives, so a stall caused by anything else on the server shows as a gap.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from holistream import protocol


@dataclass
class Canary:
    url: str
    image: bytes
    fps: float = 10.0
    arrivals: list[float] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)  # errors, warnings, an early close
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the canary got no result: {self.problems}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def max_gap(self, since: float = 0.0) -> float:
        """The longest wait between two results (seconds), counting only results after `since`."""
        times = [t for t in self.arrivals if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def _run(self) -> None:
        try:
            async with websockets.connect(self.url, max_size=None, open_timeout=20) as ws:
                hello = {"type": "hello", "protocol": 1, "parts": ["face"], "fps": self.fps}
                await ws.send(orjson.dumps(hello).decode())
                reader = asyncio.create_task(self._read(ws))
                period = 1.0 / self.fps
                while not self._stop.is_set() and not reader.done():
                    ts = time.perf_counter() * 1000
                    await ws.send(protocol.encode_frame(self.sent, ts, self.image))
                    self.sent += 1
                    await asyncio.sleep(period)
                reader.cancel()
        except Exception as exc:  # recorded: the test asserts there were none
            self.problems.append(repr(exc))
            self._ready.set()

    async def _read(self, ws: Any) -> None:
        async for data in ws:
            msg = orjson.loads(data)
            if msg["type"] == "result":
                self.arrivals.append(time.monotonic())
                self._ready.set()
            elif msg["type"] in ("error", "warning"):
                self.problems.append(msg)
        if not self._stop.is_set():
            self.problems.append("closed by the server")
