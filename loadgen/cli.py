"""`holistream-loadgen`: size a holistream deployment with paced video clients.

    holistream-loadgen --url ws://127.0.0.1:8000/ws --clients 300 --fps 15 --duration 60 \\
        --ramp 20/s --source VIDEO_OR_IMAGE_DIR [--mode closed --in-flight 2] \\
        [--steps 10,20,40,80 --plot capacity.png] [--json report.json]

Bounded on purpose (client count, duration, fps) and loopback-only unless --allow-remote: a load
generator pointed at the wrong host is a denial-of-service tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop
from rich.console import Console
from rich.live import Live

from holistream.client import endpoint
from holistream.protocol import ProtocolError, parse_parts
from loadgen import report as rpt
from loadgen.frames import default_source, load_frames, parse_size
from loadgen.pacing import parse_ramp, parse_steps
from loadgen.runner import Stage, Tick, metrics_url_for, run_stage
from loadgen.session import SessionConfig
from loadgen.stats import Totals

MAX_CLIENTS = 2000
MAX_DURATION_S = 3600.0  # per stage, and for the whole run
MAX_FPS = 120.0
MAX_IN_FLIGHT = 32
MAX_STEPS = 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="holistream-loadgen", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="producer endpoint")
    p.add_argument("--clients", type=int, default=10, help=f"sessions (<= {MAX_CLIENTS})")
    p.add_argument("--fps", type=float, default=15.0, help="frames/s per client (closed: 0 = max)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per stage")
    p.add_argument("--ramp", default="20/s", help="client start rate: '20/s', '600/m', '0' = all")
    p.add_argument("--source", help="video file, image directory or image (default: fixture)")
    p.add_argument("--size", help="resize frames to WIDTHxHEIGHT before encoding")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality")
    p.add_argument(
        "--mode",
        choices=("open", "closed"),
        default="open",
        help="open: a camera at --fps; closed: credit based like the browser demo",
    )
    p.add_argument("--in-flight", type=int, default=2, help="closed loop: frames in flight")
    p.add_argument("--format", choices=("json", "binary"), default="json")
    p.add_argument("--parts", default="face,hands,pose")
    p.add_argument("--token", default=os.environ.get("HOLISTREAM_TOKEN"), help="bearer token")
    p.add_argument("--steps", help="client counts, one stage each: '10,20,40,80'")
    p.add_argument("--pause", type=float, default=3.0, help="seconds between stages")
    p.add_argument("--json", dest="json_path", help="write every figure to this JSON file")
    p.add_argument("--plot", help="PNG of throughput and latency against clients (--steps)")
    p.add_argument("--metrics-url", help="server /metrics for its CPU ('none' to skip)")
    p.add_argument("--drain", type=float, default=3.0, help="seconds to wait for the last results")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--credit-timeout", type=float, default=5.0)
    p.add_argument("--compression", action="store_true", help="permessage-deflate, as browsers")
    p.add_argument("--model", choices=("full", "lite"), default="full", help="hello `model`")
    p.add_argument(
        "--ignore-grant", action="store_true",
        help="send at --fps whatever the server grants (frames beyond it are dropped)",
    )
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback server")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    return p


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def validate(args: argparse.Namespace) -> list[int]:
    """Check bounds and the target; returns the client count of each stage."""
    steps = parse_steps(args.steps) if args.steps else [args.clients]
    if len(steps) > MAX_STEPS:
        raise ValueError(f"at most {MAX_STEPS} steps")
    if any(n > MAX_CLIENTS for n in steps) or args.clients < 1:
        raise ValueError(f"clients must be within 1..{MAX_CLIENTS}")
    if not 0 < args.duration <= MAX_DURATION_S:
        raise ValueError(f"duration must be within (0, {MAX_DURATION_S:.0f}] s")
    if args.duration * len(steps) > MAX_DURATION_S:
        raise ValueError(f"the whole run (steps x duration) must stay <= {MAX_DURATION_S:.0f} s")
    if not (0 < args.fps <= MAX_FPS or (args.mode == "closed" and args.fps == 0)):
        raise ValueError(f"fps must be within (0, {MAX_FPS:.0f}] (closed loop: 0 = unpaced)")
    if not 1 <= args.in_flight <= MAX_IN_FLIGHT:
        raise ValueError(f"in-flight must be within 1..{MAX_IN_FLIGHT}")
    for name, low, high in (
        ("drain", 0.5, 60), ("connect_timeout", 1, 120), ("credit_timeout", 0.5, 60),
        ("pause", 0, 600), ("quality", 1, 100),
    ):  # fmt: skip
        if not low <= getattr(args, name) <= high:
            raise ValueError(f"--{name.replace('_', '-')} must be within {low}..{high}")
    parse_ramp(args.ramp)
    try:
        parse_parts(args.parts, code="bad_request")
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    urls = [args.url] + ([args.metrics_url] if args.metrics_url not in (None, "none") else [])
    for url in urls:
        host = urlsplit(url).hostname or ""
        if not args.allow_remote and not is_loopback(host):
            raise ValueError(f"{host!r} is not a loopback address; pass --allow-remote to load it")
    raise_fd_limit(max(steps) + 64)
    return steps


def raise_fd_limit(needed: int) -> None:
    """Hundreds of sockets exceed the common soft limit of 1024 open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def run(args: argparse.Namespace, steps: list[int], console: Console) -> dict[str, Any]:
    source = args.source or default_source()
    frames = load_frames(source, size=parse_size(args.size), quality=args.quality)
    parts = parse_parts(args.parts, code="bad_request")
    cfg = SessionConfig(
        url=endpoint(
            args.url,
            "/ws",
            {"parts": ",".join(parts), "fps": f"{args.fps or 30:g}", "model": args.model},
        ),
        mode=args.mode,
        fps=args.fps,
        in_flight=args.in_flight,
        format=args.format,
        parts=parts,
        token=args.token,
        connect_timeout=args.connect_timeout,
        drain_s=args.drain,
        credit_timeout=args.credit_timeout,
        compression=args.compression,
        follow_grant=not args.ignore_grant,
        model=args.model,
    )
    metrics = None if args.metrics_url == "none" else args.metrics_url or metrics_url_for(args.url)
    report: dict[str, Any] = {
        "tool": "holistream-loadgen",
        "report_version": 1,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": {
            "url": cfg.url,
            "mode": cfg.mode,
            "fps": cfg.fps,
            "in_flight": cfg.in_flight if cfg.mode == "closed" else None,
            "format": cfg.format,
            "parts": list(parts),
            "duration_s": args.duration,
            "ramp_per_s": parse_ramp(args.ramp),
            "source": str(source),
            "frames": len(frames),
            "frame_bytes_mean": round(sum(map(len, frames)) / len(frames)),
            "steps": steps,
        },
        "interrupted": False,
        "stages": [],
    }
    if report["config"]["ramp_per_s"] == float("inf"):
        report["config"]["ramp_per_s"] = None  # JSON has no infinity: null = all at once
    interrupt = asyncio.Event()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if interrupt.is_set() and main is not None:
            main.cancel()  # second Ctrl-C: stop waiting for the drain
        interrupt.set()
        console.print("[yellow]stopping: draining sessions (Ctrl-C again to abort)…[/]")

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    loop.add_signal_handler(signal.SIGTERM, on_sigint)
    try:
        for i, clients in enumerate(steps):
            if interrupt.is_set():
                break
            if i:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.pause):
                        await interrupt.wait()
            stage = Stage(clients, args.duration, parse_ramp(args.ramp), cfg, metrics)
            report["stages"].append(
                await _run_with_progress(stage, frames, interrupt, console, args.quiet)
            )
    except asyncio.CancelledError:
        report["interrupted"] = True
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    report["interrupted"] = report["interrupted"] or interrupt.is_set()
    return report


