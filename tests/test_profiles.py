"""Tracking profiles: cheap pipelines equal MediaPipe run directly, fall back instead of going
blind, switch cleanly mid-session, and buy more sessions from the same budget."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
import websockets

from server.workers.fallback import FallbackPolicy, FallbackSettings, found_parts, targets
from tests.conftest import ServerProcess
from tests.test_stream_landmarks import ROUNDING, video_jpegs
from tests.wsclient import Conn, connect, is_type, parts_of

os.environ.setdefault("GLOG_minloglevel", "2")

FACE = frozenset({"face"})
HANDS = frozenset({"left_hand", "right_hand"})

# ------------------------------------------------------------------------- the policy (pure)

Scene = Callable[[int, str, FallbackPolicy], frozenset[str]]


def drive(policy: FallbackPolicy, scene: Scene, frames: int) -> list[tuple[tuple[str, ...], Any]]:
    """Run the policy as the worker does; `scene(i, pipeline, policy)` is what that one finds."""
    trace = []
    for i in range(frames):
        plan = policy.plan()
        trace.append((plan, policy.observe({p: scene(i, p, policy) for p in plan})))
    return trace


def test_parts_compared_are_the_wanted_ones() -> None:
    assert targets(("face",)) == FACE
    assert targets(("left_hand", "right_hand", "left_hand_world", "right_hand_world")) == HANDS
    assert targets(("pose_world",)) == frozenset({"pose"})  # a session without world is alike
    assert found_parts({"face": [1.0], "pose": None, "left_hand": [2.0]}) == {"face", "left_hand"}


def test_cheap_pipeline_that_finds_everything_runs_alone() -> None:
    trace = drive(FallbackPolicy("face", FACE), lambda i, p, pol: FACE, 500)
    assert all(plan == ("face",) for plan, _ in trace)
    assert all(v.deliver == "face" and v.switched is None and not v.close for _, v in trace)


def test_falls_back_when_holistic_finds_what_the_cheap_one_misses() -> None:
    settings = FallbackSettings(miss_limit=2, first_gap=8, max_gap=64, linger=10)
    policy = FallbackPolicy("face", FACE, settings)
    trace = drive(policy, lambda i, p, pol: FACE if p == "holistic" else frozenset(), 600)
    plans = [plan for plan, _ in trace]
    assert plans[:3] == [("face",), ("face",), ("face", "holistic")]
    assert trace[2][1].deliver == "holistic" and trace[2][1].switched == "fallback"
    assert [v.switched for _, v in trace].count("fallback") == 1 and policy.switches == 1
    # Blind for miss_limit frames only; holistic from then on, even on probe frames.
    assert all(v.deliver == "holistic" for _, v in trace[2:])
    # Probes back off: 16, 32, 64, 64, ... frames apart.
    probes = [i for i, (plan, _) in enumerate(trace) if plan == ("holistic", "face")]
    assert np.diff(probes).tolist()[:3] == [32, 64, 64] and probes[0] == 2 + 16
    assert len(probes) <= 600 // 64 + 2
    # The idle cheap landmarker is closed after `linger` frames, reopened by the next probe.
    closes = [i for i, (_, v) in enumerate(trace) if v.close]
    assert closes[0] == 2 + settings.linger and trace[closes[0]][1].close == ("face",)
    assert all(c - p == settings.linger for c, p in zip(closes[1:], probes, strict=False))


def test_recovers_when_a_probe_finds_the_parts_again() -> None:
    policy = FallbackPolicy("face", FACE, FallbackSettings(linger=5))
    near = 100  # the person walks up to the camera at frame 100

    def scene(i: int, p: str, pol: FallbackPolicy) -> frozenset[str]:
        return FACE if p == "holistic" or i >= near else frozenset()

    trace = drive(policy, scene, 400)
    switches = [(i, v.switched) for i, (_, v) in enumerate(trace) if v.switched]
    assert [s for _, s in switches] == ["fallback", "recovered"]
    back = switches[1][0]
    assert near <= back <= near + policy.settings.max_gap
    assert trace[back][1].deliver == "face"
    assert all(plan == ("face",) for plan, _ in trace[back + 1 :])
    assert any(v.close == ("holistic",) for _, v in trace[back:])  # holistic closed once idle


def test_a_scene_without_the_part_stays_cheap_and_checks_rarely() -> None:
    policy = FallbackPolicy("face", FACE)
    trace = drive(policy, lambda i, p, pol: frozenset(), 2000)
    dual = [i for i, (plan, _) in enumerate(trace) if len(plan) == 2]
    assert all(v.deliver == "face" and v.switched is None for _, v in trace)
    assert dual[0] == 2 and len(dual) <= 2000 // policy.settings.max_gap + 6


def test_hands_fall_back_for_the_second_hand_only_when_holistic_sees_it() -> None:
    one = frozenset({"left_hand"})
    sees_both = drive(FallbackPolicy("hands", HANDS), lambda i, p, pol: (
        HANDS if p == "holistic" else one), 50)
    assert [v.switched for _, v in sees_both].count("fallback") == 1
    only_one = drive(FallbackPolicy("hands", HANDS), lambda i, p, pol: one, 50)
    assert all(v.deliver == "hands" for _, v in only_one)


def test_a_flapping_scene_costs_a_bounded_number_of_switches() -> None:
    # Worst case: the cheap pipeline finds the face exactly when probed from holistic mode.
    policy = FallbackPolicy("face", FACE)
    trace = drive(policy, lambda i, p, pol: (
        FACE if p == "holistic" or pol.mode == "holistic" else frozenset()), 3000)
    fallbacks = [v.switched for _, v in trace].count("fallback")
    assert 2 <= fallbacks <= 3000 // (2 * policy.settings.max_gap) + 4


def test_a_settled_scene_checks_promptly_again() -> None:
    policy = FallbackPolicy("face", FACE)
    drive(policy, lambda i, p, pol: frozenset(), 300)  # backed off to the ceiling
    assert policy.gap == policy.settings.max_gap
    drive(policy, lambda i, p, pol: FACE, policy.settings.max_gap)
    assert policy.gap == policy.settings.first_gap


# ---------------------------------------------------------------------- through a real server


def direct_run(pipeline: str, frames: list[bytes], fps: float = 30.0) -> list[dict[str, Any]]:
    """FaceLandmarker or PoseLandmarker in this process, VIDEO mode, same pixels and clock."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from server.model import resolve_model
    from server.workers.imaging import decode_rgb

    base = BaseOptions(model_asset_path=str(resolve_model(pipeline, allow_download=False)))
    mode = vision.RunningMode.VIDEO
    if pipeline == "face":
        landmarker: Any = vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(base_options=base, running_mode=mode, num_faces=1))
    else:
        landmarker = vision.PoseLandmarker.create_from_options(
            vision.PoseLandmarkerOptions(base_options=base, running_mode=mode, num_poses=1))
    out = []
    with landmarker:
        for i, jpeg in enumerate(frames):
            image = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=decode_rgb(jpeg, max_pixels=1 << 24, max_side=8192))
            r = landmarker.detect_for_video(image, round(i * 1000.0 / fps))
            if pipeline == "face":
                out.append({"face": np.array([(p.x, p.y, p.z) for p in r.face_landmarks[0]])
                            if r.face_landmarks else None})
            else:
                found = bool(r.pose_landmarks)
                out.append({
                    "pose": np.array([(p.x, p.y, p.z, p.visibility or 0, p.presence or 0)
                                      for p in r.pose_landmarks[0]]) if found else None,
                    "pose_world": np.array([(p.x, p.y, p.z) for p in r.pose_world_landmarks[0]])
                    if found else None,
                })
    return out


