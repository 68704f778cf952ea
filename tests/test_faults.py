"""Faults: a killed worker, a full server, shutdown, a vanished server process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import media
from tests.wsclient import connect, is_type


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
            return True
        time.sleep(0.1)
    return False


async def test_killed_worker_is_replaced_and_sessions_go_on(server_factory) -> None:
    srv = server_factory("--workers", "1", "--no-calibrate", name="kill-worker")
    jpeg = media("messi5.jpg").read_bytes()
    conn = await connect(srv.ws_url, hello={})
    await conn.send_frame(0, jpeg)
    await conn.result()
    [old_pid] = srv.worker_pids()
    frame = 1
    await conn.send_frame(frame, jpeg)
    os.kill(old_pid, signal.SIGKILL)
    warning = await conn.recv_until(lambda m: is_type(m, "warning"), timeout=30)
    assert warning["code"] == "worker_restarted"
    # The session goes on with a fresh landmarker, on a new worker process.
    for frame in range(2, 5):
        await conn.send_frame(frame, jpeg)
        result = await conn.result()
        assert len(result["face"]) == 1434
    [new_pid] = srv.worker_pids()
    assert new_pid != old_pid
    assert srv.metric("holistream_worker_restarts_total") == 1
    await conn.send_json({"type": "stats", "id": 1})
    stats = await conn.recv_until(lambda m: is_type(m, "stats") and m.get("id") == 1)
    assert stats["received"] == stats["results"] + stats["dropped_total"] + stats["errors"]
    await conn.close()


async def test_session_cap_refuses_with_503_then_1013(server_factory) -> None:
    srv = server_factory("--workers", "1", "--max-sessions", "1", "--no-calibrate", name="cap")
    first = await connect(srv.ws_url, hello={})
    with pytest.raises(websockets.InvalidStatus) as full:
        await connect(srv.ws_url)
    response = full.value.response
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert b"server_full" in response.body
    await first.close()
    await asyncio.sleep(0.3)
    # After the upgrade: priced as face-only, then asks for holistic which does not fit the CPU.
    tight = server_factory("--workers", "1", "--cpu-overcommit", "0.2", "--no-calibrate",
                           name="cap-cpu")
    conn = await connect(tight.ws_url + "?parts=face")
    await conn.send_json({"type": "hello", "protocol": 1, "fps": 30})
    msg = await conn.recv()
    assert (msg["type"], msg["code"], msg["fatal"]) == ("error", "server_full", True)
    with pytest.raises(ConnectionClosed):
        await conn.recv(10)
    assert conn.ws.close_code == 1013
    assert tight.metric("holistream_sessions_rejected_total") >= 1


async def test_graceful_shutdown_closes_1001_and_leaves_no_process(server_factory) -> None:
    srv = server_factory("--workers", "2", "--no-calibrate", name="shutdown")
    workers = srv.worker_pids()
    conn = await connect(srv.ws_url, hello={})
    await conn.send_frame(0, media("messi5.jpg").read_bytes())
    await conn.result()
    srv.proc.send_signal(signal.SIGTERM)
    msg = await conn.recv_until(lambda m: is_type(m, "error"), timeout=20)
    assert (msg["code"], msg["fatal"]) == ("shutting_down", True)
    with pytest.raises(ConnectionClosed):
        await conn.recv(10)
    assert conn.ws.close_code == 1001
    assert await asyncio.to_thread(srv.proc.wait, 20) == 0
    assert _gone(workers)


async def test_sessions_wait_for_a_warm_server(server_factory) -> None:
    srv = server_factory("--workers", "1", name="warming", ready=False)
    deadline = time.monotonic() + 60
    while not srv.port and time.monotonic() < deadline:
        match = re.search(r"listening on http://\S+:(\d+)", srv.log())
        srv.port = int(match.group(1)) if match else 0
        await asyncio.sleep(0.02)
    if srv.get("/readyz")[0] == 200:
        pytest.skip("the server warmed up before the test could connect")
    with pytest.raises(websockets.InvalidStatus) as early:
        await connect(srv.ws_url)
    assert early.value.response.status_code == 503
    assert b"warming_up" in early.value.response.body
    srv.wait_ready()
    conn = await connect(srv.ws_url, hello={})
    assert conn.ready["type"] == "ready"
    await conn.close()


async def test_workers_exit_when_the_server_process_is_killed(server_factory) -> None:
    srv = server_factory("--workers", "2", "--no-calibrate", name="orphans")
    workers = srv.worker_pids()
    srv.proc.kill()
    srv.proc.wait(10)
    assert await asyncio.to_thread(_gone, workers)
