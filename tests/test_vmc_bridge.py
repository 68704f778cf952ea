"""`holistream vmc`: a stream's rig through a real server and the bridge to a real python-osc UDP
server on 127.0.0.1 — one bundle per result, in VMC order, at the stream's rate — and what it does
when the stream, the producer, the receiver or the server is missing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_server import BlockingOSCUDPServer

from holistream import protocol
from holistream.client import ErrorMsg, Rejected
from holistream.rig import quat
from holistream.rig.neutral import neutral_rig
from holistream.rig.skeleton import BONES, EXPRESSIONS, PARTS, Rig, mirror_rig
from holistream.vmc.bridge import (
    Backoff,
    BridgeConfig,
    VmcBridge,
    close_outcome,
    error_outcome,
    rig_of,
)
from holistream.vmc.cli import add_arguments, config_from_args, parse_target
from tests.conftest import HOLISTREAM, ServerProcess, media
from tests.test_stream_landmarks import video_jpegs
from tests.wsclient import Conn, connect

JPEG = media("messi5.jpg").read_bytes()


# ----------------------------------------------------------------------------- helpers


class OscReceiver:
    """A python-osc UDP server on 127.0.0.1 keeping every datagram with its arrival time:
    `packets` those whose /VMC/Ext/OK says tracking (one per result), `lost` those that say
    tracking is lost (the bridge easing to neutral, then holding it).

    BlockingOSCUDPServer handles datagrams one at a time in arrival order, which the tests compare
    with the order of the producer's results."""

    def __init__(self, port: int = 0) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.lost: list[tuple[float, bytes]] = []
        receiver = self

        class Recording(Dispatcher):
            def call_handlers_for_packet(self, data: bytes, client_address: tuple) -> list:
                ok = next(iter(OscBundle(bytes(data))))
                kept = receiver.packets if ok.params[-1] == 1 else receiver.lost
                kept.append((time.monotonic(), bytes(data)))
                return super().call_handlers_for_packet(data, client_address)

        dispatcher = Recording()
        dispatcher.set_default_handler(lambda address, *args: None)
        self.server = BlockingOSCUDPServer(("127.0.0.1", port), dispatcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def bundles(self) -> list[OscBundle]:
        return [OscBundle(data) for _, data in self.packets]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def osc_receiver(port: int = 0) -> Iterator[OscReceiver]:
    receiver = OscReceiver(port)
    try:
        yield receiver
    finally:
        receiver.close()


@contextlib.asynccontextmanager
async def running(config: BridgeConfig) -> AsyncIterator[VmcBridge]:
    """A bridge task for the block; stopped (and checked to stop cleanly) at its end."""
    bridge = VmcBridge(config)
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        bridge.stop()
        code = await asyncio.wait_for(task, 15)
        assert code == 0 and bridge.count("stopped") == 1


async def until(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def produce(server: ServerProcess, name: str, count: int,
                  frames: list[bytes] | None = None) -> list[tuple[float, dict]]:
    """A producer on `name` sending `count` frames one after another: (arrival, result)."""
    conn = await connect(server.ws_url + f"?stream={name}", hello={"fps": 30})
    try:
        return [await _one(conn, i, (frames or [JPEG])[i % len(frames or [JPEG])])
                for i in range(count)]
    finally:
        await conn.close()


async def _one(conn: Conn, i: int, jpeg: bytes) -> tuple[float, dict]:
    await conn.send_frame(i, jpeg, ts=1000.0 + i * 1000 / 30)
    result = await conn.result(60)
    return time.monotonic(), result


def config(server_port: int, stream: str, udp_port: int, **kw: object) -> BridgeConfig:
    options: dict = {"backoff_s": 0.1, "backoff_max_s": 0.5, "status_interval_s": 0.3,
                     "max_retries": 50, "open_timeout_s": 10.0} | kw
    return BridgeConfig(stream, url=f"ws://127.0.0.1:{server_port}", port=udp_port, **options)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- pure parts


def test_target_parsing() -> None:
    assert parse_target("127.0.0.1:39540") == ("127.0.0.1", 39540)
    assert parse_target("localhost") == ("localhost", 39539)
    assert parse_target(":9000") == ("127.0.0.1", 9000)
    assert parse_target("[::1]:9000") == ("::1", 9000)
    assert parse_target("[::1]") == ("::1", 39539)
    for bad in ("host:0", "host:65536", "host:port", "::1:9000", "a:b:c"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_outcomes_retry_what_retrying_can_fix() -> None:
    url = "ws://127.0.0.1:1"
    not_found = close_outcome(1008, ErrorMsg("stream_not_found", "no producer for 6 s", None, True))
    assert not_found.kind == "not_found" and not_found.retry
    shutdown = close_outcome(1001, ErrorMsg("shutting_down", "the server is stopping", None, True))
    assert shutdown.kind == "server_lost" and shutdown.retry
    assert not close_outcome(1008, ErrorMsg("bad_hello", "no", None, True)).retry
    lost = close_outcome(1006, None)
    assert lost.kind == "server_lost" and lost.retry and "1006" in lost.message
    unauthorized = error_outcome(Rejected(401, "unauthorized", "bad token", None), url)
    assert not unauthorized.retry and "--token" in unauthorized.message
    assert not error_outcome(Rejected(400, "bad_request", "bad stream", None), url).retry
    full = error_outcome(Rejected(503, "server_full", "full", 7.0), url)
    assert full.retry and full.delay == 7.0
    refused = error_outcome(ConnectionRefusedError(111, "Connection refused"), url)
    assert refused.kind == "unreachable" and refused.retry and url in refused.message
    assert "refused" in refused.message
    assert error_outcome(TimeoutError(), url).retry


def test_rig_from_a_binary_result_round_trips_and_mirrors() -> None:
    rng = np.random.default_rng(5)
    rig = Rig.rest()
    rig.bones = quat.normalize(rng.normal(size=rig.bones.shape))
    rig.expressions = rng.random(len(EXPRESSIONS))
    rig.hips_position = np.array([0.1, -0.2, 0.3])
    rig.head = np.array([10.0, -5.0, 3.0])
    rig.confidence = rng.random(len(rig.confidence))
    a = rig.to_arrays()
    arrays = protocol.RigArrays(bones=a.bones, hips=a.hips, head=a.head,
                                expressions=a.expressions, confidence=a.confidence)
    result = protocol.Result(3, 3, 1.0, 0, 640, 480, "holistic", {}, rig_arrays=arrays)
    decoded = protocol.decode_result_binary(protocol.encode_result_binary(result))
    assert decoded.rig_arrays is not None
    got = rig_of(decoded.rig_arrays)
    for name in ("bones", "hips_position", "expressions", "head", "confidence"):
        np.testing.assert_allclose(getattr(got, name), getattr(rig, name), atol=1e-6)
    mirrored, want = rig_of(decoded.rig_arrays, mirror=True), mirror_rig(rig)
    np.testing.assert_allclose(mirrored.bones, want.bones, atol=1e-6)
    np.testing.assert_allclose(mirrored.expressions, want.expressions, atol=1e-6)


def test_cli_arguments_make_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--url", "ws://127.0.0.1:9", "--stream", "alice", "--to",
                              "127.0.0.1:39600", "--mirror", "--no-smoothing",
                              "--max-retries", "3", "--token", "T"])
    cfg = config_from_args(args)
    assert (cfg.url, cfg.stream, cfg.host, cfg.port) == ("ws://127.0.0.1:9", "alice",
                                                         "127.0.0.1", 39600)
    assert cfg.mirror and not cfg.smoothing and cfg.max_retries == 3 and cfg.token == "T"
    defaults = config_from_args(parser.parse_args(["--stream", "bob"]))
    assert (defaults.host, defaults.port, defaults.mirror, defaults.smoothing) == (
        "127.0.0.1", 39539, False, True)
    with pytest.raises(ValueError):
        VmcBridge(BridgeConfig("x", url="http://127.0.0.1:9"))


# ----------------------------------------------------------------------------- through a server


def check_bundle(bundle: OscBundle) -> dict[str, list]:
    """One frame's bundle in VMC order; returns bone name -> (px, py, pz, qx, qy, qz, qw)."""
    msgs = list(bundle)
    addresses = [m.address for m in msgs]
    assert addresses[:3] == ["/VMC/Ext/OK", "/VMC/Ext/T", "/VMC/Ext/Root/Pos"]
    assert msgs[0].params in ([1, 3, 0, 1], [1, 3, 0, 0])  # loaded, calibrated, tracking
    assert msgs[2].params[0] == "root" and len(msgs[2].params) == 8
    bones = msgs[3 : 3 + len(BONES)]
    assert [m.address for m in bones] == ["/VMC/Ext/Bone/Pos"] * len(BONES)
    assert [m.params[0] for m in bones] == list(BONES)
    blends = msgs[3 + len(BONES) : -1]
    assert [m.address for m in blends] == ["/VMC/Ext/Blend/Val"] * len(EXPRESSIONS)
    assert [m.params[0] for m in blends] == list(EXPRESSIONS)
    assert addresses[-1] == "/VMC/Ext/Blend/Apply" and msgs[-1].params == []
    return {m.params[0]: m.params[1:] for m in bones}


async def test_one_bundle_per_result_in_vmc_order_at_the_stream_rate(server: ServerProcess) -> None:
    name = unique("vmc")
    with osc_receiver() as receiver:
        async with running(config(server.port, name, receiver.port)) as bridge:
            await until(lambda: bridge.count("connected") == 1, what="bridge subscribed")
            # The producer does not ask for a rig: the bridge's subscription turns it on.
            produced = await produce(server, name, 40, video_jpegs("messi_pan_640x480.avi", 40))
            await until(lambda: bridge.count("stream_ended") == 1, what="stream_ended")
            await until(lambda: len(receiver.packets) >= len(produced) - bridge.stats.lost,
                        timeout=5, what="every bundle")
            await asyncio.sleep(0.2)  # nothing more may come
        stats = bridge.stats
    results = [r for _, r in produced]
    assert all("rig" in r for r in results)
    assert stats.lost <= 2 and stats.no_rig == 0 and stats.refused == 0
    assert stats.results == len(results) - stats.lost == stats.bundles == len(receiver.packets)

    bundles = receiver.bundles()
    times = []
    for bundle in bundles:
        check_bundle(bundle)
        times.append(next(m.params[0] for m in bundle if m.address == "/VMC/Ext/T"))
    assert all(b > a for a, b in itertools.pairwise(times))
    if stats.lost == 0:  # bundle k carries result k's rig (float32 vs 5 decimals)
        for bundle, result in zip(bundles, results, strict=True):
            sent = check_bundle(bundle)
            for bone, q in result["rig"]["bones"].items():
                assert sent[bone][3:] == pytest.approx(q, abs=1e-5 + 1e-6), bone
            assert sent["Hips"][:3] == pytest.approx([0.0, 0.9, 0.0], abs=1e-6)

    # The stream's rate: bundles arrive as the producer's results do (same run, same clock).
    arrivals = [t for t, _ in receiver.packets]
    result_span = produced[-1][0] - produced[0][0]
    bundle_span = arrivals[-1] - arrivals[0]
    rates = ((len(produced) - 1) / result_span, (len(arrivals) - 1) / bundle_span)
    print(f"results {rates[0]:.1f}/s, bundles {rates[1]:.1f}/s")
    assert 0.7 < rates[1] / rates[0] < 1.4


async def test_after_the_producer_stops_the_receiver_hears_tracking_lost_and_neutral(
    server: ServerProcess,
) -> None:
    name = unique("vmc-lost")
    with osc_receiver() as receiver:
        async with running(config(server.port, name, receiver.port)) as bridge:
            await until(lambda: bridge.count("connected") == 1, what="bridge subscribed")
            produced = await produce(server, name, 20, video_jpegs("messi_pan_640x480.avi", 20))
            stopped = time.monotonic()  # the producer has closed its session
            await until(lambda: len(receiver.lost) >= 2, timeout=5, what="tracking-lost bundles")
            await asyncio.sleep(1.5)  # the neutral pose is said again while nobody tracks
            assert bridge.count("tracking_lost") == 1
    assert len(receiver.packets) == len(produced) - bridge.stats.lost  # all with tracking 1
    last = rig_of_bundle(OscBundle(receiver.packets[-1][1]))
    neutral = neutral_rig(last)
    reached = None
    for at, data in receiver.lost:
        bundle = OscBundle(data)
        assert next(iter(bundle)).params == [1, 3, 0, 0]  # loaded, calibrated, tracking lost
        rig = rig_of_bundle(bundle)
        if reached is None and np.degrees(quat.angle(
                quat.mul(quat.conj(rig.bones), neutral.bones))).max() < 0.5:
            reached = at
            assert np.abs(rig.expressions).max() < 1e-6
    assert reached is not None, "never reached the neutral pose"
    print(f"neutral {reached - stopped:.2f} s after the producer stopped")
    assert reached - stopped <= 1.0
    assert receiver.lost[-1][0] - reached >= 0.9  # and said again a second later
    # Neutral: the arms hang down beside the body (they were not, in the last tracked pose).
    arm = quat.rotate(neutral.bones[BONES.index("LeftUpperArm")], np.array([-1.0, 0.0, 0.0]))
    assert arm[1] < -0.85


def rig_of_bundle(bundle: OscBundle) -> Rig:
    """A Rig from a VMC bundle's bones and blend values (rotations only)."""
    bones = {m.params[0]: m.params[4:8] for m in bundle if m.address == "/VMC/Ext/Bone/Pos"}
    blends = {m.params[0]: m.params[1] for m in bundle if m.address == "/VMC/Ext/Blend/Val"}
    rig = Rig.rest()
    rig.bones = np.array([bones[b] for b in BONES], dtype=np.float64)
    rig.expressions = np.array([blends[e] for e in EXPRESSIONS], dtype=np.float64)
    return rig


# ----------------------------------------------------------------------------- bad input


async def test_unknown_stream_vanished_producer_and_server_restart(server_factory) -> None:
    flags = ("--workers", "1", "--no-calibrate", "--cpu-overcommit", "20",
             "--subscriber-wait-s", "3")
    srv = server_factory(*flags, name="vmc-bad")
    port, name = srv.port, unique("ghost")
    with osc_receiver() as receiver:
        async with running(config(port, name, receiver.port)) as bridge:
            # Nobody publishes `name`: the server closes with stream_not_found, the bridge retries.
            await until(lambda: bridge.count("connected") >= 2, what="resubscribed")
            assert bridge.count("not_found") >= 1 and bridge.count("retry") >= 1
            assert "no producer" in next(e.message for e in bridge.events if e.kind == "not_found")
            # The server keeps serving everyone else meanwhile.
            other = await produce(srv, unique("other"), 2)
            assert [r["frame"] for _, r in other] == [0, 1]

            first = await produce(srv, name, 5)
            await until(lambda: len(receiver.packets) == len(first), what="first producer")
            connects = bridge.stats.connects
            await until(lambda: bridge.count("stream_ended") == 1, what="stream_ended")
            # The producer is gone: the bridge keeps its subscription and picks up the next one.
            await produce(srv, name, 5)
            await until(lambda: len(receiver.packets) == 10, what="second producer")
            assert bridge.stats.connects == connects, [e.message for e in bridge.events]
            assert bridge.count("stream_started") == 2

            # The server goes away: reported, retried with backoff, reconnected when it is back.
            srv.stop()
            await until(lambda: bridge.count("unreachable") >= 2, what="reconnect attempts")
            assert "shutting down" in next(
                e.message for e in bridge.events if e.kind == "server_lost")
            assert "connection refused" in next(
                e.message for e in bridge.events if e.kind == "unreachable")
            srv = server_factory(*flags, port=port, name="vmc-restarted")
            await until(lambda: bridge.stats.connects == connects + 1, what="reconnected")
            await produce(srv, name, 3)
            await until(lambda: len(receiver.packets) == 13, what="bundles after the restart")
    for bundle in receiver.bundles():
        check_bundle(bundle)


async def test_unreachable_udp_port_is_reported_and_sending_goes_on(server: ServerProcess) -> None:
    name, port = unique("udp"), free_udp_port()  # nothing listens there (yet)
    stop = asyncio.Event()

    async def keep_producing() -> None:
        conn = await connect(server.ws_url + f"?stream={name}", hello={"fps": 30})
        try:
            for i in range(2000):
                if stop.is_set():
                    return
                await _one(conn, i, JPEG)
        finally:
            await conn.close()

    async with running(config(server.port, name, port)) as bridge:
        await until(lambda: bridge.count("connected") == 1, what="subscribed")
        producer = asyncio.create_task(keep_producing())
        try:
            await until(lambda: bridge.count("udp_unreachable") == 1, what="ICMP reported")
            assert str(port) in next(e.message for e in bridge.events
                                     if e.kind == "udp_unreachable")
            await until(lambda: bridge.stats.bundles >= 5)
            with osc_receiver(port) as receiver:  # the VMC app starts: bundles get through
                await until(lambda: len(receiver.packets) >= 5, what="bundles after the start")
                await until(lambda: bridge.count("udp_ok") == 1, what="reported reachable")
            for bundle in receiver.bundles():
                check_bundle(bundle)
        finally:
            stop.set()
            await asyncio.wait_for(producer, 30)
    assert bridge.stats.refused >= 1
    udp = [e.kind for e in bridge.events if e.kind.startswith("udp_")]
    assert udp[:2] == ["udp_unreachable", "udp_ok"]  # then unreachable again: the receiver left


async def test_the_bridge_gives_up_after_max_retries() -> None:
    with socket.socket() as sock:  # a TCP port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    bridge = VmcBridge(config(dead, "x", free_udp_port(), max_retries=2, backoff_s=0.05))
    assert await asyncio.wait_for(bridge.run(), 20) == 1
    kinds = [e.kind for e in bridge.events]
    assert kinds == ["started", "unreachable", "retry", "unreachable", "retry", "unreachable",
                     "gave_up", "stopped"]


# ----------------------------------------------------------------------------- the command


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, f"no {text!r} in:\n{path.read_text()}"
        time.sleep(0.05)


async def test_holistream_vmc_command_sends_and_stops_on_ctrl_c(
    server: ServerProcess, tmp_path: Path
) -> None:
    name, log = unique("cli"), tmp_path / "vmc.log"
    with osc_receiver() as receiver, open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(HOLISTREAM), "vmc", "--url", f"ws://127.0.0.1:{server.port}", "--stream", name,
             "--to", f"127.0.0.1:{receiver.port}", "--mirror", "--status-interval", "0.5"],
            stdout=out, stderr=subprocess.STDOUT)
        try:
            await asyncio.to_thread(_wait_for_text, log, "subscribed to", proc, 30)
            produced = await produce(server, name, 4)
            await until(lambda: len(receiver.packets) == 4, what="bundles from the command")
            proc.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(proc.wait, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    text = log.read_text()
    assert "stopped: 4 bundles sent from 4 results" in text, text
    # --mirror: the person's left arm drives the avatar's right one.
    sent = check_bundle(receiver.bundles()[-1])
    mirrored = mirror_rig(Rig.from_arrays(
        list(produced[-1][1]["rig"]["bones"].values()), np.zeros(len(EXPRESSIONS)),
        np.zeros(len(PARTS)), np.zeros(3), np.zeros(3)))
    for i, bone in enumerate(BONES):
        assert sent[bone][3:] == pytest.approx(mirrored.bones[i], abs=2e-5), bone


def test_holistream_vmc_command_refusals_exit_2(server: ServerProcess) -> None:
    """Bad arguments, and refusals retrying cannot fix, end at once with a reason."""
    url = f"ws://127.0.0.1:{server.port}"
    for args, reason in (
        (["--stream", "bad name!"], "HTTP 400"),
        (["--stream", "ok", "--to", "127.0.0.1:0"], "bad UDP port"),
        (["--stream", "ok", "--url", "http://127.0.0.1:1"], "not a WebSocket URL"),
    ):
        done = subprocess.run([str(HOLISTREAM), "vmc", "--url", url, *args],
                              capture_output=True, timeout=30)
        assert done.returncode == 2, done
        assert reason in done.stderr.decode(), done.stderr.decode()
