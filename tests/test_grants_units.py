"""Grant policy and pacer: pure, fast (no server)."""

from __future__ import annotations

import pytest

from server.sessions.grants import Capacity, Want, changed, meets_floors, place, round_fps, share
from server.sessions.pacer import RatePacer

BOX = Capacity(box_ms=2000.0, worker_ms=1350.0, workers=3)  # 2 cores, 3 workers of ~1.35 cores


def test_lone_session_gets_what_one_process_gives() -> None:
    g = share({"a": Want(60, 45.0, 0)}, BOX)
    assert g["a"] == pytest.approx(30.0)  # 1350 / 45, not a third of the box
    assert share({"a": Want(20, 45.0, 0)}, BOX)["a"] == pytest.approx(20.0)


def test_equal_sessions_share_equally() -> None:
    g = share({"a": Want(30, 45.0, 0), "b": Want(30, 45.0, 1)}, BOX)
    assert g["a"] == pytest.approx(g["b"])
    assert g["a"] + g["b"] == pytest.approx(2000 / 45)


def test_small_request_granted_in_full_and_rest_to_others() -> None:
    g = share({"a": Want(5, 45.0, 0), "b": Want(60, 45.0, 1), "c": Want(60, 45.0, 2)}, BOX)
    assert g["a"] == pytest.approx(5.0)
    assert g["b"] == pytest.approx(g["c"]) == pytest.approx((2000 - 225) / 90)


def test_worker_bound_sessions_leave_room_for_others() -> None:
    # Two sessions share worker 0 (1350 ms/s), one alone on worker 1 gets the box's remainder.
    wants = {"a": Want(60, 45.0, 0), "b": Want(60, 45.0, 0), "c": Want(60, 45.0, 1)}
    g = share(wants, BOX)
    assert g["a"] == pytest.approx(g["b"])
    assert g["a"] == pytest.approx(2000 / 135)  # the box binds first: all three equal
    cheap = {"a": Want(60, 45.0, 0), "b": Want(60, 45.0, 0), "c": Want(60, 5.0, 1)}
    g = share(cheap, BOX)
    assert g["c"] == pytest.approx(60.0)
    assert 2 * 45 * g["a"] + 5 * 60 <= 2000 + 1e-6
    assert 45 * (g["a"] + g["b"]) <= 1350 + 1e-6


def test_cheaper_content_gets_higher_grants() -> None:
    full = share({"a": Want(60, 45.0, 0), "b": Want(60, 45.0, 1)}, BOX)
    cheap = share({"a": Want(60, 30.0, 0), "b": Want(60, 30.0, 1)}, BOX)
    assert cheap["a"] > full["a"] * 1.4


def test_place_prefers_the_emptiest_worker_and_refuses_below_floor() -> None:
    wants: dict[object, Want] = {}
    placed = []
    for i in range(10):
        p = place(wants, i, 15.0, 45.0, BOX, 10.0)
        if p is None:
            break
        wants[i] = Want(15.0, 45.0, p.worker)
        placed.append(p.worker)
        assert meets_floors(wants, p.grants, 10.0)
    # 4 × 10 fps × 45 ms = 1800 ≤ 2000 fits the box, but the fourth shares a worker, and two
    # floors there (900 ms/s) exceed that worker's equal part of the box (667).
    assert len(placed) == 3
    assert sorted(placed) == [0, 1, 2]
    grants = share(wants, BOX)
    assert sum(grants.values()) == pytest.approx(2000 / 45)
    assert min(grants.values()) >= 10.0
    cheap = place(wants, "cheap", 15.0, 15.0, BOX, 10.0)  # 450 + 150 ≤ 667: it fits
    assert cheap is not None and min(cheap.grants.values()) >= 10.0


def test_sessions_sharing_a_worker_fit_its_part_of_the_box_at_their_floors() -> None:
    from server.sessions.grants import floors_fit_workers

    pair = {"a": Want(15, 45.0, 0), "b": Want(15, 45.0, 0), "c": Want(15, 45.0, 1)}
    assert floors_fit_workers(pair, 10.0, BOX)  # two busy workers: 900 ≤ 2000 / 2
    busy = pair | {"d": Want(15, 45.0, 2)}
    assert not floors_fit_workers(busy, 10.0, BOX)  # three: 900 > 2000 / 3
    assert floors_fit_workers(busy, 10.0, Capacity(4000.0, 1350.0, 3))  # 900 ≤ 4000 / 3
    lone = {"a": Want(15, 90.0, 0), "b": Want(15, 90.0, 1), "c": Want(15, 90.0, 2)}
    assert floors_fit_workers(lone, 10.0, BOX)  # one per worker: its own time decides
    small = {"a": Want(15, 45.0, 0), "b": Want(2, 45.0, 0), "c": Want(15, 45.0, 1)}
    assert floors_fit_workers(small, 10.0, BOX)  # 450 + 90 (its own floor: 2 fps) ≤ 1000


