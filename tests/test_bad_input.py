"""Every kind of bad input gets its documented error, and the session (and server) carry on."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from holistream import protocol
from tests.conftest import ServerProcess, media
from tests.wsclient import connect, is_type


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny file that declares a 20000×20000 image: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def expect_error(conn, code: str) -> dict:
    msg = await conn.recv_until(lambda m: is_type(m, "error"), timeout=20)
    assert msg["code"] == code, msg
    assert msg["fatal"] is False
    return msg


async def test_each_bad_input_gets_its_error_and_the_session_goes_on(
    server: ServerProcess,
) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    conn = await connect(server.ws_url)
    await conn.send_frame(1, jpeg)
    assert (await expect_error(conn, "hello_required"))["frame"] == 1
    await conn.send_json({"type": "configure", "parts": ["face"]})
    await expect_error(conn, "hello_required")
    await conn.send_json({"type": "hello", "protocol": 1})
    await conn.recv_until(lambda m: is_type(m, "ready"))

    await conn.ws.send("{not json")
    await expect_error(conn, "bad_message")
    await conn.ws.send('["a list"]')
    await expect_error(conn, "bad_message")
    await conn.send_json({"type": "dance"})
    await expect_error(conn, "unknown_type")
    await conn.send_json({"type": "hello", "protocol": 1})
    await expect_error(conn, "duplicate_hello")
    await conn.send_json({"type": "configure", "parts": ["tail"]})
    await expect_error(conn, "bad_configure")
    await conn.ws.send(b"\x00\x01")
    assert "frame" not in await expect_error(conn, "bad_frame")  # no id in 2 bytes
    await conn.ws.send(b"NOPE" + struct.pack("<I", 41) + bytes(16))
    assert (await expect_error(conn, "bad_frame"))["frame"] == 41  # the header's id
    await conn.ws.send(b"HSF1" + struct.pack("<I", 42) + bytes(4))  # cut inside ts
    assert (await expect_error(conn, "bad_frame"))["frame"] == 42
    await conn.ws.send(protocol.encode_frame(2, float("nan"), jpeg))
    assert (await expect_error(conn, "bad_timestamp"))["frame"] == 2
    await conn.send_frame(3, b"GIF89a" + bytes(100))
    assert (await expect_error(conn, "unsupported_image"))["frame"] == 3
    await conn.send_frame(4, jpeg[: len(jpeg) // 2])
    assert (await expect_error(conn, "undecodable"))["frame"] == 4
    await conn.send_frame(5, huge_png())
    assert (await expect_error(conn, "image_too_large"))["frame"] == 5
    await conn.send_frame(6, b"\xff\xd8\xff" + b"garbage" * 10)
    assert (await expect_error(conn, "undecodable"))["frame"] == 6

    # Still alive and correct after all that, and the books include the refused frames.
    await conn.send_frame(7, jpeg)
    result = await conn.result()
    assert result["frame"] == 7 and len(result["face"]) == 1434
    await conn.send_json({"type": "stats", "id": "end"})
    stats = await conn.recv_until(lambda m: is_type(m, "stats") and m.get("id") == "end")
    assert stats["received"] == 10 and stats["errors"] == 9 and stats["results"] == 1
    await conn.close()


@pytest.mark.parametrize(
    ("hello", "code"),
    [({"protocol": 2}, "unsupported_protocol"), ({"protocol": 1, "parts": ["feet"]}, "bad_hello")],
)
async def test_bad_hello_closes_with_1008(server: ServerProcess, hello: dict, code: str) -> None:
    conn = await connect(server.ws_url)
    await conn.send_json({"type": "hello", **hello})
    msg = await conn.recv()
    assert (msg["code"], msg["fatal"]) == (code, True)
    with pytest.raises(ConnectionClosed):
        await conn.recv(10)
    assert conn.ws.close_code == 1008


async def test_oversized_message_closes_1009_and_others_are_unharmed(
    server: ServerProcess,
) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    bystander = await connect(server.ws_url, hello={})
    victim = await connect(server.ws_url, hello={})
    limit = victim.ready["limits"]["max_message_bytes"]
    victim.announce_binary(limit + 10)  # the server closes as soon as it reads the length
    with pytest.raises(ConnectionClosed):
        while True:
            await victim.recv(15)
    assert victim.ws.close_code == 1009
    await bystander.send_frame(1, jpeg)
    assert len((await bystander.result())["face"]) == 1434
    await bystander.close()


async def test_http_refusals_before_upgrade(server_factory) -> None:
    srv = server_factory("--workers", "1", "--token", "s3cret", "--no-calibrate", name="auth")
    with pytest.raises(websockets.InvalidStatus) as no_token:
        await connect(srv.ws_url)
    assert no_token.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as bad_origin:
        await connect(srv.ws_url + "?token=s3cret", origin="https://evil.example")
    assert bad_origin.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus) as bad_name:
        await connect(srv.ws_url + "?token=s3cret&stream=bad%20name")
    assert bad_name.value.response.status_code == 400
    ok = await connect(
        srv.ws_url, hello={}, additional_headers={"Authorization": "Bearer s3cret"},
        origin=f"http://127.0.0.1:{srv.port}",
    )
    assert ok.ready["type"] == "ready"
    await ok.close()


async def test_idle_session_times_out(server_factory) -> None:
    srv = server_factory("--workers", "1", "--idle-timeout-s", "1", "--no-calibrate", name="idle")
    conn = await connect(srv.ws_url, hello={})
    msg = await conn.recv_until(lambda m: is_type(m, "error"), timeout=10)
    assert (msg["code"], msg["fatal"]) == ("idle_timeout", True)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(conn.ws.recv(), 10)
    assert conn.ws.close_code == 1008


async def test_per_address_limits_refuse_with_429(server_factory) -> None:
    srv = server_factory("--workers", "1", "--no-calibrate", "--rate-limit-exempt", "",
                         "--max-sessions-per-address", "1", "--connect-burst-per-address", "3",
                         "--connect-rate-per-address", "0.2", name="limits")
    first = await connect(srv.ws_url, hello={})
    with pytest.raises(websockets.InvalidStatus) as too_many:
        await connect(srv.ws_url)
    assert too_many.value.response.status_code == 429
    assert b"rate_limited" in too_many.value.response.body
    await first.close()
    await asyncio.sleep(0.3)
    accepted = 1  # the refusal above charged no token; the burst of 3 runs out now
    with pytest.raises(websockets.InvalidStatus) as too_fast:
        for _ in range(5):
            conn = await connect(srv.ws_url)
            accepted += 1
            await conn.close()
            await asyncio.sleep(0.1)
    assert accepted == 3
    assert too_fast.value.response.status_code == 429
    assert int(too_fast.value.response.headers["Retry-After"]) >= 1
