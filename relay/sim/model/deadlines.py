"""The one timer of every session of the simulated model.

Owns: the deadlines at which sessions have something to do (RealtimeSession.next_deadline:
response pacing, VAD and expiry timers), kept in one heap and served by one greenlet that calls
`conn.on_deadline()` when one is due, instead of one timed queue wait per connection. A
connection re-arms after each receive or tick; an entry that is no longer the connection's
deadline (`conn.deadline`) is skipped when it comes up; a deadline already in the heap for a
connection (`conn.armed_deadlines`) is not pushed again, so stale entries stay few. A failing
connection's deadline does not stop the others'.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Callable, Optional

import gevent
from gevent.event import Event

log = logging.getLogger(__name__)

# the timer sleeps this much past the next deadline: at load, the deadlines of many sessions
# falling within it are served by one wake-up; a tick comes at most this late
SLACK_S = 0.001


class DeadlineTimer:
    """arm(conn, deadline): call conn.on_deadline() once clock() >= deadline, if by then
    conn.deadline is still that deadline."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list = []
        self._order = itertools.count()
        self._next = math.inf
        self._wake = Event()
        self._greenlet: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=True, timeout=1.0)
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, conn, deadline: float) -> None:
        armed = conn.armed_deadlines
        if deadline in armed:
            return      # in the heap already (e.g. the expiry, again after each response)
        armed.add(deadline)
        heapq.heappush(self._heap, (deadline, next(self._order), conn))
        if deadline < self._next:
            self._next = deadline
            self._wake.set()

    def _run(self) -> None:
        heap, clock, wake = self._heap, self.clock, self._wake
        while True:
            now = clock()
            due = []
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap))
            for deadline, _, conn in due:   # one re-armed in the past waits for the next round
                conn.armed_deadlines.discard(deadline)
                if conn.deadline != deadline:
                    continue
                try:
                    conn.on_deadline()
                except Exception:  # a bug in the simulator: that connection only
                    log.exception("sim-model: the deadline of %s failed", conn.session_id)
                    conn.fail()
            self._next = heap[0][0] if heap else math.inf
            wake.clear()
            wake.wait(None if not heap else max(0.0, self._next - clock()) + SLACK_S)
