"""One simulated client: a lean raw WebSocket session that paces frames and keeps its books.

Deliberately not `holistream.client`: that one spends a queue and a typed object (numpy arrays
included) per message for convenience; hundreds of these sessions must stay cheap, so messages go
straight to `loadgen.accounts`, which reads only the fields the measurements need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from holistream.protocol import PROTOCOL_VERSION, dumps, encode_frame, parse_message
from loadgen.accounts import Accounts
from loadgen.pacing import FrameClock, frame_offset, phase
from loadgen.stats import SessionRecord, Totals

CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class SessionConfig:
    url: str
    mode: str = "open"  # open: a camera at `fps`; closed: credit based, at most `in_flight`
    fps: float = 15.0  # closed loop: 0 = as fast as credits allow
    in_flight: int = 2
    format: str = "json"
    parts: tuple[str, ...] = ("face", "hands", "pose")
    token: str | None = None
    connect_timeout: float = 10.0
    drain_s: float = 3.0  # at the end: wait this long for outstanding results and final stats
    credit_timeout: float = 5.0
    compression: bool = False  # permessage-deflate costs CPU on both sides; browsers do use it
    follow_grant: bool = True  # send at min(fps, the server's grant), as the bundled clients do
    model: str = "full"  # hello `model` ("lite": holistic_lite)
    retry_after_cap_s: float = 30.0


class _Failed(Exception):
    """The session could not start; `kind` names why in the errors table."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Refused(Exception):
    def __init__(self, kind: str, retry_after: float | None = None) -> None:
        super().__init__(kind)
        self.kind, self.retry_after = kind, retry_after


