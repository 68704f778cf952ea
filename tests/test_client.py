"""holistream.client against a real server: landmarks, credit flow, subscribers, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from holistream.client import (
    ErrorMsg,
    Rejected,
    Result,
    SessionClosed,
    Stats,
    StreamEvent,
    connect,
    subscribe,
)
from tests.conftest import ROOT, ServerProcess, media

MESSI = media("messi5.jpg").read_bytes()
EXPECTED = {"face": 478, "pose": 33, "left_hand": 21, "right_hand": 21}


def base(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def results(client_iter: object, n: int, timeout: float = 60.0) -> list[Result]:
    out: list[Result] = []
    async with asyncio.timeout(timeout):
        async for msg in client_iter:  # type: ignore[attr-defined]
            if isinstance(msg, Result):
                out.append(msg)
                if len(out) == n:
                    break
            assert not isinstance(msg, ErrorMsg), msg
    return out


@pytest.mark.parametrize("fmt", ["json", "binary"])
async def test_producer_gets_full_landmarks(server: ServerProcess, fmt: str) -> None:
    async with connect(base(server), format=fmt, max_in_flight=1) as client:
        assert client.ready is not None and client.ready.role == "producer"
        assert client.ready.format == fmt and client.ready.pipeline == "holistic"
        ids = [await client.send_frame(MESSI) for _ in range(2)]
        got = await results(client, 2)
    assert [r.frame for r in got] == ids
    for r in got:
        assert (r.width, r.height) == (548, 342)
        for part, points in EXPECTED.items():
            arr = r.parts[part]
            assert arr is not None and arr.shape[0] == points, part
        assert r.timing.total_ms > 0
    assert client.ws.close_code == 1000  # `async with` closed it cleanly


async def test_credit_flow_never_exceeds_the_limit(server: ServerProcess) -> None:
    """With 2 in flight the server holds at most one frame in inference and one waiting, so a
    correct credit flow means no frame is ever superseded and every frame gets its result."""
    n, limit = 12, 2
    async with connect(base(server), parts=["pose"], max_in_flight=limit) as client:
        reader = asyncio.create_task(results(client, n))
        peak = 0
        for _ in range(n):
            await client.send_frame(MESSI)
            peak = max(peak, client.in_flight)
            assert client.in_flight <= limit
        got = await reader
        stats = await client.stats()
    assert peak == limit  # the limit was reached, so the waiting was real
    assert [r.frame for r in got] == list(range(n))
    assert isinstance(stats, Stats) and stats.received == n and stats.results == n
    assert stats.dropped_total == 0 and sum(r.dropped for r in got) == 0
    assert client.ledger.outstanding == 0 and client.ledger.unmatched == 0


async def test_subscriber_sees_the_stream_and_the_example_runs(server: ServerProcess) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    async with connect(base(server), stream=name, parts=["pose", "hands"]) as producer:
        example = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "subscribe_print.py"), "--url",
             base(server), "--stream", name, "--count", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            try:
                sub_cm = await subscribe(base(server), name)
            except Rejected as exc:
                if exc.status == 404:
                    pytest.skip("this server has no /ws/subscribe yet")
                raise
            async with sub_cm as sub:
                assert sub.ready is not None and sub.ready.role == "subscriber"
                seen: list[Result] = []
                events: list[StreamEvent] = []
                async with asyncio.timeout(60):
                    while len(seen) < 3 or example.poll() is None:
                        await producer.send_frame(MESSI)
                        msg = await sub.recv()
                        while not isinstance(msg, Result):
                            if isinstance(msg, StreamEvent):
                                events.append(msg)
                            msg = await sub.recv()
                        seen.append(msg)
                        await asyncio.sleep(0.05)
            out, _ = example.communicate(timeout=30)
        finally:
            if example.poll() is None:
                example.kill()
                example.wait()
    assert all(r.parts.get("pose") is not None for r in seen)
    assert "face" not in seen[0].parts  # only what the producer asked for
    assert [r.seq for r in seen] == sorted(r.seq for r in seen)
    assert all(e.stream == name for e in events)
    assert example.returncode == 0, out
    lines = [line for line in out.splitlines() if line.startswith("seq")]
    assert len(lines) == 2 and "head" in lines[0] and "wrists" in lines[0], out


async def test_refusals_are_typed(server: ServerProcess) -> None:
    with pytest.raises(Rejected) as refused:
        await connect(base(server), parts=["feet"])  # refused before the upgrade
    assert refused.value.status == 400 and refused.value.code == "bad_request"
    with pytest.raises(SessionClosed) as closed:
        await connect(base(server), format="xml")  # a fatal error answers the hello
    assert closed.value.code == 1008
    assert closed.value.error is not None and closed.value.error.code == "bad_hello"
