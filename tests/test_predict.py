"""POST /v1/predict against real servers: correct landmarks, independent of earlier requests,
prompt refusals under overload, documented errors, and a cache in memory or in real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from holistream import protocol
from tests.conftest import ServerProcess, media
from tests.harness import stop_process
from tests.test_predict_units import png_header
from tests.test_stream_landmarks import video_jpegs
from tests.wsclient import connect

TOL = 5e-5 + 1e-6  # the protocol's rounding to 4 decimals, plus float32
FAST = ("--workers", "1", "--no-calibrate")
_variants = itertools.count()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    seconds: float


def variant(data: bytes) -> bytes:
    """Same pixels, new bytes (after the image's end marker): a cache miss every time."""
    return data + b"\0variant-%d-%d" % (os.getpid(), next(_variants))


async def post(
    url: str,
    data: bytes | aiohttp.FormData,
    *,
    ctype: str | None = "image/jpeg",
    query: str = "",
    headers: dict[str, str] | None = None,
    client: aiohttp.ClientSession | None = None,
) -> Reply:
    hdrs = dict(headers or {})
    if ctype is not None and not isinstance(data, aiohttp.FormData):
        hdrs["Content-Type"] = ctype
    own = client is None
    session = client or aiohttp.ClientSession()
    try:
        t0 = time.perf_counter()
        async with session.post(f"{url}/v1/predict{query}", data=data, headers=hdrs) as resp:
            body = await resp.json(content_type=None)
            return Reply(resp.status, body, dict(resp.headers), time.perf_counter() - t0)
    finally:
        if own:
            await session.close()


def direct_image_run(pipeline: str, data: bytes) -> dict[str, np.ndarray | None]:
    """MediaPipe in this process: a fresh IMAGE-mode landmarker, the same decoded pixels."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from server.model import resolve_model
    from server.workers.imaging import decode_rgb

    model = resolve_model(pipeline, allow_download=False, allow_build=False, log=lambda _: None)
    rgb = decode_rgb(data, max_pixels=1 << 24, max_side=8192)
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
    base = BaseOptions(model_asset_path=str(model))
    mode = vision.RunningMode.IMAGE

    def arr(points: Any, five: bool = False) -> np.ndarray | None:
        if not points:
            return None
        rows = [(p.x, p.y, p.z) + ((p.visibility or 0, p.presence or 0) if five else ())
                for p in points]
        return np.array(rows, np.float64)

    if pipeline == "pose":
        opts = vision.PoseLandmarkerOptions(base_options=base, running_mode=mode)
        with vision.PoseLandmarker.create_from_options(opts) as lm:
            r = lm.detect(image)
        found = bool(r.pose_landmarks)
        return {
            "pose": arr(r.pose_landmarks[0], True) if found else None,
            "pose_world": arr(r.pose_world_landmarks[0]) if found else None,
        }
    assert pipeline == "holistic"
    hopts = vision.HolisticLandmarkerOptions(base_options=base, running_mode=mode)
    with vision.HolisticLandmarker.create_from_options(hopts) as lm:
        h = lm.detect(image)
    return {
        "pose": arr(h.pose_landmarks, True),
        "pose_world": arr(h.pose_world_landmarks),
        "face": arr(h.face_landmarks),
        "left_hand": arr(h.left_hand_landmarks),
        "right_hand": arr(h.right_hand_landmarks),
        "left_hand_world": arr(h.left_hand_world_landmarks),
        "right_hand_world": arr(h.right_hand_world_landmarks),
    }


def assert_matches(body: dict[str, Any], reference: dict[str, np.ndarray | None]) -> None:
    parts = protocol.decode_result_json(body).parts
    assert set(parts) == set(reference)
    for name, ref in reference.items():
        got = parts[name]
        assert (got is None) == (ref is None), name
        if ref is not None:
            assert got is not None and got.shape == ref.shape, name
            assert np.abs(got - ref).max() <= TOL, name


# The published parity of the default (fast) path with a fresh Holistic (docs/predict.md).
PARITY_MEDIAN = 0.01  # median landmark distance, as a fraction of the image's longer side


def assert_parity(body: dict[str, Any], reference: dict[str, np.ndarray | None]) -> None:
    """The same parts found as a fresh HolisticLandmarker, landmarks within the published
    median distance; the pose is the same single pass, so it is equal."""
    parts = protocol.decode_result_json(body).parts
    assert set(parts) == set(reference)
    longer = max(body["width"], body["height"])
    for name, ref in reference.items():
        got = parts[name]
        assert (got is None) == (ref is None), name
        if ref is None or got is None:
            continue
        assert got.shape == ref.shape, name
        if name in ("pose", "pose_world"):
            assert np.abs(got - ref).max() <= TOL, name
        elif not name.endswith("_world"):
            pixels = (got[:, :2] - ref[:, :2]) * (body["width"], body["height"])
            distance = np.hypot(pixels[:, 0], pixels[:, 1]) / longer
            assert np.median(distance) <= PARITY_MEDIAN, (name, np.median(distance))


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert set(reply.body) == {"error"} and reply.body["error"]["code"] == code, reply.body
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]


# ----------------------------------------------------------------------------- correctness


async def test_default_path_agrees_with_a_fresh_landmarker_and_exact_equals_it(
    server: ServerProcess,
) -> None:
    messi = media("messi5.jpg").read_bytes()
    form = aiohttp.FormData()
    form.add_field("file", variant(messi), filename="messi5.jpg", content_type="image/jpeg")
    got = await post(server.url, form)
    assert got.status == 200 and got.body["cache"] == "miss" and got.body["mode"] == "fast"
    assert (got.body["width"], got.body["height"], got.body["pipeline"]) == (548, 342, "holistic")
    assert {"seq", "ts", "dropped"}.isdisjoint(got.body)
    lengths = {name: len(got.body[name]) for name in protocol.PART_NAMES}
    assert lengths == {"pose": 165, "pose_world": 99, "face": 1434, "left_hand": 63,
                       "right_hand": 63, "left_hand_world": 63, "right_hand_world": 63}
    timing = got.body["timing"]
    assert timing["inference_ms"] > 0 and timing["total_ms"] >= timing["inference_ms"]

    # Every fixture image: the default path within the published parity, the exact path equal.
    for name, ctype in (("messi5.jpg", "image/jpeg"), ("astronaut.png", "image/png"),
                        ("astronaut_face.jpg", "application/octet-stream"),
                        ("building.jpg", "image/jpeg")):
        data = media(name).read_bytes()
        reference = direct_image_run("holistic", data)
        fast = await post(server.url, variant(data), ctype=ctype)
        assert fast.status == 200 and fast.body["mode"] == "fast", name
        assert_parity(fast.body, reference)
        exact = await post(server.url, variant(data), ctype=ctype, query="?mode=exact")
        assert exact.status == 200 and exact.body["mode"] == "exact", name
        assert_matches(exact.body, reference)
        if name == "building.jpg":
            assert all(fast.body[part] is None for part in protocol.PART_NAMES)

    # parts=... on the default holistic path: only what was asked for.
    got = await post(server.url, variant(messi), query="?parts=hands,face&world=false")
    assert got.status == 200 and got.body["pipeline"] == "holistic"
    assert {"face", "left_hand", "right_hand"} <= set(got.body)
    assert {"pose", "pose_world", "left_hand_world", "right_hand_world"}.isdisjoint(got.body)
    reference = direct_image_run("holistic", messi)
    assert_parity(got.body, {n: reference[n] for n in ("face", "left_hand", "right_hand")})

    got = await post(server.url, variant(messi), query="?parts=pose&world=false")
    assert got.status == 200 and got.body["pipeline"] == "pose"
    assert "pose_world" not in got.body and "face" not in got.body
    reference = direct_image_run("pose", messi)
    assert_matches(got.body, {"pose": reference["pose"]})


async def test_results_do_not_depend_on_earlier_requests(server_factory: Any) -> None:
    """A, B, A on one worker, then A on a fresh server: the A results are identical, on the
    default path and on the exact one."""
    a = media("messi5.jpg").read_bytes()
    b = media("astronaut.png").read_bytes()
    first = server_factory(*FAST, "--cache-entries", "0", name="predict-order")
    runs: dict[str, list[dict[str, Any]]] = {"fast": [], "exact": []}
    for mode in ("fast", "exact"):
        for data, ctype in ((a, "image/jpeg"), (b, "image/png"), (a, "image/jpeg")):
            reply = await post(first.url, data, ctype=ctype, query=f"?mode={mode}")
            assert reply.status == 200 and reply.body["cache"] == "miss"
            assert reply.body["mode"] == mode
            runs[mode].append(reply.body)
    first.stop()
    fresh = server_factory(*FAST, "--cache-entries", "0", name="predict-order-fresh")
    for mode in ("fast", "exact"):
        reply = await post(fresh.url, a, query=f"?mode={mode}")
        assert reply.status == 200
        a_runs = [runs[mode][0], runs[mode][2], reply.body]
        for name in protocol.PART_NAMES:
            assert a_runs[0][name] is not None, (mode, name)
            assert a_runs[0][name] == a_runs[1][name] == a_runs[2][name], (mode, name)
    reference_a, reference_b = direct_image_run("holistic", a), direct_image_run("holistic", b)
    assert_matches(runs["exact"][0], reference_a)
    assert_matches(runs["exact"][1], reference_b)
    assert_parity(runs["fast"][0], reference_a)
    assert_parity(runs["fast"][1], reference_b)


# ----------------------------------------------------------------------------- overload


async def _stream(url: str, frames: list[bytes], stop: asyncio.Event, times: list[float]) -> None:
    """A camera-like session: a frame every 100 ms whatever comes back (a newer frame replaces
    a waiting one), so it never waits for a dropped frame; records when results arrive."""
    conn = await connect(url, hello={"parts": ["pose"]})

    async def receive() -> None:
        while True:
            msg = await conn.recv(timeout=60)
            if isinstance(msg, dict) and msg.get("type") == "result":
                times.append(time.monotonic())

    receiver = asyncio.create_task(receive())
    try:
        for i in range(1000):  # at most 100 s
            if stop.is_set() or receiver.done():
                break
            await conn.send_frame(i, frames[i % len(frames)])
            await asyncio.sleep(0.1)
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        await conn.close()


async def test_overload_gets_prompt_503s_and_streams_go_on(server_factory: Any) -> None:
    srv = server_factory(*FAST, "--predict-queue", "2", "--cache-entries", "0",
                         "--cpu-overcommit", "20", name="predict-overload")
    messi = media("messi5.jpg").read_bytes()
    frames = video_jpegs("messi_pan_640x480.avi", limit=10)
    stop, stream_times = asyncio.Event(), []
    streamer = asyncio.create_task(_stream(srv.ws_url, frames, stop, stream_times))
    while not stream_times and not streamer.done():  # bounded by the result timeout
        await asyncio.sleep(0.05)
    replies: list[Reply] = []
    async with aiohttp.ClientSession() as client, asyncio.timeout(60):
        t_start = time.monotonic()
        for _ in range(4):  # bursts of 10 at once: three get in (one runs, two wait)
            replies += await asyncio.gather(
                *(post(srv.url, variant(messi), client=client) for _ in range(10))
            )
        t_end = time.monotonic()
        stop.set()
        await streamer
        after = await post(srv.url, variant(messi), client=client)
    assert after.status == 200  # nothing hangs, nothing is stuck in the queue

    served = [r for r in replies if r.status == 200]
    busy = [r for r in replies if r.status == 503]
    assert len(served) + len(busy) == len(replies), {r.status for r in replies}
    assert len(served) >= 3 and len(busy) >= len(replies) // 3
    for r in busy:
        assert_error(r, 503, "server_full")
        assert 1 <= int(r.headers["Retry-After"]) <= 5
    # Refused at once: far below the timeout, and faster than the served ones.
    assert max(r.seconds for r in busy) < 10 / 4
    assert statistics.median(r.seconds for r in busy) < statistics.median(
        r.seconds for r in served
    )
    assert srv.metric("holistream_predict_requests_total", 'outcome="server_full"') == len(busy)
    # Single images and the session take turns: the session gets at least one turn for every
    # queue-full of images (1 running + 2 waiting) served, whatever the machine's speed.
    during = [t for t in stream_times if t_start <= t <= t_end]
    assert len(during) >= max(len(served) // 3 - 1, 2), (len(during), len(served), t_end - t_start)


async def test_a_client_that_leaves_frees_its_place(server_factory: Any) -> None:
    srv = server_factory(*FAST, "--predict-queue", "16", "--cache-entries", "0",
                         name="predict-gone")
    messi = media("messi5.jpg").read_bytes()
    alone = [(await post(srv.url, variant(messi))).seconds for _ in range(3)]
    one_job = min(alone)
    writers = []
    for _ in range(16):  # one runs, fifteen wait
        body = variant(messi)
        _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writers.append(writer)
    await asyncio.sleep(0.2)  # all are read and queued (loopback)
    for writer in writers:
        writer.close()
    reply = await post(srv.url, variant(messi))
    assert reply.status == 200
    # Withdrawn jobs cost nothing: this one waits for at most the few that had started, not
    # for fifteen.
    assert reply.seconds < 5 * one_job + 0.3, (reply.seconds, alone)
    gone = srv.metric("holistream_predict_requests_total", 'outcome="client_gone"')
    answered = srv.metric("holistream_predict_requests_total", 'outcome="ok"') - 4
    assert gone >= 8 and gone + answered == 16, (gone, answered)


def slow_webp(width: int = 8192, height: int = 4096) -> bytes:
    """A tiny lossless WebP whose decoding alone takes hundreds of milliseconds."""
    import io

    from PIL import Image

    ramp_x = np.linspace(0, 255, width, dtype=np.float32)
    ramp_y = np.linspace(0, 255, height, dtype=np.float32)
    grey = (np.add.outer(ramp_y, ramp_x) / 2).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.stack([grey, 255 - grey, grey], -1)).save(
        out, "WEBP", lossless=True, method=0, quality=0  # fastest to encode
    )
    return out.getvalue()


async def test_an_image_past_the_deadline_gets_504_at_the_deadline(server_factory: Any) -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from server.model import resolve_model
    from server.workers.imaging import decode_rgb

    srv = server_factory(*FAST, "--predict-timeout-s", "0.3", "--cache-entries", "0",
                         "--max-image-pixels", str(8192 * 4096), name="predict-deadline")
    data = slow_webp()
    # What the worker must do at least, measured here: decode, then one detection.
    model = resolve_model("holistic", allow_download=False, allow_build=False, log=lambda _: None)
    opts = vision.HolisticLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)))
    with vision.HolisticLandmarker.create_from_options(opts) as landmarker:
        t0 = time.perf_counter()
        rgb = decode_rgb(data, max_pixels=8192 * 4096, max_side=8192)
        landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        job_s = time.perf_counter() - t0
    reply = await post(srv.url, data, ctype="image/webp")
    assert_error(reply, 504, "timeout")
    assert reply.seconds < job_s, (reply.seconds, job_s)  # at the deadline, not when it ends
    assert srv.metric("holistream_predict_requests_total", 'outcome="timeout"') == 1


# ----------------------------------------------------------------------------- bad input


async def test_bad_input_gets_its_documented_status(server: ServerProcess) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    no_file = aiohttp.FormData()
    no_file.add_field("image", jpeg, filename="a.jpg", content_type="image/jpeg")
    text_file = aiohttp.FormData()
    text_file.add_field("file", b"hello world", filename="a.txt", content_type="text/plain")
    cases: list[tuple[Any, str | None, str, int, str]] = [
        (no_file, None, "", 400, "no_image"),
        (b"", "image/jpeg", "", 400, "no_image"),
        (b"this is not an image at all", "image/jpeg", "", 415, "unsupported_image"),
        (text_file, None, "", 415, "unsupported_image"),
        (jpeg[: len(jpeg) // 2], "image/jpeg", "", 422, "undecodable"),
        (png_header(20000, 20000), "image/png", "", 413, "image_too_large"),
        (jpeg, "text/plain", "", 415, "unsupported_media_type"),
        (jpeg, "application/json", "", 415, "unsupported_media_type"),
        (b"\xff\xd8\xff" + bytes(5 << 20), "image/jpeg", "", 413, "body_too_large"),
        (jpeg, "image/jpeg", "?parts=tail", 400, "bad_request"),
        (jpeg, "image/jpeg", "?world=perhaps", 400, "bad_request"),
    ]
    async with aiohttp.ClientSession() as client:
        for data, ctype, query, status, code in cases:
            assert_error(await post(server.url, data, ctype=ctype, query=query, client=client),
                         status, code)
        # Without a Content-Length (chunked), the limit holds while reading.
        async def chunks() -> Any:
            yield b"\xff\xd8\xff"
            for _ in range(5):
                yield bytes(1 << 20)

        async with client.post(f"{server.url}/v1/predict", data=chunks(),
                               headers={"Content-Type": "image/jpeg"}) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "body_too_large"
        big_form = aiohttp.FormData()
        big_form.add_field("file", b"\xff\xd8\xff" + bytes(5 << 20), filename="big.jpg",
                           content_type="image/jpeg")
        assert_error(await post(server.url, big_form, client=client), 413, "body_too_large")
        evil = await post(server.url, jpeg, headers={"Origin": "http://evil.example"},
                          client=client)
        assert_error(evil, 403, "origin_not_allowed")
        ok = await post(server.url, variant(jpeg), client=client)
        assert ok.status == 200 and ok.body["face"] is not None


async def test_a_configured_token_is_required(server_factory: Any) -> None:
    srv = server_factory(*FAST, "--token", "s3cret", name="predict-token")
    jpeg = media("messi5.jpg").read_bytes()
    assert_error(await post(srv.url, jpeg), 401, "unauthorized")
    assert_error(await post(srv.url, jpeg, headers={"Authorization": "Bearer nope"}),
                 401, "unauthorized")
    ok = await post(srv.url, jpeg, headers={"Authorization": "Bearer s3cret"})
    assert ok.status == 200


# ----------------------------------------------------------------------------- cache


async def test_repeated_image_is_a_cache_hit(server: ServerProcess) -> None:
    data = variant(media("messi5.jpg").read_bytes())
    async with aiohttp.ClientSession() as client:
        miss = await post(server.url, data, client=client)
        hit = await post(server.url, data, client=client)
        assert (miss.body["cache"], hit.body["cache"]) == ("miss", "hit")
        assert hit.body["timing"]["inference_ms"] == 0
        for name in protocol.PART_NAMES:
            assert hit.body[name] == miss.body[name]
        pose = await post(server.url, data, query="?parts=pose", client=client)
        assert pose.body["cache"] == "miss" and pose.body["pipeline"] == "pose"
        assert (await post(server.url, data, query="?parts=pose", client=client)).body[
            "cache"
        ] == "hit"
        flat = await post(server.url, data, query="?world=false", client=client)
        assert flat.body["cache"] == "miss" and "pose_world" not in flat.body
        # The exact path has entries of its own: never served from the default path's.
        exact = await post(server.url, data, query="?mode=exact", client=client)
        assert (exact.body["cache"], exact.body["mode"]) == ("miss", "exact")
        again = await post(server.url, data, query="?mode=exact", client=client)
        assert (again.body["cache"], again.body["mode"]) == ("hit", "exact")
        assert all(again.body[n] == exact.body[n] for n in protocol.PART_NAMES)
        fast = await post(server.url, data, client=client)
        assert (fast.body["cache"], fast.body["mode"]) == ("hit", "fast")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """A real redis-server on a free loopback port, no persistence; always stopped."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield port
    finally:
        stop_process(proc, timeout=5)


async def test_redis_cache_is_shared_and_optional(server_factory: Any, tmp_path: Path) -> None:
    import redis

    data = variant(media("messi5.jpg").read_bytes())
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        one = server_factory(*FAST, "--redis-url", url, name="predict-redis-1")
        two = server_factory(*FAST, "--redis-url", url, name="predict-redis-2")
        assert (await post(one.url, data)).body["cache"] == "miss"
        assert (await post(one.url, data)).body["cache"] == "hit"
        shared = await post(two.url, data)
        assert shared.status == 200 and shared.body["cache"] == "hit"
        assert (await post(two.url, data, query="?parts=face")).body["cache"] == "miss"
        keys = redis.Redis(port=port).keys("holistream:predict:*")
        assert len(keys) == 2
        assert all(0 < redis.Redis(port=port).ttl(k) <= 3600 for k in keys)
    # Redis is gone: requests still succeed, uncached, and the outage is logged once.
    for _ in range(3):
        reply = await post(one.url, variant(data))
        assert reply.status == 200 and reply.body["cache"] == "miss"
    assert one.log().count("predict cache: Redis at") == 1, one.log()
