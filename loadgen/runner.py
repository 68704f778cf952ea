"""Runs a stage: N sessions ramped in, paced for a duration, drained, summarised.

Also watches the two things that make a load test lie: the generator's own CPU and schedule lag
(it may be the bottleneck, not the server), and the server's CPU from its `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

from loadgen.pacing import start_offsets
from loadgen.session import Session, SessionConfig
from loadgen.stats import Totals, summarize

GENERATOR_CPU_LIMIT = 85.0  # % of one core: above this, the generator's numbers are suspect
HOST_CPU_LIMIT = 95.0  # % of all cores: the server and the generator fight over the machine
WARMUP_S = 1.0  # after the last client started, before the steady window opens


@dataclass(slots=True)
class Tick:
    """One line of live progress (also kept as the stage's timeline)."""

    t: float
    connected: int
    sent_per_s: float
    results_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    dropped: int
    errors: int
    generator_cpu: float
    host_cpu: float

    def to_json(self) -> dict[str, Any]:
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in values}


@dataclass(slots=True)
class Stage:
    clients: int
    duration_s: float
    ramp_per_s: float
    cfg: SessionConfig
    metrics_url: str | None = None
    timeline: list[Tick] = field(default_factory=list)


Progress = Callable[[Stage, Tick, Totals], None]


def metrics_url_for(ws_url: str) -> str:
    """ws://host:port/ws -> http://host:port/metrics."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


def parse_counter(text: str, name: str) -> float | None:
    """Sum of every sample of a Prometheus counter in text exposition format (None if absent)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):
            rest = rest.partition("}")[2]
        elif not rest.startswith(" "):
            continue  # another metric whose name merely starts the same
        with contextlib.suppress(ValueError, IndexError):
            total += float(rest.split()[0])
            found = True
    return total if found else None


CPU_COUNTERS = ("process_cpu_seconds_total", "holistream_workers_cpu_seconds_total")


async def server_cpu_seconds(url: str | None) -> dict[str, float] | None:
    """CPU seconds of the server's main process and of its inference workers, if exposed."""
    if url is None:
        return None

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return str(response.read().decode("utf-8", "replace"))

    try:
        text = await asyncio.to_thread(fetch)
    except (OSError, ValueError):
        return None
    found = {name: parse_counter(text, name) for name in CPU_COUNTERS}
    values = {name: v for name, v in found.items() if v is not None}
    return values or None


async def run_stage(
    stage: Stage, frames: list[bytes], interrupt: asyncio.Event, progress: Progress | None = None
) -> dict[str, Any]:
    """Run one stage; returns its summary (see `loadgen.report` for the schema)."""
    totals = Totals()
    stop = asyncio.Event()
    sessions = [Session(i, stage.cfg, frames, totals, stop) for i in range(stage.clients)]
    offsets = start_offsets(stage.clients, stage.ramp_per_s)
    proc = psutil.Process()
    proc.cpu_percent(None)
    psutil.cpu_percent(None)
    cpu0 = await server_cpu_seconds(stage.metrics_url)
    t0 = time.monotonic()
    cpu_t0 = t0
    end = t0 + stage.duration_s
    steady_at = t0 + (offsets[-1] if offsets else 0.0) + WARMUP_S
    steady_mark: tuple[float, int, int] | None = None

    async def launch(session: Session, offset: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(offset):
                await stop.wait()
        if not stop.is_set():
            await session.run()

    tasks = [asyncio.create_task(launch(s, o)) for s, o in zip(sessions, offsets, strict=True)]
    last = (t0, 0, 0)
    cpu_samples: list[float] = []
    host_samples: list[float] = []
    while not interrupt.is_set() and time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(1.0, end - time.monotonic()))):
                await interrupt.wait()
        now = time.monotonic()
        if steady_mark is None and now >= steady_at:
            steady_mark = (now, totals.sent, totals.results)
        dt = max(1e-6, now - last[0])
        tick = Tick(
            now - t0,
            totals.connected,
            (totals.sent - last[1]) / dt,
            (totals.results - last[2]) / dt,
            totals.window.percentile(50),
            totals.window.percentile(99),
            totals.dropped,
            sum(totals.errors.values()),
            proc.cpu_percent(None),
            psutil.cpu_percent(None),
        )
        totals.window.reset()
        last = (now, totals.sent, totals.results)
        stage.timeline.append(tick)
        if now >= steady_at:
            cpu_samples.append(tick.generator_cpu)
            host_samples.append(tick.host_cpu)
        if progress is not None:
            progress(stage, tick, totals)
    cpu1 = await server_cpu_seconds(stage.metrics_url if cpu0 is not None else None)
    stopped = time.monotonic()
    at_stop = (totals.sent, totals.results)  # the drain's late results are not throughput
    stop.set()
    # Drain: every session gets drain_s for outstanding results and its final stats; a session
    # is bounded by its connect, drain and close timeouts, so this only catches a stuck one.
    grace = stage.cfg.drain_s + stage.cfg.connect_timeout + 15.0
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = stopped - t0
    steady = None
    if steady_mark is not None:
        t, sent, results = steady_mark
        steady = (stopped - t, at_stop[0] - sent, at_stop[1] - results)
    summary = summarize(
        [s.record for s in sessions],
        totals,
        elapsed_s=elapsed,
        steady=steady,
    )
    summary["mode"] = stage.cfg.mode
    summary["fps"] = stage.cfg.fps
    summary["in_flight"] = stage.cfg.in_flight if stage.cfg.mode == "closed" else None
    summary["format"] = stage.cfg.format
    summary["interrupted"] = interrupt.is_set()
    summary["generator"] = generator_health(
        stage, totals, cpu_samples or [t.generator_cpu for t in stage.timeline], host_samples
    )
    summary["server"] = server_cpu(stage.metrics_url, cpu0, cpu1, stopped - cpu_t0)
    summary["timeline"] = [t.to_json() for t in stage.timeline]
    return summary


