"""Backoff and the worker's circuit breaker, with an injected clock and random source."""

from __future__ import annotations

import pytest

from relay.backoff import CLOSED, HALF_OPEN, OPEN, Backoff, CircuitBreaker, ReconnectPolicy
from relay.config import load_settings


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_delays_grow_exponentially_with_jitter_up_to_the_cap():
    low = Backoff(0.25, 5.0, rand=lambda: 0.0)
    high = Backoff(0.25, 5.0, rand=lambda: 1.0)
    assert low.delay(0) == high.delay(0) == 0.0
    assert [high.delay(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [low.delay(n) for n in range(1, 8)] == [0.125, 0.25, 0.5, 1.0, 2.0, 2.5, 2.5]
    # whatever the jitter drew, a delay is never shorter than the one before (until the cap)
    for n in range(1, 5):          # 5 s is reached at n = 6
        assert low.delay(n + 1) >= high.delay(n)
    assert Backoff(0.25, 5.0).delay(10_000) <= 5.0
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)


def test_the_breaker_opens_after_failures_in_a_row_and_refuses_during_its_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.success()                       # a success in between: the count starts again
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED
    breaker.failure()
    assert breaker.state == OPEN and breaker.opened_total == 1
    assert not breaker.allow() and breaker.refused == 1
    clock.now += 4.0
    assert breaker.retry_in() == pytest.approx(6.0)
    breaker.failure()                       # late news of an attempt begun before: counted
    assert breaker.state == OPEN and breaker.opened_total == 1 and breaker.retry_in() > 0


def test_half_open_lets_one_probe_through_whose_verdict_closes_or_reopens():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=10.0, probe_timeout_s=5.0, clock=clock)
    breaker.failure()
    clock.now += 10.0
    assert breaker.state == HALF_OPEN and breaker.retry_in() == 0.0
    assert breaker.allow() is True           # the probe
    assert breaker.allow() is False          # everyone else waits for its verdict
    breaker.failure()                        # the probe failed: open again, a new cooldown
    assert breaker.state == OPEN and breaker.opened_total == 2
    clock.now += 10.0
    assert breaker.allow() is True
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_a_lost_or_abandoned_probe_lets_another_call_probe():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, probe_timeout_s=5.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow() and not breaker.allow()
    clock.now += 5.0                         # never heard of again
    assert breaker.allow() and not breaker.allow()
    breaker.abandon()                        # its call ended
    assert breaker.allow()
    assert breaker.view() == {"state": "half_open", "failures": 1, "opened_total": 1,
                              "retry_in_s": 0.0}


def test_the_policy_comes_from_the_openai_settings():
    settings = load_settings(env={}, overrides={
        "openai.max_reconnects": 2, "openai.max_sockets_per_call": 7,
        "openai.reconnect_initial_s": 0.1, "openai.reconnect_max_s": 2.0,
        "openai.healthy_after_s": 1.5, "openai.reconnect_budget_s": 12.0})
    assert ReconnectPolicy.from_settings(settings.tree["openai"]) == ReconnectPolicy(
        initial_s=0.1, max_s=2.0, max_failures=2, max_sockets=7, healthy_after_s=1.5,
        budget_s=12.0)


@pytest.mark.parametrize("override, problem", [
    ({"openai.reconnect_initial_s": 6.0, "openai.reconnect_max_s": 5.0}, "reconnect_initial_s"),
    ({"openai.max_reconnects": -1}, "max_reconnects"),
    ({"openai.max_sockets_per_call": 0}, "max_sockets_per_call"),
    ({"openai.breaker_threshold": 0}, "breaker_threshold"),
    ({"openai.breaker_cooldown_s": 0.0}, "breaker_cooldown_s"),
    ({"openai.healthy_after_s": 0.0}, "healthy_after_s"),
    ({"openai.reconnect_budget_s": -1.0}, "reconnect_budget_s"),
    ({"call.setup_timeout_s": 0.0}, "setup_timeout_s"),
])
def test_bad_reconnection_settings_are_refused(override, problem):
    from relay.config import ConfigError

    with pytest.raises(ConfigError, match=problem):
        load_settings(env={}, overrides=override)
