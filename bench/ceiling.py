"""Bare MediaPipe, no server, no network: the ceiling and the tracking benefit.

Every measurement runs in spawned child processes (as the server's workers are), on the exact
pixels the load generator sends: the fixture video JPEG-encoded by `loadgen.frames.load_frames`
and decoded by `server.workers.imaging.decode_rgb`. CPU time is `time.process_time()` of the
child, i.e. every thread MediaPipe runs; wall time is `time.perf_counter()`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_PIXELS = 4096 * 4096
MAX_SIDE = 8192
CHILD_TIMEOUT_S = 180.0  # start-up and warm-up of one child, on top of its measured time


@dataclass(frozen=True, slots=True)
class LoopResult:
    """One child's bare VIDEO-mode loop."""

    index: int
    frames: int
    wall_s: float
    cpu_s: float
    detect_ms_p50: float  # wall time of one detect()
    decode_cpu_ms: float  # CPU ms to decode one frame (measured before the loop)


def _quiet() -> None:
    """Drop MediaPipe's native INFO/WARNING chatter on fd 2, as the server's workers do."""
    from server.logs import filter_native_logs

    filter_native_logs("bench")


def _decode_all(frames: list[bytes]) -> list[Any]:
    from server.workers import imaging

    return [imaging.decode_rgb(f, max_pixels=MAX_PIXELS, max_side=MAX_SIDE) for f in frames]


def _ceiling_child(
    index: int,
    model: str,
    frames: list[bytes],
    start_frame: int,
    duration_s: float,
    barrier: Any,
    out: Any,
    pipeline: str = "holistic",
    decode_each: bool = False,
) -> None:
    """Decode, warm up, wait for the others, then detect in a loop for `duration_s`
    (`decode_each`: decode every frame's JPEG inside the loop, as a server must)."""
    _quiet()
    from server.workers import imaging, pipelines

    c0 = time.process_time()
    rgbs = _decode_all(frames)
    decode_cpu_ms = (time.process_time() - c0) * 1000 / len(frames)
    detector = pipelines.create(pipeline, Path(model), (), video=True)

    def image(k: int) -> Any:
        if decode_each:
            return imaging.decode_rgb(frames[k % len(frames)], max_pixels=MAX_PIXELS,
                                      max_side=MAX_SIDE)  # fmt: skip
        return rgbs[k % len(rgbs)]

    clock0 = time.monotonic()
    last_ts = -1

    def ts_now() -> int:  # as the server derives them: real elapsed ms, strictly increasing
        nonlocal last_ts
        last_ts = max(round((time.monotonic() - clock0) * 1000), last_ts + 1)
        return last_ts

    k = start_frame
    for _ in range(10):  # warm-up: first frames of a landmarker are slower
        detector.detect(rgbs[k % len(rgbs)], ts_now())
        k += 1
    barrier.wait(CHILD_TIMEOUT_S)
    durations: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    end = t0 + duration_s
    n = 0
    while True:
        s = time.perf_counter()
        if s >= end:
            break
        detector.detect(image(k), ts_now())
        durations.append((time.perf_counter() - s) * 1000)
        k += 1
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    detector.close()
    out.put(LoopResult(index, n, wall, cpu, statistics.median(durations), decode_cpu_ms))


@dataclass(frozen=True, slots=True)
class Ceiling:
    processes: int
    duration_s: float
    results: list[LoopResult]

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)

    @property
    def fps(self) -> float:
        """Total frames/s: each process's rate over its own (simultaneous) loop, summed."""
        return sum(r.frames / r.wall_s for r in self.results)

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * sum(r.cpu_s for r in self.results) / max(self.frames, 1)

    @property
    def cpu_cores(self) -> float:
        return sum(r.cpu_s / r.wall_s for r in self.results)

    @property
    def detect_ms_p50(self) -> float:
        return statistics.median(r.detect_ms_p50 for r in self.results)

    @property
    def decode_cpu_ms(self) -> float:
        return statistics.fmean(r.decode_cpu_ms for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "duration_s": self.duration_s,
            "frames": self.frames,
            "fps": self.fps,
            "cpu_ms_per_frame": self.cpu_ms_per_frame,
            "cpu_cores": self.cpu_cores,
            "detect_ms_p50": self.detect_ms_p50,
            "decode_cpu_ms": self.decode_cpu_ms,
            "per_process": [
                {"frames": r.frames, "fps": r.frames / r.wall_s, "cpu_s": r.cpu_s}
                for r in self.results
            ],
        }


