"""Length-prefixed pickle messages over a socketpair between the server and its workers.

The worker side is blocking (one message at a time is all it needs); the server side is
asyncio streams, so the event loop never blocks on a worker.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_LEN = struct.Struct("<I")
MAX_MESSAGE = 256 << 20


def pack(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def recv_blocking(sock: socket.socket) -> Any | None:
    """Next message, or None at EOF (the other side is gone)."""
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    body = _recv_exact(sock, size)
    return None if body is None else pickle.loads(body)


def send_blocking(sock: socket.socket, obj: Any) -> None:
    sock.sendall(pack(obj))


async def recv_async(reader: asyncio.StreamReader) -> Any:
    """Next message; raises asyncio.IncompleteReadError at EOF."""
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"IPC message of {size} bytes")
    return pickle.loads(await reader.readexactly(size))