def test_request_below_floor_is_its_own_floor() -> None:
    wants = {i: Want(15.0, 45.0, i) for i in range(3)}  # 3 × 10 fps floors: 1350 ms/s
    small = place(wants, "small", 2.0, 45.0, BOX, 10.0)  # + 2 fps (90 ms/s) still fits
    assert small is not None and small.grants["small"] == pytest.approx(2.0)
    assert place(wants, "big", 15.0, 45.0, BOX, 10.0) is None  # + 10 fps (450 ms/s) does not


def test_changed_ignores_wobbles() -> None:
    assert changed(None, 10.0)
    assert not changed(30.0, 29.8) and not changed(30.0, 32.0)  # small wobbles are not told
    assert changed(30.0, 22.0) and changed(30.0, 28.0) and changed(30.0, 33.5)
    assert round_fps(29.99) == 29.9


def test_pacer_caps_rate_and_tolerates_jitter() -> None:
    pacer = RatePacer(10.0)
    t, let_in = 0.0, 0
    for i in range(300):  # 30 fps for 10 s
        t = i / 30
        let_in += pacer.allow(t)
    assert 98 <= let_in <= 103
    jitter = RatePacer(10.0)
    ok = sum(jitter.allow(i / 10 + (0.03 if i % 2 else -0.03)) for i in range(100))
    assert ok == 100


def test_pacer_wait_and_no_limit_before_a_grant() -> None:
    assert RatePacer(0.0).allow(0.0) and RatePacer(0.0).wait(0.0) == 0.0
    pacer = RatePacer(10.0, burst=1.0, tokens=1.0)
    assert pacer.allow(0.0) and not pacer.allow(0.05)
    assert pacer.wait(0.05) == pytest.approx(0.05)
    assert pacer.allow(0.1)


def test_session_holds_frames_beyond_its_grant_and_drops_them_as_over_grant() -> None:
    from holistream.protocol import Hello
    from server.sessions.session import FramePayload, Session

    session = Session(peer="test", stream=None)
    session.configure(Hello(fps=10))
    session.set_grant(10.0)
    session.pacer.tokens = 1.0
    assert session.offer(1, FramePayload(0.0, b""), 0.0) == 0.0  # a token: it goes
    assert session.slot.take(0.0, 1.0) is not None
    wait = session.offer(2, FramePayload(0.0, b""), 0.02)  # too soon: held until 0.1
    assert wait == pytest.approx(0.08)
    assert session.slot.take(0.05, 1.0) is None  # gated (not dropped, not stale)
    assert session.offer(3, FramePayload(0.0, b""), 0.05) == pytest.approx(0.05)
    assert session.slot.dropped["over_grant"] == 1  # frame 2, replaced while held
    assert session.release(0.1) == 0.0
    session.slot.finish(1)
    taken = session.slot.take(0.1, 1.0)
    assert taken is not None and taken.frame_id == 3
    # A client that sends only after each result is slowed to its grant, never dropped.
    session.slot.finish(3)
    t = 0.1
    for k in range(4, 24):
        t += 0.05  # it would send at 20 fps
        wait = session.offer(k, FramePayload(0.0, b""), t)
        if wait > 0:
            t += wait
            assert session.release(t) == 0.0
        taken = session.slot.take(t, 1.0)
        assert taken is not None and taken.frame_id == k
        session.slot.finish(k)
    assert session.slot.dropped["over_grant"] == 1
    assert 1.9 < t - 0.1 < 2.1  # 20 frames in ~2 s: the grant, 10 fps


def test_session_is_told_when_its_grant_moves_enough() -> None:
    import orjson

    from holistream.protocol import Hello
    from server.sessions.session import Session

    session = Session(peer="test", stream=None)
    session.configure(Hello(fps=30))
    assert session.grant_ready(28.96, 10) == {"fps": 28.9, "requested": 30, "floor": 10}
    session.live = True
    told = []
    session.send_control = lambda m: told.append(orjson.loads(m))  # type: ignore[method-assign]
    session.regrant(20.0, 10)
    session.regrant(20.5, 10)  # a small rise: not worth a message, the client keeps 20
    session.regrant(27.0, 10)
    session.regrant(27.0, 10, configured=True)
    assert [(m["fps"], m["reason"]) for m in told] == [
        (20.0, "capacity_tightened"), (27.0, "capacity_freed"), (27.0, "configured"),
    ]  # fmt: skip
    assert session.pacer.rate == 27.0 and told[0]["floor"] == 10 and told[0]["requested"] == 30