def _join_all(procs: list[Any]) -> None:
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(5)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def run_ceiling(
    model: Path,
    frames: list[bytes],
    processes: int,
    duration_s: float,
    *,
    pipeline: str = "holistic",
    decode_each: bool = False,
) -> Ceiling:
    """`processes` bare landmarker loops at once, all measuring over the same window."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_ceiling_child,
            args=(i, str(model), frames, i * len(frames) // processes, duration_s, barrier, out,
                  pipeline, decode_each),
            name=f"bench-ceiling-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    results: list[LoopResult] = []
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + CHILD_TIMEOUT_S + duration_s
        while len(results) < processes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("ceiling children did not finish in time")
            try:
                results.append(out.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"ceiling child exited with {dead[0].exitcode}") from None
    finally:
        barrier.abort()
        _join_all(procs)
    return Ceiling(processes, duration_s, sorted(results, key=lambda r: r.index))


# ------------------------------------------------------------------------ tracking benefit


@dataclass(frozen=True, slots=True)
class ModeCost:
    """CPU and wall ms per frame of one way of running the landmarker."""

    name: str
    frames: int
    cpu_ms: float
    wall_ms: float
    found_pct: float  # frames where a pose was found (the modes should agree)


def _tracking_child(model: str, frames: list[bytes], n: int, n_fresh: int, out: Any) -> None:
    _quiet()
    from server.workers import pipelines

    rgbs = _decode_all(frames)
    path = Path(model)
    costs: list[ModeCost] = []

    def measure(name: str, count: int, step: Any) -> None:
        found = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(count):
            parts = step(i)
            found += parts.get("pose") is not None
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        costs.append(ModeCost(name, count, cpu * 1000 / count, wall * 1000 / count,
                              100 * found / count))  # fmt: skip

    video = pipelines.create("holistic", path, (), video=True)
    for i in range(5):
        video.detect(rgbs[i % len(rgbs)], 33 * i)
    measure("VIDEO, one landmarker (tracking)",
            n, lambda i: video.detect(rgbs[(i + 5) % len(rgbs)], 33 * (i + 5)))  # fmt: skip
    video.close()
    image = pipelines.create("holistic", path, (), video=False)
    image.detect(rgbs[0], None)
    measure("IMAGE, one reused landmarker", n, lambda i: image.detect(rgbs[i % len(rgbs)], None))
    image.close()

    def fresh(i: int) -> Any:
        det = pipelines.create("holistic", path, (), video=False)
        try:
            return det.detect(rgbs[(i * 7) % len(rgbs)], None)
        finally:
            det.close()

    measure("IMAGE, a new landmarker per frame", n_fresh, fresh)
    # The creation alone, to split the fresh-landmarker cost into create and detect.
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n_fresh):
        pipelines.create("holistic", path, (), video=False).close()
    costs.append(ModeCost("(creating + closing a landmarker alone)", n_fresh,
                          (time.process_time() - c0) * 1000 / n_fresh,
                          (time.perf_counter() - t0) * 1000 / n_fresh, 0.0))  # fmt: skip
    out.put(costs)


def run_tracking(model: Path, frames: list[bytes], n: int, n_fresh: int) -> list[ModeCost]:
    """VIDEO-mode tracking against IMAGE mode, one child process, nothing else running in it."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=_tracking_child, args=(str(model), frames, n, n_fresh, out),
        name="bench-tracking", daemon=True,
    )  # fmt: skip
    try:
        proc.start()
        deadline = time.monotonic() + CHILD_TIMEOUT_S + 2.0 * (n + 2 * n_fresh)
        while True:
            with contextlib.suppress(queue.Empty):
                result: list[ModeCost] = out.get(timeout=1.0)
                return result
            if proc.exitcode not in (None, 0):
                raise RuntimeError(f"tracking child exited with {proc.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError("tracking child did not finish in time")
    finally:
        _join_all([proc])
