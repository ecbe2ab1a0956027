"""The master of `relay serve --workers N`: worker processes, generations, restarts, stops.

Owns the worker processes (relay.fleet.process) in their slots, the generations (a SIGHUP
starts a new one and retires the old), restarts with backoff, the health poller
(relay.fleet.health), the dispatcher (relay.fleet.dispatcher) and its call table
(relay.fleet.assignments), the cleanup after a worker that died (relay.fleet.cleanup), the
public dashboard (relay.web.fleet.FleetWebServer over the workers' internal servers) and the
signals:

- SIGTERM: drain. The dispatcher refuses new callers (congestion); each worker is told to drain
  (SIGTERM: its live calls end by themselves up to the drain timeout, the rest are ended
  cleanly); the master exits once they all have (0 when each exited 0). A second SIGTERM or a
  SIGINT ends the calls at once.
- SIGINT: fast clean stop. Each worker ends its calls cleanly now (SIGINT) and exits.
- SIGHUP: reload. The settings (config file, agent files) are read again; if valid, a new
  generation of N workers starts under new app names; once they are healthy (or at least one
  is, by the start timeout) the dispatcher sends new callers to them only and the old
  generation drains. If none becomes healthy, the reload is abandoned and the old generation
  goes on.
- A worker that exits without being asked (or dies, or stops answering its health checks for
  `fleet.unresponsive_kill_s` and is killed) gets no more calls, its leftovers on Asterisk are
  cleaned up once no move to it is under way, and its slot starts a new worker after a backoff
  (`restart_backoff_initial_s` doubling up to `restart_backoff_max_s`; reset once a worker has
  run healthy for STABLE_S), so a crash loop does not spin.

It does no media and no call logic: its work per call is one ARI move. Nothing it waits for is
unbounded: ARI requests have the ARI timeout, health checks their own, process exits the drain
and stop timeouts plus KILL_GRACE_S (then SIGKILL).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Optional

import gevent
import gevent.event

from relay.ari import AriClient
from relay.campaigns.service import SharedCampaigns
from relay.config import ConfigError, Settings, load_settings
from relay.fleet import status
from relay.fleet.assignments import Assignments
from relay.fleet.cleanup import clean_up_after
from relay.fleet.dispatcher import Dispatcher
from relay.fleet.endpoints import WorkerEndpoint
from relay.fleet.health import HealthPoller
from relay.fleet.process import WorkerProcess, worker_app_name
from relay.history.service import ReadStore, database_target
from relay.web.fleet import FleetWebServer

log = logging.getLogger(__name__)

SUPERVISE_S = 0.1            # how often the slots are looked at (and on every exit)
STABLE_S = 10.0              # healthy this long: the slot's crash count starts again from 0
KILL_GRACE_S = 5.0           # past its deadline, a worker gets this long before SIGKILL
PRUNE_INTERVAL_S = 60.0      # how often the call table forgets callers Asterisk no longer has
MOVES_SETTLE_S = 0.05        # cleanup: how often it looks for moves to the dead worker in flight


@dataclass
class Slot:
    """One worker's place in a generation: its process now, its restart state."""

    index: int
    generation: int
    process: Optional[WorkerProcess] = None
    failures: int = 0                     # exits in a row without a stable run
    restart_at: Optional[float] = None    # when the next process starts
    restarts: int = 0


