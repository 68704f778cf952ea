"""`python -m bench.run [--quick]`: every benchmark in one run, written to docs/benchmarks.md.

Phases (each bounded in time; every server it starts is stopped on exit, Ctrl-C included):
ceiling (bare landmarker loops) → saturation and added latency (the real server) → overload
(300 clients, default admission) → memory per session → tracking benefit (VIDEO vs IMAGE).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil

from bench import ceiling as bare
from bench import machine, report
from bench import server_runs as sr

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("ceiling", "saturation", "latency", "overload", "memory", "tracking")


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how big each phase is."""

    quick: bool
    workers: int
    ceiling_s: float
    saturation_s: float
    latency_s: float
    latency_fps: float
    overload_clients: int
    overload_fps: float
    overload_s: float
    overload_ramp: float
    memory_sessions: int
    tracking_frames: int
    tracking_fresh: int

    @property
    def saturation_clients(self) -> int:
        return 2 * self.workers

    @classmethod
    def make(cls, quick: bool, workers: int) -> Plan:
        if quick:
            return cls(True, workers, 8, 15, 10, 10, 100, 15, 20, 20, 4, 30, 5)
        return cls(False, workers, 30, 60, 40, 10, 300, 15, 60, 20, 8, 120, 20)


def code_version() -> dict[str, Any]:
    """The commit the servers run (editable install) and how dirty the shared tree is."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
        return done.stdout.strip()

    try:
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": git("rev-parse", "HEAD"), "modified_files": len(status.splitlines())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified_files": None}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {msg}", flush=True)


# ------------------------------------------------------------------------------- phases


def phase_ceiling(plan: Plan, model: Path, frames: list[bytes]) -> dict[str, Any]:
    log(f"ceiling: {plan.workers} bare landmarker loops for {plan.ceiling_s:g} s")
    psutil.cpu_percent(None)
    result = bare.run_ceiling(model, frames, plan.workers, plan.ceiling_s)
    out = result.to_json()
    out["host_busy_pct"] = psutil.cpu_percent(None)
    log(f"ceiling: {out['fps']:.1f} frames/s, {out['cpu_ms_per_frame']:.1f} CPU ms/frame")
    return out


def phase_saturation(plan: Plan, srv: sr.Server, run_dir: Path) -> dict[str, Any]:
    n = plan.saturation_clients
    log(f"saturation: {n} closed-loop clients for {plan.saturation_s:g} s")
    args = ["--url", srv.ws_url, "--clients", str(n), "--fps", "0", "--mode", "closed",
            "--in-flight", "1", "--format", "binary", "--duration", f"{plan.saturation_s:g}",
            "--ramp", "0"]  # fmt: skip
    with sr.Sampler(srv, 1.0) as sampler:
        stage = sr.run_loadgen(args, run_dir / "saturation.json", run_dir / "saturation.log",
                               plan.saturation_s + 90)  # fmt: skip
    first, last = sr.steady_window(sampler.ticks, n, warmup_s=3.0)
    frames = last.processed - first.processed
    dt = last.usage.t - first.usage.t
    u0, u1 = first.usage, last.usage
    busy = [t.host_busy_pct for t in sampler.ticks if first.usage.t < t.usage.t <= last.usage.t]
    out = {
        "command": stage["command"],
        "server_command": " ".join(srv.command),
        "clients": n,
        "in_flight": stage["in_flight"],
        "loadgen_results_per_s": stage["rates"]["results_per_s"],
        "window_s": dt,
        "window_frames": frames,
        "server_processed_per_s": frames / dt,
        "cpu_ms_per_frame": 1000 * (u1.cpu - u0.cpu) / frames,
        "main_ms_per_frame": 1000 * (u1.main_cpu - u0.main_cpu) / frames,
        "workers_ms_per_frame": 1000 * (u1.workers_cpu - u0.workers_cpu) / frames,
        "other_ms_per_frame": 1000 * (u1.other_cpu - u0.other_cpu) / frames,
        "metrics_cpu_ms_per_frame": 1000 * (last.metrics_cpu - first.metrics_cpu) / frames,
        "server_cores": (u1.cpu - u0.cpu) / dt,
        "host_busy_pct": sum(busy) / len(busy) if busy else None,
        "generator_cpu_pct": stage["generator"]["cpu_pct_mean"],
        "generator_reasons": stage["generator"]["reasons"],
        "latency_ms": stage["latency_ms"],
        "server_total_ms": stage["server_total_ms"],
        "drop_pct": stage["drop_pct"],
        "dropped_by_reason": stage["frames"]["dropped_by_reason"],
        "errors": stage["errors"],
        "sessions": stage["sessions"],
        "jain": stage["per_session_fps"]["jain"],
        "sampler_errors": sampler.errors,
        "timeline": timeline(stage),
    }
    log(f"saturation: {out['loadgen_results_per_s']:.1f} results/s, "
        f"{out['cpu_ms_per_frame']:.1f} server CPU ms/frame")  # fmt: skip
    return out


LATENCY_VARIANTS = {
    "none": "no compression offered (as holistream-loadgen by default)",
    "deflate": "permessage-deflate offered (as every browser does; the server accepts it)",
}


def phase_latency(plan: Plan, srv: sr.Server, frames: list[bytes]) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    for compression in LATENCY_VARIANTS:
        log(f"latency: 1 open-loop client at {plan.latency_fps:g} fps for {plan.latency_s:g} s, "
            f"compression {compression}")  # fmt: skip
        time.sleep(2.0)  # let the previous sessions close
        a = sr.latency_probe(srv.ws_url, frames, plan.latency_fps, plan.latency_s,
                             None if compression == "none" else compression)  # fmt: skip
        variants[compression] = a
        log(f"latency: added p50 {a['added_ms']['p50']:.2f} ms, p99 {a['added_ms']['p99']:.2f} ms")
    return {"server_command": " ".join(srv.command), "variants": variants}


def timeline(stage: dict[str, Any]) -> list[list[float]]:
    """The generator's per-second timeline, compact: [t, results/s, host CPU %]."""
    return [[round(t["t"], 1), round(t["results_per_s"], 1), round(t["host_cpu"])]
            for t in stage["timeline"]]  # fmt: skip


