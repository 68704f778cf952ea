"""Opening a connection: endpoint URLs, HTTP refusals as `Rejected`, and what `connect` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Generator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from holistream.messages import Rejected

if TYPE_CHECKING:
    from holistream.client import Client


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
