"""Unit tests of Core, the worker pool's bookkeeping and StreamHub (fast tier, no processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from holistream import protocol
from server.config import Config
from server.core import Core
from server.sessions.session import Outgoing, Session
from server.streams.hub import StreamHub, Subscriber
from server.workers import messages as m
from server.workers.pool import DEPTH
from tests.fake_pool import FakeWorkerPool


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    models = {name: tmp_path / name for name in protocol.PIPELINES}
    config = Config(workers=2, cpus=2, memory_budget_mb=8192, calibrate=False,
                    stats_interval_s=60)
    core = Core(config, models, pool_class=FakeWorkerPool)
    await core.start()
    yield core
    await core.stop()


def pool_of(core: Core) -> FakeWorkerPool:
    assert isinstance(core.pool, FakeWorkerPool)
    return core.pool


async def open_session(core: Core, parts: tuple[str, ...] = ("face",), fps: float = 15.0,
                       stream: str | None = None) -> Session:
    session = core.new_session(peer="127.0.0.1", stream=stream)
    hello = protocol.Hello(parts=parts, fps=fps)
    assert core.admit(session.id, protocol.pipeline_for(parts), fps).admitted
    session.configure(hello)
    core.add(session)
    await core.open(session)
    return session


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------------ Core


async def test_core_places_sessions_where_admission_reserved_them(core: Core) -> None:
    sessions = [await open_session(core) for _ in range(4)]
    for session in sessions:
        assert core.pool.worker_of(session) == core.admission.worker_of(session.id)
    assert sorted(len(w.sessions) for w in core.pool.workers) == [2, 2]
    core.remove(sessions[0])
    assert core.pool.worker_of(sessions[0]) is None
    assert core.admission.worker_of(sessions[0].id) is None
    assert not any(sessions[0].id in w.sessions for w in core.pool.workers)


async def test_core_refuses_a_frame_and_counts_it(core: Core) -> None:
    session = await open_session(core)
    core.refuse_frame(session, "bad_frame", "too short", 4)
    assert session.slot.received == 1 and session.errors == 1
    assert "bad_frame" in str(session.outbox.pop())


async def test_core_delivers_results_and_switches(core: Core) -> None:
    session = await open_session(core, ("face",))
    core.frame(session, 1, 0.0, b"jpeg")
    await settle()
    out = session.outbox.pop()
    assert isinstance(out, Outgoing) and out.result.frame == 1
    decision = await core.reconfigure(session, protocol.Hello(parts=("face", "pose")))
    assert decision.admitted and session.pipeline == "holistic" and session.switches == 1
    assert core.pool.worker_of(session) == decision.worker


async def test_core_counts_superseded_frames_in_metrics(core: Core) -> None:
    session = await open_session(core)
    pool = pool_of(core)
    pool.hold = True
    for frame_id in range(4):  # 0 goes to the worker, 1 and 2 are superseded by 3
        core.frame(session, frame_id, frame_id * 33.0, b"jpeg")
    assert session.slot.dropped["superseded"] == 2
    assert core.metrics.frames_dropped.labels("superseded")._value.get() == 2


# ------------------------------------------------------------------------ pool bookkeeping


async def test_pool_holds_at_most_depth_items_per_worker_round_robin(core: Core) -> None:
    pool = pool_of(core)
    pool.hold = True
    sessions = [await open_session(core) for _ in range(4)]
    worker = pool.workers[0]
    mine = [s for s in sessions if pool.worker_of(s) == 0]
    for i, session in enumerate(mine):
        core.frame(session, i, 0.0, b"jpeg")
    assert len(worker.in_flight) == min(DEPTH, len(mine))
    pool.release()
    await settle()
    assert not worker.in_flight
    frames = [msg.sid for index, msg in pool.sent if index == 0 and isinstance(msg, m.Frame)]
    assert frames == [s.id for s in mine]  # each in turn


async def test_pool_clock_restarts_with_a_new_landmarker(core: Core) -> None:
    pool = pool_of(core)
    session = await open_session(core)
    for frame_id, ts in enumerate((5000.0, 5100.0)):
        core.frame(session, frame_id, ts, b"jpeg")
        await settle()
    await core.reconfigure(session, protocol.Hello(parts=("pose",)))
    core.frame(session, 9, 9000.0, b"jpeg")
    await settle()
    stamps = [msg.mp_ts for _, msg in pool.sent if isinstance(msg, m.Frame)]
    assert stamps == [0, 100, 0]


async def test_pool_withdraws_an_image_job_whose_caller_left(core: Core) -> None:
    pool = pool_of(core)
    pool.hold = True
    first = asyncio.create_task(core.predict("holistic", ("pose",), b"a"))
    queued = [asyncio.create_task(core.predict("holistic", ("pose",), b"b")) for _ in range(4)]
    await settle()
    waiting = core.predict_backlog
    assert waiting == 5 - len(pool.held)
    queued[-1].cancel()
    await settle()
    assert core.predict_backlog == waiting - 1
    pool.release()
    replies = await asyncio.wait_for(asyncio.gather(first, *queued[:-1]), 5)
    assert all(isinstance(r, m.Predicted) for r in replies)


async def test_pool_fails_requests_of_a_dead_worker(core: Core) -> None:
    pool = pool_of(core)
    pool.hold = True
    job = asyncio.create_task(core.predict("face", ("face",), b"a"))
    await settle()
    index = next(i for i, msg in pool.sent if isinstance(msg, m.Predict))
    await pool.kill(index)
    with pytest.raises(ConnectionError):
        await job
    assert pool.workers[index].alive and pool.restarts == 1


# --------------------------------------------------------------------------------- StreamHub


def producer(name: str) -> Session:
    session = Session(peer="p", stream=name)
    session.configure(protocol.Hello(parts=("face",)))
    return session


def result_of(session: Session, frame: int) -> Outgoing:
    return Outgoing(protocol.Result(frame, frame, 0.0, 0, 1, 1, "face", {"face": None}))


def test_hub_fans_out_only_while_the_session_is_the_publisher() -> None:
    hub = StreamHub()
    sub = Subscriber("cam")
    hub.subscribe(sub)
    first = producer("cam")
    hub.publish(first)
    hub.fan_out(first, result_of(first, 1))
    hub.revoke("cam", "taken elsewhere")
    hub.fan_out(first, result_of(first, 2))  # no longer the publisher: nothing goes out
    kinds = [(is_result, data) for is_result, data in sub.buffer]
    assert [k for k, _ in kinds] == [False, True, False]  # started, result 1, ended
    assert "stream_taken" in str(kinds[-1][1]) and "stream_taken" in str(first.outbox.pop())


def test_hub_slow_subscriber_loses_its_own_oldest_results_and_stalls_once() -> None:
    hub = StreamHub()
    stalls: list[str] = []
    slow = Subscriber("cam", capacity=2, on_stall=lambda: stalls.append("slow"))
    fast = Subscriber("cam", capacity=8)
    hub.subscribe(slow)
    hub.subscribe(fast)
    session = producer("cam")
    hub.publish(session)
    for frame in range(5):
        hub.fan_out(session, result_of(session, frame))
        fast.buffer.clear()
    assert slow.lost == 4 and fast.lost == 0
    for stalled in hub.stalled(now=1e12, limit_s=1.0):
        stalled.stall()
        stalled.stall()
    assert stalls == ["slow"]


def test_hub_rig_options_come_from_the_earliest_subscriber_that_asked() -> None:
    hub = StreamHub()
    changed: list[Session] = []
    hub.rig_changed = changed.append
    session = producer("cam")
    hub.publish(session)
    assert not hub.wants_rig(session)
    late = Subscriber("cam", rig=True, rig_options=protocol.RigOptions(mirror=True), created=2.0)
    early = Subscriber("cam", rig=True, rig_options=protocol.RigOptions(smoothing=False),
                       created=1.0)
    hub.subscribe(late)
    hub.subscribe(early)
    assert hub.wants_rig(session) and changed == [session, session]
    assert hub.rig_options(session) == protocol.RigOptions(smoothing=False)
