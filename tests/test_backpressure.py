"""Frames faster than inference are dropped (latest wins), counted, and never queue up."""

from __future__ import annotations

import asyncio
import socket
import time

import psutil
import websockets

from tests.conftest import ServerProcess, media
from tests.wsclient import Conn, connect, is_type


async def _settle_and_stats(conn: Conn, results: list[dict]) -> dict:
    """Wait until nothing is pending or in flight, then return the server's books; results
    that arrive meanwhile are still collected."""
    deadline = time.monotonic() + 10
    for request in range(1000):
        await conn.send_json({"type": "stats", "id": request})
        while True:
            msg = await conn.recv(10)
            if is_type(msg, "result"):
                results.append(msg)
            elif is_type(msg, "stats") and msg.get("id") == request:
                break
        if (msg["pending"], msg["in_flight"]) == (0, 0) or time.monotonic() > deadline:
            return msg
        await asyncio.sleep(0.1)
    raise AssertionError("never settled")


async def test_fast_producer_gets_bounded_latency_and_balanced_books(server: ServerProcess) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    # Asking for more than the workers can do: the server, not the grant, is the bottleneck.
    conn = await connect(server.ws_url, hello={"fps": 240})
    sent = 0
    results: list[dict] = []
    errors = 0

    async def reader() -> None:
        nonlocal errors
        while True:
            msg = await conn.recv()
            if is_type(msg, "result"):
                msg["latency_ms"] = time.perf_counter() * 1000 - msg["ts"]
                results.append(msg)
            elif is_type(msg, "error"):
                errors += 1

    task = asyncio.create_task(reader())
    start = time.monotonic()
    while time.monotonic() - start < 4.0:  # ~200 frames/s against ~25 results/s
        await conn.send_frame(sent, jpeg)
        sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stats = await _settle_and_stats(conn, results)
    await conn.close()

    assert sent > 2 * len(results) > 0, (sent, len(results))
    # Latency stays bounded: late results are no slower than early ones (no growing queue).
    late = sorted(r["latency_ms"] for r in results[len(results) // 2 :] if "latency_ms" in r)
    assert late[-1] < 1000, late[-5:]
    assert max(r["timing"]["queue_ms"] for r in results) < 500
    # Server books: every frame received is processed or dropped with a reason.
    assert stats["received"] == sent
    assert stats["received"] == stats["results"] + stats["dropped_total"] + stats["errors"]
    assert stats["dropped"]["superseded"] > 0
    # Client books: results + drops reported in results (+ those after the last result).
    reported = sum(r["dropped"] for r in results)
    assert reported <= stats["dropped_total"]
    assert stats["results"] == len(results) and errors == stats["errors"] == 0
    assert sent == len(results) + stats["dropped_total"]


async def test_client_that_stops_reading_loses_results_not_server_memory(
    server: ServerProcess,
) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # tiny window: stalls quickly
    sock.connect(("127.0.0.1", server.port))
    ws = await websockets.connect(server.ws_url, sock=sock, max_size=None, max_queue=1)
    conn = Conn(ws, {})
    await conn.send_json({"type": "hello", "protocol": 1})
    server_proc = psutil.Process(server.proc.pid)
    rss_before = server_proc.memory_info().rss
    lost_before = server.metric("holistream_frames_dropped_total", 'reason="backpressure"')
    start = time.monotonic()
    sent = 0
    # Some 500 KB of results fit in socket buffers first; push until results are being lost
    # (the server's own counter says so), for at least 3 s and at most 60 s.
    while time.monotonic() - start < 60:
        await conn.send_frame(sent, jpeg)
        sent += 1
        await asyncio.sleep(0.02)
        if sent % 25 == 0 and time.monotonic() - start > 3 and server.metric(
            "holistream_frames_dropped_total", 'reason="backpressure"'
        ) > lost_before + 5:
            break
    rss_after = server_proc.memory_info().rss
    results: list[dict] = []  # now read everything that was buffered on the way
    stats = await _settle_and_stats(conn, results)
    await conn.close()
    assert stats["dropped"]["backpressure"] > 0, stats
    assert len(results) == stats["results"] < stats["processed"]
    assert rss_after - rss_before < 50 << 20
    assert sent == len(results) + stats["dropped_total"] + stats["errors"]
