"""holistream's /v1/predict (default and exact paths) against the classic Flask design, one run.

    .venv/bin/python bench/predict_compare.py          # writes docs/benchmarks-predict.md
    .venv/bin/python bench/predict_compare.py --steps 10,20 --seconds 5 --out /tmp/try.md

Same 640×480 JPEGs, same Locust users, no cache. Three designs: holistream's default path
(`fast`), its exact path (`?mode=exact`, same server) and the classic design as it is usually
written (bench/baselines/flask_predict.py --landmarker per-thread). A step is two headless
Locust runs per design in A B C C B A order, each after the server went idle (the classic design
keeps running what it gave up on). CPU comes from /proc: the server with its workers, Locust,
and everything else (which says whether the machine was shared).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VIDEO = ROOT / "tests" / "fixtures" / "messi_pan_640x480.avi"
NAME = "/v1/predict"
WAIT = "0.5,1.5"  # seconds between one user's requests
LISTENING = re.compile(r"listening on http://\S+:(\d+)")


@dataclass
class Step:
    users: int
    seconds: float
    answered: int  # 200 with landmarks
    refused: int  # 503
    timeouts: int  # 504
    other: int  # any other failure
    p50: float  # ms, of the answered requests
    p95: float
    p99: float
    cpu_server: float  # % of one core
    cpu_locust: float
    cpu_others: float

    @property
    def total(self) -> int:
        return self.answered + self.refused + self.timeouts + self.other

    def rate(self, n: int) -> float:
        return n / self.seconds

    def pct(self, n: int) -> float:
        return 100.0 * n / max(self.total, 1)

    def cpu(self) -> tuple[float, float, float]:
        return self.cpu_server, self.cpu_locust, self.cpu_others


def extract_frames(dest: Path, count: int = 24) -> int:
    import cv2

    cap = cv2.VideoCapture(str(VIDEO))
    stride = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // count, 1)
    written = 0
    for index in range(count * stride):
        ok, bgr = cap.read()
        if not ok:
            break
        if index % stride == 0:
            jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            (dest / f"frame{index:04d}.jpg").write_bytes(jpeg)
            written += 1
    cap.release()
    return written


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the workers)."""
    try:
        root = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0.0