async def _run_with_progress(
    stage: Stage, frames: list[bytes], interrupt: asyncio.Event, console: Console, quiet: bool
) -> dict[str, Any]:
    if quiet:
        return await run_stage(stage, frames, interrupt)
    if not console.is_terminal:

        def plain(stage: Stage, tick: Tick, totals: Totals) -> None:
            if len(stage.timeline) % 5 == 0:
                console.print(
                    rpt.progress_line(stage, tick, totals), highlight=False, soft_wrap=True
                )

        return await run_stage(stage, frames, interrupt, plain)
    with Live(console=console, refresh_per_second=2, transient=True) as live:

        def update(stage: Stage, tick: Tick, totals: Totals) -> None:
            live.update(rpt.progress_line(stage, tick, totals))

        return await run_stage(stage, frames, interrupt, update)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))  # a log file has room for the tables
    try:
        steps = validate(args)
    except ValueError as exc:
        console.print(f"[red]holistream-loadgen: {exc}[/]")
        return 2
    try:
        report = uvloop.run(run(args, steps, console))
    except ValueError as exc:  # e.g. an unreadable source
        console.print(f"[red]holistream-loadgen: {exc}[/]")
        return 2
    except KeyboardInterrupt:  # before any session started: nothing to report
        return 130
    rpt.print_report(console, report)
    if args.json_path:
        rpt.write_json(args.json_path, report)
        console.print(f"report: {Path(args.json_path).resolve()}")
    if args.plot and report["stages"]:
        rpt.plot_steps(args.plot, report["stages"])
        console.print(f"plot: {Path(args.plot).resolve()}")
    return 130 if report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
