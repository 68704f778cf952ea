"""A well-behaved session that streams throughout a hostile test: what the others must not hurt.

It runs in a process of its own (so the test's own work cannot delay it through the GIL), sends a
face-only frame at a steady rate and records when each result arrives, so a stall caused by
anything else on the server shows as a gap. time.monotonic() is the system's monotonic clock, so
its times compare with the test process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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
    _process: Any = None
    _pipe: Connection | None = None

    def start(self, timeout: float = 30.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        self._process = ctx.Process(
            target=_main, args=(theirs, self.url, self.image, self.fps), daemon=True
        )
        self._process.start()
        self._pipe = ours
        if not ours.poll(timeout) or ours.recv() != "streaming":
            self.stop()
            raise TimeoutError(f"the canary got no result: {self.problems}")

    def stop(self) -> None:
        """Stop streaming and collect what the canary saw (idempotent)."""
        if self._pipe is not None and self._process is not None and self._process.is_alive():
            self._pipe.send("stop")
            if self._pipe.poll(20):
                self.arrivals, self.problems, self.sent = self._pipe.recv()
        if self._process is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()

    def max_gap(self) -> float:
        """The longest wait between two results (seconds)."""
        return max((b - a for a, b in itertools.pairwise(self.arrivals)), default=0.0)

    def max_gap_start(self) -> float:
        """When the longest gap began (monotonic), to tell what was going on then."""
        pairs = list(itertools.pairwise(self.arrivals))
        return max(pairs, key=lambda p: p[1] - p[0])[0] if pairs else 0.0


def _main(pipe: Connection, url: str, image: bytes, fps: float) -> None:
    asyncio.run(_stream(pipe, url, image, fps))


async def _stream(pipe: Connection, url: str, image: bytes, fps: float) -> None:
    arrivals: list[float] = []
    problems: list[Any] = []
    sent = 0
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pipe.fileno(), stopped.set)

    async def read(ws: Any) -> None:
        async for data in ws:
            msg = orjson.loads(data)
            if msg["type"] == "result":
                if not arrivals:
                    pipe.send("streaming")
                arrivals.append(time.monotonic())
            elif msg["type"] in ("error", "warning"):
                problems.append(msg)
        if not stopped.is_set():
            problems.append("closed by the server")

    try:
        async with websockets.connect(url, max_size=None, open_timeout=20) as ws:
            hello = {"type": "hello", "protocol": 1, "parts": ["face"], "fps": fps}
            await ws.send(orjson.dumps(hello).decode())
            reader = asyncio.create_task(read(ws))
            while not stopped.is_set() and not reader.done():
                await ws.send(protocol.encode_frame(sent, time.perf_counter() * 1000, image))
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), 1.0 / fps)
            reader.cancel()
    except Exception as exc:  # reported: the test asserts there were none
        problems.append(repr(exc))
    await stopped.wait()
    pipe.recv()
    pipe.send((arrivals, problems, sent))
