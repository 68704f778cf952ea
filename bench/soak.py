"""Soak: mixed sessions, hostile clients and worker faults for a long while, with a canary.

    .venv/bin/python bench/soak.py --minutes 30 [--json soak.json]

One server (2 workers). Throughout: a canary face session at 10 fps (its longest gap between
results is the figure that matters); producers that connect, stream 2-10 s, reconfigure, and
leave (a third of them abortively); subscribers of their streams; single images; hostile clients
cycling through floods they never read, sockets that never say hello, half-sent headers, deep
JSON, clock leaps, junk frames, oversized messages and junk multipart; and every `--kill-every`
seconds a worker SIGKILLed (every third time SIGSTOPped instead, left for the watchdog).
Sampled every 5 s: server RSS, worker RSS, sessions. At the end, with every client gone: the
books (sessions, subscribers, landmarkers all back to zero), the server log's faults, RSS drift.
Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_runs import Server, metric_sum  # noqa: E402
from holistream import protocol  # noqa: E402

FACE = (ROOT / "server" / "fixtures" / "astronaut_face.jpg").read_bytes()
BODY = (ROOT / "server" / "fixtures" / "messi5.jpg").read_bytes()
PARTS = [["face"], ["face"], ["pose"], ["face", "hands", "pose"]]


class Canary(threading.Thread):
    """A face session at 10 fps in its own thread and loop: the soak's load cannot delay it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.arrivals, self.problems = url, [], []  # type: ignore[var-annotated]
        self.stop_flag = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        try:
            async with websockets.connect(self.url + "?parts=face&fps=10", max_size=None) as ws:
                await ws.send(orjson.dumps({"type": "hello", "protocol": 1, "parts": ["face"],
                                            "fps": 10}).decode())
                reader = asyncio.create_task(self._read(ws))
                frame = 0
                while not self.stop_flag.is_set() and not reader.done():
                    await ws.send(protocol.encode_frame(frame, time.perf_counter() * 1000, FACE))
                    frame += 1
                    await asyncio.sleep(0.1)
                reader.cancel()
        except Exception as exc:
            self.problems.append(repr(exc))

    async def _read(self, ws: Any) -> None:
        async for data in ws:
            msg = orjson.loads(data)
            if msg["type"] == "result":
                self.arrivals.append(time.monotonic())
            elif msg["type"] in ("error", "warning"):
                self.problems.append({"at": time.monotonic(), "code": msg["code"]})


async def producer(url: str, n: int, rng: random.Random, stats: dict[str, int]) -> None:
    parts = rng.choice(PARTS)
    query = f"?parts={','.join(parts)}&fps=5" + (f"&stream=soak-{n}" if rng.random() < 0.5 else "")
    ws = await websockets.connect(url + query, max_size=None, open_timeout=20)
    await ws.send(orjson.dumps({"type": "hello", "protocol": 1, "parts": parts, "fps": 5}).decode())
    image = FACE if parts == ["face"] else BODY
    end = time.monotonic() + rng.uniform(2, 10)
    frame, ts = 0, rng.uniform(0, 1e6)
    reader = asyncio.create_task(_drain(ws))
    while time.monotonic() < end and not reader.done():
        await ws.send(protocol.encode_frame(frame, ts, image))
        frame, ts = frame + 1, ts + 200
        if frame == 10 and rng.random() < 0.3:
            await ws.send(orjson.dumps({"type": "configure", "parts": ["face"]}).decode())
        await asyncio.sleep(0.2)
    stats["frames"] += frame
    if rng.random() < 0.33:
        ws.transport.abort()
        stats["aborted"] += 1
    else:
        await ws.close()
    reader.cancel()


async def _drain(ws: Any) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


async def subscriber(url: str, n: int, rng: random.Random) -> None:
    async with websockets.connect(url + f"/subscribe?stream=soak-{n}", max_size=None) as ws:
        await ws.send(orjson.dumps({"type": "hello", "protocol": 1}).decode())
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            async with asyncio.timeout(rng.uniform(2, 8)):
                async for _ in ws:
                    pass


def _raw(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request)
    return sock


def _upgrade(path: str, extra: bytes = b"") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n").encode() + extra + b"\r\n"