def phase_overload(plan: Plan, run_dir: Path) -> dict[str, Any]:
    n = plan.overload_clients
    log(f"overload: {n} open-loop clients at {plan.overload_fps:g} fps for {plan.overload_s:g} s"
        " (default admission)")  # fmt: skip
    budget_bytes = psutil.virtual_memory().available * 0.7  # as the server computes it
    with sr.Server.start(["--workers", str(plan.workers)], "overload", run_dir) as srv:
        calibrated = srv.calibrated_holistic()
        capacity = srv.readyz()["capacity"].get("holistic")
        workers = srv.worker_pids()
        idle = sr.settle_rss(srv.pid, workers, 1.0)
        before = srv.metrics()
        args = ["--url", srv.ws_url, "--clients", str(n), "--fps", f"{plan.overload_fps:g}",
                "--mode", "open", "--format", "json", "--duration", f"{plan.overload_s:g}",
                "--ramp", f"{plan.overload_ramp:g}/s"]  # fmt: skip
        with sr.rss_sampler(srv.pid, workers) as usage:
            stage = sr.run_loadgen(args, run_dir / "overload.json", run_dir / "overload.log",
                                   plan.overload_s + n / plan.overload_ramp + 120)  # fmt: skip
        after = srv.metrics()
        server_command = " ".join(srv.command)
    count = sr.metric_sum(after, "holistream_inference_seconds_count", pipeline="holistic") - (
        sr.metric_sum(before, "holistream_inference_seconds_count", pipeline="holistic"))
    total = sr.metric_sum(after, "holistream_inference_seconds_sum", pipeline="holistic") - (
        sr.metric_sum(before, "holistream_inference_seconds_sum", pipeline="holistic"))
    median = sr.histogram_quantile(before, after, "holistream_inference_seconds", 0.5,
                                   pipeline="holistic")  # fmt: skip
    peak = max(usage, key=lambda u: u.rss) if usage else idle
    ses = stage["sessions"]
    reserved = ses["ok"] * (calibrated[1] if calibrated else 140) * 2**20
    out = {
        "command": stage["command"],
        "server_command": server_command,
        "clients": n,
        "admitted": ses["ok"],
        "refused": ses["refused"],
        "failed": ses["failed"],
        "unfinished": ses["unfinished"],
        "rejections": ses["rejections"],
        "capacity": capacity,
        "calibrated_ms_per_frame": calibrated[0] if calibrated else None,
        "calibrated_mib_per_landmarker": calibrated[1] if calibrated else None,
        "results_per_s": stage["rates"]["results_per_s"],
        "sent_per_s": stage["rates"]["sent_per_s"],
        "latency_ms": stage["latency_ms"],
        "server_total_ms": stage["server_total_ms"],
        "inference_ms_median": None if median is None else 1000 * median,
        "inference_ms_mean": 1000 * total / count if count else None,
        "errors": stage["errors"],
        "frame_errors": stage["frames"]["frame_errors"],
        "unanswered": stage["frames"]["unanswered"],
        "books_balanced": stage["frames"]["balanced"],
        "drop_pct": stage["drop_pct"],
        "dropped_by_reason": stage["frames"]["dropped_by_reason"],
        "per_session_fps": stage["per_session_fps"],
        "generator_cpu_pct": stage["generator"]["cpu_pct_mean"],
        "generator_reasons": stage["generator"]["reasons"],
        "server_cores": stage["server"]["cpu_cores"],
        "idle_rss": idle.rss,
        "peak_rss": peak.rss,
        "peak_workers_rss": peak.workers_rss,
        "peak_main_rss": peak.main_rss,
        "rss_samples": len(usage),
        "reserved_bytes": reserved,
        "budget_bytes": budget_bytes,
        "timeline": timeline(stage),
    }
    log(f"overload: admitted {ses['ok']}, refused {ses['refused']}, "
        f"{out['results_per_s']:.1f} results/s, p99 {stage['latency_ms']['p99']} ms")  # fmt: skip
    return out


