"""The hung-worker rule without processes: silent and idle is hung; slow but computing is not."""

from __future__ import annotations

from server.workers.watchdog import Watchdog


def test_a_stopped_worker_is_hung_after_the_timeout() -> None:
    dog = Watchdog(timeout_s=2.0)
    dog.heard(0, 0.0)
    assert dog.hung(1.0, {0: (True, 5.0)}) == []
    assert dog.hung(2.5, {0: (True, 5.0)}) == []  # work out since 1.0 at the latest look
    assert dog.hung(3.5, {0: (True, 5.0)}) == [0]
    assert dog.hung(4.0, {0: (True, 5.0)}) == []  # reported once per timeout


def test_a_slow_worker_that_computes_is_left_alone_up_to_the_ceiling() -> None:
    dog = Watchdog(timeout_s=2.0)  # ceiling: 30 s
    dog.heard(0, 0.0)
    cpu = 0.0
    hung_at = None
    for tick in range(1, 80):
        cpu += 0.4  # a loaded machine: little CPU, but some
        if dog.hung(tick * 0.5, {0: (True, cpu)}):
            hung_at = tick * 0.5
            break
    assert hung_at is not None and 30.0 < hung_at <= 31.0


def test_idle_workers_and_answers_reset_the_clock() -> None:
    dog = Watchdog(timeout_s=2.0)
    assert dog.hung(0.0, {0: (False, 1.0), 1: (True, 1.0)}) == []
    assert dog.hung(10.0, {0: (False, 1.0)}) == []
    dog.heard(1, 10.0)
    assert dog.hung(11.0, {0: (True, 1.0), 1: (True, 1.0)}) == []
    assert dog.hung(12.5, {0: (True, 1.0), 1: (True, 1.0)}) == [0, 1]
