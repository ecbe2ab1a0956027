"""The simulated model's one timer for every session (relay/sim/model/deadlines.py), with
stand-in connections: due deadlines served, stale ones skipped, repeats not stacked, a failure
confined to its connection."""

from __future__ import annotations

import time

import gevent
import pytest

from relay.sim.model.deadlines import DeadlineTimer


class FakeConnection:
    def __init__(self, name: str, calls: list, broken: bool = False) -> None:
        self.session_id = name
        self.deadline = None
        self.armed_deadlines: set = set()
        self.calls = calls
        self.broken = broken
        self.failed = False

    def arm(self, timer: DeadlineTimer, deadline: float) -> None:
        self.deadline = deadline
        timer.arm(self, deadline)

    def on_deadline(self) -> None:
        self.deadline = None
        if self.broken:
            raise RuntimeError("a simulator bug")
        self.calls.append(self.session_id)

    def fail(self) -> None:
        self.failed = True


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.005)


@pytest.fixture
def timer():
    started = DeadlineTimer(time.monotonic)
    started.start()
    yield started
    started.stop()


def test_due_deadlines_are_served_in_order_and_stale_ones_skipped(timer):
    calls: list = []
    now = time.monotonic()
    late, early, moved = (FakeConnection(n, calls) for n in ("late", "early", "moved"))
    late.arm(timer, now + 0.06)
    early.arm(timer, now + 0.02)
    moved.arm(timer, now + 0.01)
    moved.arm(timer, now + 0.04)        # re-armed later: the first entry is stale
    _wait(lambda: len(calls) == 3)
    assert calls == ["early", "moved", "late"]
    assert len(timer) == 0


def test_the_same_deadline_is_not_stacked():
    timer = DeadlineTimer(time.monotonic)      # not started: only the heap is looked at
    conn = FakeConnection("c", [])
    far = time.monotonic() + 3600
    for _ in range(100):
        conn.arm(timer, far)
    assert len(timer) == 1 and conn.armed_deadlines == {far}


def test_a_failing_connection_does_not_stop_the_others(timer):
    calls: list = []
    now = time.monotonic()
    broken, fine = FakeConnection("broken", calls, broken=True), FakeConnection("fine", calls)
    broken.arm(timer, now + 0.01)
    fine.arm(timer, now + 0.02)
    _wait(lambda: calls == ["fine"])
    assert broken.failed and not fine.failed
