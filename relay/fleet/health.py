"""The master's view of its workers' health: their /readyz, polled every health interval.

Owns the poller greenlet and its pooled HTTP session (the workers' internal servers, on
127.0.0.1, with the internal token). Each round asks every started, living worker at once, each
request bounded by a timeout shorter than the interval, and sets on the WorkerProcess: `ready`
and `calls_active` from the answer, `last_answer_at` when it answered at all (a 503 is an
answer: the worker is alive but its ARI socket is down or it drains), and `moves_since_poll`,
the moves dispatched to it after this round's request was sent (the ones its answer cannot
count yet), so that a burst of calls between two polls still spreads evenly. No policy: the
master decides what an unhealthy or silent worker means.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Optional

import gevent
import requests

from relay.fleet.process import WorkerProcess
from relay.http import pooled_session

log = logging.getLogger(__name__)


class HealthPoller:
    """`HealthPoller(workers, token, interval).start()`; `.stop()`; `poll_once()` for tests."""

    def __init__(self, workers: Callable[[], Iterable[WorkerProcess]], token: str,
                 interval: float = 0.25, timeout: Optional[float] = None) -> None:
        self._workers = workers
        self._interval = interval
        self._timeout = timeout if timeout is not None else max(0.2, min(1.0, interval * 4))
        self._session = pooled_session(pool_size=2, hosts=256)
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._greenlet: Optional[gevent.Greenlet] = None
        self.rounds = 0

    def start(self) -> "HealthPoller":
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._session.close()

    def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                self.poll_once()
            except Exception:
                log.exception("fleet health: a poll round failed")
            gevent.sleep(max(0.0, self._interval - (time.monotonic() - began)))

    def poll_once(self) -> None:
        """Ask every started, living worker once, all at the same time; return when all have
        answered or timed out."""
        targets = [w for w in self._workers() if w.alive and w.web_url]
        if targets:
            gevent.joinall([gevent.spawn(self._poll, w) for w in targets],
                           timeout=self._timeout + 1.0)
        self.rounds += 1

    def _poll(self, worker: WorkerProcess) -> None:
        moves_before = worker.moves
        try:
            response = self._session.get(worker.web_url.rstrip("/") + "/readyz",
                                         timeout=self._timeout)
            body = response.json()
        except (requests.RequestException, ValueError):
            worker.ready = False
            return
        if not isinstance(body, dict):
            worker.ready = False
            return
        worker.last_answer_at = time.monotonic()
        worker.ready = response.status_code == 200 and bool(body.get("ready"))
        try:
            worker.calls_active = max(0, int(body.get("calls_active", 0)))
        except (TypeError, ValueError):
            pass
        worker.moves_since_poll = worker.moves - moves_before
