"""Landmarks through a real server equal MediaPipe run directly; sessions do not share state."""

from __future__ import annotations

import asyncio
import os

import cv2
import numpy as np
import pytest

from tests.conftest import ServerProcess, media
from tests.wsclient import connect, parts_of

os.environ.setdefault("GLOG_minloglevel", "2")

ROUNDING = 0.5e-4 + 1e-6  # the protocol rounds to 4 decimals (float32 adds ~1e-7)
PARTS = ("pose", "pose_world", "face", "left_hand", "right_hand",
         "left_hand_world", "right_hand_world")


def video_jpegs(name: str, limit: int | None = None) -> list[bytes]:
    """The video's frames, each JPEG-encoded once (the bytes the server and MediaPipe both see)."""
    cap = cv2.VideoCapture(str(media(name)))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cap.release()
    assert frames
    return frames


async def stream_closed_loop(url: str, frames: list[bytes], hello: dict | None = None,
                             fps: float = 30.0) -> list[dict]:
    """Send each frame after the previous result, so nothing is dropped; return the results."""
    conn = await connect(url, hello=hello or {})
    results = []
    for i, jpeg in enumerate(frames):
        await conn.send_frame(i, jpeg, ts=1000.0 + i * 1000.0 / fps)
        result = await conn.result()
        assert result["frame"] == i and result["dropped"] == 0
        results.append(result)
    await conn.close()
    return results


def direct_video_run(frames: list[bytes], fps: float = 30.0) -> list[dict[str, np.ndarray | None]]:
    """MediaPipe's HolisticLandmarker in this process, VIDEO mode, same pixels, same clock."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from server.model import resolve_model
    from server.workers.imaging import decode_rgb

    model = resolve_model("holistic", allow_download=False, allow_build=False)
    options = vision.HolisticLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        running_mode=vision.RunningMode.VIDEO,
    )
    out = []
    with vision.HolisticLandmarker.create_from_options(options) as landmarker:
        for i, jpeg in enumerate(frames):
            rgb = decode_rgb(jpeg, max_pixels=1 << 24, max_side=8192)
            r = landmarker.detect_for_video(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), round(i * 1000.0 / fps)
            )

            def arr(points, five=False):
                if not points:
                    return None
                if five:
                    return np.array([(p.x, p.y, p.z, p.visibility or 0, p.presence or 0)
                                     for p in points], np.float64)
                return np.array([(p.x, p.y, p.z) for p in points], np.float64)

            out.append({
                "pose": arr(r.pose_landmarks, True),
                "pose_world": arr(r.pose_world_landmarks),
                "face": arr(r.face_landmarks),
                "left_hand": arr(r.left_hand_landmarks),
                "right_hand": arr(r.right_hand_landmarks),
                "left_hand_world": arr(r.left_hand_world_landmarks),
                "right_hand_world": arr(r.right_hand_world_landmarks),
            })
    return out


async def test_counts_on_fixture_images(server: ServerProcess) -> None:
    expected = {
        "messi5.jpg": {"face": 478, "pose": 33, "left_hand": 21, "right_hand": 21},
        "astronaut.png": {"face": 478, "pose": 33},
        "building.jpg": {},
    }
    for name, counts in expected.items():
        conn = await connect(server.ws_url, hello={})
        await conn.send_frame(1, media(name).read_bytes())
        result = await conn.result()
        await conn.close()
        got = {p: len(v) // (5 if p == "pose" else 3) for p, v in result.items()
               if p in PARTS and v is not None and not p.endswith("world")}
        assert got == counts, name
        if counts:
            assert len(result["pose_world"]) == 99
        else:
            assert all(result[p] is None for p in PARTS)


async def test_server_equals_direct_mediapipe_video_run(server: ServerProcess) -> None:
    frames = video_jpegs("messi_pan_640x480.avi", limit=40)
    results = await stream_closed_loop(server.ws_url, frames)
    direct = await asyncio.to_thread(direct_video_run, frames)
    worst = 0.0
    for got, want in zip(results, direct, strict=True):
        assert (got["width"], got["height"]) == (640, 480)
        parts = parts_of(got)
        for name in PARTS:
            if want[name] is None:
                assert parts[name] is None, name
                continue
            assert parts[name] is not None, name
            worst = max(worst, float(np.max(np.abs(parts[name] - want[name]))))
    assert worst <= ROUNDING, worst


async def test_tracks_every_frame_of_the_pan(server: ServerProcess) -> None:
    frames = video_jpegs("messi_pan_640x480.avi")
    results = await stream_closed_loop(server.ws_url, frames)
    assert len(results) == len(frames) == 120
    for r in results:
        found = [r[p] is not None for p in ("face", "pose", "left_hand", "right_hand")]
        assert all(found), r["frame"]
    # Tracking follows the motion: the nose moves across the pan, smoothly.
    noses = np.array([parts_of(r)["pose"][0, :2] for r in results])
    steps = np.linalg.norm(np.diff(noses, axis=0), axis=1)
    assert np.ptp(noses[:, 0]) > 0.05 and steps.max() < 0.1


async def test_concurrent_sessions_do_not_share_state(server: ServerProcess) -> None:
    a = video_jpegs("messi_pan_640x480.avi", limit=25)
    b = video_jpegs("astronaut_pan_640x480.avi", limit=25)
    alone_a = await stream_closed_loop(server.ws_url, a)
    alone_b = await stream_closed_loop(server.ws_url, b)
    both_a, both_b = await asyncio.gather(
        stream_closed_loop(server.ws_url, a), stream_closed_loop(server.ws_url, b)
    )
    for alone, both in ((alone_a, both_a), (alone_b, both_b)):
        for x, y in zip(alone, both, strict=True):
            for name in PARTS:
                assert x[name] == y[name], (x["frame"], name)


@pytest.mark.parametrize("fmt", ["json", "binary"])
async def test_binary_and_json_sessions_agree(server: ServerProcess, fmt: str) -> None:
    jpeg = media("messi5.jpg").read_bytes()
    conn = await connect(server.ws_url, hello={"format": fmt})
    await conn.send_frame(1, jpeg)
    result = await conn.recv_until(
        lambda m: not isinstance(m, dict) or m.get("type") == "result"
    )
    await conn.close()
    ref = await connect(server.ws_url, hello={"format": "json"})
    await ref.send_frame(1, jpeg)
    want = parts_of(await ref.result())
    await ref.close()
    got = result.parts if fmt == "binary" else parts_of(result)
    for name in PARTS:
        np.testing.assert_array_equal(got[name], want[name])
