"""Protocol 1.1 end to end: the same frames of a close-up clip reach a JSON producer, binary and
JSON subscribers in Python and in C# (compiled with mcs, run with mono), and a 1.0 binary
subscriber. Every decoded value is the same float32, bit for bit; the 1.0 layout differs exactly
where it clips."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from holistream import client as hs
from holistream import protocol
from holistream.landmarks import PART_NAMES
from tests.conftest import ARTIFACTS, ROOT, ServerProcess, media
from tests.wsclient import connect

FRAMES = 12
CSHARP = ROOT / "clients" / "csharp"
# The JSON rig's rounding (docs/rig.md) against the binary rig's float32s.
RIG_ATOL = {"bones": 6e-6, "hips": 6e-5, "head": 6e-3, "expressions": 6e-4, "confidence": 6e-4}


def close_up_jpegs(count: int) -> list[bytes]:
    """The astronaut clip framed as a webcam close-up (head and shoulders fill the picture, 3x):
    pose points below the picture (hips, knees, heels) then reach y ≈ 4.5, where the 1.0 binary
    layout saturated at 3.2767."""
    cap = cv2.VideoCapture(str(media("astronaut_pan_640x480.avi")))
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        assert ok
        h, w = bgr.shape[:2]
        close = cv2.resize(bgr[h // 12 : h * 5 // 12, w // 3 : w * 2 // 3], (640, 480))
        frames.append(cv2.imencode(".jpg", close, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cap.release()
    return frames


def compile_example() -> Path:
    if shutil.which("mcs") is None or shutil.which("mono") is None:
        pytest.skip("mcs and mono are not installed (scripts/setup --test installs them)")
    ARTIFACTS.mkdir(exist_ok=True)
    exe = ARTIFACTS / f"holistream-example-{os.getpid()}.exe"
    sources = [str(CSHARP / "Holistream.cs"), str(CSHARP / "Example.cs")]
    done = subprocess.run(
        ["mcs", "-langversion:7", "-warnaserror+", f"-out:{exe}", *sources],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return exe


class CSharpSubscriber:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []

    async def until(self, event: str, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(line.get("event") == event for line in self.lines):
                await self.read_line()

    async def read_line(self) -> bool:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if raw:
            self.lines.append(json.loads(raw))
        return bool(raw)

    async def finish(self, timeout: float = 30.0) -> list[dict]:
        async with asyncio.timeout(timeout):
            while await self.read_line():
                pass
            assert await self.proc.wait() == 0, self.lines[-3:]
        return [line for line in self.lines if "frame" in line]


async def start_csharp(exe: Path, server: ServerProcess, stream: str, fmt: str) -> CSharpSubscriber:
    proc = await asyncio.create_subprocess_exec(
        "mono", str(exe), "--url", f"ws://127.0.0.1:{server.port}", "--stream", stream,
        "--format", fmt, "--rig", "--dump", str(FRAMES), "--seconds", "60",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sub = CSharpSubscriber(proc)
    try:
        await sub.until("ready")
    except BaseException:
        proc.kill()
        raise
    return sub


async def test_every_client_decodes_the_same_values(server: ServerProcess) -> None:
    exe = compile_example()
    stream = f"lossless-{os.getpid()}"
    jpegs = close_up_jpegs(FRAMES)
    csharp = [await start_csharp(exe, server, stream, fmt) for fmt in ("binary", "json")]
    # Read their output as it comes: a full pipe would stall them.
    csharp_done = [asyncio.create_task(sub.finish(timeout=90)) for sub in csharp]
    base = f"ws://127.0.0.1:{server.port}"
    py_binary = await hs.subscribe(base, stream, format="binary")
    legacy = await connect(
        f"{base}/ws/subscribe?stream={stream}",
        hello={"protocol": 1, "format": "binary"},
    )
    assert legacy.ready["protocol"] == 1
    produced: list[protocol.Result] = []
    async with hs.connect(base, stream=stream, rig=True) as producer:
        for jpeg in jpegs:  # closed loop: every frame gets its result, none is dropped
            frame = await producer.send_frame(jpeg)
            async with asyncio.timeout(30):
                while not (isinstance(msg := await producer.recv(), protocol.Result)
                           and msg.frame == frame):  # fmt: skip
                    pass
            produced.append(msg)
    got_binary, got_legacy = [], []
    async with asyncio.timeout(30):
        while len(got_binary) < FRAMES:
            if isinstance(msg := await py_binary.recv(), protocol.Result):
                got_binary.append(msg)
        while len(got_legacy) < FRAMES:
            if isinstance(msg := await legacy.recv(), protocol.Result):
                got_legacy.append(msg)
    await py_binary.close()
    await legacy.close()
    from_csharp = dict(zip(("binary", "json"), await asyncio.gather(*csharp_done), strict=True))

    frames = [r.frame for r in produced]
    assert [r.frame for r in got_binary] == frames
    for fmt, rows in from_csharp.items():
        assert [row["frame"] for row in rows] == frames, fmt
    beyond = 0
    for i, ref in enumerate(produced):
        for name in PART_NAMES:
            want = ref.parts.get(name)
            if want is None:
                assert got_binary[i].parts.get(name) is None
                continue
            bits = want.astype("<f4").tobytes()
            assert got_binary[i].parts[name].tobytes() == bits, (ref.frame, name)
            for fmt, rows in from_csharp.items():
                cs = np.asarray(rows[i][name], np.float64).astype(np.float32).reshape(want.shape)
                assert cs.tobytes() == bits, (fmt, ref.frame, name)
            # The 1.0 layout equals them wherever it can, and clips the rest.
            far = np.abs(want) > 3.2767
            beyond += int(far.sum())
            old = got_legacy[i].parts[name]
            np.testing.assert_allclose(old[~far], want[~far], atol=0.5e-4 + 1e-6)
            assert np.all(np.abs(old[far]) <= 3.2767)
        assert ref.rig is not None
        for fmt, rows in from_csharp.items():
            rig = rows[i]["rig"]
            cs_bones = np.asarray(rig["bones"]).reshape(-1, 4)
            want_bones = np.asarray(list(ref.rig["bones"].values()))
            want_rig = {
                "bones": want_bones, "hips": ref.rig["hips"], "head": ref.rig["head"],
                "expressions": list(ref.rig["expressions"].values()),
                "confidence": list(ref.rig["confidence"].values()),
            }  # fmt: skip
            got_rig = {k: (cs_bones if k == "bones" else rig[k]) for k in want_rig}
            for key, want_values in want_rig.items():
                want_f32 = np.asarray(want_values, np.float32)
                got_f32 = np.asarray(got_rig[key], np.float32).reshape(want_f32.shape)
                if fmt == "json":  # the same rounded numbers, parsed by both
                    assert got_f32.tobytes() == want_f32.tobytes(), (ref.frame, key)
                else:
                    np.testing.assert_allclose(got_f32, want_f32, atol=RIG_ATOL[key], rtol=0)
    size = len(protocol.encode_result_json(produced[-1]))
    print(f"values beyond ±3.2767 in {FRAMES} results: {beyond}; JSON result ≈ {size} B")
    assert beyond > 0  # the clip does reach where the 1.0 layout clips


async def test_csharp_producer_keeps_its_credits_and_publishes(server: ServerProcess) -> None:
    """The C# producer sends a frame only with a credit free (and within its grant): nothing it
    sends is superseded, every frame is answered, and a Python subscriber of its stream gets the
    same values."""
    exe = compile_example()
    stream = f"csharp-producer-{os.getpid()}"
    frames = 8
    superseded = server.metric("holistream_frames_dropped_total", 'reason="superseded"')
    watcher = await hs.subscribe(f"ws://127.0.0.1:{server.port}", stream, format="binary")
    proc = await asyncio.create_subprocess_exec(
        "mono", str(exe), "--url", f"ws://127.0.0.1:{server.port}", "--stream", stream,
        "--produce", str(media("messi5.jpg")), "--frames", str(frames), "--format", "json",
        "--dump", str(frames), "--seconds", "60", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    own = [r for r in await CSharpSubscriber(proc).finish(timeout=90) if "frame" in r]
    seen: list[protocol.Result] = []
    async with asyncio.timeout(30):
        while not isinstance(msg := await watcher.recv(), hs.StreamEvent) or (
            msg.type != "stream_ended"
        ):
            if isinstance(msg, protocol.Result):
                seen.append(msg)
    await watcher.close()
    assert server.metric("holistream_frames_dropped_total", 'reason="superseded"') == superseded
    assert [r["frame"] for r in own] == [r.frame for r in seen] and len(own) >= frames // 2
    for mine, theirs in zip(own, seen, strict=True):
        for name in PART_NAMES:
            want = theirs.parts.get(name)
            got = mine[name]
            assert (got is None) == (want is None), name
            if want is not None:
                assert np.array_equal(np.asarray(got, np.float32).reshape(want.shape), want), name
