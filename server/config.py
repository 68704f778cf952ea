"""One Config object for every setting; each command-line flag also reads HOLISTREAM_<NAME>."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.cpus import default_workers, usable_cpus

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    # CPUs this instance may use: the minimum of this setting (0 = none), the CPU affinity and
    # the cgroup quota (a container's --cpus, a pod's CPU limit); resolved at construction.
    cpus: float = 0.0
    # 0 = one more worker than cores (from `cpus`): sessions are pinned to a worker, and with
    # one per core a whole session would not fit beside another in a worker's share (measured
    # on 2 cores: 3 holistic sessions at 15 fps instead of 2, 0.93x of saturation, not 0.69x).
    workers: int = 0
    model: Path | None = None  # explicit holistic bundle; others come from the cache
    cache_dir: Path | None = None
    # Admission control: a session is admitted only while all three budgets hold.
    max_sessions: int = 64
    memory_budget_mb: float = 0.0  # 0 = 70 % of the memory available (capped by cgroup limits)
    cpu_overcommit: float = 1.0  # grantable CPU time as a multiple of what exists
    floor_fps: float = 10.0  # a session is refused only when not even this rate can be granted
    retry_after_s: int = 5
    # Backpressure and limits.
    max_frame_age_ms: float = 500.0
    max_message_bytes: int = 4 * 1024 * 1024
    send_buffer_bytes: int = 128 * 1024  # kernel send buffer per socket: stale results wait less
    max_image_pixels: int = 4096 * 4096
    max_image_side: int = 8192
    # Timeouts for every stage of a connection (docs/protocol.md, Timeouts).
    header_timeout_s: float = 10.0  # request line and headers, and idle keep-alive between requests
    hello_timeout_s: float = 5.0  # upgrade to hello; no admission is reserved before hello
    idle_timeout_s: float = 30.0  # no frame or configure (pings, pongs and stats do not count)
    worker_timeout_s: float = 5.0  # a stopped worker with work out is replaced (silent: 10 x)
    stats_interval_s: float = 1.0
    ping_interval_s: float = 20.0
    shutdown_timeout_s: float = 5.0
    # Security.
    allowed_origins: tuple[str, ...] = ()  # empty = same origin and localhost
    token: str | None = None
    token_all: bool = False  # the token also guards /streams and /metrics
    trusted_proxies: tuple[str, ...] = ()
    connect_rate_per_address: float = 10.0  # new connections per second (token bucket)
    connect_burst_per_address: int = 40
    max_sessions_per_address: int = 32
    rate_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")
    # Streams and the single-image API.
    redis_url: str | None = None
    subscriber_buffer: int = 8
    subscriber_stall_s: float = 10.0
    subscriber_wait_s: float = 60.0
    predict_queue: int = 8
    predict_timeout_s: float = 10.0
    cache_entries: int = 256
    web_root: Path = WEB_ROOT
    calibrate: bool = True
    log_level: str = "info"
    log_format: str = "text"  # text, or json (one object per line, for log collectors)

    def __post_init__(self) -> None:
        cpus = usable_cpus(self.cpus or None)
        object.__setattr__(self, "cpus", round(cpus, 3))
        if self.workers <= 0:
            object.__setattr__(self, "workers", default_workers(cpus))
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")

    def describe(self) -> str:
        """A one-screen summary printed at start-up (the token is never printed)."""
        items = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "token" and value:
                value = "***"
            items.append(f"{f.name}={value}")
        return "config: " + " ".join(items)


_HELP: dict[str, str] = {
    "cpus": "CPUs this instance may use (0: its affinity and cgroup quota; the smallest wins)",
    "workers": "inference worker processes (0: cores + 1, from --cpus; 1 below 2 cores)",
    "log_format": "text, or json: one JSON object per log line",
    "max_sessions": "hard cap on live streaming sessions",
    "memory_budget_mb": "memory the landmarkers may use (0: 70%% of available, within the "
    "container's/pod's memory limit)",
    "cpu_overcommit": "grant rates up to this multiple of measured CPU capacity",
    "floor_fps": "refuse a session only when not even this rate (fps) can be granted",
    "max_frame_age_ms": "drop a waiting frame older than this",
    "allowed_origins": "comma-separated public origins browsers may connect from, e.g. "
    "https://box.lan:8443 (always allowed: localhost, a page on the server's own IP address)",
    "token": "require this bearer token for /ws, /ws/subscribe and /v1/predict",
    "token_all": "also require the token for /streams and /metrics",
    "header_timeout_s": "close a connection whose request headers take longer than this",
    "hello_timeout_s": "close a WebSocket that has not said hello within this",
    "idle_timeout_s": "close a producer that sends no frame or configure for this long",
    "worker_timeout_s": "replace a stopped worker with work out after this long (silent: 10x)",
    "trusted_proxies": "comma-separated proxy addresses whose X-Forwarded-For is believed",
    "rate_limit_exempt": "networks exempt from per-address limits (default: loopback)",
    "redis_url": "carry streams and the predict cache across instances through Redis",
    "calibrate": "measure each pipeline's CPU and memory cost at start-up",
}


def _env_name(name: str) -> str:
    return "HOLISTREAM_" + name.upper()


def _convert(kind: Any, raw: str) -> Any:
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    if kind == "tuple":
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if kind == "path":
        return Path(raw) if raw else None
    if kind == "optstr":
        return raw or None
    return kind(raw)


def _kind(f: dataclasses.Field[Any]) -> Any:
    t = str(f.type)
    if t.startswith("tuple"):
        return "tuple"
    if "Path" in t:
        return "path"
    if t == "str | None":
        return "optstr"
    return {"int": int, "float": float, "bool": bool, "str": str}[t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field; the default comes from HOLISTREAM_<NAME> when set."""
    for f in dataclasses.fields(Config):
        kind = _kind(f)
        env = os.environ.get(_env_name(f.name))
        # The declared default, not a resolved one: `cpus` and `workers` resolve in Config.
        default = _convert(kind, env) if env is not None else f.default
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP.get(f.name, '')} [env {_env_name(f.name)}]".strip()
        if kind is bool:
            parser.add_argument(
                flag, default=default, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif f.name == "log_format":
            parser.add_argument(flag, default=default, choices=LOG_FORMATS, help=help_text)
        else:
            conv = (lambda s, k=kind: _convert(k, s)) if isinstance(kind, str) else kind
            parser.add_argument(flag, default=default, type=conv, help=help_text)


def from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
