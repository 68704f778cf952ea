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
    assert len(placed) == 4  # 4 × 10 fps × 45 ms = 1800 ≤ 2000; a fifth would be 2250
    assert sorted(placed[:3]) == [0, 1, 2]
    grants = share(wants, BOX)
    assert sum(grants.values()) == pytest.approx(2000 / 45)
    assert min(grants.values()) >= 10.0


def test_request_below_floor_is_its_own_floor() -> None:
    wants = {i: Want(15.0, 45.0, i % 3) for i in range(4)}  # 4 × 10 fps floors: 1800 ms/s
    small = place(wants, "small", 2.0, 45.0, BOX, 10.0)  # + 2 fps (90 ms/s) still fits
    assert small is not None and small.grants["small"] == pytest.approx(2.0)
    assert place(wants, "big", 15.0, 45.0, BOX, 10.0) is None  # + 10 fps (450 ms/s) does not


def test_changed_ignores_wobbles() -> None:
    assert changed(None, 10.0)
    assert not changed(30.0, 29.8)
    assert changed(30.0, 22.0) and not changed(30.0, 28.0)
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