def _frame(payload: bytes, opcode: int) -> bytes:
    size = len(payload)
    head = (bytes([0x80 | opcode, 0x80 | size]) if size < 126 else
            bytes([0x80 | opcode, 0xFE]) + size.to_bytes(2, "big") if size < 65536 else
            bytes([0x80 | opcode, 0xFF]) + size.to_bytes(8, "big"))
    return head + bytes(4) + payload


def hostile_round(port: int, kind: int) -> str:
    """One hostile client, blocking (run in a thread); returns its name."""
    hello = _frame(b'{"type":"hello","protocol":1,"parts":["face"]}', 1)
    socks: list[socket.socket] = []
    try:
        if kind == 0:  # replies it never reads
            s = _raw(port, _upgrade("/ws?parts=face"))
            s.sendall(hello)
            for i in range(8):
                s.sendall(_frame(b'{"type":"stats","id":"' + b"A" * 1_000_000 + b'"}', 1))
                s.sendall(_frame(b'{"type":"' + b"n" * 1_000_000 + b'"}', 1))
                s.sendall(_frame(protocol.encode_frame(i, i * 33.0, b"\xff\xd8\xff"), 2))
            socks.append(s)
            name = "unread floods"
        elif kind == 1:  # never says hello, only pings
            socks = [_raw(port, _upgrade("/ws")) for _ in range(5)]
            for s in socks:
                s.sendall(_frame(b"x", 9))
            name = "no hello"
        elif kind == 2:  # half a request
            socks = [_raw(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]
            name = "half headers"
        elif kind == 3:  # deep JSON, clock leaps, junk frames, protocol true
            s = _raw(port, _upgrade("/ws?parts=face"))
            s.sendall(hello)
            deep = b"[" * 900 + b"1" + b"]" * 900
            for msg in (b'{"type":"stats","id":' + deep + b"}", b'{"type":' + deep + b"}",
                        b'{"type":"configure","parts":' + deep + b"}"):
                s.sendall(_frame(msg, 1))
            for i, ts in enumerate((1000.0, 1e16, 1e300, -1e300, 2000.0)):
                s.sendall(_frame(protocol.encode_frame(i, ts, FACE), 2))
            s.sendall(_frame(protocol.encode_frame(9, 1.0, os.urandom(5000)), 2))
            socks.append(s)
            name = "deep JSON, clock leaps, junk"
        elif kind == 4:  # oversized message, rebinding, bad header bytes
            s = _raw(port, _upgrade("/ws"))
            s.sendall(bytes([0x82, 0xFF]) + (8 << 20).to_bytes(8, "big") + bytes(4))
            socks.append(s)
            socks.append(_raw(port, _upgrade("/ws", b"Origin: http://evil.example\r\n")))
            socks.append(_raw(port, _upgrade("/ws", b"Authorization: Bearer \xff\xfe\r\n")))
            name = "oversized, rebinding, header bytes"
        else:  # multipart junk
            body = b"--B\r\nContent-Disposition form-data\r\n\r\nx\r\n--B--\r\n"
            socks.append(_raw(port, (
                "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/"
                f"form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body))
            name = "multipart junk"
        time.sleep(3)
        return name
    finally:
        for s in socks:
            s.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    flags = ["--workers", "2", "--no-calibrate", "--cpu-overcommit", "20", "--max-sessions", "40",
             "--worker-timeout-s", "3", "--hello-timeout-s", "3", "--header-timeout-s", "3"]
    srv = Server.start(flags, "soak", run_dir)
    with srv:
        main = psutil.Process(srv.pid)
        canary = Canary(srv.ws_url)
        canary.start()
        stop_at = time.monotonic() + args.minutes * 60
        stats = {"frames": 0, "aborted": 0, "producers": 0, "subscribers": 0, "hostile": 0,
                 "images": 0, "kills": 0, "stops": 0, "errors": 0}
        samples: list[dict[str, float]] = []
        chaos: list[float] = []

        async def producers(n0: int) -> None:
            n = n0
            while time.monotonic() < stop_at:
                try:
                    await producer(srv.ws_url, n, rng, stats)
                    stats["producers"] += 1
                except Exception:
                    stats["errors"] += 1
                    await asyncio.sleep(1)
                n += 10

        async def subscribers() -> None:
            while time.monotonic() < stop_at:
                with contextlib.suppress(Exception):
                    await subscriber(srv.ws_url, rng.randrange(0, 400), rng)
                    stats["subscribers"] += 1
                await asyncio.sleep(1)

        async def hostiles() -> None:
            kind = 0
            while time.monotonic() < stop_at:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(hostile_round, srv.port, kind % 6)
                    stats["hostile"] += 1
                kind += 1

        async def images() -> None:
            async with aiohttp.ClientSession() as http:
                while time.monotonic() < stop_at:
                    with contextlib.suppress(Exception):
                        async with http.post(srv.url + "/v1/predict?parts=face",
                                             data=FACE + os.urandom(8),
                                             headers={"Content-Type": "image/jpeg"}) as r:
                            await r.read()
                            stats["images"] += 1
                    await asyncio.sleep(2)

        async def faults() -> None:
            count = 0
            while time.monotonic() + args.kill_every < stop_at:
                await asyncio.sleep(args.kill_every)
                pid = rng.choice(srv.worker_pids())
                chaos.append(time.monotonic())
                count += 1
                if count % 3 == 0:
                    os.kill(pid, signal.SIGSTOP)  # left for the watchdog
                    stats["stops"] += 1
                    await asyncio.sleep(6)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                else:
                    os.kill(pid, signal.SIGKILL)
                    stats["kills"] += 1

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                ready = srv.readyz()
                workers = sum(psutil.Process(w["pid"]).memory_info().rss
                              for w in ready["workers"] if w["alive"])
                samples.append({"t": time.monotonic(), "main_mib": main.memory_info().rss / 2**20,
                                "workers_mib": workers / 2**20, "sessions": ready["sessions"]})
                await asyncio.sleep(5)

        await asyncio.gather(*(producers(i) for i in range(args.producers)), subscribers(),
                             hostiles(), images(), faults(), sampler())
        canary.stop_flag.set()
        canary.join(10)
        await asyncio.sleep(3)
        return books(srv, canary, stats, samples, chaos, args)


def books(srv: Server, canary: Canary, stats: dict[str, int], samples: list[dict[str, float]],
          chaos: list[float], args: argparse.Namespace) -> dict[str, Any]:
    metrics = srv.metrics()
    ready = json.loads(srv.get("/readyz?landmarkers=1")[1])
    arrivals = canary.arrivals
    gaps = [(b - a, a) for a, b in itertools.pairwise(arrivals)]
    # Gaps that overlap a worker fault (its kill or stop, then up to 15 s for the replacement
    # to start) are the fault's; the others are what everything else cost the canary.
    calm = [g for g, at in gaps if not any(at <= c + 15 and at + g >= c for c in chaos)]
    tenth = max(len(samples) // 10, 1)
    log = srv.log()
    return {
        "minutes": args.minutes,
        "clients": stats,
        "canary": {
            "results": len(arrivals),
            "max_gap_s": round(max((g for g, _ in gaps), default=0), 3),
            "max_gap_outside_worker_faults_s": round(max(calm, default=0), 3),
            "gaps_over_1s": sum(1 for g, _ in gaps if g > 1),
            "gaps_over_1s_outside_worker_faults": sum(1 for g in calm if g > 1),
            "worker_faults": len(chaos),
            "problems": canary.problems[:20],
        },
        "rss_main_mib": {
            "first_10pct_median": round(statistics.median(
                s["main_mib"] for s in samples[:tenth]), 1),
            "last_10pct_median": round(statistics.median(
                s["main_mib"] for s in samples[-tenth:]), 1),
            "max": round(max(s["main_mib"] for s in samples), 1),
        },
        "rss_workers_mib_max": round(max(s["workers_mib"] for s in samples), 1),
        # Main process RSS over the run, one point a minute: flat, or still climbing?
        "rss_main_mib_per_minute": [round(s["main_mib"], 1) for s in samples[::12]],
        "after": {
            "sessions": ready["sessions"],
            "landmarkers": [w.get("landmarkers") for w in ready["workers"]],
            "sessions_gauge": metric_sum(metrics, "holistream_sessions"),
            "subscribers_gauge": metric_sum(metrics, "holistream_subscribers"),
            "worker_restarts": metric_sum(metrics, "holistream_worker_restarts_total"),
        },
        "server_log": {
            "error_handling_request": log.count("Error handling request"),
            "tracebacks": log.count("Traceback"),
            "hung_workers_replaced": log.count("is hung (stopped, or silent"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
