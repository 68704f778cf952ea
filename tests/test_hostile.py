"""Hostile clients against one server while a canary session streams throughout.

Every test here is something a client can do on its own: bad bytes, floods, slow reading,
sockets that never finish. None of it may crash a worker, starve or stall the canary, cost
another client memory or a slot, or draw a 5xx. The last test checks the canary and the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import psutil
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed

from tests.canary import Canary
from tests.conftest import ServerProcess, media, start_server
from tests.rawclient import RawSocket, close_code, post_request, status_of, upgrade_request
from tests.wsclient import Conn, connect, is_type

TOKEN = "t0k"
AUTH = f"Bearer {TOKEN}".encode()
FLAGS = ("--workers", "2", "--no-calibrate", "--cpu-overcommit", "20", "--max-sessions", "12",
         "--token", TOKEN, "--token-all", "--hello-timeout-s", "2", "--idle-timeout-s", "3",
         "--header-timeout-s", "2")
STARTED = time.monotonic()


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[ServerProcess, Canary]]:
    srv = start_server(*FLAGS, name="hostile")
    canary = Canary(f"{srv.ws_url}?token={TOKEN}&parts=face", media("astronaut_face.jpg")
                    .read_bytes())
    canary.start()
    yield srv, canary
    canary.stop()
    srv.stop()


TIMELINE: list[tuple[str, float, float]] = []  # (test, started, ended): to place a canary gap


@pytest.fixture(autouse=True)
def _timeline(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    TIMELINE.append((request.node.name, started, time.monotonic()))


def url(srv: ServerProcess, path: str = "/ws", query: str = "") -> str:
    sep = "&" if query else ""
    return f"ws://127.0.0.1:{srv.port}{path}?token={TOKEN}{sep}{query}"


async def session(srv: ServerProcess, **hello: Any) -> Conn:
    return await connect(url(srv, query="parts=face"), hello={"parts": ["face"], **hello})


async def closed_with(conn: Conn, timeout: float = 15.0) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await conn.recv(timeout)
    return conn.ws.close_code


def deep(levels: int = 900) -> str:
    """JSON text nested `levels` deep (orjson parses up to 1024; Python's repr stops near 1000)."""
    return "[" * levels + '"x"' + "]" * levels


def get(srv: ServerProcess, path: str, auth: bool) -> int:
    extra = b"Authorization: " + AUTH + b"\r\n" if auth else b""
    return status_of(srv.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")


# ------------------------------------------------------------------------------ the HTTP edge


def test_dns_rebinding_is_refused_and_the_servers_own_address_is_not(hostile) -> None:
    srv, _ = hostile
    p = srv.port
    evil = f"Origin: http://evil.example:{p}\r\n".encode() + b"Authorization: " + AUTH + b"\r\n"
    for path in ("/ws", "/ws/subscribe?stream=a"):
        assert status_of(p, upgrade_request(path, f"evil.example:{p}", evil)) == 403
    jpeg = media("astronaut_face.jpg").read_bytes()
    request = post_request("/v1/predict?parts=face", jpeg, "image/jpeg", evil)
    request = request.replace(b"Host: 127.0.0.1", f"Host: evil.example:{p}".encode())
    assert status_of(p, request) == 403
    own = f"Origin: http://127.0.0.1:{p}\r\n".encode() + b"Authorization: " + AUTH + b"\r\n"
    assert status_of(p, upgrade_request("/ws", f"127.0.0.1:{p}", own)) == 101


def test_half_sent_requests_are_closed_after_the_header_timeout(hostile) -> None:
    srv, _ = hostile
    socks = []
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    time.sleep(2 + 2.5)
    still_open = 0
    for sock in socks:
        sock.settimeout(0.2)
        try:
            still_open += sock.recv(1) != b""
        except TimeoutError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    assert still_open == 0


def test_header_bytes_and_multipart_junk_get_4xx(hostile) -> None:
    srv, _ = hostile
    p = srv.port
    bad_auth = b"Authorization: Bearer \xff\xfe\x80\r\n"
    assert status_of(p, upgrade_request("/ws", extra=bad_auth)) == 401
    assert status_of(p, upgrade_request("/ws/subscribe?stream=a", extra=bad_auth)) == 401
    assert status_of(p, post_request("/v1/predict", b"x", "image/jpeg", bad_auth)) == 401
    auth = b"Authorization: " + AUTH + b"\r\n"
    for header in (b"Content-Disposition form-data", b'Content-Disposition: form-data; name="a\0"',
                   b"X-Long: " + b"a" * 100_000):
        body = b"--B\r\n" + header + b"\r\n\r\nx\r\n--B--\r\n"
        request = post_request("/v1/predict", body, "multipart/form-data; boundary=B", auth)
        assert status_of(p, request) == 400


def test_path_traversal_finds_nothing(hostile) -> None:
    srv, _ = hostile
    paths = ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
             "/static/..%2f..%2f..%2fetc/passwd", "/js/../../pyproject.toml",
             "/node_modules/../../pyproject.toml", "/static/%252e%252e/server/config.py",
             "//etc/passwd", "/static/....//....//etc/passwd", "/static/\\..\\..\\etc"]
    for path in paths:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        assert status_of(srv.port, request) in (400, 403, 404), path


def test_query_fps_is_validated(hostile) -> None:
    srv, _ = hostile
    auth = b"Authorization: " + AUTH + b"\r\n"
    for fps in ("-1000000", "nan", "1e400", "inf", "0", "abc"):
        assert status_of(srv.port, upgrade_request(f"/ws?fps={fps}", extra=auth)) == 400, fps


def test_token_all_guards_streams_and_metrics(hostile) -> None:
    srv, _ = hostile
    for path in ("/streams", "/metrics"):
        assert (get(srv, path, auth=False), get(srv, path, auth=True)) == (401, 200)


# ------------------------------------------------------------------------ slots and timeouts


def test_sockets_without_hello_hold_no_slot_and_are_closed(hostile) -> None:
    srv, _ = hostile
    auth = b"Authorization: " + AUTH + b"\r\n"
    # More silent sockets than --max-sessions, one only pinging: a real user still gets in.
    raws = [RawSocket.open(srv.port, "/ws", extra=auth) for _ in range(13)]
    assert {r.status for r in raws} == {101}

    async def user() -> dict[str, Any]:
        conn = await session(srv)
        await conn.close()
        return conn.ready

    for _ in range(4):  # pings before the hello deadline do not move it
        raws[0].ping()
        time.sleep(0.3)
    assert asyncio.run(user())["type"] == "ready"
    for raw in raws:
        data, closed = raw.read_all(4)
        assert closed and close_code(data) == 1008 and b"hello_timeout" in data
        raw.close()


async def test_pings_pongs_and_stats_do_not_keep_a_session_open(hostile) -> None:
    srv, _ = hostile
    conn = await connect(url(srv, query="parts=face"), hello={"parts": ["face"]},
                         ping_interval=0.3)
    started = time.monotonic()
    error = None
    while error is None and time.monotonic() - started < 10:
        await conn.send_json({"type": "stats", "id": "poll"})
        with contextlib.suppress(TimeoutError):  # poll every half second until the error
            error = await conn.recv_until(lambda m: is_type(m, "error"), timeout=0.5)
    assert error is not None and (error["code"], error["fatal"]) == ("idle_timeout", True)
    assert 2.5 <= time.monotonic() - started < 9  # the 3 s idle timeout, pings and stats flowing
    assert await closed_with(conn) == 1008


# ----------------------------------------------------------------------------- bad messages


async def test_deep_json_gets_errors_not_internal(hostile) -> None:
    srv, _ = hostile
    jpeg = media("astronaut_face.jpg").read_bytes()
    conn = await session(srv)
    for head in ('{"type": "configure", "parts": ', '{"type": "stats", "id": ', '{"type": ',
                 '{"type": "configure", "fps": '):
        await conn.ws.send(head + deep() + "}")
        error = await conn.recv_until(lambda m: is_type(m, "error"))
        assert error["fatal"] is False and error["code"] != "internal"
    await conn.send_frame(1, jpeg)
    assert (await conn.result())["face"] is not None
    await conn.close()
    for field in ('"parts"', '"protocol"', '"rig"', '"client"'):
        for path in ("/ws", "/ws/subscribe"):
            bad = await connect(url(srv, path, "stream=deep"))
            await bad.ws.send('{"type": "hello", "protocol": 1, ' + field + ": " + deep() + "}")
            assert await closed_with(bad) == 1008
    sub = await connect(url(srv, "/ws/subscribe", "stream=deep"), hello={})
    await sub.ws.send('{"type": "stats", "id": ' + deep() + "}")
    assert (await sub.recv_until(lambda m: is_type(m, "error")))["code"] == "bad_message"
    await sub.close()


async def test_protocol_true_is_not_protocol_1(hostile) -> None:
    srv, _ = hostile
    conn = await connect(url(srv, query="parts=face"))
    await conn.send_json({"type": "hello", "protocol": True, "parts": ["face"]})
    assert (await conn.recv())["code"] == "unsupported_protocol"
    assert await closed_with(conn) == 1008


async def test_a_message_of_exactly_the_limit_is_accepted(hostile) -> None:
    srv, _ = hostile
    conn = await session(srv)
    limit = conn.ready["limits"]["max_message_bytes"]
    junk = b"\xff\xd8\xff" + bytes(limit - 19)  # 16-byte frame header + this = the limit
    await conn.send_frame(7, junk)
    await conn.send_json({"type": "stats", "id": "after"})  # read, counted, and still open
    stats = await conn.recv_until(lambda m: is_type(m, "stats") and m.get("id") == "after")
    assert stats["received"] == 1
    await conn.close()


def test_memory_per_connection_is_bounded_for_a_client_that_never_reads(hostile) -> None:
    srv, _ = hostile
    main = psutil.Process(srv.proc.pid)
    before = main.memory_info().rss
    auth = b"Authorization: " + AUTH + b"\r\n"
    junk_frame = b"\xff\xd8\xff" + bytes(64)
    floods = []
    for _ in range(2):
        raw = RawSocket.open(srv.port, "/ws?parts=face", extra=auth)
        raw.send_text({"type": "hello", "protocol": 1, "parts": ["face"]})
        for i in range(32):
            raw.send_text({"type": "stats", "id": "A" * 4_000_000})
            raw.send_text({"type": "nope" * 1_000_000})
            raw.send_frame(i, junk_frame, i * 33.0)  # activity: never closed as idle
        floods.append(raw)
    time.sleep(1.0)
    grown = (main.memory_info().rss - before) / 2**20
    print(f"main process RSS grew {grown:.1f} MiB for 2 connections flooding unread requests")
    for raw in floods:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        raw.close()  # an abortive close, with replies still queued
    assert grown < 48


# --------------------------------------------------------------------------------- images


def _variants() -> tuple[bytes, bytes, bytes]:
    upright = Image.open(media("astronaut_face.jpg"))
    small = upright.resize((upright.width // 4, upright.height // 4))
    mpo, rotated, plain = io.BytesIO(), io.BytesIO(), io.BytesIO()
    upright.save(mpo, "MPO", save_all=True, append_images=[small])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the pixels are stored sideways
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", exif=exif.tobytes())
    upright.save(plain, "JPEG")
    return plain.getvalue(), mpo.getvalue(), rotated.getvalue()


async def test_mpo_and_exif_rotated_photos_are_tracked_upright(hostile) -> None:
    srv, _ = hostile
    plain, mpo, rotated = _variants()
    results = []
    for image in (plain, mpo, rotated):
        conn = await session(srv)  # a fresh tracker each, so each frame is judged alone
        await conn.send_frame(1, image)
        msg = await conn.recv_until(lambda m: is_type(m, "result") or is_type(m, "error"))
        assert is_type(msg, "result"), msg
        results.append(msg)
        await conn.close()
    base = np.asarray(results[0]["face"]).reshape(-1, 3)[:, :2]
    for other in results[1:]:
        assert (other["width"], other["height"]) == (results[0]["width"], results[0]["height"])
        assert np.abs(np.asarray(other["face"]).reshape(-1, 3)[:, :2] - base).mean() < 0.02


async def test_multipart_file_after_many_fields(hostile) -> None:
    srv, _ = hostile
    form = aiohttp.FormData()
    for i in range(20):
        form.add_field(f"f{i}", "x")
    form.add_field("file", media("astronaut_face.jpg").read_bytes(), filename="a.jpg",
                   content_type="image/jpeg")
    async with aiohttp.ClientSession() as http, http.post(
        f"{srv.url}/v1/predict?parts=face", data=form, headers={"Authorization": AUTH.decode()}
    ) as resp:
        assert resp.status == 200, await resp.text()


# ------------------------------------------------------------------------------ the workers


async def test_timestamp_jumps_are_that_sessions_business(hostile) -> None:
    srv, _ = hostile
    jpeg = media("astronaut_face.jpg").read_bytes()
    pids = srv.worker_pids()
    for _ in range(2):  # a client that reconnects to repeat it
        conn = await session(srv)
        for frame, ts in enumerate((1000.0, 1e16, 1e300, -1e300, 5e15, 2000.0)):
            await conn.send_frame(frame, jpeg, ts)
            msg = await conn.recv_until(lambda m: is_type(m, "result") or is_type(m, "error")
                                        or is_type(m, "warning"))
            assert is_type(msg, "result"), msg  # the clock is clamped: every frame is tracked
            assert msg["ts"] == ts
        await conn.close()
    assert srv.worker_pids() == pids


# ------------------------------------------------------------------------------- the books


def test_the_canary_streamed_throughout_and_the_books_balance(hostile) -> None:
    srv, canary = hostile
    time.sleep(1.0)  # let the last clients' sessions end
    canary.stop()
    gap = canary.max_gap()
    at = canary.max_gap_start()
    during = [name for name, t0, t1 in TIMELINE if t0 <= at + gap and t1 >= at]
    report = {"results": len(canary.arrivals), "sent": canary.sent, "max_gap_s": round(gap, 3),
              "max_gap_during": during, "problems": canary.problems,
              "load_1min": round(os.getloadavg()[0], 1),
              "suite_s": round(time.monotonic() - STARTED, 1)}
    print("canary:", json.dumps(report))
    assert canary.problems == []
    assert gap < 5.0  # measured and reported; the target (< 1 s) is shown by bench/soak.py
    token = f"?token={TOKEN}"
    restarts = [line for line in srv.get("/metrics" + token)[1].decode().splitlines()
                if line.startswith("holistream_worker_restarts_total")]
    assert restarts == ["holistream_worker_restarts_total 0.0"]
    deadline = time.monotonic() + 5
    while json.loads(srv.get("/readyz")[1])["sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(srv.get("/readyz")[1])["sessions"] == 0  # the canary's was the last
    log = srv.log()
    assert "Error handling request" not in log and "Traceback" not in log
