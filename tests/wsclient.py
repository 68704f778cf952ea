"""A bare protocol test client on the `websockets` library, speaking through the codec.

Deliberately lower level than holistream.client: the tests here need to send malformed input,
push frames without flow control and watch every message the server sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from holistream import protocol


@dataclass
class Conn:
    ws: ClientConnection
    ready: dict[str, Any]
    messages: list[Any] = field(default_factory=list)

    async def send_frame(self, frame_id: int, image: bytes, ts: float | None = None) -> None:
        ts = time.perf_counter() * 1000 if ts is None else ts
        await self.ws.send(protocol.encode_frame(frame_id, ts, image))

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(obj).decode())

    async def recv(self, timeout: float = 30.0) -> Any:
        """The next message: dicts for text, Result objects for binary results."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        msg: Any = (
            protocol.decode_result_binary(data) if isinstance(data, bytes) else orjson.loads(data)
        )
        self.messages.append(msg)
        return msg

    async def recv_until(self, pred: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(deadline - time.monotonic(), 0.01))
            if pred(msg):
                return msg

    async def result(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self.recv_until(lambda m: is_type(m, "result"), timeout)

    def announce_binary(self, size: int, head: bytes = b"\xff\xd8\xff") -> None:
        """Write the start of a binary message that claims `size` bytes, and no more: how a
        server treats an oversized message, without the client racing to write all of it."""
        header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + bytes(4)  # mask = 0
        self.ws.transport.write(header + head)

    async def close(self) -> None:
        await self.ws.close()


def is_type(msg: Any, kind: str) -> bool:
    return isinstance(msg, dict) and msg.get("type") == kind


async def connect(url: str, *, hello: dict[str, Any] | None = None, **kw: Any) -> Conn:
    ws = await websockets.connect(url, max_size=None, open_timeout=20, **kw)
    if hello is None:
        return Conn(ws, {})
    # Protocol 1.1 unless the test says otherwise (e.g. {"protocol": 1} for a 1.0 client).
    first = {"type": "hello", "protocol": protocol.PROTOCOL_VERSION} | hello
    await ws.send(orjson.dumps(first).decode())
    ready = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    assert ready["type"] == "ready", ready
    return Conn(ws, ready)


def parts_of(result: dict[str, Any]) -> dict[str, Any]:
    """Part arrays of a JSON result as (points, stride) numpy arrays (None when not found)."""
    return protocol.decode_result_json(result).parts
