"""One worker process as the master runs it: spawn, report, health figures, signals, exit.

Owns the child process (`python -m relay serve` with the fleet link, relay.fleet.link), the
greenlets that read its report and wait for its exit, and what the master knows of it: its app
name, pid, internal web URL and RTP port (from its report), its health (from the poller,
relay.fleet.health) and the moves dispatched to it since the last poll. The child runs in its
own session, so a Ctrl-C on the master's terminal reaches the master only: the master decides
what its workers are told. No policy here (when to restart, whom to dispatch to): that is the
master's and the dispatcher's.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Callable, Optional

import gevent
from gevent import subprocess

from relay.fleet.endpoints import WorkerEndpoint
from relay.fleet.link import ENV_FD, LinkPair

log = logging.getLogger(__name__)


def worker_app_name(app: str, index: int, serial: int) -> str:
    """A worker's own ARI application: unique per spawn (`relay-w0-1`, `relay-w0-5` for its
    restart, `relay-w0-9` in the next generation), so an old generation draining and a new one
    coexist, and a dead worker's leftovers (ids prefixed by its app name) are never confused
    with a live one's."""
    return f"{app}-w{index}-{serial}"


class WorkerProcess:
    """A child running one relay Worker under its own app name."""

    def __init__(self, index: int, generation: int, app: str, argv: list[str],
                 overrides: dict, on_exit: Callable[["WorkerProcess"], None],
                 on_started: Optional[Callable[["WorkerProcess"], None]] = None,
                 env: Optional[dict] = None) -> None:
        self.index = index
        self.generation = generation
        self.app = app
        self._argv = argv
        self._overrides = overrides
        self._on_exit = on_exit
        self._on_started = on_started
        self._env = dict(os.environ if env is None else env)
        self._popen: Optional[subprocess.Popen] = None
        self._link: Optional[LinkPair] = None
        self._greenlets: list[gevent.Greenlet] = []
        self.pid = 0
        self.web_url = ""
        self.rtp_port = 0
        self.spawned_at = 0.0
        self.started_at: Optional[float] = None    # its report arrived
        self.exited_at: Optional[float] = None
        self.returncode: Optional[int] = None
        self.draining = False           # told to drain (or to stop): gets no calls
        self.stop_requested = False     # its exit is expected (drain, stop, reload)
        self.must_exit_by: Optional[float] = None    # retired: killed if still alive then
        # health, from the poller
        self.ready = False              # /readyz said ready (ARI connected, accepting)
        self.calls_active = 0
        self.last_answer_at: Optional[float] = None    # last time its web server answered
        self.moves = 0                  # moves dispatched to it, ever
        self.moves_since_poll = 0       # ... not yet reflected in calls_active
        self.moves_in_flight = 0        # move requests under way to it

    # life cycle
    def start(self) -> "WorkerProcess":
        link = LinkPair()
        env = dict(self._env)
        env[ENV_FD] = str(link.child_fd)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", *self._argv], env=env,
            pass_fds=(link.child_fd,), stdin=subprocess.DEVNULL, start_new_session=True)
        link.child_started()
        self._link = link
        self.pid = self._popen.pid
        self.spawned_at = time.monotonic()
        link.master.send({"overrides": self._overrides})
        self._greenlets = [gevent.spawn(self._read_reports), gevent.spawn(self._wait)]
        log.info("worker %s: spawned (pid %d, generation %d)", self.app, self.pid,
                 self.generation)
        return self

    def _read_reports(self) -> None:
        assert self._link is not None
        while True:
            message = self._link.master.read()
            if message is None:
                return
            started = message.get("started")
            if isinstance(started, dict) and self.started_at is None:
                self.web_url = str(started.get("web_url", ""))
                self.rtp_port = int(started.get("rtp_port") or 0)
                self.started_at = time.monotonic()
                log.info("worker %s started: pid %d, web %s, RTP port %d", self.app, self.pid,
                         self.web_url, self.rtp_port)
                if self._on_started is not None:
                    self._on_started(self)

    def _wait(self) -> None:
        assert self._popen is not None
        code = self._popen.wait()
        self.returncode = code
        self.exited_at = time.monotonic()
        self.ready = False
        if self._link is not None:
            self._link.close()
        try:
            self._on_exit(self)
        except Exception:
            log.exception("worker %s: exit handling failed", self.app)

    def signal(self, sig: int) -> None:
        if self._popen is not None and self.alive:
            try:
                self._popen.send_signal(sig)
            except OSError:
                pass

    def drain(self) -> None:
        """SIGTERM: no new calls; live ones end by themselves up to its drain timeout."""
        self.draining = self.stop_requested = True
        self.signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGINT: end its calls cleanly now and exit."""
        self.draining = self.stop_requested = True
        self.signal(signal.SIGINT)

    def kill(self) -> None:
        self.draining = True
        self.signal(signal.SIGKILL)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once it has exited (and its exit was handled)."""
        if self.returncode is not None and self._greenlets[1].dead:
            return True
        self._greenlets[1].join(timeout)
        return self._greenlets[1].dead

    def close(self) -> None:
        """After its exit: the reader greenlet and the link."""
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self._link is not None:
            self._link.close()

    # what the master knows
    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def healthy(self) -> bool:
        """May get calls: running, reported, ready, not draining."""
        return self.alive and self.started_at is not None and self.ready and not self.draining

    @property
    def load(self) -> int:
        """Its calls as last polled plus the moves dispatched to it since."""
        return self.calls_active + self.moves_since_poll

    def note_dispatched(self) -> None:
        self.moves += 1
        self.moves_since_poll += 1

    def undo_dispatched(self) -> None:
        """A move counted by note_dispatched() did not happen."""
        self.moves -= 1
        self.moves_since_poll = max(0, self.moves_since_poll - 1)

    def exit_description(self) -> str:
        code = self.returncode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def endpoint(self) -> WorkerEndpoint:
        return WorkerEndpoint(name=self.app, index=self.index, pid=self.pid,
                              web_url=self.web_url, healthy=self.healthy,
                              calls_active=self.calls_active, draining=self.draining,
                              generation=self.generation, rtp_port=self.rtp_port)
