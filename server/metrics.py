"""Prometheus metrics of one server instance (its own registry, so instances never mix)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector

from holistream.protocol import DEFAULT_FPS

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class _WorkerCollector:
    """CPU and memory of the worker processes, read when scraped (psutil, no bookkeeping)."""

    def __init__(self, pids: Callable[[], Iterable[int]], restarts: Callable[[], int]) -> None:
        self._pids = pids
        self._restarts = restarts

    def collect(self) -> Iterable[Metric]:
        cpu = CounterMetricFamily(
            "holistream_workers_cpu_seconds", "CPU time of the live worker processes"
        )
        rss = GaugeMetricFamily("holistream_workers_rss_bytes", "Resident memory of the workers")
        total_cpu = 0.0
        total_rss = 0
        for pid in self._pids():
            try:
                proc = psutil.Process(pid)
                times = proc.cpu_times()
                total_cpu += times.user + times.system
                total_rss += proc.memory_info().rss
            except psutil.Error:
                continue
        cpu.add_metric([], total_cpu)
        rss.add_metric([], total_rss)
        yield cpu
        yield rss
        restarts = CounterMetricFamily(
            "holistream_worker_restarts", "Worker processes replaced after dying"
        )
        restarts.add_metric([], self._restarts())
        yield restarts


@dataclass(frozen=True, slots=True)
class InstanceState:
    """What the instance can take, read when scraped: alerting and autoscaling use these."""

    ready: bool
    workers_alive: int
    cpu_budget_ms_per_s: float  # CPU time admission may hand out per second
    cpu_reserved_ms_per_s: float  # what the sessions' granted rates take of it
    memory_budget_bytes: int
    memory_reserved_bytes: int  # sessions' landmarkers plus the workers' single-image ones


class _StateCollector:
    def __init__(self, state: Callable[[], InstanceState]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        s = self._state()
        gauges = (
            ("holistream_ready", "1 when models are loaded and workers warm (as /readyz)",
             float(s.ready)),
            ("holistream_workers_ready", "Live inference workers of a ready instance",
             float(s.workers_alive if s.ready else 0)),
            ("holistream_cpu_budget_seconds", "CPU seconds per second admission may reserve",
             s.cpu_budget_ms_per_s / 1000),
            ("holistream_cpu_reserved_seconds", "CPU seconds per second the sessions' granted "
             "rates take",
             s.cpu_reserved_ms_per_s / 1000),
            ("holistream_cpu_reserved_ratio", "Reserved over budgeted CPU (0..1): the load to "
             "autoscale on", s.cpu_reserved_ms_per_s / max(s.cpu_budget_ms_per_s, 1e-9)),
            ("holistream_memory_budget_bytes", "Memory the landmarkers may take",
             float(s.memory_budget_bytes)),
            ("holistream_memory_reserved_bytes", "Memory reserved by admitted sessions and the "
             "workers' single-image landmarkers", float(s.memory_reserved_bytes)),
        )  # fmt: skip
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


# Label values that exist from the start (at 0), so every rate() has a series to compute on.
DROP_REASONS = ("superseded", "stale", "worker_lost", "backpressure", "closing")
REJECT_REASONS = ("capacity", "rate_limited")


class Metrics:
    def __init__(
        self, worker_pids: Callable[[], Iterable[int]], restarts: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        r.register(_WorkerCollector(worker_pids, restarts))
        self.sessions = Gauge(
            "holistream_sessions", "Live streaming sessions", ["pipeline"], registry=r
        )
        self.subscribers = Gauge("holistream_subscribers", "Live subscribers", registry=r)
        self.frames_received = Counter("holistream_frames_received", "Frames received", registry=r)
        self.frames_processed = Counter(
            "holistream_frames_processed", "Frames that produced a result", registry=r
        )
        self.frames_dropped = Counter(
            "holistream_frames_dropped", "Frames dropped, by reason", ["reason"], registry=r
        )
        self.frame_errors = Counter(
            "holistream_frame_errors", "Frames refused with an error, by code", ["code"], registry=r
        )
        self.inference = Histogram(
            "holistream_inference_seconds",
            "MediaPipe time per frame",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.server_latency = Histogram(
            "holistream_server_latency_seconds",
            "Frame received to result ready",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "holistream_sessions_rejected", "Sessions refused, by reason", ["reason"], registry=r
        )
        self.capacity = Gauge(
            "holistream_capacity_sessions",
            f"Sessions of one pipeline asking {DEFAULT_FPS:g} fps an empty instance admits",
            ["pipeline"],
            registry=r,
        )
        self.capacity_fps = Gauge(
            "holistream_capacity_fps",
            "Results per second the instance serves for one pipeline, at its measured cost",
            ["pipeline"],
            registry=r,
        )
        self.granted_fps = Gauge(
            "holistream_granted_fps", "Sum of the rates granted to live sessions", registry=r
        )
        self.cost_ms = Gauge(
            "holistream_cost_ms_per_frame",
            "Measured worker CPU ms per frame, by pipeline (prices admission and grants)",
            ["pipeline"],
            registry=r,
        )
        self.cpus = Gauge(
            "holistream_cpus",
            "CPUs this instance budgets for (affinity, cgroup quota, --cpus: the smallest)",
            registry=r,
        )
        self.predictions = Counter(
            "holistream_predict_requests",
            "Single-image requests, by outcome",
            ["outcome"],
            registry=r,
        )

        for reason in DROP_REASONS:
            self.frames_dropped.labels(reason)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

    def watch(self, state: Callable[[], InstanceState]) -> None:
        """Publish the instance's readiness and budgets, read from `state` at each scrape."""
        self.registry.register(_StateCollector(state))

    def render(self) -> bytes:
        return generate_latest(self.registry)
