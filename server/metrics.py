"""Prometheus metrics of one server instance (its own registry, so instances never mix)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
            f"Sessions of one pipeline an empty instance admits at {DEFAULT_FPS:g} fps",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