async def stream(url: str, frames: list[bytes], parts: list[str],
                 fps: float = 30.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Closed loop (no drops): every result, and the warnings and errors the server sent."""
    conn = await connect(url, hello={"parts": parts})
    assert conn.ready["pipeline"] == (parts[0] if len(parts) == 1 else "holistic")
    results = []
    for i, jpeg in enumerate(frames):
        await conn.send_frame(i, jpeg, ts=1000.0 + i * 1000.0 / fps)
        result = await conn.result()
        assert result["frame"] == i and result["dropped"] == 0
        results.append(result)
    await conn.close()
    return results, [m for m in conn.messages if is_type(m, "warning") or is_type(m, "error")]


@pytest.mark.parametrize("pipeline", ["face", "pose"])
async def test_cheap_profile_equals_its_landmarker_run_directly(
    server: ServerProcess, pipeline: str
) -> None:
    frames = video_jpegs("astronaut_pan_640x480.avi")
    results, others = await stream(server.ws_url, frames, [pipeline])
    direct = await asyncio.to_thread(direct_run, pipeline, frames)
    assert not others  # no warning, no error
    worst = 0.0
    for got, want in zip(results, direct, strict=True):
        assert got["pipeline"] == pipeline
        assert {k for k in got if k in ("face", "pose", "pose_world", "left_hand")} == set(want)
        parts = parts_of(got)
        for name, expected in want.items():
            assert expected is not None and parts[name] is not None, (got["frame"], name)
            worst = max(worst, float(np.max(np.abs(parts[name] - expected))))
    assert worst <= ROUNDING, worst
    if pipeline == "face":
        assert all(len(r["face"]) == 478 * 3 for r in results)


def _fallback_story(results: list[dict[str, Any]], others: list[dict[str, Any]],
                    cheap: str) -> None:
    """The pipeline field tells the story; one pipeline_fallback warning per switch to it."""
    pipes = [r["pipeline"] for r in results]
    assert pipes[0] == cheap and set(pipes) <= {cheap, "holistic"}
    switches = sum(a == cheap and b == "holistic" for a, b in itertools.pairwise(pipes))
    warnings = [m for m in others if is_type(m, "warning")]
    assert switches >= 1 and [w["code"] for w in warnings] == ["pipeline_fallback"] * switches
    assert not [m for m in others if is_type(m, "error")]


async def test_cheap_profiles_fall_back_instead_of_going_blind(server: ServerProcess) -> None:
    frames = video_jpegs("messi_pan_640x480.avi")  # full body, small face: Holistic finds all
    (face, face_msgs), (hands, hands_msgs), direct = await asyncio.gather(
        stream(server.ws_url, frames, ["face"]), stream(server.ws_url, frames, ["hands"]),
        asyncio.to_thread(_direct_hands, frames))
    assert sum(r["face"] is not None for r in face) >= 0.95 * len(frames)
    _fallback_story(face, face_msgs, "face")
    both = [r["left_hand"] is not None and r["right_hand"] is not None for r in hands]
    assert sum(both) >= 0.90 * len(frames)
    _fallback_story(hands, hands_msgs, "hands")
    assert all("pose" not in r and "face" not in r for r in hands)
    # Which hand is which: HandLandmarker alone (tracking one hand here) names the same hand
    # as Holistic does, i.e. HandsDetector.SWAP turns the mirrored labels the right way round.
    same = other = 0
    for got, mine in zip(hands, direct, strict=True):
        for side, twin in (("left_hand", "right_hand"), ("right_hand", "left_hand")):
            if mine.get(side) is None or got[side] is None or got[twin] is None:
                continue
            wrist = mine[side][0, :2]
            near = np.abs(parts_of(got)[side][0, :2] - wrist).max()
            far = np.abs(parts_of(got)[twin][0, :2] - wrist).max()
            same, other = same + (near < far), other + (near >= far)
    assert same >= 50 and other <= same // 20, (same, other)


def _direct_hands(frames: list[bytes]) -> list[dict[str, Any]]:
    from server.model import resolve_model
    from server.workers import pipelines
    from server.workers.imaging import decode_rgb

    detector = pipelines.create("hands", resolve_model("hands", allow_download=False), ())
    try:
        return [detector.detect(decode_rgb(j, max_pixels=1 << 24, max_side=8192),
                                round(i * 1000 / 30)) for i, j in enumerate(frames)]
    finally:
        detector.close()


def landmarkers(server: ServerProcess) -> int:
    """Live landmarkers in all the server's workers (an opt-in field of /readyz)."""
    status, body = server.get("/readyz?landmarkers=1")
    assert status == 200
    counts = [w["landmarkers"] for w in orjson.loads(body)["workers"] if w["alive"]]
    assert all(isinstance(c, int) for c in counts), counts
    return sum(counts)


async def test_switching_parts_mid_session(server: ServerProcess) -> None:
    frames = video_jpegs("astronaut_pan_640x480.avi", limit=15)
    await _no_sessions(server)  # earlier tests' closes have reached the workers
    baseline = await asyncio.to_thread(landmarkers, server)
    conn = await connect(server.ws_url, hello={"parts": ["face"]})
    assert await asyncio.to_thread(landmarkers, server) == baseline + 1
    steps = [(["face"], "face", {"face"}), (["pose"], "pose", {"pose", "pose_world"}),
             (["face", "hands", "pose"], "holistic", {"face", "pose", "pose_world", "left_hand",
                                                        "right_hand", "left_hand_world",
                                                        "right_hand_world"}),
             (["hands"], "hands", {"left_hand", "right_hand", "left_hand_world",
                                   "right_hand_world"}),
             (["face"], "face", {"face"})]
    i = 0
    for n, (parts, pipeline, fields) in enumerate(steps):
        if n:
            await conn.send_json({"type": "configure", "parts": parts})
            done = await conn.recv_until(lambda m: is_type(m, "configured"))
            assert (done["pipeline"], done["parts"], done["switches"]) == (pipeline, parts, n)
        for _ in range(3):
            await conn.send_frame(i, frames[i], ts=1000.0 + i * 33.3)
            result = await conn.result()
            assert result["frame"] == i and result["pipeline"] == pipeline
            assert set(result) & set(_ALL_FIELDS) == fields, (parts, sorted(result))
            assert result.get("face") is not None or "face" not in fields  # found, not just asked
            i += 1
        # Hands find none here: the policy opened Holistic to check, and keeps it a while.
        live = await asyncio.to_thread(landmarkers, server)
        assert live - baseline == (2 if pipeline == "hands" else 1), (parts, live, baseline)
    assert not [m for m in conn.messages if is_type(m, "error") or is_type(m, "warning")]
    await conn.close()
    for _ in range(50):  # the close reaches the worker shortly after the socket closes
        if await asyncio.to_thread(landmarkers, server) == baseline:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(landmarkers, server) == baseline


async def _no_sessions(server: ServerProcess) -> None:
    for _ in range(50):
        if server.readyz()["sessions"] == 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail("sessions still open after their sockets closed")


_ALL_FIELDS = ("face", "pose", "pose_world", "left_hand", "right_hand", "left_hand_world",
               "right_hand_world")


async def _open_until_refused(server: ServerProcess, parts: list[str],
                              limit: int) -> tuple[list[Conn], Any]:
    """Open sessions until the server refuses one (at most `limit` + 1 attempts)."""
    conns: list[Conn] = []
    url = f"{server.ws_url}?parts={','.join(parts)}"
    for _ in range(limit + 1):
        try:
            conns.append(await connect(url, hello={"parts": parts}))
        except websockets.InvalidStatus as exc:
            return conns, exc.response
    pytest.fail(f"{len(conns)} {parts} sessions admitted, capacity said {limit}")


async def test_small_budget_admits_more_face_sessions_than_holistic(server_factory: Any) -> None:
    srv = server_factory("--workers", "1", "--memory-budget-mb", "500", name="profiles-budget")
    capacity = srv.readyz()["capacity"]
    assert capacity["face"] > capacity["holistic"] >= 1, capacity
    admitted = {}
    for parts, pipeline in ((["face", "hands", "pose"], "holistic"), (["face"], "face")):
        conns, refusal = await _open_until_refused(srv, parts, capacity[pipeline])
        assert len(conns) == capacity[pipeline], (pipeline, len(conns), capacity)
        assert all(c.ready["pipeline"] == pipeline for c in conns)
        assert refusal.status_code == 503 and int(refusal.headers["Retry-After"]) >= 1
        assert orjson.loads(refusal.body)["error"]["code"] == "server_full"
        # The admitted ones still work.
        await conns[-1].send_frame(1, (video_jpegs("astronaut_pan_640x480.avi", limit=1))[0])
        assert (await conns[-1].result())["frame"] == 1
        admitted[pipeline] = len(conns)
        await asyncio.gather(*(c.close() for c in conns))
        await _no_sessions(srv)  # the reservations go as the sockets close
    assert admitted["face"] > admitted["holistic"]
