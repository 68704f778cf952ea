"""holistream-loadgen against a real server: books that balance, sane percentiles, refusals.

The generator is run as operators run it (the console script, in a subprocess) and judged by its
JSON report, cross-checked against the server's own /metrics counters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess

LOADGEN = Path(sys.executable).parent / "holistream-loadgen"


def run_loadgen(url: str, out: Path, *args: str, timeout: float = 90) -> dict[str, Any]:
    cmd = [str(LOADGEN), "--url", url, "--json", str(out), "--quiet", "--parts", "pose", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def counters(server: ServerProcess) -> dict[str, float]:
    return {
        "received": server.metric("holistream_frames_received_total"),
        "dropped": server.metric("holistream_frames_dropped_total"),
        "errors": server.metric("holistream_frame_errors_total"),
    }


def test_twenty_clients_books_balance_and_match_the_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = counters(server)
    report = run_loadgen(
        server.ws_url, tmp_path / "report.json",
        "--clients", "20", "--fps", "10", "--duration", "5", "--ramp", "20/s", "--drain", "5",
    )  # fmt: skip
    after = counters(server)
    (stage,) = report["stages"]
    sessions, frames, lat = stage["sessions"], stage["frames"], stage["latency_ms"]

    assert sessions["ok"] + sessions["refused"] == 20 and sessions["failed"] == 0
    assert sessions["ok"] >= 10, sessions
    assert sessions["final_stats_missing"] == 0 and sessions["unbalanced"] == 0
    # The books: every frame sent is a result, a frame error, a server-reported drop or unanswered.
    assert frames["sent"] > 0 and frames["results"] > 0
    assert frames["sent"] == (
        frames["results"] + frames["frame_errors"] + frames["dropped"] + frames["unanswered"]
    )
    assert frames["balanced"] and frames["discrepancy"] == 0
    assert frames["dropped"] == frames["dropped_in_results"] + frames["dropped_final"]
    assert frames["frame_errors"] == 0 and frames["unanswered"] == 0
    # …and the server counted the same frames (nothing else uses it while this test runs).
    assert after["received"] - before["received"] == frames["sent"]
    assert after["dropped"] - before["dropped"] == frames["dropped"]
    assert after["errors"] - before["errors"] == 0
    # Percentiles from the HDR histogram: one sample per result, ordered, positive.
    assert lat["count"] == frames["results"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert stage["connect_ms"]["count"] == sessions["ok"]
    fps = stage["per_session_fps"]
    # On a loaded 2-core machine a session may see no result at all, so min may be 0.
    assert 0 <= fps["min"] <= fps["median"] <= fps["max"] and fps["max"] > 0
    assert 1 / sessions["ok"] - 1e-9 <= fps["jain"] <= 1 + 1e-9
    assert stage["rates"]["results_per_s"] > 0
    assert stage["server"]["cpu_cores"] is not None and stage["server"]["cpu_cores"] > 0
    assert len(stage["timeline"]) >= 4
    assert report["interrupted"] is False


def test_refused_clients_are_counted_as_refused(server_factory: Any, tmp_path: Path) -> None:
    small = server_factory(
        "--workers", "1", "--max-sessions", "2", "--retry-after-s", "1", "--no-calibrate",
        name="small",
    )  # fmt: skip
    report = run_loadgen(
        small.ws_url, tmp_path / "report.json",
        "--clients", "4", "--fps", "5", "--duration", "3", "--ramp", "0", "--mode", "closed",
        "--in-flight", "1",
    )  # fmt: skip
    (stage,) = report["stages"]
    sessions = stage["sessions"]
    assert sessions["ok"] == 2 and sessions["refused"] == 2 and sessions["failed"] == 0
    # Each refused client honoured the server's wait once, and was refused again: 2 x 2
    # rejections. Nothing is reserved before hello, so clients that connect together may pass
    # the pre-upgrade check (503 + Retry-After) and be refused after hello (1013, retry_after_s).
    rejections = sessions["rejections"]
    assert set(rejections) <= {"http_503", "close_1013"} and sum(rejections.values()) == 4
    assert stage["frames"]["balanced"] and stage["frames"]["results"] > 0
    assert small.metric("holistream_sessions_rejected_total") == 4
