"""How often relay tries to (re)open a Realtime socket: per call and for the whole worker.

Owns, sans-IO (the clock and the random source are passed in):

- `ReconnectPolicy`: a call's budget (the `openai.*` settings): failed attempts in a row, sockets
  in all, seconds without a working socket, and how long a socket must live to count as working.
- `Backoff`: the delay before the next attempt, exponential with jitter and a cap.
- `CircuitBreaker`: one per worker, shared by its calls' sessions. After `threshold` failed
  attempts in a row, across calls, it opens for `cooldown_s`: no call opens a socket meanwhile
  (new calls give up at once, live ones wait within their budget); then one probe is let
  through (half-open): its success closes the breaker, its failure opens it again.

An attempt fails when the socket cannot be opened, or when it dies before it did useful work:
before its session.updated, or less than `healthy_after_s` after it. It succeeds once the socket
has lived that long after its session.updated.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class ReconnectPolicy:
    """A call's reconnection budget (see the openai.* settings in README)."""

    initial_s: float = 0.25          # delay after the first failed attempt
    max_s: float = 5.0               # the cap of a delay
    max_failures: int = 3            # failed attempts in a row before the call gives up
    max_sockets: int = 30            # sockets a call may open in all
    healthy_after_s: float = 3.0     # a socket working this long after session.updated is good
    budget_s: float = 20.0           # seconds without a working socket before giving up

    @classmethod
    def from_settings(cls, openai: dict) -> "ReconnectPolicy":
        return cls(initial_s=openai["reconnect_initial_s"], max_s=openai["reconnect_max_s"],
                   max_failures=openai["max_reconnects"],
                   max_sockets=openai["max_sockets_per_call"],
                   healthy_after_s=openai["healthy_after_s"],
                   budget_s=openai["reconnect_budget_s"])


class Backoff:
    """delay(n): seconds to wait after n failed attempts in a row (0 for n = 0): the base
    initial_s × factor^(n-1), capped at max_s, of which the `jitter` fraction is random. With
    jitter ≤ 0.5 and factor 2, each delay is at least the one before (until the cap)."""

    def __init__(self, initial_s: float, max_s: float, factor: float = 2.0,
                 jitter: float = 0.5, rand: Callable[[], float] = random.random) -> None:
        if not (0 < initial_s <= max_s) or factor < 1 or not (0 <= jitter <= 1):
            raise ValueError("Backoff needs 0 < initial_s <= max_s, factor >= 1, 0 <= jitter <= 1")
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max_s, factor, jitter
        self._rand = rand

    def base(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_s, self.initial_s * self.factor ** min(failures - 1, 64))

    def delay(self, failures: int) -> float:
        base = self.base(failures)
        return base * (1.0 - self.jitter) + base * self.jitter * self._rand()


class CircuitBreaker:
    """The worker-wide breaker of Realtime connections (see the module docstring)."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 10.0,
                 probe_timeout_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s    # a probe not heard of after this is lost
        self._clock = clock
        self.failures = 0            # failed attempts in a row, across calls
        self.opened_at: Optional[float] = None
        self.opened_total = 0
        self.successes = 0
        self.failures_total = 0
        self.refused = 0             # attempts not allowed while open
        self._probe_at: Optional[float] = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self._clock() < self.opened_at + self.cooldown_s:
            return OPEN
        return HALF_OPEN

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self._clock())

    def allow(self) -> bool:
        """May a socket be opened now? Half-open, only one probe at a time is let through."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN:
            now = self._clock()
            if self._probe_at is None or now - self._probe_at >= self.probe_timeout_s:
                self._probe_at = now
                return True
        self.refused += 1
        return False

    def success(self) -> None:
        """A socket proved to work: the breaker closes."""
        self.successes += 1
        self.failures = 0
        self.opened_at = self._probe_at = None

    def failure(self) -> None:
        """An attempt failed. Closed: the threshold-th in a row opens the breaker. Half-open:
        the probe failed, it opens again. Open: late news of an earlier attempt, counted."""
        self.failures_total += 1
        self.failures += 1
        state = self.state
        if state == HALF_OPEN or (state == CLOSED and self.failures >= self.threshold):
            self.opened_at = self._clock()
            self.opened_total += 1
            self._probe_at = None

    def abandon(self) -> None:
        """The holder of the probe went away without a verdict (its call ended): another call
        may probe."""
        self._probe_at = None

    def view(self) -> dict:
        return {"state": self.state, "failures": self.failures,
                "opened_total": self.opened_total, "retry_in_s": round(self.retry_in(), 2)}