def phase_memory(plan: Plan, run_dir: Path, frames: list[bytes]) -> dict[str, Any]:
    k = plan.memory_sessions
    log(f"memory: 0 → {k // 2} → {k} idle sessions, one frame each")
    flags = ["--workers", str(plan.workers), "--no-calibrate", "--cpu-overcommit", "20",
             "--max-sessions", str(k + 2)]  # fmt: skip
    with sr.Server.start(flags, "memory", run_dir) as srv:
        workers = srv.worker_pids()
        base = sr.settle_rss(srv.pid, workers, 2.0)
        with sr.HeldSessions(srv.ws_url, frames) as held:
            held.open(k // 2)
            half = sr.settle_rss(srv.pid, workers)
            held.open(k - k // 2)
            full = sr.settle_rss(srv.pid, workers)
        server_command = " ".join(srv.command)
    per_session = (full.workers_rss - base.workers_rss) / k
    out: dict[str, Any] = {
        "server_command": server_command,
        "sessions": k,
        "workers_rss": [base.workers_rss, half.workers_rss, full.workers_rss],
        "main_rss": [base.main_rss, half.main_rss, full.main_rss],
        "per_session_bytes": per_session,
        "marginal_bytes": (full.workers_rss - half.workers_rss) / (k - k // 2),
        "main_per_session_bytes": (full.main_rss - base.main_rss) / k,
    }
    log(f"memory: {per_session / 2**20:.0f} MiB per session (workers)")
    return out


def phase_tracking(plan: Plan, model: Path, frames: list[bytes]) -> dict[str, Any]:
    log(f"tracking: VIDEO vs IMAGE, {plan.tracking_frames} frames "
        f"({plan.tracking_fresh} with a new landmarker each)")  # fmt: skip
    costs = bare.run_tracking(model, frames, plan.tracking_frames, plan.tracking_fresh)
    return {"modes": [asdict(c) for c in costs]}


# ------------------------------------------------------------------------------- driver


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="shorten every phase (development)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) + 1,
                   help="inference workers = ceiling loops (default: the server's, cores + 1)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="first wait (up to 20 min) for the 1-min load average to drop below this")
    p.add_argument("--from-json", type=Path, metavar="RESULTS",
                   help="only re-render the table and the doc from a run's results.json")
    args = p.parse_args(argv)
    if args.from_json is not None:
        return render(json.loads(args.from_json.read_text()), args.out)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if unknown := set(phases) - set(PHASES):
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if not 1 <= args.workers <= 16:
        p.error("--workers must be within 1..16")
    signal.signal(signal.SIGTERM, _on_sigterm)
    plan = Plan.make(args.quick, args.workers)
    run_dir = Path(tempfile.mkdtemp(prefix="holistream-bench-"))
    wait = None
    if args.wait_load > 0:
        wait = machine.wait_for_quiet(args.wait_load, 20 * 60)
    from loadgen.frames import default_source, load_frames
    from server.model import resolve_model

    model = resolve_model("holistic", allow_download=False, allow_build=False, log=lambda m: None)
    source = default_source()
    frames = load_frames(source)  # exactly what holistream-loadgen sends (JPEG, quality 80)
    results: dict[str, Any] = {
        "command": "python -m bench.run" + (" --quick" if args.quick else "")
        + (f" --workers {args.workers}" if args.workers != 2 else "")
        + (f" --wait-load {args.wait_load:g}" if args.wait_load > 0 else "")
        + (f" --phases {','.join(phases)}" if set(phases) != set(PHASES) else ""),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": asdict(machine.machine()),
        "load_before": machine.load(),
        "code": code_version(),
        "wait": wait,
        "plan": asdict(plan),
        "source": str(Path(str(source)).relative_to(ROOT)) if source else None,
        "frames": len(frames),
        "frame_bytes_mean": sum(map(len, frames)) / len(frames),
        "run_dir": str(run_dir),
        "phases": {},
    }
    log(f"{results['command']}: raw output in {run_dir}; {machine.uptime_line()}")
    t0 = time.monotonic()
    got = results["phases"]

    def run(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in phases:
            return
        load0 = machine.load()[0]
        started = time.monotonic()
        try:
            got[name] = fn()
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            got[name] = {"phase_error": f"{type(exc).__name__}: {exc}"}
        got[name]["load1_before"] = load0
        got[name]["load1_after"] = machine.load()[0]
        got[name]["elapsed_s"] = time.monotonic() - started

    try:
        run("ceiling", lambda: phase_ceiling(plan, model, frames))
        if "saturation" in phases or "latency" in phases:
            flags = ["--workers", str(plan.workers), "--cpu-overcommit", "20",
                     "--max-sessions", "64"]  # fmt: skip
            try:
                with sr.Server.start(flags, "saturation", run_dir) as srv:
                    calibrated = srv.calibrated_holistic()
                    results["calibrated"] = calibrated
                    run("saturation", lambda: phase_saturation(plan, srv, run_dir))
                    run("latency", lambda: phase_latency(plan, srv, frames))
            except (RuntimeError, TimeoutError, OSError) as exc:
                log(f"server failed: {exc}")
                got.setdefault("saturation", {"phase_error": str(exc)})
        run("overload", lambda: phase_overload(plan, run_dir))
        run("memory", lambda: phase_memory(plan, run_dir, frames))
        run("tracking", lambda: phase_tracking(plan, model, frames))
    except KeyboardInterrupt:
        log("interrupted: servers stopped, no report written")
        return 130
    results["elapsed_s"] = time.monotonic() - t0
    results["load_after"] = machine.load()
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    log(f"finished in {results['elapsed_s'] / 60:.1f} min; raw figures in {run_dir}")
    return render(results, args.out)


def render(results: dict[str, Any], out: Path) -> int:
    """Print the table and write the doc."""
    table = report.summary_rows(results)
    print()
    print(report.text_table(table))
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = report.kept_sections(out.read_text() if out.exists() else "")
    out.write_text(report.markdown(results, table) + kept)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
