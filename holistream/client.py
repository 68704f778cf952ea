"""A small asyncio client for holistream protocol 1.1 (docs/protocol.md), on `websockets`.

    async with subscribe("ws://127.0.0.1:8000", "alice") as sub:
        async for msg in sub:
            if isinstance(msg, Result) and msg.parts.get("pose") is not None:
                print(msg.frame, msg.parts["pose"][0, :2])

A producer sends frames with `await client.send_frame(jpeg_bytes)`; the call waits for the slot
the server's grant allows (`granted_fps`) and for a credit (`ready.limits.max_in_flight` frames
unanswered at most), so a fast sender cannot queue up stale frames (holistream/pacing.py).
`await client.configure(parts=[...])` returns the server's `configured` answer (or raises
ConfigureRefused). With `reconnect=True` a lost session is replaced by a new one with
exponential back-off (honouring Retry-After on 429/503); the message stream then carries a
`Reconnected` event, and connecting retries the same way. A background task reads the socket, so
credits return even when the application is slow to iterate; messages wait for it in a bounded
queue (the oldest is discarded when full, counted in `local_dropped`: a real-time consumer wants
the newest).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from holistream.credits import Ledger
from holistream.messages import (
    ConfigureRefused,
    ErrorMsg,
    Grant,
    HolistreamError,
    Message,
    Other,
    Ready,
    Reconnected,
    Rejected,
    SessionClosed,
    Stats,
    StreamEvent,
    WarningMsg,
    decode,
    typed,
)
from holistream.pacing import GrantPacer, wait_for_credit
from holistream.protocol import (
    DEFAULT_FPS,
    MAX_IN_FLIGHT,
    PROTOCOL_VERSION,
    ProtocolError,
    Result,
    dumps,
    encode_frame,
    parse_message,
)
from holistream.transport import Connecting, endpoint, first_session, next_session, open_socket

__all__ = [
    "Client", "ConfigureRefused", "ErrorMsg", "Grant", "HolistreamError", "Other", "Ready",
    "Reconnected", "Rejected", "Result", "SessionClosed", "Stats", "StreamEvent", "WarningMsg",
    "connect", "subscribe",
]  # fmt: skip
Opener = Callable[[], Awaitable[ClientConnection]]


class Client:
    """One holistream session (producer or subscriber). Create it with `connect`/`subscribe`."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        max_in_flight: int | None,
        credit_timeout: float,
        queue: int,
        hello: dict[str, Any],
        opener: Opener,
        open_timeout: float,
        reconnect: bool = False,
    ) -> None:
        self.ws = ws
        self.ready: Ready | None = None
        self._max_in_flight = max_in_flight  # None: what the server's ready.limits says
        self.ledger = Ledger(max_in_flight or MAX_IN_FLIGHT)
        self.reconnect = reconnect
        self.reconnects = 0
        self._hello, self._opener, self._open_timeout = hello, opener, open_timeout
        self._up = asyncio.Event()  # a session is ready
        self._closing = False
        self._configure_waiters: list[asyncio.Future[Other]] = []
        self.credit_timeout = credit_timeout
        self.local_dropped = 0
        self.last_latency_ms: float | None = None  # send -> result of the latest matched frame
        self.fatal: ErrorMsg | None = None
        self.granted_fps: float | None = None  # None: no limit (subscribers)
        self._pacer = GrantPacer()
        self._next_id = 0
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(max(1, queue))
        self._credit = asyncio.Event()
        self._stats_waiters: list[asyncio.Future[Stats]] = []
        self._reader: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        await self._handshake()
        self._reader = asyncio.create_task(self._run(), name="holistream-client-reader")

    async def _handshake(self) -> None:
        """hello, then wait for ready; credits as many as its limits allow."""
        self.fatal = None
        try:
            await self.ws.send(dumps(self._hello))
            async with asyncio.timeout(self._open_timeout):
                while (msg := parse_message(await self.ws.recv()))["type"] != "ready":
                    if msg["type"] == "error" and msg.get("fatal"):
                        self.fatal = typed(msg)
        except ConnectionClosed:
            raise self._closed() from None
        self.ready = typed(msg)
        limit = self._max_in_flight or self.ready.limits.get("max_in_flight", MAX_IN_FLIGHT)
        self.ledger = Ledger(max(1, int(limit)))
        if self.ready.fps_granted:
            self.granted_fps = float(self.ready.fps_granted)
        self._up.set()

    # ------------------------------------------------------------------ sending

    @property
    def in_flight(self) -> int:
        return self.ledger.in_flight

    async def send_frame(self, image: bytes, ts: float | None = None) -> int:
        """Send one encoded image (JPEG/PNG/WebP); waits for the grant's next slot and for a
        credit first. Returns its id.

        While reconnecting it waits for the new session; a frame the connection loses on the way
        is gone like any dropped frame (the new session starts with fresh credits)."""
        while self.reconnect and not self._up.is_set():
            self._check_reading()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._up.wait()
        await self._pacer.wait(self.granted_fps)
        await wait_for_credit(self.ledger, self._credit, self.credit_timeout, self._check_reading)
        frame_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        now = time.monotonic()
        self._pacer.sent(now, self.granted_fps)
        self.ledger.add(frame_id, now)
        try:
            await self.ws.send(encode_frame(frame_id, now * 1000.0 if ts is None else ts, image))
        except ConnectionClosed:
            if not self.reconnect:
                raise self._closed() from None
        return frame_id

    async def stats(self, timeout: float = 5.0) -> Stats:
        """Ask for the session's counters; returns the next `stats` message."""
        self._check_reading()
        waiter: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._stats_waiters.append(waiter)
        try:
            await self.ws.send(dumps({"type": "stats"}))
        except ConnectionClosed:
            raise self._closed() from None
        async with asyncio.timeout(timeout):
            return await waiter

    async def configure(self, timeout: float = 10.0, **options: Any) -> Other:
        """Change what is tracked (`parts`, `world`, `rig`, `fps`) and wait for the server's
        `configured` answer (an `Other`; its `raw` has `pipeline`, `parts`, `switches`). Raises
        ConfigureRefused on `bad_configure` / `server_full` (the session keeps its settings)."""
        self._check_reading()
        waiter: asyncio.Future[Other] = asyncio.get_running_loop().create_future()
        self._configure_waiters.append(waiter)
        try:
            await self.ws.send(dumps({"type": "configure", **options}))
        except ConnectionClosed:
            self._configure_waiters.remove(waiter)
            raise self._closed() from None
        async with asyncio.timeout(timeout):
            return await waiter

    def _closed(self) -> SessionClosed:
        return SessionClosed(self.ws.close_code, self.ws.close_reason, self.fatal)

    def _check_reading(self) -> None:
        """Raise SessionClosed once the reader has stopped (no answer can come any more)."""
        if self._reader is None or self._reader.done():
            raise self._closed()

    # ------------------------------------------------------------------ receiving

    async def _run(self) -> None:
        """Read sessions until the last one ends (one, unless `reconnect`)."""
        try:
            while True:
                await self._read_loop()
                self._up.clear()
                self._fail_waiters()
                if self._closing or not self.reconnect or not await self._reconnect():
                    break
        finally:
            self._up.clear()
            self._credit.set()
            self._fail_waiters()
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def _reconnect(self) -> bool:
        """A new session after the last one ended: back-off, at least Retry-After."""

        async def attempt() -> None:
            self.ws = await self._opener()
            await self._handshake()

        if not await next_session(self._closed(), attempt, lambda: self._closing):
            return False
        self.reconnects += 1
        assert self.ready is not None
        self._deliver(Reconnected(self.ready, self.reconnects))
        return True

    def _fail_waiters(self) -> None:
        closed = self._closed()
        waiters: list[asyncio.Future[Any]] = [*self._stats_waiters, *self._configure_waiters]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(closed)
        self._stats_waiters.clear()
        self._configure_waiters.clear()

    async def _read_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                try:
                    msg = decode(data)
                except (ProtocolError, KeyError, ValueError, TypeError):
                    continue  # a message this client cannot read: ignore it, as the doc asks
                self._account(msg)
                self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.local_dropped += 1
        self._queue.put_nowait(msg)

    def _account(self, msg: Message) -> None:
        released = 0
        if isinstance(msg, Result):
            res = self.ledger.on_result(msg.frame, msg.dropped)
            released = res.released
            if res.sent_at is not None:
                self.last_latency_ms = (time.monotonic() - res.sent_at) * 1000.0
        elif isinstance(msg, ErrorMsg):
            if msg.fatal:
                self.fatal = msg
            if msg.frame is not None:
                released = self.ledger.on_error(msg.frame).released
            elif msg.code in ("bad_configure", "server_full") and self._configure_waiters:
                self._configure_waiters.pop(0).set_exception(ConfigureRefused(msg))
        elif isinstance(msg, Other) and msg.type == "configured" and self._configure_waiters:
            self._configure_waiters.pop(0).set_result(msg)
        elif isinstance(msg, Grant):
            if msg.fps > 0:
                self.granted_fps = msg.fps
        elif isinstance(msg, Stats):
            quiet = {"pending": msg.pending, "in_flight": msg.in_flight}
            released = self.ledger.on_stats(msg.dropped_total, received=msg.received, **quiet)
            for waiter in self._stats_waiters:
                if not waiter.done():
                    waiter.set_result(msg)
            self._stats_waiters.clear()
        if released:
            self._credit.set()

    async def recv(self) -> Message:
        """The next message; raises SessionClosed once the session is over."""
        msg = await self._queue.get()
        if msg is None:
            self._queue.put_nowait(None)  # stay closed for every later call
            raise self._closed()
        return msg

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except SessionClosed:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Close the WebSocket (code 1000) and stop the reader (and any reconnecting)."""
        self._closing = True
        await self.ws.close()
        if self._reader is not None:
            if not self._up.is_set():
                self._reader.cancel()  # it may be waiting to reconnect
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _open(
    url: str,
    hello: dict[str, Any],
    token: str | None,
    open_timeout: float,
    *,
    reconnect: bool,
    give_up_after: float,
    **options: Any,
) -> Client:
    async def opener() -> ClientConnection:
        return await open_socket(url, token, open_timeout)

    async def start(ws: ClientConnection) -> Client:
        client = Client(ws, hello=hello, opener=opener, open_timeout=open_timeout,
                        reconnect=reconnect, **options)  # fmt: skip
        await client._start()
        return client

    return await first_session(opener, start, retry=reconnect, give_up_after=give_up_after)


def connect(
    url: str = "ws://127.0.0.1:8000",
    *,
    stream: str | None = None,
    token: str | None = None,
    parts: Sequence[str] = ("face", "hands", "pose"),
    world: bool = True,
    format: str = "json",
    rig: bool | dict[str, bool] = False,
    fps: float = DEFAULT_FPS,
    model: str = "full",
    client: str = "holistream-python/1.1",
    max_in_flight: int | None = None,
    credit_timeout: float = 5.0,
    open_timeout: float = 10.0,
    queue: int = 256,
    reconnect: bool = False,
    give_up_after: float = 60.0,
) -> Connecting:
    """A producer session on `/ws` (publishing as `stream` if given), hello sent, ready received.

    `fps` is the rate asked for; `send_frame` keeps to the rate granted (`Client.granted_fps`),
    which follows the server's `grant` messages. `model="lite"` runs holistic with the lite hand
    model (pipeline `holistic_lite`).

    `url` is the server (`ws://host:port`) or the full endpoint URL. `max_in_flight` None: as
    many credits as the server's `ready.limits.max_in_flight`. `reconnect`: replace a lost
    session, and retry the first connection for up to `give_up_after` seconds.
    """
    hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "parts": list(parts)}
    hello |= {"world": world, "format": format, "rig": rig, "fps": fps, "client": client}
    hello["model"] = model
    query = {"stream": stream, "parts": ",".join(parts), "fps": f"{fps:g}", "model": model}
    url = endpoint(url, "/ws", query)
    return Connecting(
        _open(url, hello, token, open_timeout, max_in_flight=max_in_flight,
              credit_timeout=credit_timeout, queue=queue, reconnect=reconnect,
              give_up_after=give_up_after)
    )  # fmt: skip


def subscribe(
    url: str,
    stream: str,
    *,
    token: str | None = None,
    format: str = "json",
    rig: bool | dict[str, bool] = False,
    open_timeout: float = 10.0,
    queue: int = 256,
    reconnect: bool = False,
    give_up_after: float = 60.0,
) -> Connecting:
    """A read-only session on `/ws/subscribe?stream=NAME`: every result of that stream."""
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "format": format, "rig": rig}
    url = endpoint(url, "/ws/subscribe", {"stream": stream})
    return Connecting(
        _open(url, hello, token, open_timeout, max_in_flight=1, credit_timeout=1.0, queue=queue,
              reconnect=reconnect, give_up_after=give_up_after)
    )  # fmt: skip