def test_a_lone_session_is_granted_what_its_worker_measurably_gives() -> None:
    from server.sessions.admission import AdmissionPolicy, Budget, PipelineCost

    policy = AdmissionPolicy(
        Budget(cores=2, memory_bytes=4 << 30, max_sessions=10, workers=3),
        {"holistic": PipelineCost(45.0, 140 << 20, 1.0)},
    )
    # Alone on its worker, with 10 % headroom over the worker's measured time.
    assert policy.admit("a", "holistic", 60).grant == pytest.approx(1.1 * 1000 / 45)
    for _ in range(200):  # each frame: 45 ms of CPU over 30 ms of the worker's time
        policy.observe("a", 45.0, 30.0)
    assert policy.regrant()["a"] == pytest.approx(1.1 * 1000 / 30, rel=0.02)  # one process
    assert policy.capacity_fps("holistic") == pytest.approx(2000 / 45, rel=0.02)  # the box binds


def test_lone_headroom_is_only_for_a_session_alone_on_its_worker() -> None:
    cap = Capacity(box_ms=4000.0, worker_ms=1000.0, workers=2, lone_headroom=1.1)
    alone = share({"a": Want(60, 40.0, 0)}, cap)
    assert alone["a"] == pytest.approx(27.5)  # 1.1 × 1000 / 40
    pair = share({"a": Want(60, 40.0, 0), "b": Want(60, 40.0, 0)}, cap)
    assert pair["a"] + pair["b"] == pytest.approx(25.0)  # sharing a worker: its time, no more


def test_the_front_ends_cpu_is_not_the_workers() -> None:
    from server.sessions.admission import AdmissionPolicy, Budget, PipelineCost

    policy = AdmissionPolicy(
        Budget(cores=2, memory_bytes=4 << 30, max_sessions=100, workers=3),
        {"face": PipelineCost(10.0, 1 << 20, 1.0)},
    )
    assert policy.capacity_fps("face") == pytest.approx(200.0)
    for _ in range(30):  # the event loop's process keeps a fifth of a core busy
        policy.observe_front(0.2)
    assert policy.budget.front_cores == pytest.approx(0.2, rel=0.01)
    assert policy.capacity_fps("face") == pytest.approx(180.0, rel=0.01)
    for _ in range(30):  # a front end that busy is refusing: workers keep half the cores
        policy.observe_front(1.9)
    assert policy.capacity_fps("face") == pytest.approx(100.0, rel=0.01)


def test_a_sessions_cost_starts_from_its_pipelines_estimate() -> None:
    from server.sessions.admission import SESSION_ALPHA, AdmissionPolicy, Budget, PipelineCost

    policy = AdmissionPolicy(
        Budget(cores=2, memory_bytes=4 << 30, max_sessions=10, workers=3),
        {"holistic": PipelineCost(45.0, 140 << 20, 1.0)},
    )
    policy.admit("a", "holistic", 30)
    policy.observe("a", 90.0)  # a new landmarker's first frame costs more than the rest
    assert policy.cost_of("a") == pytest.approx(45.0 + SESSION_ALPHA * 45.0)


def test_an_admitted_session_keeps_its_floor_when_costs_rise() -> None:
    from server.sessions.admission import AdmissionPolicy, Budget, PipelineCost

    policy = AdmissionPolicy(
        Budget(cores=2, memory_bytes=4 << 30, max_sessions=10, workers=3),
        {"holistic": PipelineCost(45.0, 140 << 20, 1.0)},
    )
    admitted = [k for k in "abcdefgh" if policy.admit(k, "holistic", 15).admitted]
    assert len(admitted) >= 3
    for _ in range(300):  # the content turns out twice as costly as priced at admission
        for k in admitted:
            policy.observe(k, 90.0, 60.0)
    grants = policy.regrant()
    assert all(grants[k] >= 10.0 for k in admitted)  # the floor promised at admission holds
    assert not policy.admit("late", "holistic", 15).admitted  # and nobody else gets in


def test_published_capacity_is_what_a_saturated_box_answers() -> None:
    from server.sessions.admission import AdmissionPolicy, Budget, PipelineCost

    policy = AdmissionPolicy(
        Budget(cores=2, memory_bytes=4 << 30, max_sessions=100, workers=3),
        {"face": PipelineCost(10.0, 1 << 20, 1.0)},
    )
    full = policy.capacity_fps("face")
    admitted = [k for k in range(40) if policy.admit(k, "face", 30).admitted]
    assert len(admitted) >= 6
    for _ in range(30):  # saturated seconds: 90 frames answered, 10 superseded, a client's
        for k in range(90):  # over_grant drops are not the box's
            policy.observe(admitted[k % len(admitted)], 10.0)
        for reason in ["superseded"] * 10 + ["over_grant"] * 20:
            policy.observe_drop(reason)
        policy.observe_second()
    assert policy.served_share == pytest.approx(0.9, rel=0.01)
    assert policy.capacity_fps("face") == pytest.approx(0.9 * full, rel=0.02)
    for k in admitted[1:]:  # one session left: the box is not saturated, nothing moves
        policy.release(k)
    for _ in range(30):
        for _ in range(20):
            policy.observe(admitted[0], 10.0)
        for _ in range(20):
            policy.observe_drop("superseded")
        policy.observe_second()
    assert policy.served_share == pytest.approx(0.9, rel=0.01)