def busy_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class Server:
    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.log, self.port = name, log, 0
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, image: bytes, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = LISTENING.search(self.log.read_text("utf-8", "replace"))
            self.port = int(match.group(1)) if match else 0
            if self.port and self.predict(image) == 200:
                for _ in range(6):  # warm up: landmarkers built, stocks filled
                    self.predict(image)
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log.read_text()[-2000:]}")

    def predict(self, image: bytes) -> int:
        req = urllib.request.Request(self.url + NAME, data=image, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status)
        except Exception:  # not up yet, or refused: the caller retries
            return 0

    def settle(self, limit_s: float = 20.0) -> None:
        """Wait until the server uses under 10 % of a core (its leftover work is done)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before = tree_cpu(self.proc.pid)
            time.sleep(0.5)
            if tree_cpu(self.proc.pid) - before < 0.05:
                return

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Design:
    name: str
    server: Server
    mode: str = ""  # the Locust profile's HOLISTREAM_LOCUST_MODE


def run_step(design: Design, users: int, seconds: int, images: Path, work: Path) -> Step:
    server = design.server
    work.mkdir(exist_ok=True)
    prefix = work / f"{design.name}-{users}"
    args = [str(BIN / "locust"), "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", server.url,
            "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"]
    env = {**os.environ, "HOLISTREAM_LOCUST_IMAGES": str(images), "HOLISTREAM_LOCUST_WAIT": WAIT,
           "HOLISTREAM_LOCUST_MODE": design.mode}
    cpu0, sys0, t0 = tree_cpu(server.proc.pid), busy_cpu(), time.monotonic()
    with open(f"{prefix}.log", "wb") as log:
        locust = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        locust_cpu = 0.0
        while locust.poll() is None:  # bounded by Locust's own -t
            locust_cpu = max(locust_cpu, tree_cpu(locust.pid))
            time.sleep(0.5)
    wall = time.monotonic() - t0
    server_cpu, system_cpu = tree_cpu(server.proc.pid) - cpu0, busy_cpu() - sys0
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    count = {"503": 0, "504": 0, "other": 0}
    with open(f"{prefix}_failures.csv", newline="") as f:
        for row in csv.DictReader(f):
            error = row["Error"]
            kind = "503" if "HTTP 503" in error else "504" if "HTTP 504" in error else "other"
            count[kind] += int(row["Occurrences"])
    main, refused = rows.get(NAME, {}), rows.get(f"{NAME} (503)", {})
    served = int(main.get("Request Count", 0))
    requests = served + int(refused.get("Request Count", 0))
    p50, p95, p99 = (float(main[q]) if served else float("nan") for q in ("50%", "95%", "99%"))
    return Step(
        users, seconds, requests - sum(count.values()), count["503"], count["504"],
        count["other"], p50, p95, p99, 100 * server_cpu / wall, 100 * locust_cpu / wall,
        100 * max(system_cpu - server_cpu - locust_cpu, 0.0) / wall,
    )


def merge(a: Step, b: Step) -> Step:
    """Two half-steps as one: counts add up, CPU is time-weighted, percentiles the higher."""
    w = a.seconds / (a.seconds + b.seconds)
    cpu = [x * w + y * (1 - w) for x, y in zip(a.cpu(), b.cpu(), strict=True)]
    return Step(a.users, a.seconds + b.seconds, a.answered + b.answered, a.refused + b.refused,
                a.timeouts + b.timeouts, a.other + b.other, max(a.p50, b.p50),
                max(a.p95, b.p95), max(a.p99, b.p99), *cpu)


def run_all(designs: list[Design], steps: list[int], seconds: int, images: Path,
            work: Path) -> dict[str, list[Step]]:
    """Each step in two halves per design, in A B C C B A order, so that a drift in the
    machine's other load falls on all alike."""
    for server in {id(d.server): d.server for d in designs}.values():
        server.wait_ready(next(images.iterdir()).read_bytes())
    results: dict[str, list[Step]] = {d.name: [] for d in designs}
    for index, users in enumerate(steps):
        order = designs if index % 2 == 0 else designs[::-1]
        halves: dict[str, list[Step]] = {d.name: [] for d in designs}
        for half, design in enumerate(order + order[::-1]):
            design.server.settle()
            halves[design.name].append(
                run_step(design, users, seconds // 2, images, work / f"{half}"))
        for name, (a, b) in halves.items():
            s = merge(a, b)
            print(f"{name:10s} {users:3d} users: {s.rate(s.answered):5.1f} answered/s, "
                  f"p95 {s.p95:6.0f} ms, 503 {s.pct(s.refused):4.1f} %, "
                  f"504 {s.pct(s.timeouts):4.1f} %, other {s.other}, "
                  f"CPU others {s.cpu_others:.0f} %", flush=True)
            results[name].append(s)
    return results


def table(steps: list[Step]) -> str:
    lines = [
        "| users | requests/s | answered/s | p50 ms | p95 ms | p99 ms "
        "| error % (503 / 504 / other) | CPU % server | answered per CPU-s | CPU % Locust "
        "| CPU % others |",
        "|" + "---|" * 11,
    ]
    for s in steps:
        errors = f"{s.pct(s.total - s.answered):.1f} ({s.pct(s.refused):.1f} / "
        errors += f"{s.pct(s.timeouts):.1f} / {s.pct(s.other):.1f})"
        lines.append(
            f"| {s.users} | {s.rate(s.total):.1f} | {s.rate(s.answered):.1f} | {s.p50:.0f} "
            f"| {s.p95:.0f} | {s.p99:.0f} | {errors} | {s.cpu_server:.0f} "
            f"| {s.answered / max(s.cpu_server * s.seconds / 100, 1e-9):.1f} "
            f"| {s.cpu_locust:.0f} | {s.cpu_others:.0f} |"
        )
    return "\n".join(lines)


def verdicts(fast: list[Step], exact: list[Step], base: list[Step]) -> str:
    f, e, b = fast[-1], exact[-1], base[-1]
    rf, re_, rb = f.rate(f.answered), e.rate(e.answered), b.rate(b.answered)
    checks = [
        (rf >= 2.5 * re_, f"default answered/s at {f.users} users ≥ 2.5 × the exact path's "
                          f"({rf:.1f} vs {re_:.1f}: {rf / max(re_, 1e-9):.2f}×)"),
        (rf >= 0.8 * rb, f"default answered/s at {f.users} users ≥ 0.8 × the reused-landmarker "
                         f"design's ({rf:.1f} vs {rb:.1f}: {rf / max(rb, 1e-9):.2f}×)"),
        (f.p95 < b.p95, f"default p95 at {f.users} users below the reused-landmarker design's "
                        f"({f.p95:.0f} vs {b.p95:.0f} ms)"),
        (all(s.timeouts == s.other == 0 for s in fast), "default path: beyond capacity only "
                                                         "clean 503s (no 504, no other error)"),
    ]
    lines = [f"- {'✅' if ok else '❌'} {text}" for ok, text in checks]
    late = sum(s.timeouts + s.other for s in exact)
    lines.append(f"- exact path (no goal): {late} answers were 504 or other errors "
                 f"over {sum(s.total for s in exact)} requests")
    return "\n".join(lines)


def write_doc(out: Path, args: argparse.Namespace, results: dict[str, list[Step]],
              load: tuple[float, float], frames: int) -> None:
    fast, exact, base = results["fast"], results["exact"], results["classic"]
    others = max(s.cpu_others for s in fast + exact + base)
    shared = (f"**The machine was shared with other work while this ran**: other processes used "
              f"up to {others:.0f} % of a core during a step (load average {load[0]:.1f} before, "
              f"{load[1]:.1f} after); absolute numbers are low and noisy, and the A B C C B A "
              "order gave the designs the same conditions." if others > 20 else
              f"The machine was otherwise idle (others under {others:.0f} % of a core).")
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    ram = psutil.virtual_memory().total >> 30
    out.write_text(f"""# Single-image API: holistream's two paths vs the classic Flask design

Generated by `.venv/bin/python bench/predict_compare.py` on {time.strftime("%Y-%m-%d %H:%M")}.
Machine: {psutil.cpu_count()} logical CPUs ({cpu}), {ram} GiB. {shared}

Profile (`loadgen/locustfile.py`): {frames} different 640×480 JPEGs (frames of
`tests/fixtures/messi_pan_640x480.avi`) uploaded as the multipart field `file`, a pause of
{WAIT.replace(",", "–")} s between one user's requests, {args.steps} users, {args.seconds} s per
step and design (two halves, in A B C C B A order), all users started at once, no result cache.
Locust runs on the same machine.

- **fast** (holistream's default): `holistream serve --cache-entries 0 --no-calibrate` (default
  workers, `predict_queue` 8, `predict_timeout_s` 10), `POST /v1/predict`: PoseLandmarker, then
  face and hands on the regions Holistic derives from the pose (docs/predict.md).
- **exact**: the same server, `POST /v1/predict?mode=exact`: a clean HolisticLandmarker per image
  with a person (the previous default).
- **classic**: `bench/baselines/flask_predict.py --landmarker per-thread`, the design as it is
  usually written: Flask on Werkzeug's threaded server, a thread pool of 4, one HolisticLandmarker
  in IMAGE mode per pool thread, reused (its answers depend on the images that thread saw
  before), 503 beyond 20 pending requests, 504 at 10 s.

`requests/s` counts every answer, `answered/s` only 200s with landmarks. Percentiles are of the
answered requests (the Locust profile counts 503s apart), the higher of the two halves. CPU is
% of one core.

## fast (holistream default)

{table(fast)}

## exact (holistream `?mode=exact`)

{table(exact)}

## classic (Flask + 4 threads, one reused landmarker per thread)

{table(base)}

## Goals

{verdicts(fast, exact, base)}
""")


def compare(args: argparse.Namespace) -> None:
    steps = [int(x) for x in args.steps.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="predict-compare-") as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        frames = extract_frames(images)
        holistream = [str(BIN / "holistream"), "serve", "--host", "127.0.0.1", "--port", "0",
                      "--cache-entries", "0", "--no-calibrate"]
        classic = [sys.executable, str(ROOT / "bench" / "baselines" / "flask_predict.py"),
                   "--port", "0", "--landmarker", "per-thread"]
        ours = Server("holistream", holistream, work / "holistream.log")
        theirs = Server("classic", classic, work / "classic.log")
        designs = [Design("fast", ours, "fast"), Design("exact", ours, "exact"),
                   Design("classic", theirs)]
        try:
            results = run_all(designs, steps, args.seconds, images, work)
        finally:
            ours.stop()
            theirs.stop()
    write_doc(args.out, args, results, (load_before, os.getloadavg()[0]), frames)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10,20,40,60,80")
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-predict.md")
    compare(parser.parse_args(argv))


if __name__ == "__main__":
    main()
