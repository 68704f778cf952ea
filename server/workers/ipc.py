"""The wire between the pool and its workers: length-prefixed pickles of workers/messages.py.

Only the pool and the worker use this module. The worker side is blocking (one message at a time
is all it needs); the server side is asyncio streams, so the event loop never blocks on a worker.
Every message read is checked to be one of the direction's types, so nothing untyped crosses.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct

from server.workers.messages import FROM_WORKER, TO_WORKER, FromWorker, ToWorker

_LEN = struct.Struct("<I")
MAX_MESSAGE = 256 << 20


class ProtocolError(Exception):
    """The other side sent something that is not one of its messages."""


def pack(msg: ToWorker | FromWorker) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
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


def recv_blocking(sock: socket.socket) -> ToWorker | None:
    """The worker's next request, or None at EOF (the server is gone)."""
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    body = _recv_exact(sock, size)
    if body is None:
        return None
    msg = pickle.loads(body)
    if not isinstance(msg, TO_WORKER):
        raise ProtocolError(f"not a request: {type(msg).__name__}")
    return msg


def send_blocking(sock: socket.socket, msg: FromWorker) -> None:
    sock.sendall(pack(msg))


async def recv_async(reader: asyncio.StreamReader) -> FromWorker:
    """A worker's next message; raises asyncio.IncompleteReadError at EOF."""
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > MAX_MESSAGE:
        raise ProtocolError(f"IPC message of {size} bytes")
    msg = pickle.loads(await reader.readexactly(size))
    if not isinstance(msg, FROM_WORKER):
        raise ProtocolError(f"not a worker message: {type(msg).__name__}")
    return msg