class Master:
    """`Master(settings, workers, config_file=...).run()` -> exit status."""

    def __init__(self, settings: Settings, workers: int, *, config_file: Optional[str] = None,
                 drain_timeout: Optional[float] = None, stop_timeout: Optional[float] = None,
                 env: Optional[dict] = None) -> None:
        self.settings = settings
        fleet = settings.tree["fleet"]
        self.count = workers
        self.config_file = config_file
        self.drain_timeout = fleet["drain_timeout_s"] if drain_timeout is None else drain_timeout
        self.stop_timeout = fleet["stop_timeout_s"] if stop_timeout is None else stop_timeout
        self.fleet = fleet
        self.env = env
        ari = settings.tree["ari"]
        self.app = ari["app"]
        self.token = secrets.token_urlsafe(24)     # the workers' internal web servers'
        self.ari = AriClient(ari["url"], ari["username"], ari["password"], self.app,
                             timeout=ari["request_timeout_s"])
        self.assignments = Assignments(fleet["max_tracked_calls"])
        self.generation = 0
        self.serial = 0
        self.slots: list[Slot] = []        # the current generation: gets the calls
        self.pending: list[Slot] = []      # a reload's generation, starting
        self.retired: list[WorkerProcess] = []    # older generations' processes, draining
        self.exited: list[WorkerProcess] = []     # every process that exited (for the status)
        self.dispatcher: Optional[Dispatcher] = None
        self.poller = HealthPoller(self.processes, self.token, fleet["health_interval_s"])
        self.web: Optional[FleetWebServer] = None
        self.history_store: Optional[ReadStore] = None     # the dashboard's (relay.history)
        self.campaign_store: Optional[SharedCampaigns] = None  # (relay.campaigns)
        self.state = "starting"            # starting, running, reloading, draining, stopping
        self.counters = {"restarts": {}, "cleanups": 0, "reloads": 0, "reloads_failed": 0,
                         "dispatched_by_slot": {}, "exits_unexpected": 0}
        self._stop_mode: Optional[str] = None
        self._escalated = False
        self._reload_wanted = False
        self._reloading: Optional[gevent.Greenlet] = None
        self._cleanups: set[gevent.Greenlet] = set()
        self._wake = gevent.event.Event()
        self._last_prune = time.monotonic()

    # running
    def run(self) -> int:
        handlers = [gevent.signal_handler(signal.SIGTERM, self.request_stop, "drain"),
                    gevent.signal_handler(signal.SIGINT, self.request_stop, "fast"),
                    gevent.signal_handler(signal.SIGHUP, self.request_reload)]
        try:
            return self._run()
        finally:
            for handler in handlers:
                handler.cancel()

    def _run(self) -> int:
        log.info("master: pid %d, %d worker(s) behind ARI app %r", os.getpid(), self.count,
                 self.app)
        self.generation = 1
        self.slots = [Slot(i, self.generation) for i in range(self.count)]
        for slot in self.slots:
            self._spawn(slot)
        self.poller.start()
        try:
            self._start_web()
        except OSError as exc:
            web = self.settings.tree["web"]
            log.error("cannot serve the dashboard on %s:%s (web.host/web.port, WEB_HOST/"
                      "WEB_PORT): %s", web["host"], web["port"], exc)
            self.request_stop("fast")
            self._shutdown()
            return 2
        # Take the public app once the workers can take calls (all of them, or those ready by
        # the start timeout): until then Asterisk's Stasis() fails for it (the dialplan can
        # route elsewhere) rather than callers being refused or all sent to the first one up.
        deadline = time.monotonic() + self.fleet["start_timeout_s"]
        while self._stop_mode is None and time.monotonic() < deadline and not all(
                s.process is not None and s.process.healthy for s in self.slots):
            self._supervise()
            self._wake.clear()
            self._wake.wait(SUPERVISE_S)
        if self._stop_mode is None:
            self._start_dispatcher()
            self.state = "running"
        while self._stop_mode is None:
            if self._reload_wanted and (self._reloading is None or self._reloading.dead):
                self._reload_wanted = False
                self._reloading = gevent.spawn(self._reload)
            self._supervise()
            self._wake.clear()
            self._wake.wait(SUPERVISE_S)
        return self._shutdown()

    def _start_dispatcher(self) -> None:
        ari = self.settings.tree["ari"]
        client = AriClient(ari["url"], ari["username"], ari["password"], self.app,
                           timeout=ari["request_timeout_s"])
        events_url = client.events_url(self.app, f"{ari['username']}:{ari['password']}")
        self.dispatcher = Dispatcher(client, events_url, self.targets, self.assignments,
                                     reconnect_initial_s=ari["reconnect_initial_s"],
                                     reconnect_max_s=ari["reconnect_max_s"]).start()
        healthy = sum(p.healthy for p in self.targets())
        log.info("master: dispatching app %r to %d healthy worker(s)", self.app, healthy)

    def _start_web(self) -> None:
        if not self.settings.get("web.enabled"):
            return
        tree = self.settings.tree
        # the workers write the call history; the master's dashboard reads the same database
        self.history_store = (ReadStore(database_target(tree)) if tree["history"]["enabled"]
                              else None)
        # the campaigns live in the same database: the master controls them, workers dial
        self.campaign_store = (SharedCampaigns(database_target(tree))
                               if tree["history"]["enabled"] and tree["campaigns"]["enabled"]
                               else None)
        self.web = FleetWebServer(self.settings, self.endpoints, self.token,
                                  master_status=lambda: status.master_status(self),
                                  master_metrics=lambda: status.master_metrics(self),
                                  readiness=lambda: status.readiness(self),
                                  history_store=lambda: self.history_store,
                                  campaign_store=lambda: self.campaign_store)
        self.web.start()

    # the processes
    def processes(self) -> list[WorkerProcess]:
        """Every process the master has started that has not exited (current generation,
        pending reload, retired)."""
        procs = [s.process for s in self.slots + self.pending if s.process is not None]
        procs += self.retired
        return [p for p in procs if p.alive]

    def targets(self) -> list[WorkerProcess]:
        """Whom the dispatcher may choose from: the current generation's running processes
        (it picks among the healthy ones)."""
        return [s.process for s in self.slots if s.process is not None and s.process.alive]

    def endpoints(self) -> list[WorkerEndpoint]:
        return [p.endpoint() for p in self.processes() if p.web_url]

    def _child_argv(self) -> list[str]:
        argv = ["--drain-timeout", repr(float(self.drain_timeout)),
                "--stop-timeout", repr(float(self.stop_timeout))]
        if self.config_file:
            argv += ["--config", str(self.config_file)]
        return argv

    def _spawn(self, slot: Slot) -> None:
        self.serial += 1
        app = worker_app_name(self.app, slot.index, self.serial)
        overrides = {"ari.app": app, "web.enabled": True, "web.host": "127.0.0.1",
                     "web.port": 0, "web.token": self.token}
        process = WorkerProcess(slot.index, slot.generation, app, self._child_argv(),
                                overrides, on_exit=self._on_exit, env=self.env)
        slot.process = process
        slot.restart_at = None
        try:
            process.start()
        except OSError as exc:
            log.error("worker %s: cannot start a process: %s", app, exc)
            process.returncode = -1
            process.exited_at = time.monotonic()
            self._after_failure(slot)

    def _slot_of(self, process: WorkerProcess) -> Optional[Slot]:
        for slot in self.slots + self.pending:
            if slot.process is process:
                return slot
        return None

    def _after_failure(self, slot: Slot) -> None:
        slot.failures += 1
        fleet = self.fleet
        delay = min(fleet["restart_backoff_max_s"],
                    fleet["restart_backoff_initial_s"] * 2 ** (slot.failures - 1))
        slot.restart_at = time.monotonic() + delay
        log.warning("worker slot %d: a new worker in %.1f s (failure %d in a row)", slot.index,
                    delay, slot.failures)

    def _on_exit(self, process: WorkerProcess) -> None:
        """A process exited (called from its waiting greenlet)."""
        expected = process.stop_requested and process.returncode == 0
        how = process.exit_description()
        if expected:
            log.info("worker %s (pid %d) exited (%s)", process.app, process.pid, how)
        else:
            self.counters["exits_unexpected"] += 1
            log.error("worker %s (pid %d) %s%s", process.app, process.pid,
                      "died: " if not process.stop_requested else "stopped badly: ", how)
        self.exited.append(process)
        del self.exited[:-100]
        if process in self.retired:
            self.retired.remove(process)
        slot = self._slot_of(process)
        if slot is not None and self._stop_mode is None:
            self._after_failure(slot)
            self.counters["restarts"][slot.index] = (
                self.counters["restarts"].get(slot.index, 0) + 1)
            slot.restarts += 1
        if expected:
            self._forget(process)
        else:
            greenlet = gevent.spawn(self._clean_up, process)
            self._cleanups.add(greenlet)
            greenlet.link(self._cleanups.discard)
        process.close()
        self._wake.set()

    def _forget(self, process: WorkerProcess) -> None:
        """A process is gone for good: fold its dispatch count into its slot's, drop its
        callers from the table."""
        if self.dispatcher is not None:
            moved = self.dispatcher.counters["dispatched"].pop(process.app, 0)
            self.dispatcher.counters["move_errors"].pop(process.app, None)
            by_slot = self.counters["dispatched_by_slot"]
            by_slot[process.index] = by_slot.get(process.index, 0) + moved
        self.assignments.drop_worker(process.app)

    def _clean_up(self, process: WorkerProcess) -> None:
        """After a worker that died: wait for the moves to it under way, then remove what it
        left on Asterisk."""
        deadline = time.monotonic() + 2 * self.ari.timeout
        while process.moves_in_flight > 0 and time.monotonic() < deadline:
            gevent.sleep(MOVES_SETTLE_S)
        callers = self.assignments.of_worker(process.app)
        try:
            result = clean_up_after(self.ari, process.app, callers)
        except Exception:
            log.exception("worker %s: cleanup failed", process.app)
            return
        finally:
            self._forget(process)
        self.counters["cleanups"] += 1
        log.info("worker %s: cleaned up after it: %s", process.app, result)

    # supervision
    def _supervise(self) -> None:
        try:
            self._supervise_once()
        except Exception:       # a bug here must not stop the master (and orphan its workers)
            log.exception("master: supervising the workers failed; going on")

    def _supervise_once(self) -> None:
        now = time.monotonic()
        fleet = self.fleet
        for slot in self.slots + self.pending:
            process = slot.process
            if process is None or not process.alive:
                if self._stop_mode is None and slot.restart_at is not None and \
                        now >= slot.restart_at:
                    self._spawn(slot)
                continue
            if process.draining:
                continue
            if process.healthy and now - process.spawned_at >= STABLE_S:
                slot.failures = 0
            if process.started_at is None or process.last_answer_at is None:
                if now - process.spawned_at > fleet["start_timeout_s"]:
                    log.error("worker %s: not up after %.0f s; killing it", process.app,
                              fleet["start_timeout_s"])
                    process.kill()
            elif now - process.last_answer_at > fleet["unresponsive_kill_s"]:
                log.error("worker %s: no answer to its health checks for %.0f s; killing it",
                          process.app, fleet["unresponsive_kill_s"])
                process.kill()
        for process in self.retired:
            if process.alive and process.must_exit_by is not None and \
                    now > process.must_exit_by:
                log.error("worker %s: still running past its drain; killing it", process.app)
                process.must_exit_by = None
                process.kill()
        if now - self._last_prune > PRUNE_INTERVAL_S:
            self._last_prune = now
            gevent.spawn(self._prune)

    def _prune(self) -> None:
        mark = self.assignments.mark()
        try:
            alive = [c.get("id") for c in self.ari.list_channels()]
        except Exception as exc:
            log.warning("fleet: cannot list channels to prune the call table: %s", exc)
            return
        gone = self.assignments.prune(alive, mark)
        if gone:
            log.debug("fleet: %d ended call(s) forgotten", gone)

    def _retire(self, process: WorkerProcess) -> None:
        process.must_exit_by = (time.monotonic() + self.drain_timeout + self.stop_timeout
                                + KILL_GRACE_S)
        process.drain()
        self.retired.append(process)

    # reload
    def request_reload(self) -> None:
        if self._stop_mode is None:
            self._reload_wanted = True
            self._wake.set()

    def _reload(self) -> None:
        try:
            self._reload_once()
        except Exception:
            self.state = "running"
            log.exception("reload failed; the workers go on as they are")

    def _reload_once(self) -> None:
        try:
            settings = load_settings(self.config_file)
        except ConfigError as exc:
            self.counters["reloads_failed"] += 1
            log.error("reload refused, the workers go on as they are: %s", exc)
            return
        self.settings = settings
        generation = self.generation + 1
        log.info("reload: starting generation %d (%d workers)", generation, self.count)
        self.state = "reloading"
        self.pending = [Slot(i, generation) for i in range(self.count)]
        for slot in self.pending:
            self._spawn(slot)
        deadline = time.monotonic() + self.fleet["start_timeout_s"]
        while self._stop_mode is None and time.monotonic() < deadline and not all(
                s.process is not None and s.process.healthy for s in self.pending):
            gevent.sleep(SUPERVISE_S)
        if self._stop_mode is not None:
            return      # the stop takes care of every process, pending ones included
        fresh, self.pending = self.pending, []
        if not any(s.process is not None and s.process.healthy for s in fresh):
            self.counters["reloads_failed"] += 1
            log.error("reload: no worker of generation %d became healthy in %.0f s; "
                      "generation %d goes on", generation, self.fleet["start_timeout_s"],
                      self.generation)
            for slot in fresh:
                if slot.process is not None and slot.process.alive:
                    self._retire(slot.process)
            self.state = "running"
            return
        old, self.slots = self.slots, fresh
        old_generation, self.generation = self.generation, generation
        for slot in old:
            if slot.process is not None and slot.process.alive:
                self._retire(slot.process)
        self.counters["reloads"] += 1
        self.state = "running"
        log.info("reload: generation %d takes the calls; generation %d drains",
                 generation, old_generation)

    # stop
    def request_stop(self, mode: str) -> None:
        """mode "drain" (SIGTERM) or "fast" (SIGINT); a second request ends the calls now."""
        if self._stop_mode is None:
            self._stop_mode = mode
        else:
            self._escalated = True
        self._wake.set()

    def _shutdown(self) -> int:
        mode = self._stop_mode or "fast"
        self.state = "draining" if mode == "drain" else "stopping"
        if self.web is not None:      # the dashboard's links to the workers close as they exit
            self.web.expect_workers_to_stop()
        if self.dispatcher is not None:
            self.dispatcher.refuse_all("draining" if mode == "drain" else "stopping")
        if self._reloading is not None:
            self._reloading.join(timeout=1.0)
        procs = self.processes()
        log.info("%s: %d worker(s), %d call(s) live", "draining" if mode == "drain" else
                 "stopping", len(procs), sum(p.calls_active for p in procs))
        for process in procs:
            if mode == "drain":
                process.drain()
            else:
                process.stop()
        wait = (self.drain_timeout if mode == "drain" else 0.0) + self.stop_timeout + \
            KILL_GRACE_S
        deadline = time.monotonic() + wait
        escalated = False
        while any(p.alive for p in procs) and time.monotonic() < deadline:
            if self._escalated and not escalated:
                escalated = True
                log.info("stopping now: the workers end their calls")
                for process in procs:
                    process.stop()
                deadline = min(deadline, time.monotonic() + self.stop_timeout + KILL_GRACE_S)
            self._wake.clear()
            self._wake.wait(SUPERVISE_S)
        for process in procs:
            if process.alive:
                log.error("worker %s (pid %d) did not stop in time; killing it", process.app,
                          process.pid)
                process.kill()
        for process in procs:
            process.wait(KILL_GRACE_S)
        gevent.joinall(list(self._cleanups), timeout=4 * self.ari.timeout)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.poller.stop()
        if self.web is not None:
            self.web.stop()
        if self.history_store is not None:
            self.history_store.close()
        if self.campaign_store is not None:
            self.campaign_store.close()
        self.ari.close()
        ok = all(p.returncode == 0 for p in procs if p.started_at is not None)
        log.info("master: stopped (%s)", "every worker exited cleanly" if ok else
                 "some worker did not exit cleanly")
        return 0 if ok else 1     # a worker that never came up does not count
