"""The real server under load: launcher, samplers, the load generator, probe clients.

A server is a `holistream serve` subprocess on 127.0.0.1 (port 0), stopped on exit whatever
happens. Its CPU and memory are read with psutil on its process tree (main process, inference
workers, anything else it spawned) and from its own /metrics, sampled on a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.client import ClientConnection, connect

from holistream.protocol import dumps, encode_frame, parse_message
from tests.harness import ServerProcess, start_server

BIN = Path(sys.executable).parent
_CALIBRATED = re.compile(r"calibrated: .*?holistic ([\d.]+) ms/frame (\d+) MiB")
READY_TIMEOUT_S = 120.0


def _exe(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


# ---------------------------------------------------------------------------- /metrics


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition format into samples."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        with contextlib.suppress(ValueError):
            out.append(Sample(m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def metric_sum(samples: Sequence[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )  # fmt: skip


def histogram_quantile(
    before: Sequence[Sample], after: Sequence[Sample], name: str, q: float, **labels: str
) -> float | None:
    """Quantile of a histogram's increase between two scrapes, interpolated within the bucket
    (as Prometheus' histogram_quantile does); None if nothing was observed."""
    def buckets(samples: Sequence[Sample]) -> dict[float, float]:
        return {
            float(s.labels["le"]): s.value for s in samples
            if s.name == f"{name}_bucket"
            and all(s.labels.get(k) == v for k, v in labels.items())
        }  # fmt: skip

    b0, b1 = buckets(before), buckets(after)
    edges = sorted(b1)
    counts = [b1[e] - b0.get(e, 0.0) for e in edges]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for edge, cum in zip(edges, counts, strict=True):
        if cum >= rank:
            if edge == float("inf"):
                return lower
            inside = cum - below
            return lower + (edge - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = edge, cum
    return lower


# ---------------------------------------------------------------------------- the server


class Server(ServerProcess):
    """`holistream serve --port 0 FLAGS` (tests/harness.py) with what the benchmarks read."""

    @classmethod
    def start(cls, flags: Sequence[str], name: str, run_dir: Path) -> Server:
        """Started and ready; use it as a context manager, which stops it on exit."""
        return start_server(*flags, name=name, log_path=run_dir / f"server-{name}.log",
                            ready_timeout=READY_TIMEOUT_S, cls=cls)

    @property
    def command(self) -> list[str]:
        return ["holistream", *self.args[1:]]

    def metrics(self) -> list[Sample]:
        return parse_metrics(self.get("/metrics")[1].decode("utf-8", "replace"))

    def calibrated_holistic(self) -> tuple[float, int] | None:
        """(CPU ms per frame, MiB per landmarker) the server calibrated for holistic."""
        m = _CALIBRATED.search(self.log())
        return (float(m[1]), int(m[2])) if m else None


# ---------------------------------------------------------------------------- sampling


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """CPU seconds and RSS bytes of a server's process tree at one instant."""

    t: float
    main_cpu: float
    workers_cpu: float
    other_cpu: float
    main_rss: int
    workers_rss: int
    other_rss: int

    @property
    def cpu(self) -> float:
        return self.main_cpu + self.workers_cpu + self.other_cpu

    @property
    def rss(self) -> int:
        return self.main_rss + self.workers_rss + self.other_rss


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def tree_usage(pid: int, workers: Sequence[int]) -> TreeUsage:
    main = psutil.Process(pid)
    wcpu = ocpu = 0.0
    wrss = orss = 0
    for child in main.children(recursive=True):
        try:
            cpu, rss = _cpu(child), int(child.memory_info().rss)
        except psutil.Error:
            continue
        if child.pid in workers:
            wcpu, wrss = wcpu + cpu, wrss + rss
        else:
            ocpu, orss = ocpu + cpu, orss + rss
    return TreeUsage(time.monotonic(), _cpu(main), wcpu, ocpu, int(main.memory_info().rss),
                     wrss, orss)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tick:
    usage: TreeUsage
    processed: float  # holistream_frames_processed_total
    sessions: float  # holistream_sessions (live)
    metrics_cpu: float  # process_cpu_seconds_total + holistream_workers_cpu_seconds_total
    host_busy_pct: float  # all CPUs of the machine since the previous tick


@dataclass
class Sampler:
    """Samples a server every `interval_s` on a thread until stopped."""

    server: Server
    interval_s: float = 1.0
    ticks: list[Tick] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._workers = self.server.worker_pids()
        psutil.cpu_percent(None)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def sample(self) -> Tick:
        metrics = self.server.metrics()
        usage = tree_usage(self.server.pid, self._workers)
        return Tick(
            usage,
            metric_sum(metrics, "holistream_frames_processed_total"),
            metric_sum(metrics, "holistream_sessions"),
            metric_sum(metrics, "process_cpu_seconds_total")
            + metric_sum(metrics, "holistream_workers_cpu_seconds_total"),
            psutil.cpu_percent(None),
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ticks.append(self.sample())
            except (OSError, psutil.Error, ValueError):
                self.errors += 1
            self._stop.wait(self.interval_s)


def steady_window(ticks: Sequence[Tick], sessions: int, warmup_s: float) -> tuple[Tick, Tick]:
    """First and last tick of the steady part: `sessions` live for `warmup_s` already, and the
    frame rate not yet fallen (the generator stops sending at its end, before disconnecting)."""
    full = [t for t in ticks if t.sessions >= sessions]
    if len(full) < 3:
        raise RuntimeError(f"never {sessions} live sessions for 3 samples")
    start = full[0].usage.t + warmup_s
    window = [t for t in full if t.usage.t >= start]
    if len(window) < 3:
        raise RuntimeError("steady window too short")
    steps = [b.processed - a.processed for a, b in itertools.pairwise(window)]
    typical = statistics.median(steps)
    last = max(i for i, s in enumerate(steps) if s >= 0.5 * typical) + 1
    return window[0], window[last]


# ---------------------------------------------------------------------------- load generator


def run_loadgen(args: Sequence[str], json_path: Path, log_path: Path, budget_s: float,
                nice: int = 0) -> dict[str, Any]:  # fmt: skip
    """Run `holistream-loadgen ARGS --json PATH --quiet`, bounded; returns its first stage.
    `nice` > 0 runs it at that lower priority (the server under test gets the cores first)."""
    cmd = [_exe("holistream-loadgen"), *args, "--json", str(json_path), "--quiet"]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        proc.wait(budget_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # drain and report what it has
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if not json_path.exists():
        raise RuntimeError(f"loadgen exited with {proc.returncode}, no report: see {log_path}")
    report: dict[str, Any] = json.loads(json_path.read_text())
    stage: dict[str, Any] = report["stages"][0]
    stage["command"] = "holistream-loadgen " + " ".join(args)
    return stage


# ---------------------------------------------------------------------------- probe clients


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


async def _open_session(
    ws_url: str, fps: float, fmt: str = "json", compression: str | None = None
) -> ClientConnection:
    """A producer session that got `ready`. `compression="deflate"` offers permessage-deflate,
    as browsers always do (the server accepts it); None offers nothing, as holistream-loadgen."""
    ws = await connect(
        f"{ws_url}?parts=face,hands,pose&fps={fps:g}",
        open_timeout=10, ping_interval=None, max_size=16 * 2**20, compression=compression,
    )  # fmt: skip
    await ws.send(dumps({"type": "hello", "protocol": 1, "parts": ["face", "hands", "pose"],
                         "format": fmt, "fps": fps, "client": "holistream-bench"}))  # fmt: skip
    async with asyncio.timeout(30):
        while True:
            msg = parse_message(await ws.recv())
            if msg["type"] == "ready":
                return ws
            if msg["type"] == "error" and msg.get("fatal"):
                await ws.close()
                raise RuntimeError(f"session refused: {msg.get('code')}: {msg.get('message')}")


async def _latency_probe(ws_url: str, frames: list[bytes], fps: float, duration_s: float,
                         warmup_s: float, compression: str | None) -> dict[str, Any]:  # fmt: skip
    ws = await _open_session(ws_url, fps, compression=compression)
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
    sent: dict[int, float] = {}
    rows: list[tuple[float, float, float, float, float]] = []  # sent_at, e2e, dec, inf, total
    other: dict[str, int] = {}
    done = asyncio.Event()
    n = int(duration_s * fps)

    async def reader() -> None:
        async for data in ws:
            now = time.monotonic()
            msg = parse_message(data)
            kind = msg["type"]
            if kind == "result":
                at = sent.pop(msg["frame"], None)
                timing = msg["timing"]
                if at is not None:
                    rows.append((at, (now - at) * 1000, timing["decode_ms"],
                                 timing["inference_ms"], timing["total_ms"]))  # fmt: skip
                if msg["frame"] == n - 1:
                    done.set()
            elif kind != "stats":
                key = f"{kind}:{msg.get('code', '')}"
                other[key] = other.get(key, 0) + 1

    task = asyncio.create_task(reader())
    try:
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            sent[k] = now
            await ws.send(encode_frame(k, now * 1000.0, frames[k % len(frames)]))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await done.wait()
    finally:
        await ws.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    kept = [r for r in rows if r[0] - t0 >= warmup_s]
    e2e = [r[1] for r in kept]
    added = [r[1] - r[2] - r[3] for r in kept]
    outside = [r[1] - r[4] for r in kept]
    in_server = [r[4] - r[2] - r[3] for r in kept]
    return {
        "compression": compression,
        "extensions": extensions,
        "frames_sent": n,
        "results": len(rows),
        "measured": len(kept),
        "unanswered_or_dropped": n - len(rows),
        "other_messages": other,
        "e2e_ms": _percentiles(e2e),
        "added_ms": _percentiles(added),
        "outside_server_ms": _percentiles(outside),
        "in_server_overhead_ms": _percentiles(in_server),
        "decode_ms": _percentiles([r[2] for r in kept]),
        "inference_ms": _percentiles([r[3] for r in kept]),
    }


def latency_probe(ws_url: str, frames: list[bytes], fps: float, duration_s: float,
                  compression: str | None, warmup_s: float = 2.0) -> dict[str, Any]:  # fmt: skip
    """One open-loop client at `fps`: per frame, client send→result time against the worker's
    own decode and inference time for that frame."""
    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(duration_s + 60):
            return await _latency_probe(ws_url, frames, fps, duration_s, warmup_s, compression)

    return asyncio.run(bounded())


@dataclass
class HeldSessions:
    """Idle-but-open sessions, one answered frame each, on a private event loop thread (so
    that sampling can go on in the caller's thread)."""

    ws_url: str
    frames: list[bytes]
    held: list[ClientConnection] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def __enter__(self) -> HeldSessions:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def open(self, count: int) -> None:
        """Open `count` more sessions; returns when each has had its frame answered."""
        future = asyncio.run_coroutine_threadsafe(self._open(count), self._loop)
        future.result(60 + 10 * count)

    async def _open(self, count: int) -> None:
        for _ in range(count):
            ws = await _open_session(self.ws_url, 15)
            self.held.append(ws)
            image = self.frames[len(self.held) % len(self.frames)]
            await ws.send(encode_frame(0, time.monotonic() * 1000.0, image))
            async with asyncio.timeout(30):
                while parse_message(await ws.recv())["type"] != "result":
                    pass
            self.readers.append(asyncio.create_task(self._discard(ws)))  # periodic stats

    @staticmethod
    async def _discard(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    async def _close_all(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.held), return_exceptions=True)
        for task in self.readers:
            task.cancel()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def settle_rss(pid: int, workers: Sequence[int], seconds: float = 2.0) -> TreeUsage:
    """The tree's memory after `seconds`, median of a few readings."""
    time.sleep(seconds)
    readings = []
    for _ in range(5):
        readings.append(tree_usage(pid, workers))
        time.sleep(0.2)
    return sorted(readings, key=lambda u: u.workers_rss)[len(readings) // 2]


@contextlib.contextmanager
def rss_sampler(pid: int, workers: Sequence[int], interval_s: float = 0.5
                ) -> Iterator[list[TreeUsage]]:  # fmt: skip
    """Samples the tree's usage on a thread for the duration of the block."""
    samples: list[TreeUsage] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error, OSError):
                samples.append(tree_usage(pid, workers))
            stop.wait(interval_s)

    thread = threading.Thread(target=run, name="bench-rss", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)
