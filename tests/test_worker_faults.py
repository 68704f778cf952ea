"""Worker faults that clients feel: a session opened while its worker is being replaced, and a
worker that stops answering without dying (SIGSTOP). Each test has a server of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from tests.conftest import media
from tests.wsclient import connect, is_type


async def test_sessions_opened_while_a_worker_restarts_get_ready_and_leave_no_trace(
    server_factory,
) -> None:
    srv = server_factory("--workers", "1", "--no-calibrate", "--cpu-overcommit", "20",
                         name="restart-open")
    [pid] = srv.worker_pids()
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    url = srv.ws_url + "?parts=face&fps=1"
    conns = await asyncio.wait_for(
        asyncio.gather(*(connect(url, hello={"parts": ["face"], "fps": 1}) for _ in range(3))),
        timeout=25,
    )
    jpeg = media("astronaut_face.jpg").read_bytes()
    for i, conn in enumerate(conns):
        await conn.send_frame(i, jpeg)
        assert (await conn.result())["face"] is not None
    for conn in conns:
        await conn.close()
    deadline = time.monotonic() + 5
    while srv.readyz()["sessions"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert srv.readyz()["sessions"] == 0
    assert srv.metric("holistream_sessions") == 0


async def test_a_stopped_worker_is_replaced_and_its_sessions_warned(server_factory) -> None:
    srv = server_factory("--workers", "1", "--no-calibrate", "--worker-timeout-s", "2",
                         name="hung-worker")
    jpeg = media("astronaut_face.jpg").read_bytes()
    conn = await connect(srv.ws_url + "?parts=face", hello={"parts": ["face"]})
    await conn.send_frame(0, jpeg)
    await conn.result()
    [pid] = srv.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        frame = 1
        warning = None
        while warning is None and time.monotonic() - stopped_at < 40:
            await conn.send_frame(frame, jpeg)
            frame += 1
            msg = await conn.recv_until(lambda m: is_type(m, "warning") or is_type(m, "result"),
                                        timeout=40)
            warning = msg if is_type(msg, "warning") else None
        assert warning is not None and warning["code"] == "worker_restarted"
        # The replacement takes the watchdog's 2 s plus a process start (~1 s on a quiet box).
        print(f"warned {time.monotonic() - stopped_at:.1f} s after the worker stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):  # replaced: it is gone already
            os.kill(pid, signal.SIGKILL)
    await conn.send_frame(frame, jpeg)
    assert (await conn.result())["face"] is not None
    assert srv.worker_pids() != [pid]
    assert srv.metric("holistream_worker_restarts_total") == 1
    await conn.close()
