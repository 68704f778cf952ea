"""The hung-worker rule without processes: stopped is hung; slow, silent or starved is not yet."""

from __future__ import annotations

from server.workers.watchdog import Watchdog


def test_a_stopped_worker_is_hung_after_the_timeout() -> None:
    dog = Watchdog(timeout_s=2.0)
    dog.heard(0, 0.0)
    assert dog.hung(1.0, {0: (True, 5.0, True)}) == []
    assert dog.hung(2.5, {0: (True, 5.0, True)}) == []  # CPU moved at 1.0, the latest look
    assert dog.hung(3.5, {0: (True, 5.0, True)}) == [0]
    assert dog.hung(4.0, {0: (True, 5.0, True)}) == []  # reported once per timeout


def test_a_silent_worker_that_is_not_stopped_waits_for_the_ceiling() -> None:
    dog = Watchdog(timeout_s=2.0)  # ceiling: 30 s
    dog.heard(0, 0.0)
    hung_at = None
    for tick in range(1, 80):  # no CPU at all (starved, or blocked on its socket): not stopped
        if dog.hung(tick * 0.5, {0: (True, 1.0, False)}):
            hung_at = tick * 0.5
            break
    assert hung_at is not None and 30.0 < hung_at <= 31.0


def test_idle_workers_and_answers_reset_the_clock() -> None:
    dog = Watchdog(timeout_s=2.0)
    assert dog.hung(0.0, {0: (False, 1.0, True), 1: (True, 1.0, True)}) == []
    assert dog.hung(10.0, {0: (False, 1.0, True)}) == []
    dog.heard(1, 10.0)
    assert dog.hung(11.0, {0: (True, 1.0, True), 1: (True, 1.0, True)}) == []
    assert dog.hung(12.5, {0: (True, 1.0, True), 1: (True, 1.0, True)}) == [0, 1]
