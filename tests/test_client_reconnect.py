"""The Python client keeps what docs/protocol.md promises: credits from ready.limits, `configure`
that waits for its answer, and reconnecting with back-off (a 503 retried after Retry-After on its
own, a lost session replaced); and the C# client's reconnecting."""

from __future__ import annotations

import asyncio
import time

import pytest

from holistream import client as hs
from holistream.backoff import Backoff, retry_after
from holistream.messages import ErrorMsg, Rejected, SessionClosed
from tests.conftest import media
from tests.test_clients_lossless import CSharpSubscriber, compile_example


def test_backoff_grows_to_its_cap_with_jitter_and_honours_retry_after() -> None:
    b = Backoff(initial=0.5, maximum=4.0, jitter=0.5)
    delays = [b.next_delay(rng=lambda: 0.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay(rng=lambda: 1.0) == 0.25  # jitter only ever shortens
    assert b.next_delay(retry_after=5.0) == 5.0


def test_what_is_retried() -> None:
    assert retry_after(Rejected(503, "server_full", "", 5.0)) == 5.0
    assert retry_after(Rejected(429, "rate_limited", "", None)) == 0.0
    assert retry_after(Rejected(409, "stream_taken", "", None)) == 0.0  # our old session, maybe
    assert retry_after(Rejected(401, "unauthorized", "", None)) is None
    assert retry_after(SessionClosed(1013, "server_full", None)) == 1.0
    full = ErrorMsg("server_full", "", None, True, retry_after_s=5)
    assert retry_after(SessionClosed(1013, "server_full", full)) == 5.0  # the server's wait
    assert retry_after(SessionClosed(1006, None, None)) == 0.0
    bad = ErrorMsg("unsupported_protocol", "", None, True)
    assert retry_after(SessionClosed(1008, "unsupported_protocol", bad)) is None
    assert retry_after(ConnectionRefusedError()) == 0.0


async def test_503_is_retried_after_retry_after_and_a_lost_session_is_replaced(
    server_factory,
) -> None:
    flags = ("--workers", "1", "--max-sessions", "1", "--retry-after-s", "1",
             "--idle-timeout-s", "2", "--subscriber-wait-s", "1", "--no-calibrate")  # fmt: skip
    server = server_factory(*flags, name="reconnect")
    url = f"ws://127.0.0.1:{server.port}"
    holder = await hs.connect(url, parts=["face"])
    with pytest.raises(Rejected) as refused:  # without reconnect: the refusal, as it came
        await hs.connect(url, parts=["face"])
    assert refused.value.status == 503 and refused.value.retry_after == 1.0

    started = time.monotonic()
    waiting = asyncio.create_task(hs.connect(url, parts=["face"], reconnect=True).__aenter__())
    await asyncio.sleep(0.3)
    assert not waiting.done()  # refused once, waiting Retry-After before it asks again
    await holder.close()
    client = await asyncio.wait_for(waiting, 20)
    assert time.monotonic() - started >= 1.0
    assert server.metric("holistream_sessions_rejected_total") >= 2
    try:
        assert client.ready is not None
        assert client.ledger.limit == client.ready.limits["max_in_flight"] == 2

        configured = await client.configure(parts=["face"], rig=True)
        assert configured.type == "configured" and configured.raw["parts"] == ["face"]
        with pytest.raises(hs.ConfigureRefused, match="bad_configure"):
            await client.configure(parts=["tail"])

        # Sending nothing for idle_timeout_s ends the session; the client makes a new one.
        first = client.ready.session
        async with asyncio.timeout(20):
            while not isinstance(msg := await client.recv(), hs.Reconnected):
                pass
        assert msg.ready.session != first and client.reconnects == 1
        assert client.fatal is None  # the new session's state, not the old one's
        await client.send_frame(media("astronaut_face.jpg").read_bytes())
        async with asyncio.timeout(20):
            while not isinstance(msg := await client.recv(), hs.Result):
                pass
        assert msg.seq == 0
    finally:
        await client.close()

    # The C# client too: a subscriber of a stream nobody publishes is closed after wait_s
    # (stream_not_found) and comes back on its own, again and again, backing off.
    exe = compile_example()
    proc = await asyncio.create_subprocess_exec(
        "mono", str(exe), "--url", url, "--stream", "nobody", "--seconds", "30",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sub = CSharpSubscriber(proc)
    try:
        async with asyncio.timeout(30):
            while sum(line.get("event") == "connected" for line in sub.lines) < 3:
                assert await sub.read_line(), sub.lines
    finally:
        proc.kill()
        await proc.wait()
    codes = [line.get("code") for line in sub.lines if line.get("event") == "error"]
    assert codes[:2] == ["stream_not_found", "stream_not_found"], sub.lines
