"""Streams across instances: two real servers share a real Redis (`--redis-url`).

A subscriber on instance B must see exactly what the producer on instance A got; a stream name
is unique across the instances; `/streams` anywhere lists every instance's streams; and when
Redis goes away mid-stream the producer goes on, the remote subscriber is told and waits, and
the stream resumes for it when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import websockets

from holistream import protocol
from server.rig import Rig
from tests.conftest import ARTIFACTS, ServerProcess
from tests.test_stream_landmarks import video_jpegs
from tests.test_streams import collect, produce, subscribe
from tests.wsclient import connect, is_type

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"  # scripts/setup --test


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence; restartable on
    the same port, as a Redis that crashed and came back would be."""

    def __init__(self, log_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_path = log_dir / f"redis-{self.port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.log_path.parent)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)

    def ping(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
            ("127.0.0.1", self.port), timeout=1
        ) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, every key is lost (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    ARTIFACTS.mkdir(exist_ok=True)
    server = RedisServer(ARTIFACTS)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def pair(redis: RedisServer, server_factory) -> tuple[ServerProcess, ServerProcess]:
    """Instances A and B on one Redis (server_factory stops them before Redis goes)."""
    flags = ("--workers", "1", "--no-calibrate", "--cpu-overcommit", "20",
             "--redis-url", redis.url)
    return server_factory(*flags, name="redis-a"), server_factory(*flags, name="redis-b")


def streams_of(server: ServerProcess) -> dict[str, dict]:
    status, body = server.get("/streams")
    assert status == 200
    return {s["name"]: s for s in json.loads(body)["streams"]}


def assert_same_result(mine: dict, theirs: dict | protocol.Result) -> None:
    """Same frame, seq and exact landmark values (the binary form carries them exactly)."""
    ref = protocol.decode_result_json(mine)
    other = theirs if isinstance(theirs, protocol.Result) else protocol.decode_result_json(theirs)
    assert (other.frame, other.seq, other.ts) == (ref.frame, ref.seq, ref.ts)
    if isinstance(theirs, dict):  # the same parts, `null` where the producer's are
        assert {p: theirs.get(p, "absent") is None for p in protocol.PART_NAMES} == {
            p: mine.get(p, "absent") is None for p in protocol.PART_NAMES
        }
    for name, arr in ref.parts.items():
        if arr is None:
            assert other.parts.get(name) is None, name
        else:
            np.testing.assert_array_equal(other.parts[name], arr, err_msg=name)


def assert_same_rig(mine: dict, theirs: dict) -> None:
    """The producer's rig and one rebuilt from the float32 binary form, up to their rounding."""
    for key, atol in (("bones", 2e-5), ("expressions", 2e-3), ("confidence", 2e-3)):
        for name, value in mine[key].items():
            np.testing.assert_allclose(theirs[key][name], value, atol=atol, err_msg=name)
    np.testing.assert_allclose(theirs["hips"], mine["hips"], atol=2e-4)
    np.testing.assert_allclose(theirs["head"], mine["head"], atol=2e-2)


async def test_remote_subscribers_get_the_producers_results(pair) -> None:
    a, b = pair
    frames = video_jpegs("messi_pan_640x480.avi", limit=24)
    # The JSON subscriber also asks for the rig: A must start solving it for a subscriber on B.
    as_json = await subscribe(b, "relay", rig=True)
    as_binary = await subscribe(b, "relay", format="binary")
    collectors = [asyncio.create_task(collect(s)) for s in (as_json, as_binary)]
    produced = await produce(a.ws_url + "?stream=relay", frames)
    got_json, got_binary = await asyncio.gather(*collectors)

    for conn in (as_json, as_binary):
        started = conn.messages[0]
        assert is_type(started, "stream_started"), started  # before any result
        assert (started["stream"], started["pipeline"]) == ("relay", "holistic")
        assert is_type(conn.messages[-1], "stream_ended")
    assert [r["frame"] for r in got_json] == [r["frame"] for r in produced] == list(range(24))
    assert [r.frame for r in got_binary] == list(range(24))
    for mine, theirs_json, theirs_binary in zip(produced, got_json, got_binary, strict=True):
        assert_same_result(mine, theirs_json)
        assert_same_result(mine, theirs_binary)
    with_rig = [i for i, r in enumerate(produced) if "rig" in r]
    assert with_rig and with_rig[-1] == 23 and len(with_rig) >= 12, with_rig
    for i in with_rig:
        arrays = got_binary[i].rig_arrays
        assert arrays is not None
        assert_same_rig(produced[i]["rig"], got_json[i]["rig"])
        rebuilt = Rig.from_arrays(arrays.bones, arrays.expressions, arrays.confidence,
                                  arrays.hips, arrays.head).to_json()
        assert_same_rig(produced[i]["rig"], rebuilt)
    for conn in (as_json, as_binary):
        await conn.close()


async def test_a_name_is_unique_and_listed_across_instances(pair) -> None:
    a, b = pair
    waiting = await subscribe(b, "solo")
    producer = await connect(a.ws_url + "?stream=solo", hello={"parts": ["pose"]})
    started = await waiting.recv_until(lambda m: is_type(m, "stream_started"))
    assert started["pipeline"] == "pose"

    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(b.ws_url + "?stream=solo")
    assert refused.value.response.status_code == 409
    assert json.loads(refused.value.response.body)["error"]["code"] == "stream_taken"

    on_a, on_b = streams_of(a)["solo"], streams_of(b)["solo"]
    assert on_b["live"] and on_b["pipeline"] == "pose"
    assert on_b["instance"] == on_a["instance"]  # B lists A's stream as A's
    assert streams_of(b).keys() == streams_of(a).keys() == {"solo"}

    # The end frees the name everywhere: B may publish it now, and A's listing shows B's.
    await producer.close()
    ended = await waiting.recv_until(lambda m: is_type(m, "stream_ended"))
    assert ended["reason"] == "producer_closed"
    again = await connect(b.ws_url + "?stream=solo", hello={"parts": ["pose"]})
    assert again.ready["stream"] == "solo"
    deadline = time.monotonic() + 10  # A learns of B's new producer at its next scan of Redis
    while "solo" not in streams_of(a) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert streams_of(a)["solo"]["instance"] == streams_of(b)["solo"]["instance"] != (
        on_a["instance"]
    )
    await again.close()
    await waiting.close()


async def test_redis_outage_mid_stream(pair, redis: RedisServer) -> None:
    a, b = pair
    jpeg = video_jpegs("messi_pan_640x480.avi", limit=1)[0]
    sub = await subscribe(b, "outage")
    producer = await connect(a.ws_url + "?stream=outage", hello={"parts": ["pose"]})
    results: list[dict] = []

    async def produce_forever() -> None:
        for i in range(100_000):
            await producer.send_frame(i, jpeg)
            results.append(await producer.result())

    feeding = asyncio.create_task(produce_forever())
    before = [await sub.result() for _ in range(3)]

    redis.kill()
    count_at_kill = len(results)
    error = await sub.recv_until(lambda m: is_type(m, "error"), timeout=20)
    assert (error["code"], error["fatal"]) == ("stream_unavailable", False)
    # The producer on A carries on while Redis is down.
    deadline = time.monotonic() + 30
    while len(results) < count_at_kill + 5 and time.monotonic() < deadline and not feeding.done():
        await asyncio.sleep(0.05)
    assert len(results) >= count_at_kill + 5, f"producer stalled: {feeding}"

    redis.start()  # same port, empty: A must claim its stream again, B resubscribe
    resumed: list = []
    after = await sub.recv_until(
        lambda m: resumed.append(m) or is_type(m, "result"), timeout=30
    )
    assert any(is_type(m, "stream_started") for m in resumed), resumed  # "it is back"
    assert after["seq"] > before[-1]["seq"] and after["frame"] > count_at_kill
    assert_same_result(next(r for r in results if r["frame"] == after["frame"]), after)
    assert not any(is_type(m, "error") for m in resumed), resumed  # told only once

    feeding.cancel()
    await asyncio.gather(feeding, return_exceptions=True)
    await producer.close()
    await sub.recv_until(lambda m: is_type(m, "stream_ended"))
    await sub.close()
    assert a.log().count("Redis unavailable") == 1  # logged once per outage, not per result


async def test_simultaneous_producers_on_two_instances_one_wins(redis: RedisServer) -> None:
    """The race a pre-upgrade check cannot see: both instances publish the same name before
    either hears of the other. Two real relays (the server's code without its sockets) on the
    real Redis: exactly one keeps the name, the other's producer is told `stream_taken`, and
    that instance's subscribers then follow the winner through Redis (JSON re-encoded, rig
    included)."""
    from server.sessions.session import Session
    from server.streams.hub import StreamHub, Subscriber
    from server.streams.relay import RedisRelay

    hubs, relays, sessions, subs = [], [], [], []
    for _ in range(2):
        hub = StreamHub()
        relay = RedisRelay(redis.url, hub)
        hub.relay = relay
        await relay.start()
        session = Session(peer="test", stream="race")
        session.configure(protocol.Hello())
        sub = Subscriber("race")
        hub.subscribe(sub)
        hubs.append(hub)
        relays.append(relay)
        sessions.append(session)
        subs.append(sub)
    try:
        for hub, session in zip(hubs, sessions, strict=True):
            hub.publish(session)  # neither has heard of the other yet
        deadline = time.monotonic() + 10
        while sum(h.has_producer("race") for h in hubs) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        winner = next(i for i, h in enumerate(hubs) if h.has_producer("race"))
        loser = 1 - winner
        assert not hubs[loser].has_producer("race")
        told = [m for m in iter(sessions[loser].outbox.pop, None) if isinstance(m, str)]
        assert any(json.loads(m)["code"] == "stream_taken" for m in told), told
        assert not any(isinstance(m, str) for m in iter(sessions[winner].outbox.pop, None))

        # The loser's subscriber: its own producer started and ended, then the winner's started.
        async def next_item(sub: Subscriber) -> tuple[bool, bytes | str]:
            for _ in range(500):
                if (item := sub.pop()) is not None:
                    return item
                await asyncio.sleep(0.02)
            raise TimeoutError("nothing relayed")

        events = [json.loads((await next_item(subs[loser]))[1]) for _ in range(3)]
        assert [e["type"] for e in events] == ["stream_started", "stream_ended", "stream_started"]
        assert events[1]["reason"] == "stream_taken"

        # A result of the winner reaches the loser's JSON subscriber with the same values.
        rig = Rig.rest()
        rig.expressions[:] = 0.25
        arrays = rig.to_arrays()
        face = protocol.round_landmarks(np.linspace(0, 1, 478 * 3).reshape(478, 3))
        sent = protocol.Result(7, 0, 123.5, 0, 640, 480, "holistic", {"face": face, "pose": None},
                               rig_arrays=protocol.RigArrays(arrays.bones, arrays.hips,
                                                             arrays.head, arrays.expressions,
                                                             arrays.confidence))
        relays[winner].result("race", protocol.encode_result_binary(sent))
        is_result, data = await next_item(subs[loser])
        got = json.loads(data)
        assert is_result and (got["frame"], got["ts"]) == (7, 123.5)
        assert {p: got[p] is None for p in protocol.PART_NAMES} == {  # null: tracked, not found
            p: p != "face" for p in protocol.PART_NAMES
        }
        np.testing.assert_array_equal(np.asarray(got["face"], np.float32).reshape(478, 3), face)
        assert got["rig"] == rig.to_json()
    finally:
        for relay in relays:
            await relay.stop()
