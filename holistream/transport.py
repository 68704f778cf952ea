"""Opening a connection: endpoint URLs, HTTP refusals as `Rejected`, the first session (retried
with back-off when asked), the next one after a session is lost, and what `connect` returns."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from holistream.backoff import Backoff, retry_after
from holistream.messages import Rejected, SessionClosed

if TYPE_CHECKING:
    from holistream.client import Client

T = TypeVar("T")
# What a new attempt may cure: a refusal with Retry-After, a session closed early, the network.
RETRYABLE = (Rejected, SessionClosed, OSError, TimeoutError, InvalidHandshake)


def endpoint(url: str, path: str, query: Mapping[str, str | None]) -> str:
    """`url` as given, or with `path` when it names only the server; plus the query."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws:// or wss://)")
    new_path = parts.path if parts.path not in ("", "/") else path
    pairs = [(k, v) for k, v in query.items() if v is not None]
    q = "&".join(x for x in (parts.query, urlencode(pairs)) if x)
    return urlunsplit((parts.scheme, parts.netloc, new_path, q, ""))


def rejected(exc: InvalidStatus) -> Rejected:
    response = exc.response
    code, message = "http_error", ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        err = orjson.loads(response.body or b"{}")["error"]
        code, message = str(err["code"]), str(err["message"])
    retry: float | None = None
    with contextlib.suppress(TypeError, ValueError):
        retry = float(response.headers.get("Retry-After", ""))
    return Rejected(response.status_code, code, message, retry)


class Connecting:
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


async def open_socket(url: str, token: str | None, open_timeout: float) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return await ws_connect(
            url, additional_headers=headers, open_timeout=open_timeout, max_size=16 * 2**20
        )
    except InvalidStatus as exc:
        raise rejected(exc) from None


async def first_session(
    opener: Callable[[], Awaitable[ClientConnection]],
    start: Callable[[ClientConnection], Awaitable[T]],
    *,
    retry: bool,
    give_up_after: float,
) -> T:
    """`start` a session on a new connection; with `retry`, failures worth retrying are tried
    again with back-off (at least Retry-After) for up to `give_up_after` seconds."""
    backoff, deadline = Backoff(), time.monotonic() + give_up_after
    while True:
        ws: ClientConnection | None = None
        try:
            ws = await opener()
            return await start(ws)
        except RETRYABLE as exc:
            if ws is not None:
                await ws.close()
            wait = retry_after(exc) if retry else None
            delay = None if wait is None else backoff.next_delay(wait)
            if delay is None or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
        except BaseException:
            if ws is not None:
                await ws.close()
            raise


async def next_session(
    failure: BaseException, attempt: Callable[[], Awaitable[None]], closing: Callable[[], bool]
) -> bool:
    """After a lost session (`failure`): `attempt` a new one with back-off (at least
    Retry-After) until it succeeds (True), a failure is not worth retrying or `closing` (False)."""
    backoff = Backoff()
    while not closing():
        wait = retry_after(failure)
        if wait is None:
            return False
        await asyncio.sleep(backoff.next_delay(wait))
        try:
            await attempt()
        except RETRYABLE as exc:
            failure = exc
            continue
        return True
    return False
