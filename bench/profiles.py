"""Tracking profiles through real servers: sessions held at 15 fps, memory, CPU and detection.

One `holistream serve` per profile (holistic, face, pose, hands) on 127.0.0.1, all started
together, admission wide open so the machine is what gives out.
1. Capacity: N sessions, each an open-loop 15 fps camera on the profile's home video; N is
   searched (grow, then bisect) for the largest where every session gets >= 95 % of its frames
   back. Profiles take turns step by step, so other load on the machine falls on each alike.
   Memory: the workers' RSS growth from 2 warm sessions to 6 (per session), and what the first
   2 added beyond that (per worker, once: the runtime a worker loads with its first landmarker).
2. Detection: both fixture videos closed loop (nothing dropped): parts found, the pipeline of each
   result, pipeline_fallback warnings, workers' CPU per frame (all threads, decode included).

    .venv/bin/python bench/profiles.py [--out docs/benchmarks-profiles.md] [--quiet-load 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the test helpers start and read the servers

from holistream.protocol import PIPELINES, encode_frame  # noqa: E402
from loadgen.pacing import frame_offset, phase  # noqa: E402
from tests.conftest import ServerProcess, start_server  # noqa: E402
from tests.test_stream_landmarks import video_jpegs  # noqa: E402

VIDEOS = {"messi": "messi_pan_640x480.avi", "astronaut": "astronaut_pan_640x480.avi"}
PROFILES: dict[str, tuple[list[str], str]] = {  # pipeline: (parts, home video for capacity)
    "holistic": (["face", "hands", "pose"], "messi"),
    "face": (["face"], "astronaut"),
    "pose": (["pose"], "messi"),
    "hands": (["hands"], "messi"),
}
FPS, RATE_OK, WARM_S, MEASURE_S = 15.0, 0.95, 3.0, 6.0
# Calibration off: the landmarkers it creates and frees would hide part of the memory growth.
SERVER_FLAGS = ("--workers", "2", "--cpu-overcommit", "1000", "--max-sessions", "500",
                "--memory-budget-mb", "1000000", "--idle-timeout-s", "60", "--no-calibrate")
# Search seeds only: worker CPU ms per frame on the home video (hands falls back on messi_pan).
SEED_MS = {"holistic": 49.0, "face": 7.0, "pose": 20.0, "hands": 50.0}
CPU, RSS, DONE = ("holistream_workers_cpu_seconds_total", "holistream_workers_rss_bytes",
                  "holistream_frames_processed_total")
_HEADER = struct.Struct("<4sHH")  # magic, header length, flags (pipeline in bits 12-15)


@dataclass
class Tally:
    results: int = 0
    in_window: int = 0
    warnings: int = 0
    pipelines: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)


async def _hello(ws: ClientConnection, parts: list[str], fmt: str) -> None:
    await ws.send(orjson.dumps({"type": "hello", "protocol": 1, "parts": parts, "fps": FPS,
                                "format": fmt, "client": "bench/profiles"}).decode())
    ready = orjson.loads(await ws.recv())
    if ready.get("type") != "ready":
        raise RuntimeError(f"no ready: {ready}")


async def closed_loop(url: str, parts: list[str], frames: list[bytes]) -> Tally:
    """Each frame after the previous result (JSON, to see every part)."""
    tally = Tally()
    async with connect(url, max_size=None, ping_interval=None, compression=None) as ws:
        await _hello(ws, parts, "json")
        for i, jpeg in enumerate(frames):
            await ws.send(encode_frame(i, 1000.0 + i * 1000 / 30, jpeg))
            while (msg := orjson.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] != "result":
                tally.warnings += msg.get("code") == "pipeline_fallback"
            tally.results += 1
            tally.pipelines[msg["pipeline"]] += 1
            hands = [msg.get(h) is not None for h in ("left_hand", "right_hand")]
            tally.found.update({"face": msg.get("face") is not None, "both hands": all(hands),
                                "pose": msg.get("pose") is not None, "a hand": any(hands)})
    return tally


async def _camera(ws: ClientConnection, index: int, frames: list[bytes], t0: float,
                  stop: float) -> None:
    loop = asyncio.get_running_loop()
    k, offset, start = 0, frame_offset(index, len(frames)), t0 + phase(index, 1 / FPS)
    while (due := start + k / FPS) < stop:
        await asyncio.sleep(max(0.0, due - loop.time()))
        await ws.send(encode_frame(k, due * 1000, frames[(offset + k) % len(frames)]))
        k += 1


async def _reader(ws: ClientConnection, tally: Tally, window: tuple[float, float]) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(Exception):
        async for data in ws:
            if isinstance(data, bytes):  # a binary result: count it, read only its pipeline
                tally.results += 1
                tally.in_window += window[0] <= loop.time() < window[1]
                tally.pipelines[PIPELINES[(_HEADER.unpack_from(data)[2] >> 12) & 0xF]] += 1
            else:
                tally.warnings += "pipeline_fallback" in data


async def open_loop(server: ServerProcess, parts: list[str], frames: list[bytes],
                    n: int) -> dict[str, Any]:
    """N cameras at 15 fps; each session's share of its frames returned in the window."""
    conns = [await connect(server.ws_url, max_size=None, ping_interval=None, compression=None)
             for _ in range(n)]
    tallies = [Tally() for _ in conns]
    readers: list[asyncio.Task[None]] = []
    try:
        for ws in conns:
            await _hello(ws, parts, "binary")
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.5
        window = (t0 + WARM_S, t0 + WARM_S + MEASURE_S)
        readers += [asyncio.create_task(_reader(ws, t, window))
                    for ws, t in zip(conns, tallies, strict=True)]
        cams = [asyncio.create_task(_camera(ws, i, frames, t0, window[1] + 0.2))
                for i, ws in enumerate(conns)]
        await asyncio.sleep(window[0] - loop.time())
        cpu0, done0, c0 = server.metric(CPU), server.metric(DONE), time.process_time()
        await asyncio.gather(*cams)
        client_cores = (time.process_time() - c0) / MEASURE_S
        cpu1, done1 = server.metric(CPU), server.metric(DONE)
        await asyncio.sleep(0.3)
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
    rates = sorted(t.in_window / (MEASURE_S * FPS) for t in tallies)
    pipelines = sum((t.pipelines for t in tallies), Counter[str]())
    return {"n": n, "ok": rates[0] >= RATE_OK, "min_rate": rates[0],
            "median_rate": rates[len(rates) // 2],
            "cpu_ms_per_frame": 1000 * (cpu1 - cpu0) / max(done1 - done0, 1),
            "client_cores": client_cores, "pipelines": dict(pipelines),
            "warnings": sum(t.warnings for t in tallies), "load1": os.getloadavg()[0]}


async def memory(server: ServerProcess, parts: list[str], frames: list[bytes]) -> dict[str, float]:
    """RSS per session (from 2 warm sessions to 6) and per worker once (the first 2, less)."""
    rss, conns = [server.metric(RSS)], []
    try:
        for batch in (2, 4):
            for _ in range(batch):
                conns.append(ws := await connect(server.ws_url, max_size=None, compression=None))
                await _hello(ws, parts, "binary")
                for i, jpeg in enumerate(frames[:4]):  # enough frames for a fallback to happen
                    await ws.send(encode_frame(i, 1000.0 + i * 1000 / FPS, jpeg))
                    while not isinstance(await asyncio.wait_for(ws.recv(), 60), bytes):
                        pass
            rss.append(server.metric(RSS))
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    per_session = (rss[2] - rss[1]) / 4
    return {"session": per_session, "worker": (rss[1] - rss[0] - 2 * per_session) / 2}


def next_count(n: int, median_rate: float, lo: int, hi: int | None) -> int | None:
    """The next session count, given the highest that held (`lo`) and the lowest that did not
    (`hi`); None when they meet. Grows by ~1/6 until one fails; after a failure with nothing
    held yet, guesses from the throughput it did get; then bisects."""
    if hi is None:
        return n + max(1, n // 6)
    if lo == 0:
        return None if hi == 1 else max(1, min(hi - 1, int(hi * median_rate)))
    mid = (lo + hi) // 2
    return None if mid == lo else mid


class Search:
    """One profile's capacity search on its own server."""

    def __init__(self, name: str, server: ServerProcess) -> None:
        self.name, self.server = name, server
        self.parts, self.home = PROFILES[name]
        self.out: dict[str, Any] = {"profile": name, "home": self.home, "steps": [],
                                    "detection": {}}
        self.n: int | None = max(1, int(2000 / (FPS * SEED_MS[name]) * 0.8))  # 2 cores
        self.lo: int = 0
        self.hi: int | None = None

    async def step(self, frames: list[bytes]) -> None:
        assert self.n is not None
        if "memory" not in self.out:  # first, on the fresh server
            self.out["memory"] = await memory(self.server, self.parts, frames)
            await asyncio.sleep(1.0)
        n, step = self.n, await open_loop(self.server, self.parts, frames, self.n)
        self.out["steps"].append(step)
        print(f"  {self.name}: {n} sessions -> min rate {step['min_rate']:.3f}, "
              f"load {step['load1']:.1f}", flush=True)
        if step["ok"]:
            self.lo = max(self.lo, n)
        else:
            self.hi = n if self.hi is None else min(self.hi, n)
        self.n = next_count(n, step["median_rate"], self.lo, self.hi)

    async def detection(self, videos: dict[str, list[bytes]]) -> None:
        for video, frames in videos.items():
            cpu0 = self.server.metric(CPU)
            tally = await closed_loop(self.server.ws_url, self.parts, frames[:120])
            cpu = (self.server.metric(CPU) - cpu0) * 1000 / tally.results
            self.out["detection"][video] = {"frames": tally.results, "found": dict(tally.found),
                                            "pipelines": dict(tally.pipelines),
                                            "warnings": tally.warnings, "cpu_ms_per_frame": cpu}

    def result(self) -> dict[str, Any]:
        self.out["capacity"], self.out["bounded"] = self.lo, self.hi == self.lo + 1
        return self.out


async def run_all(names: list[str], videos: dict[str, list[bytes]],
                  deadline: float) -> list[dict[str, Any]]:
    servers = [start_server(*SERVER_FLAGS, name=f"bench-{n}", ready=False) for n in names]
    try:
        for server in servers:
            server.wait_ready(180)
        searches = [Search(name, server) for name, server in zip(names, servers, strict=True)]
        while time.monotonic() < deadline and any(s.n is not None for s in searches):
            for search in searches:
                if search.n is not None and time.monotonic() < deadline:
                    await search.step(videos[search.home])
                    await asyncio.sleep(1.0)  # let the closes reach the workers
        for search in searches:
            await search.detection(videos)
        return [search.result() for search in searches]
    finally:
        for server in servers:
            server.stop()


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    holistic = next((r["capacity"] for r in runs if r["profile"] == "holistic"), 0)
    cpu = {r["profile"]: statistics.median(s["cpu_ms_per_frame"] for s in r["steps"])
           for r in runs if r["steps"]}
    out = [
        "# Benchmark: tracking profiles", "",
        f"`{meta['command']}`, {meta['date']}, {meta['elapsed_s']:.0f} s. "
        f"Machine: {meta['machine']}.", "",
        f"- `uptime` before: `{meta['uptime_before']}`",
        f"- `uptime` after: `{meta['uptime_after']}`", "",
        "The machine is shared with other engineers' runs and the load generator runs on it "
        "too (its cores are in the steps table): these are what this box did in this run. "
        f"Servers: `holistream serve {' '.join(SERVER_FLAGS)}`, one per profile, started "
        "together; the profiles' steps take turns. Worker CPU is all the workers' threads, "
        "decode included, per result. Memory (RSS of the workers): per session from 2 warm "
        "sessions to 6 on the fresh server, each given 4 frames of its home video; per worker "
        "once, what the first 2 sessions added beyond that (the runtime a worker loads with its "
        "first landmarker).", "",
        "## Sessions held at 15 fps (every session >= 95 % of its frames returned)", "",
        _row("profile", "home video", "sessions", "× holistic", "worker CPU ms/frame",
             "holistic CPU ÷ this", "memory per session", "+ per worker once"),
        _row(*["---"] * 8),
    ]
    for r in runs:
        p = r["profile"]
        out.append(_row(
            p, r["home"], f"{r['capacity']}{'' if r['bounded'] else ' (search cut short)'}",
            f"{r['capacity'] / holistic:.1f}" if holistic else "—",
            f"{cpu[p]:.1f}" if p in cpu else "—",
            f"{cpu['holistic'] / cpu[p]:.1f}" if p in cpu and "holistic" in cpu else "—",
            *(f"{r['memory'][k] / 2**20:.0f} MiB" if "memory" in r else "—"
              for k in ("session", "worker"))))
    out += ["", "## Detection (closed loop, 120 frames, nothing dropped)", "",
            "Counted in what each session received: a face-only session that fell back still "
            "receives only `face`.", "",
            _row("profile", "video", "face", "pose", "both hands", "a hand",
                 "results by pipeline", "fallback warnings", "worker CPU ms/frame"),
            _row(*["---"] * 9)]
    for r in runs:
        for video, d in r["detection"].items():
            f, n = d["found"], d["frames"]
            out.append(_row(r["profile"], video, *(f"{f[k]}/{n}" for k in (
                "face", "pose", "both hands", "a hand")), _pipes(d["pipelines"]),
                d["warnings"], f"{d['cpu_ms_per_frame']:.1f}"))
    out += ["", "## Steps", "", _row("profile", "sessions", "min rate", "median rate",
                                     "worker CPU ms/frame", "generator cores",
                                     "results by pipeline", "load (1 min)"), _row(*["---"] * 8)]
    for r in runs:
        out += [_row(r["profile"], s["n"], f"{s['min_rate']:.3f}", f"{s['median_rate']:.3f}",
                     f"{s['cpu_ms_per_frame']:.1f}", f"{s['client_cores']:.2f}",
                     _pipes(s["pipelines"]), f"{s['load1']:.1f}") for s in r["steps"]]
    return "\n".join(out) + "\n"


def _pipes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.partition(":")[2].strip() for ln in f if ln.startswith("model name")),
                     model)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{len(os.sched_getaffinity(0))} CPUs ({model}), {mem:.1f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-profiles.md")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--budget-s", type=float, default=420.0, help="the whole run, roughly")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--quiet-load", type=float, default=0.0,
                    help="first wait (up to 10 min, not counted) for the 1-min load below this")
    args = ap.parse_args()
    waited = time.monotonic()
    while args.quiet_load and os.getloadavg()[0] >= args.quiet_load:
        if time.monotonic() - waited > 600:
            print("bench: the machine stayed busy; measuring anyway", flush=True)
            break
        time.sleep(15)
    started = time.monotonic()
    meta: dict[str, Any] = {"command": "python bench/profiles.py " + " ".join(sys.argv[1:]),
                            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": _machine(),
                            "uptime_before": _uptime()}
    videos = {k: video_jpegs(v) for k, v in VIDEOS.items()}
    # Detection at the end takes about a minute here: stop stepping before that.
    runs = await run_all(args.profiles.split(","), videos, started + args.budget_s - 60)
    meta |= {"uptime_after": _uptime(), "elapsed_s": time.monotonic() - started}
    args.out.write_text(markdown(runs, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print(f"wrote {args.out} in {meta['elapsed_s']:.0f} s")


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
