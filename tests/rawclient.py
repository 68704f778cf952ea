"""Raw sockets for hostile tests: HTTP requests and WebSocket frames written byte by byte, so a
test can send what no well-behaved library would (half a request, bad header bytes, a flood it
never reads) and see exactly what the server answers.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import orjson

from holistream import protocol


def status_of(port: int, request: bytes, timeout: float = 10.0) -> int:
    """Send one raw HTTP request; the status code of the answer (0: closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return 0
            data += chunk
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def upgrade_request(path: str, host: str = "127.0.0.1", extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\n".encode()
        + b"Sec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n"
    )


def post_request(path: str, body: bytes, ctype: str, extra: bytes = b"") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (mask key zero: the payload goes as is)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + bytes(4) + payload


@dataclass
class RawSocket:
    """A WebSocket that writes and, unless asked, never reads: the slowest reader there is."""

    sock: socket.socket
    status: int
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, port: int, path: str, *, rcvbuf: int = 4096, extra: bytes = b"") -> RawSocket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(upgrade_request(path, extra=extra))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                break
            head += chunk
        status = int(head.split()[1]) if head.count(b" ") else 0
        return cls(sock, status)

    def send_text(self, obj: object) -> None:
        data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        self.sock.sendall(ws_frame(data, 0x1))
        self.sent += 1

    def send_frame(self, frame_id: int, image: bytes, ts: float) -> None:
        self.sock.sendall(ws_frame(protocol.encode_frame(frame_id, ts, image), 0x2))

    def ping(self) -> None:
        self.sock.sendall(ws_frame(b"hi", 0x9))

    def read_all(self, timeout: float) -> tuple[bytes, bool]:
        """Read until the server closes the TCP connection or `timeout`; (data, closed)."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return data, True
            if not chunk:
                return data, True
            data += chunk
        return data, False

    def close(self) -> None:
        self.sock.close()


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in a stream of unmasked server frames."""
    i = 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            size = struct.unpack_from("!H", data, i)[0]
            i += 2
        elif size == 127:
            size = struct.unpack_from("!Q", data, i)[0]
            i += 8
        if opcode == 0x8 and size >= 2:
            return int(struct.unpack_from("!H", data, i)[0])
        i += size
    return None