def server_cpu(
    url: str | None, before: dict[str, float] | None, after: dict[str, float] | None, dt: float
) -> dict[str, Any]:
    """Server CPU over the stage in cores (main process + workers), from two /metrics scrapes.

    The workers' counter covers live workers only, so a restart can make it go back: clamped.
    """
    cores: dict[str, float] = {}
    if before and after:
        for name in CPU_COUNTERS:
            if name in before and name in after:
                cores[name] = max(0.0, after[name] - before[name]) / max(1e-3, dt)
    total = sum(cores.values()) if cores else None
    return {
        "metrics_url": url,
        "cpu_cores": None if total is None else round(total, 3),
        "cpu_pct": None if total is None else round(100 * total, 1),
        "main_cpu_cores": _round(cores.get(CPU_COUNTERS[0])),
        "workers_cpu_cores": _round(cores.get(CPU_COUNTERS[1])),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def generator_health(
    stage: Stage, totals: Totals, cpu: list[float], host: list[float]
) -> dict[str, Any]:
    """Is the generator, rather than the server, the bottleneck? Says why, in plain words."""
    reasons: list[str] = []
    cpu_mean = sum(cpu) / len(cpu) if cpu else None
    if cpu_mean is not None and cpu_mean > GENERATOR_CPU_LIMIT:
        reasons.append(
            f"generator CPU averaged {cpu_mean:.0f}% of a core (> {GENERATOR_CPU_LIMIT:.0f}%): "
            "its own event loop limits the load; use fewer clients per generator or the binary "
            "format"
        )
    lag_p99 = totals.lag.percentile(99)
    if stage.cfg.fps and lag_p99 is not None:
        interval_ms = 1000.0 / stage.cfg.fps
        if lag_p99 > 0.5 * interval_ms:
            reasons.append(
                f"send schedule lag p99 {lag_p99:.0f} ms (> half the {interval_ms:.0f} ms frame "
                "interval): the generator woke late for its frames (busy event loop or CPU)"
            )
    bottleneck = bool(reasons)
    host_mean = sum(host) / len(host) if host else None
    host_saturated = host_mean is not None and host_mean > HOST_CPU_LIMIT
    if host_saturated:
        reasons.append(
            f"the host's CPUs were {host_mean:.0f}% busy: if the server runs on this machine, "
            "it and the generator compete, and neither figure is the server's alone"
        )
    return {
        "cpu_pct_mean": None if cpu_mean is None else round(cpu_mean, 1),
        "cpu_pct_max": round(max(cpu), 1) if cpu else None,
        "host_cpu_pct_mean": None if host_mean is None else round(host_mean, 1),
        "lag_ms": totals.lag.summary(),
        "send_block_ms": totals.send_block.summary(),
        "bottleneck": bottleneck,  # the generator itself limited the load
        "host_saturated": host_saturated,  # the machine was full: figures are contaminated
        "reasons": reasons,
    }