class Session:
    """Runs one client until `stop` is set, then closes its books (see `loadgen.stats.Books`)."""

    def __init__(
        self,
        index: int,
        cfg: SessionConfig,
        frames: list[bytes],
        totals: Totals,
        stop: asyncio.Event,
    ) -> None:
        self.index, self.cfg, self.frames, self.totals, self.stop = index, cfg, frames, totals, stop
        self.record = SessionRecord(index)
        self.acc = Accounts(self.record, totals, cfg.in_flight if cfg.mode == "closed" else None)
        self.ledger = self.acc.ledger
        self._answered = asyncio.Event()
        self._stats: asyncio.Future[dict[str, Any]] | None = None
        self._ws: ClientConnection | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> SessionRecord:
        retried = False
        while True:
            try:
                await self._connect()
                break
            except _Refused as exc:
                self.record.rejections += 1
                self.totals.rejections[exc.kind] += 1
                if retried or exc.retry_after is None or self.stop.is_set():
                    self.record.outcome = "refused"
                    return self.record
                retried = True  # honour Retry-After once, then give up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(exc.retry_after, self.cfg.retry_after_cap_s)):
                        await self.stop.wait()
                if self.stop.is_set():
                    self.record.outcome = "refused"
                    return self.record
            except Exception as exc:
                self.totals.error(_kind(exc))
                self.record.outcome = "failed"
                return self.record
        assert self._ws is not None
        self.record.outcome = "ok"
        self.totals.connected += 1
        try:
            await self._session(self._ws)
        except Exception as exc:  # a fault here must not take the whole stage down
            self.totals.error(f"session_error:{type(exc).__name__}")
        finally:
            self.totals.connected -= 1
            self.acc.close_books()
            await self._ws.close()
        return self.record

    async def _connect(self) -> None:
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {self.cfg.token}"} if self.cfg.token else None
        try:
            ws = await connect(
                self.cfg.url,
                additional_headers=headers,
                open_timeout=self.cfg.connect_timeout,
                compression="deflate" if self.cfg.compression else None,
                ping_interval=None,
                max_size=16 * 2**20,
                max_queue=64,
                user_agent_header="holistream-loadgen",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 503:
                retry: float | None = None
                with contextlib.suppress(TypeError, ValueError):
                    retry = float(exc.response.headers.get("Retry-After", ""))
                raise _Refused("http_503", retry) from None
            raise
        try:
            await ws.send(
                dumps(
                    {
                        "type": "hello",
                        "protocol": PROTOCOL_VERSION,
                        "parts": list(self.cfg.parts),
                        "format": self.cfg.format,
                        "fps": self.cfg.fps or 30,
                        "model": self.cfg.model,
                        "client": "holistream-loadgen",
                    }
                )
            )
            async with asyncio.timeout(self.cfg.connect_timeout):
                while True:
                    msg = parse_message(await ws.recv())
                    if msg["type"] == "ready":
                        granted = msg.get("fps_granted")
                        if isinstance(granted, int | float) and granted > 0:
                            self.record.granted_fps = float(granted)
                        break
                    if msg["type"] == "error" and msg.get("fatal"):
                        if msg.get("code") == "server_full":
                            told = msg.get("retry_after_s")
                            wait = float(told) if isinstance(told, int | float) else None
                            raise _Refused("close_1013", wait)
                        raise _Failed(f"error:{msg.get('code')}")
        except ConnectionClosed:
            await ws.close()
            if ws.close_code == CLOSE_TRY_AGAIN_LATER:
                raise _Refused("close_1013") from None
            raise
        except BaseException:
            await ws.close()
            raise
        ms = (time.perf_counter() - t0) * 1000.0
        self.record.connect_ms = ms
        self.totals.connect.record(ms)
        self._ws = ws

    async def _session(self, ws: ClientConnection) -> None:
        reader = asyncio.create_task(self._read(ws))
        sender = asyncio.create_task(
            self._open_loop(ws) if self.cfg.mode == "open" else self._closed_loop(ws)
        )
        started = time.monotonic()
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            self.record.active_s = time.monotonic() - started
            if not sender.done():
                sender.cancel()  # the server closed on us
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
            if not reader.done():
                await self._drain(ws)
        except ConnectionClosed:
            pass
        finally:
            for task in (sender, reader):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            code = ws.close_code
            if code is not None and not self.stop.is_set():  # the server ended it mid-run
                self.record.close_code = code
                if code == CLOSE_TRY_AGAIN_LATER:
                    self.totals.rejections["close_1013"] += 1
                    self.record.outcome = "refused"
                self.totals.error(f"closed_{code}")

    # ------------------------------------------------------------------ sending

    async def _send(self, ws: ClientConnection, k: int) -> None:
        now = time.monotonic()
        image = self.frames[(k + frame_offset(self.index, len(self.frames))) % len(self.frames)]
        frame_id = self.acc.sent(now)
        await ws.send(encode_frame(frame_id, now * 1000.0, image))
        # A send that waits means the server is not reading fast enough (TCP backpressure):
        # that lateness is the server's, unlike oversleeping, which is the generator's.
        self.totals.send_block.record((time.monotonic() - now) * 1000.0)

    async def _sleep_until(self, due: float) -> None:
        """Sleep until `due`; how late we wake is the generator's own lag (busy loop or CPU)."""
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
            self.totals.lag.record((time.monotonic() - due) * 1000.0)

    def _rate(self) -> float:
        """Frames/s to send at: the configured rate, or the grant when it is lower."""
        granted = self.record.granted_fps
        if self.cfg.follow_grant and granted:
            return min(self.cfg.fps, granted) if self.cfg.fps else granted
        return self.cfg.fps

    def _follow(self, clock: FrameClock | None) -> FrameClock | None:
        """A new grid from now on when the grant changed the rate."""
        rate = self._rate()
        if clock is not None and rate and abs(rate - clock.fps) > 1e-6:
            skipped = clock.skipped
            clock = FrameClock(rate, time.monotonic() + 1 / rate)
            clock.skipped = skipped
        return clock

    async def _open_loop(self, ws: ClientConnection) -> None:
        """A camera: a frame on every grid point, whatever comes back."""
        rate = self._rate()
        clock = FrameClock(rate, time.monotonic() + phase(self.index, 1 / rate))
        k = 0
        while not self.stop.is_set():
            await self._sleep_until(clock.next_due(time.monotonic()))
            if self.stop.is_set():
                break
            await self._send(ws, k)
            k += 1
            clock.sent()
            clock = self._follow(clock) or clock
        self.record.skipped = clock.skipped

    async def _closed_loop(self, ws: ClientConnection) -> None:
        """The browser demo: a camera frame is sent only with a credit; if none comes back before
        the next camera frame, that frame is skipped (the newer one is sent instead)."""
        fps = self._rate()
        clock = FrameClock(fps, time.monotonic() + phase(self.index, 1 / fps)) if fps else None
        k = 0
        while not self.stop.is_set():
            clock = self._follow(clock)
            next_tick = None
            if clock is not None:
                await self._sleep_until(clock.next_due(time.monotonic()))
                clock.sent()
                next_tick = clock.due()
            if not await self._await_credit(next_tick):
                self.record.skipped += 1
                continue
            if self.stop.is_set():
                break
            await self._send(ws, k)
            k += 1
        if clock is not None:
            self.record.skipped += clock.skipped

    async def _await_credit(self, until: float | None) -> bool:
        """Wait for a credit, at most until `until` (monotonic); expired frames give theirs back."""
        while not self.ledger.has_credit():
            now = time.monotonic()
            if self.stop.is_set() or (until is not None and now >= until):
                return False
            if self.ledger.expire(now, self.cfg.credit_timeout):
                self.totals.error("credit_timeout")
                break
            oldest = self.ledger.oldest_pending_at() or now
            wait = oldest + self.cfg.credit_timeout - now
            if until is not None:
                wait = min(wait, until - now)
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, wait)):
                    await self._answered.wait()
        return True

    # ------------------------------------------------------------------ receiving

    async def _read(self, ws: ClientConnection) -> None:
        async for data in ws:
            kind = self.acc.message(data, time.monotonic())
            if kind in ("result", "error", "stats"):
                self._answered.set()  # a credit may be back, or the drain may be over
            if kind == "stats" and self._stats is not None and not self._stats.done():
                self._stats.set_result(self.acc.last_stats or {})

    # ------------------------------------------------------------------ closing the books

    async def _drain(self, ws: ClientConnection) -> None:
        """Stop sending, give outstanding frames `drain_s` to resolve, then take final stats.

        Drops after the last result are only visible in `stats`, so a quiet spell triggers a
        stats request rather than waiting out the whole drain time.
        """
        deadline = time.monotonic() + self.cfg.drain_s
        while self.ledger.outstanding and time.monotonic() < deadline - 1.0:
            self._answered.clear()
            try:
                async with asyncio.timeout(0.25):
                    await self._answered.wait()
            except TimeoutError:
                await ws.send(dumps({"type": "stats"}))
        while True:
            self._stats = asyncio.get_running_loop().create_future()
            await ws.send(dumps({"type": "stats"}))
            try:
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    msg = await self._stats
            except TimeoutError:
                return
            quiet = self.acc.final_stats(msg)
            if quiet or not self.ledger.outstanding or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.1)


def _kind(exc: BaseException) -> str:
    """A short, stable name for a connection failure, for the errors-by-kind table."""
    if isinstance(exc, _Failed):
        return exc.kind
    if isinstance(exc, InvalidStatus):
        return f"http_{exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionClosed):
        return f"closed_before_ready_{exc.rcvd.code if exc.rcvd else 'none'}"
    if isinstance(exc, OSError):
        return f"os_error_{exc.errno}"
    return type(exc).__name__
