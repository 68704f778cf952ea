"""A small asyncio client for holistream protocol v1 (docs/protocol.md), on `websockets`.

    async with subscribe("ws://127.0.0.1:8000", "alice") as sub:
        async for msg in sub:
            if isinstance(msg, Result) and msg.parts.get("pose") is not None:
                print(msg.frame, msg.parts["pose"][0, :2])

A producer sends frames with `await client.send_frame(jpeg_bytes)`; the call waits until the
server's grant allows the next frame (`granted_fps`, from `ready` and later `grant` messages:
frames beyond it would only be dropped as `over_grant`) and while `max_in_flight` frames are
unanswered, so a fast sender cannot queue up stale frames (credits come
back on a result, an error naming the frame, or drops the server reports; a safety timeout frees a
credit nobody answers). A background task reads the socket, so credits return even when the
application is slow to iterate; messages wait for it in a bounded queue (the oldest is discarded
when full, counted in `local_dropped`: a real-time consumer wants the newest).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Generator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from holistream.credits import Ledger
from holistream.messages import (
    ErrorMsg,
    Grant,
    HolistreamError,
    Message,
    Other,
    Ready,
    Rejected,
    SessionClosed,
    Stats,
    StreamEvent,
    WarningMsg,
    decode,
    typed,
)
from holistream.protocol import (
    DEFAULT_FPS,
    PROTOCOL_VERSION,
    ProtocolError,
    Result,
    dumps,
    encode_frame,
    parse_message,
)

__all__ = [
    "Client", "ErrorMsg", "Grant", "HolistreamError", "Other", "Ready", "Rejected", "Result",
    "SessionClosed", "Stats", "StreamEvent", "WarningMsg", "connect", "subscribe",
]  # fmt: skip


def endpoint(url: str, path: str, query: Mapping[str, str | None]) -> str:
    """`url` as given, or with `path` when it names only the server; plus the query."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws:// or wss://)")
    new_path = parts.path if parts.path not in ("", "/") else path
    pairs = [(k, v) for k, v in query.items() if v is not None]
    q = "&".join(x for x in (parts.query, urlencode(pairs)) if x)
    return urlunsplit((parts.scheme, parts.netloc, new_path, q, ""))


def _rejected(exc: InvalidStatus) -> Rejected:
    response = exc.response
    code, message = "http_error", ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        err = orjson.loads(response.body or b"{}")["error"]
        code, message = str(err["code"]), str(err["message"])
    retry: float | None = None
    with contextlib.suppress(TypeError, ValueError):
        retry = float(response.headers.get("Retry-After", ""))
    return Rejected(response.status_code, code, message, retry)


