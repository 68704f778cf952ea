"""Pure logic of holistream-loadgen: pacing, ramps, credits, books, fairness, percentiles.

Fast and I/O-free (apart from reading one fixture image); the e2e file runs it against a server.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from holistream import protocol as P
from holistream.credits import Ledger
from loadgen.accounts import Accounts
from loadgen.cli import build_parser, is_loopback, validate
from loadgen.frames import load_frames, parse_size
from loadgen.pacing import FrameClock, frame_offset, parse_ramp, parse_steps, phase, start_offsets
from loadgen.runner import Stage, generator_health, parse_counter, server_cpu
from loadgen.session import SessionConfig
from loadgen.stats import Books, Histogram, SessionRecord, Totals, jain, spread, summarize

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------ pacing


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/s", 20.0), ("20", 20.0), ("600/m", 10.0), ("2.5/sec", 2.5), ("30/min", 0.5)],
)
def test_parse_ramp(text: str, rate: float) -> None:
    assert parse_ramp(text) == pytest.approx(rate)


@pytest.mark.parametrize("text", ["0", "none", "", None, "inf"])
def test_parse_ramp_all_at_once(text: str | None) -> None:
    assert math.isinf(parse_ramp(text))


@pytest.mark.parametrize("text", ["fast", "20/h", "-3/s", "1/s/s"])
def test_parse_ramp_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ramp(text)


def test_parse_steps() -> None:
    assert parse_steps("10,20, 40,") == [10, 20, 40]
    for bad in ("", "a,b", "10,0", "-5"):
        with pytest.raises(ValueError):
            parse_steps(bad)


def test_start_offsets_follow_the_ramp() -> None:
    assert start_offsets(3, 2.0) == [0.0, 0.5, 1.0]
    assert start_offsets(3, math.inf) == [0.0, 0.0, 0.0]


def test_phases_spread_within_one_interval() -> None:
    phases = [phase(i, 0.1) for i in range(50)]
    assert all(0 <= p < 0.1 for p in phases)
    assert len({round(p, 6) for p in phases}) == 50  # no two clients on the same instant
    assert len({frame_offset(i, 120) for i in range(10)}) == 10


def test_frame_clock_keeps_a_fixed_grid() -> None:
    clock = FrameClock(fps=10, start=100.0)
    dues = []
    for _ in range(3):
        dues.append(clock.next_due(100.0))
        clock.sent()
    assert dues == pytest.approx([100.0, 100.1, 100.2])
    assert clock.skipped == 0


def test_frame_clock_skips_frames_instead_of_bursting() -> None:
    clock = FrameClock(fps=10, start=0.0)
    clock.next_due(0.0)
    clock.sent()
    # The sender stalls for 0.55 s: frames due at 0.1 … 0.4 are more than an interval late.
    due = clock.next_due(0.55)
    assert clock.skipped == 4
    assert due == pytest.approx(0.5)  # the latest grid point not yet missed
    assert 0.55 - due < clock.interval


# ------------------------------------------------------------------------------------ credits


def test_credit_limit_and_result_release() -> None:
    led = Ledger(limit=2)
    led.add(0, 0.0)
    led.add(1, 0.01)
    assert not led.has_credit() and led.in_flight == 2
    res = led.on_result(0, dropped=0)
    assert res.sent_at == 0.0 and res.released == 1
    assert led.has_credit()


def test_dropped_count_releases_the_oldest_frames() -> None:
    led = Ledger(limit=4)
    for i in range(4):
        led.add(i, i / 10)
    # Frame 2 answered; the server says 2 frames were dropped since the last result: 0 and 1.
    res = led.on_result(2, dropped=2)
    assert res.released == 3
    assert led.in_flight == 1 and led.oldest_pending_at() == pytest.approx(0.3)
    assert led.drops_released == 2 and led.excess_drops == 0


def test_error_with_frame_id_releases_that_frame() -> None:
    led = Ledger(limit=1)
    led.add(7, 0.0)
    assert led.on_error(7).released == 1
    assert led.has_credit() and led.errors == 1


def test_stats_release_drops_only_when_the_server_is_quiet() -> None:
    led = Ledger(limit=3)
    for i in range(3):
        led.add(i, 0.0)
    # Busy server: which frame was dropped is ambiguous, so nothing is written off.
    assert led.on_stats(1, received=3, pending=1, in_flight=1) == 0
    # Quiet, but it has received only 2 frames: frame 2 is still on the wire and must stay.
    assert led.on_stats(3, received=2, pending=0, in_flight=0) == 2
    assert led.in_flight == 1 and led.outstanding == 1


def test_safety_timeout_returns_the_credit_but_a_late_answer_still_matches() -> None:
    led = Ledger(limit=1)
    led.add(0, 0.0)
    assert led.expire(now=1.0, timeout=5.0) == 0
    assert led.expire(now=6.0, timeout=5.0) == 1
    assert led.has_credit() and led.outstanding == 1
    led.add(1, 6.0)
    res = led.on_result(0, dropped=0)
    assert res.sent_at == 0.0 and res.released == 0 and led.late == 1
    assert led.in_flight == 1


def test_wrong_drop_attribution_is_moved_and_counts_stay_exact() -> None:
    led = Ledger(limit=None)
    for i in range(3):
        led.add(i, float(i))
    led.on_stats(1, received=3, pending=0, in_flight=0)  # writes off the oldest: frame 0
    res = led.on_result(0, dropped=0)  # …but frame 0 was answered after all
    assert res.sent_at == 0.0
    assert led.outstanding == 1 and led.drops_released == 1 and led.unmatched == 0


def test_excess_drops_and_unknown_frames_are_counted() -> None:
    led = Ledger(limit=None)
    led.add(0, 0.0)
    led.on_result(0, dropped=2)
    assert led.excess_drops == 2
    assert led.on_result(99, dropped=0).sent_at is None and led.unmatched == 1


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        Ledger(limit=0)


# ------------------------------------------------------------------------------------ books


def _result(frame: int, dropped: int, ts: float = 0.0) -> P.Result:
    parts = {n: np.zeros((P.PART_POINTS[n], P.PART_STRIDES[n]), np.float32) for n in P.PART_NAMES}
    return P.Result(frame, frame, ts, dropped, 640, 480, "holistic", parts, P.Timing(1, 2, 3, 30))


def _stats(received: int, dropped_total: int, pending: int = 0, in_flight: int = 0) -> str:
    return P.dumps(
        {"type": "stats", "received": received, "dropped_total": dropped_total,
         "dropped": {"superseded": dropped_total, "stale": 0},
         "pending": pending, "in_flight": in_flight}
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_accounts_close_balanced_books_from_real_messages(fmt: str) -> None:
    totals = Totals()
    record = SessionRecord(0)
    acc = Accounts(record, totals, limit=None)
    for i in range(10):
        assert acc.sent(now=i * 0.1) == i
    encode = P.encode_result_binary if fmt == "binary" else P.encode_result_json
    msgs: list[str | bytes] = [
        encode(_result(0, 0)),
        P.error_message("undecodable", "x", frame=1),
        encode(_result(4, 2)),  # frames 2 and 3 superseded
        encode(_result(5, 0)),
        P.warning_message("worker_restarted", "y"),
    ]
    if fmt == "json":
        msgs = [m.decode() if isinstance(m, bytes) else m for m in msgs]
    for m in msgs:
        acc.message(m, now=1.0)
    # Frames 6..9: 7 answered later, 6 and 8 dropped (one after the last result), 9 never answered.
    acc.message(encode(_result(7, 1)) if fmt == "binary" else encode(_result(7, 1)).decode(), 1.0)
    assert acc.final_stats(P.parse_message(_stats(10, 4, in_flight=1))) is False
    acc.message(_stats(10, 4, in_flight=1), 1.0)
    acc.close_books()
    b = record.books
    assert (b.sent, b.results, b.frame_errors) == (10, 4, 1)
    assert (b.dropped_in_results, b.dropped_final, b.dropped) == (3, 1, 4)
    assert b.unanswered == 1 and b.balanced
    assert record.drop_reasons == {"superseded": 4}
    assert totals.latency.count == 4 and totals.server_ms.percentile(50) == pytest.approx(30, 0.01)
    assert totals.errors == {"error:undecodable": 1, "warning:worker_restarted": 1}


def test_accounts_flag_garbage_and_unbalanced_books() -> None:
    totals, record = Totals(), SessionRecord(0)
    acc = Accounts(record, totals, limit=2)
    acc.sent(0.0)
    assert acc.message(b"nope", 0.0) == "" and acc.message("[1]", 0.0) == ""
    acc.message(P.encode_result_json(_result(0, 3)).decode(), 0.1)  # 3 drops for 0 frames
    acc.close_books()
    assert totals.errors["bad_server_message"] == 2
    assert not record.books.balanced and record.books.discrepancy == -3


def test_books_arithmetic() -> None:
    b = Books(sent=10, results=6, frame_errors=1, dropped_in_results=2, dropped_final=0)
    assert b.discrepancy == 1 and not b.balanced
    b.unanswered = 1
    assert b.balanced and b.to_json()["dropped"] == 2
    total = Books()
    total.add(b)
    total.add(b)
    assert total.sent == 20 and total.balanced


# ------------------------------------------------------------------------------------ stats


def test_jain_index() -> None:
    assert jain([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain([10, 0, 0, 0]) == pytest.approx(0.25)
    assert jain([1, 2, 3]) == pytest.approx(36 / 42)
    assert jain([]) is None and jain([0, 0]) is None


def test_histogram_percentiles() -> None:
    h = Histogram()
    assert h.percentile(50) is None and h.summary()["p99"] is None
    for ms in range(1, 1001):
        h.record(float(ms))
    assert h.count == 1000
    assert h.percentile(50) == pytest.approx(500, rel=1e-3)
    assert h.percentile(99) == pytest.approx(990, rel=1e-3)
    s = h.summary()
    assert s["min"] == pytest.approx(1, rel=1e-3) and s["max"] == pytest.approx(1000, rel=1e-3)
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["p99_9"] <= s["max"]  # type: ignore[operator]
    other = Histogram()
    other.record(10_000_000)  # beyond the trackable range: clamped, not lost
    h.add(other)
    assert h.count == 1001
    h.reset()
    assert h.count == 0


def test_spread_and_summary() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "mean": 2.0, "max": 3.0}
    totals = Totals()
    ok = SessionRecord(0, outcome="ok", active_s=2.0, books=Books(sent=30, results=20,
                       dropped_in_results=10))  # fmt: skip
    refused = SessionRecord(1, outcome="refused", rejections=2)
    totals.rejections["http_503"] = 2
    s = summarize([ok, refused], totals, elapsed_s=2.0)
    assert s["sessions"]["ok"] == 1 and s["sessions"]["refused"] == 1
    assert s["frames"]["balanced"] and s["drop_pct"] == pytest.approx(33.333, 1e-3)
    assert s["per_session_fps"]["median"] == 10.0 and s["per_session_fps"]["jain"] == 1.0
    assert s["rates"]["results_per_s"] == 10.0
    # With a steady window (after the ramp), rates come from it alone.
    s = summarize([ok, refused], totals, elapsed_s=2.0, steady=(4.0, 40, 20))
    assert s["rates"] == {"sent_per_s": 10.0, "results_per_s": 5.0} and s["steady_s"] == 4.0


def test_server_cpu_from_two_scrapes() -> None:
    before = {"process_cpu_seconds_total": 1.0, "holistream_workers_cpu_seconds_total": 10.0}
    after = {"process_cpu_seconds_total": 2.0, "holistream_workers_cpu_seconds_total": 14.0}
    cpu = server_cpu("http://x/metrics", before, after, 2.0)
    assert (cpu["cpu_cores"], cpu["main_cpu_cores"], cpu["workers_cpu_cores"]) == (2.5, 0.5, 2.0)
    restarted = {**after, "holistream_workers_cpu_seconds_total": 3.0}  # a worker was replaced
    assert server_cpu(None, before, restarted, 2.0)["workers_cpu_cores"] == 0.0
    assert server_cpu(None, None, after, 2.0)["cpu_cores"] is None


def test_generator_health_blames_the_right_party() -> None:
    stage = Stage(10, 5.0, math.inf, SessionConfig("ws://127.0.0.1:1/ws", fps=10))
    calm = Totals()
    calm.lag.record(2.0)
    calm.send_block.record(400.0)  # the server not reading is not the generator's fault
    health = generator_health(stage, calm, [20.0, 30.0], [50.0])
    assert not health["bottleneck"] and not health["host_saturated"] and not health["reasons"]
    late = Totals()
    late.lag.record(80.0)  # woke 80 ms late for a 100 ms frame interval
    assert generator_health(stage, late, [20.0], [50.0])["bottleneck"]
    assert generator_health(stage, calm, [90.0, 95.0], [50.0])["bottleneck"]
    host = generator_health(stage, calm, [20.0], [99.0])
    assert host["host_saturated"] and not host["bottleneck"] and len(host["reasons"]) == 1


def test_prometheus_counter_parsing() -> None:
    text = (
        "# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 12.5\n"
        'process_cpu_seconds_total{worker="1"} 2.5\n'
        "process_cpu_seconds_total_extra 99\n"
    )
    assert parse_counter(text, "process_cpu_seconds_total") == 15.0
    assert parse_counter("up 1\n", "process_cpu_seconds_total") is None


# ------------------------------------------------------------------------------------ cli, frames


def test_cli_bounds_and_loopback_only() -> None:
    parse = build_parser().parse_args
    assert validate(parse(["--steps", "1,2"])) == [1, 2]
    for argv in (
        ["--clients", "5000"],
        ["--duration", "4000"],
        ["--steps", "10,20", "--duration", "2000"],
        ["--fps", "0"],
        ["--in-flight", "0"],
        ["--url", "ws://10.1.2.3:8000/ws"],
        ["--parts", "feet"],
    ):
        with pytest.raises(ValueError):
            validate(parse(argv))
    assert validate(parse(["--url", "ws://10.1.2.3:8000/ws", "--allow-remote"])) == [10]
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("192.0.2.1")


def test_frames_are_encoded_once_as_jpeg() -> None:
    frames = load_frames(ROOT / "server" / "fixtures" / "messi5.jpg", size=(320, 240))
    assert len(frames) == 1 and frames[0][:2] == b"\xff\xd8"
    assert parse_size("640x480") == (640, 480) and parse_size(None) is None
    with pytest.raises(ValueError):
        parse_size("big")
    with pytest.raises(ValueError):
        load_frames(ROOT / "does-not-exist.avi")


def test_sessions_follow_the_grant() -> None:
    import asyncio

    from loadgen.session import Session

    record = SessionRecord(0)
    totals = Totals()
    acc = Accounts(record, totals, limit=None)
    grant = {"type": "grant", "fps": 12.5, "requested": 15, "floor": 10,
             "reason": "capacity_tightened"}  # fmt: skip
    assert acc.message(P.dumps(grant), 0.0) == "grant"
    assert record.granted_fps == 12.5 and record.grant_changes == 1
    session = Session(0, SessionConfig("ws://127.0.0.1:1/ws", fps=15), [b""], totals,
                      asyncio.Event())  # fmt: skip
    assert session._rate() == 15
    session.record.granted_fps = 12.5
    assert session._rate() == 12.5
    clock = session._follow(FrameClock(15, 0.0))
    assert clock is not None and clock.fps == 12.5
    ignoring = Session(1, SessionConfig("ws://127.0.0.1:1/ws", fps=15, follow_grant=False), [b""],
                       totals, asyncio.Event())  # fmt: skip
    ignoring.record.granted_fps = 12.5
    assert ignoring._rate() == 15
    records = [record]
    record.outcome = "ok"
    assert summarize(records, totals, elapsed_s=1.0)["granted_fps"]["sum"] == 12.5