class Client:
    """One holistream session (producer or subscriber). Create it with `connect`/`subscribe`."""

    def __init__(
        self, ws: ClientConnection, *, max_in_flight: int, credit_timeout: float, queue: int
    ) -> None:
        self.ws = ws
        self.ready: Ready | None = None
        self.ledger = Ledger(max_in_flight)
        self.credit_timeout = credit_timeout
        self.local_dropped = 0
        self.last_latency_ms: float | None = None  # send -> result of the latest matched frame
        self.fatal: ErrorMsg | None = None
        self.granted_fps: float | None = None  # None: no limit (subscribers)
        self._next_send = 0.0  # monotonic time the grant allows the next frame at
        self._next_id = 0
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(max(1, queue))
        self._credit = asyncio.Event()
        self._stats_waiters: list[asyncio.Future[Stats]] = []
        self._reader: asyncio.Task[None] | None = None

    async def _start(self, hello: dict[str, Any], timeout: float) -> None:
        await self.ws.send(dumps(hello))
        try:
            async with asyncio.timeout(timeout):
                while (msg := parse_message(await self.ws.recv()))["type"] != "ready":
                    if msg["type"] == "error" and msg.get("fatal"):
                        self.fatal = typed(msg)
        except ConnectionClosed:
            raise self._closed() from None
        self.ready = typed(msg)
        if self.ready is not None and self.ready.fps_granted:
            self.granted_fps = float(self.ready.fps_granted)
        self._reader = asyncio.create_task(self._read_loop(), name="holistream-client-reader")

    # ------------------------------------------------------------------ sending

    @property
    def in_flight(self) -> int:
        return self.ledger.in_flight

    async def send_frame(self, image: bytes, ts: float | None = None) -> int:
        """Send one encoded image (JPEG/PNG/WebP); waits for the grant's next slot and for a
        credit first. Returns its id."""
        if self.granted_fps:
            delay = self._next_send - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        while not self.ledger.has_credit():
            if self._reader is None or self._reader.done():
                raise self._closed()
            now = time.monotonic()
            if self.ledger.expire(now, self.credit_timeout):
                break
            oldest = self.ledger.oldest_pending_at()
            wait = self.credit_timeout - (now - oldest) if oldest is not None else 0.05
            self._credit.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, wait)):
                    await self._credit.wait()
        frame_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        now = time.monotonic()
        if self.granted_fps:
            # The next slot one interval on; time lost waiting is not made up in a burst.
            interval = 1 / self.granted_fps
            self._next_send = max(self._next_send + interval, now + 0.5 * interval)
        self.ledger.add(frame_id, now)
        try:
            await self.ws.send(encode_frame(frame_id, now * 1000.0 if ts is None else ts, image))
        except ConnectionClosed:
            raise self._closed() from None
        return frame_id

    async def stats(self, timeout: float = 5.0) -> Stats:
        """Ask for the session's counters; returns the next `stats` message."""
        if self._reader is None or self._reader.done():
            raise self._closed()
        waiter: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._stats_waiters.append(waiter)
        try:
            await self.ws.send(dumps({"type": "stats"}))
        except ConnectionClosed:
            raise self._closed() from None
        async with asyncio.timeout(timeout):
            return await waiter

    async def configure(self, **options: Any) -> None:
        """Change what is tracked (`parts`, `world`, `rig`, `fps`); the reply is an `Other`."""
        await self.ws.send(dumps({"type": "configure", **options}))

    def _closed(self) -> SessionClosed:
        return SessionClosed(self.ws.close_code, self.ws.close_reason, self.fatal)

    # ------------------------------------------------------------------ receiving

    async def _read_loop(self) -> None:
        try:
            async for data in self.ws:
                try:
                    msg = decode(data)
                except (ProtocolError, KeyError, ValueError, TypeError):
                    continue  # a message this client cannot read: ignore it, as v1 asks
                self._account(msg)
                if self._queue.full():
                    self._queue.get_nowait()
                    self.local_dropped += 1
                self._queue.put_nowait(msg)
        except ConnectionClosed:
            pass
        finally:
            self._credit.set()
            for waiter in self._stats_waiters:
                if not waiter.done():
                    waiter.set_exception(self._closed())
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

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
        """Close the WebSocket (code 1000) and stop the reader."""
        await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Connecting:
    """What `connect`/`subscribe` return: `await` it, or use it with `async with`."""

    def __init__(self, factory: Awaitable[Client]) -> None:
        self._factory = factory
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._factory.__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._factory
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()


async def _open(
    url: str, hello: dict[str, Any], token: str | None, open_timeout: float, **options: Any
) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await ws_connect(
            url, additional_headers=headers, open_timeout=open_timeout, max_size=16 * 2**20
        )
    except InvalidStatus as exc:
        raise _rejected(exc) from None
    client = Client(ws, **options)
    try:
        await client._start(hello, open_timeout)
    except BaseException:
        await ws.close()
        raise
    return client


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
    client: str = "holistream-python/0.1",
    max_in_flight: int = 2,
    credit_timeout: float = 5.0,
    open_timeout: float = 10.0,
    queue: int = 256,
) -> _Connecting:
    """A producer session on `/ws` (publishing as `stream` if given), hello sent, ready received.

    `fps` is the rate asked for; `send_frame` keeps to the rate granted (`Client.granted_fps`),
    which follows the server's `grant` messages. `model="lite"` runs holistic with the lite hand
    model (pipeline `holistic_lite`).

    `url` is the server (`ws://host:port`) or the full endpoint URL.
    """
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "parts": list(parts)}
    hello |= {"world": world, "format": format, "rig": rig, "fps": fps, "client": client}
    hello["model"] = model
    query = {"stream": stream, "parts": ",".join(parts), "fps": f"{fps:g}", "model": model}
    url = endpoint(url, "/ws", query)
    return _Connecting(
        _open(url, hello, token, open_timeout, max_in_flight=max_in_flight,
              credit_timeout=credit_timeout, queue=queue)
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
) -> _Connecting:
    """A read-only session on `/ws/subscribe?stream=NAME`: every result of that stream."""
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "format": format, "rig": rig}
    url = endpoint(url, "/ws/subscribe", {"stream": stream})
    return _Connecting(
        _open(url, hello, token, open_timeout, max_in_flight=1, credit_timeout=1.0, queue=queue)
    )
