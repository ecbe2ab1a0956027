"""The fleet web server's view of the workers: one event link per worker, and who owns a call.

Owns:
- `WorkerLink`: one client connection (relay.wsclient.JsonWebSocket, with the internal token)
  to a worker's /ws, kept open by its own greenlet, and the mirror of what that worker said: its
  live calls, its last ended calls, its recent events and its status. A snapshot replaces the
  mirror whole (so a reconnection repairs anything missed); a "call" message moves a call
  between live and ended; a "stats" message refreshes the status and the figures of calls
  already known (never revives one: it may have been built before the call's end went out).
  Every call summary and transcript message is tagged with the worker's name. Only a synced
  mirror (its connection open, its snapshot received) counts: when the connection ends, the
  worker's calls leave the merged views until it is back (a worker that died takes its calls
  with it; one that dropped the link for being slow is back, whole, within a backoff).
  A close is a fault (a warning, then reconnections with a doubling backoff, reset once a
  connection has delivered its snapshot) unless it is expected (`Fleet.expected_close`): the
  master has told the worker to drain or stop (SIGTERM, SIGINT, a reload retiring it, a kill),
  no longer lists it, or is stopping all its workers. An expected close is logged once, at
  INFO, and the link is not reopened: a draining worker's server closes only as it exits (a
  failed connection to such a worker is logged at DEBUG and not retried either; were a
  draining worker to drop the link for being slow, its calls would leave the page early).
- `Fleet`: the links, kept in step with the master's `endpoints()` (a worker that vanished, or
  whose address changed, has its link closed and its mirror dropped), and the owner of each
  call id seen (live calls from the mirrors first, then a bounded memory of the ids seen in
  events and call lists). It tells its listener (the browsers' hub) what to relay.
The workers' messages are trusted for their shape only as far as a dict with string ids goes;
anything else is skipped. Nothing here blocks a link's reader: listeners must not block.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

import gevent
import gevent.event

from relay.web.fleet_merge import tag
from relay.wsclient import JsonWebSocket

if TYPE_CHECKING:
    from relay.fleet.endpoints import WorkerEndpoint

log = logging.getLogger(__name__)

FINISHED_KEPT = 50          # ended calls mirrored per worker (the page shows fewer)
RECENT_KEPT = 200           # recent events mirrored per worker
OWNERS_KEPT = 20000         # call ids whose worker is remembered beyond the mirrors


class LinkListener(Protocol):
    def on_link_message(self, link: "WorkerLink", message: dict) -> None:
        """A live "call" or "transcript" message, tagged, mirror already updated."""

    def on_link_synced(self, link: "WorkerLink") -> None:
        """The link's mirror was replaced by a snapshot."""

    def on_link_lost(self, link: "WorkerLink") -> None:
        """The link's connection ended: its mirror is stale until the next snapshot."""

    def on_link_gone(self, link: "WorkerLink") -> None:
        """The worker left the fleet: its mirror is no longer merged."""


def ws_url(web_url: str) -> str:
    base = web_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/ws"
    return base + "/ws"


def _is_call(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), str)


class WorkerLink:
    """One worker's event socket and the mirror of what it said (see the module docstring)."""

    def __init__(self, endpoint: "WorkerEndpoint", token: str, listener: LinkListener, *,
                 backoff_initial_s: float, backoff_max_s: float, connect_timeout_s: float,
                 expected_close: Callable[["WorkerLink"], Optional[str]] = lambda link: None
                 ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.url = ws_url(endpoint.web_url)
        self.listener = listener
        self._headers = [f"Authorization: Bearer {token}"] if token else []
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self._expected_close = expected_close
        # the mirror
        self.calls: dict[str, dict] = {}
        self.finished: deque[dict] = deque(maxlen=FINISHED_KEPT)     # the last to end first
        self.recent: deque[dict] = deque(maxlen=RECENT_KEPT)
        self.status: Optional[dict] = None
        # the connection
        self.connected = False
        self.synced = False             # the current connection has delivered its snapshot
        self.connections = 0
        self.failures = 0
        self.last_error = ""
        self.ended: Optional[str] = None     # why it was given up (an expected close)
        self._ws: Optional[JsonWebSocket] = None
        self._runner: Optional[gevent.Greenlet] = None
        self._stopping = False
        self._synced_on = 0          # the connection (its number) that delivered a snapshot

    def start(self) -> None:
        self.ended = None
        self._runner = gevent.spawn(self._run)

    @property
    def idle(self) -> bool:
        """Given up after an expected close, its greenlet done (start() opens it again)."""
        return self.ended is not None and (self._runner is None or self._runner.dead)

    def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            ws.close(1001, "the fleet dashboard is stopping")
        if self._runner is not None:
            self._runner.kill(block=True, timeout=2.0)
            self._runner = None
        self.connected = self.synced = False

    # the connection, in its own greenlet
    def _run(self) -> None:
        delay = self.backoff_initial_s
        while not self._stopping:
            closed = gevent.event.Event()
            ws = JsonWebSocket(self.url, headers=self._headers, on_message=self._on_message,
                               on_closed=lambda code, reason, done=closed: self._on_closed(
                                   code, reason, done),
                               on_bad_message=self._on_bad_message,
                               connect_timeout=self.connect_timeout_s, send_queue_max=4,
                               name=f"fleet link to {self.name}")
            try:
                ws.connect()
            except Exception as exc:    # refused, timed out, bad status: all retried alike
                self.failures += 1
                why = None if self._stopping else self._expected_close(self)
                if why is not None:
                    self.ended = why
                    log.debug("fleet: event link to worker %s not opened (%s: %s) as expected: "
                              "%s; not retried", self.name, type(exc).__name__, exc, why)
                    break
                self._failed(f"{type(exc).__name__}: {exc}")
            else:
                self._ws = ws
                self.connected = True
                self.connections += 1
                self.last_error = ""
                if self.connections > 1:
                    log.info("fleet: event link to worker %s is back", self.name)
                this_connection = self.connections
                closed.wait()
                self._ws = None
                if self._synced_on == this_connection:     # it delivered its snapshot
                    delay = self.backoff_initial_s
                self.connected = self.synced = False
            if self._stopping or self.ended is not None:
                break
            gevent.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    def _failed(self, reason: str) -> None:
        if reason != self.last_error:       # once per kind of outage, not once per retry
            log.warning("fleet: cannot open the event link to worker %s (%s): %s",
                        self.name, self.url, reason)
        self.last_error = reason

    def _on_closed(self, code: int, reason: str, closed: gevent.event.Event) -> None:
        was_synced, self.synced = self.synced, False
        if not self._stopping:
            self.last_error = f"closed ({code}): {reason}"
            why = self._expected_close(self)
            if why is not None:
                self.ended = why
                log.info("fleet: event link to worker %s closed (%s %s) as expected: %s; not "
                         "reopened", self.name, code, reason, why)
            else:
                log.warning("fleet: event link to worker %s closed (%s %s); reconnecting",
                            self.name, code, reason)
            if was_synced:
                self.listener.on_link_lost(self)
        closed.set()

    def _on_bad_message(self, text: str, error: Exception) -> None:
        log.warning("fleet: worker %s sent a message that is not JSON (%s)", self.name, error)

    # the messages, in the connection's reader greenlet: never block
    def _on_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "snapshot":
            self._snapshot(message)
        elif kind == "call":
            call = message.get("call")
            if not _is_call(call):
                return
            tag(call, self.name)
            if call.get("state") == "ended":
                self.calls.pop(call["id"], None)
                self.finished.appendleft(call)
            else:
                self.calls[call["id"]] = call
            self.recent.append(message)
            self.listener.on_link_message(self, message)
        elif kind == "transcript":
            if not isinstance(message.get("entry"), dict):
                return
            message["worker"] = self.name
            self.recent.append(message)
            self.listener.on_link_message(self, message)
        elif kind == "stats":
            if isinstance(message.get("worker"), dict):
                self.status = message["worker"]
            for call in message.get("calls") or []:
                if _is_call(call) and call["id"] in self.calls:
                    self.calls[call["id"]] = tag(call, self.name)

    def _snapshot(self, message: dict) -> None:
        self.calls = {c["id"]: tag(c, self.name) for c in message.get("calls") or []
                      if _is_call(c)}
        self.finished = deque((tag(c, self.name) for c in message.get("finished") or []
                               if _is_call(c)), maxlen=FINISHED_KEPT)
        self.recent = deque(maxlen=RECENT_KEPT)
        for item in message.get("recent") or []:
            if not isinstance(item, dict):
                continue
            if _is_call(item.get("call")):
                tag(item["call"], self.name)
            else:
                item["worker"] = self.name
            self.recent.append(item)
        if isinstance(message.get("worker"), dict):
            self.status = message["worker"]
        self.synced = True
        self._synced_on = self.connections
        self.listener.on_link_synced(self)


class Fleet:
    """The links to the workers the master lists, and the owners of the calls they carry."""

    def __init__(self, endpoints: Callable[[], list["WorkerEndpoint"]], token: str, *,
                 sync_interval_s: float = 0.5, backoff_initial_s: float = 0.2,
                 backoff_max_s: float = 5.0, connect_timeout_s: float = 2.0) -> None:
        self._endpoints = endpoints
        self.token = token
        self.listener: Optional[LinkListener] = None
        self.sync_interval_s = sync_interval_s
        self._link_options = {"backoff_initial_s": backoff_initial_s,
                              "backoff_max_s": backoff_max_s,
                              "connect_timeout_s": connect_timeout_s}
        self.links: dict[str, WorkerLink] = {}
        self.owners: OrderedDict[str, str] = OrderedDict()
        self._last: list["WorkerEndpoint"] = []
        self._endpoints_failing = False
        self.workers_stopping = False    # the master is stopping them all: links end quietly
        self._watch: Optional[gevent.Greenlet] = None

    # the master's list
    def endpoints(self) -> list["WorkerEndpoint"]:
        """The workers as the master lists them now (its last good answer if it fails)."""
        try:
            current = list(self._endpoints())
        except Exception:
            if not self._endpoints_failing:
                log.exception("fleet: the master's endpoints() failed; using its last list")
            self._endpoints_failing = True
            return list(self._last)
        self._endpoints_failing = False
        self._last = current
        return current

    def start(self) -> None:
        self.sync()
        self._watch = gevent.spawn(self._watch_loop)

    def expect_workers_to_stop(self) -> None:
        """The master is stopping every worker: their links' closes are expected from now on
        (logged at INFO, not reopened)."""
        self.workers_stopping = True

    def expected_close(self, link: WorkerLink) -> Optional[str]:
        """Why a close of this link is expected now (not a fault: no warning, no reconnection),
        or None. Asks the master's list afresh: a worker told to drain a moment ago counts."""
        if self.workers_stopping:
            return "the master is stopping its workers"
        endpoint = next((ep for ep in self.endpoints() if ep.name == link.name), None)
        if endpoint is None or endpoint.web_url != link.endpoint.web_url:
            return "it is no longer running"
        if endpoint.draining:
            return "it is draining or stopping"
        return None

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.kill(block=True, timeout=2.0)
            self._watch = None
        links, self.links = list(self.links.values()), {}
        for link in links:
            link.stop()

    def _watch_loop(self) -> None:
        while True:
            gevent.sleep(self.sync_interval_s)
            try:
                self.sync()
            except Exception:
                log.exception("fleet: keeping the event links in step failed")

    def sync(self) -> None:
        """Open a link to each new worker (once it has a web address), close those of
        workers gone or moved."""
        wanted = {ep.name: ep for ep in self.endpoints() if ep.web_url}
        for name, link in list(self.links.items()):
            endpoint = wanted.get(name)
            if endpoint is not None and endpoint.web_url == link.endpoint.web_url:
                link.endpoint = endpoint
                if link.idle and self.expected_close(link) is None:
                    link.start()        # given up as expected, yet listed and running again
                continue
            del self.links[name]
            link.stop()
            log.info("fleet: worker %s left the fleet; its calls are no longer shown", name)
            self.on_link_gone(link)
        for name, endpoint in wanted.items():
            if name not in self.links:
                link = WorkerLink(endpoint, self.token, self, expected_close=self.expected_close,
                                  **self._link_options)
                self.links[name] = link
                link.start()

    # the LinkListener the links report to: learn the owners, pass the rest on
    def on_link_message(self, link: WorkerLink, message: dict) -> None:
        call = message.get("call")
        if isinstance(call, dict):
            self.learn(call["id"], link.name)
        if self.listener is not None:
            self.listener.on_link_message(link, message)

    def on_link_synced(self, link: WorkerLink) -> None:
        for call_id in list(link.calls) + [c["id"] for c in link.finished]:
            self.learn(call_id, link.name)
        if self.listener is not None:
            self.listener.on_link_synced(link)

    def on_link_lost(self, link: WorkerLink) -> None:
        if self.listener is not None:
            self.listener.on_link_lost(link)

    def on_link_gone(self, link: WorkerLink) -> None:
        if self.listener is not None:
            self.listener.on_link_gone(link)

    # owners
    def learn(self, call_id: str, worker: str) -> None:
        owners = self.owners
        owners[call_id] = worker
        owners.move_to_end(call_id)
        while len(owners) > OWNERS_KEPT:
            owners.popitem(last=False)

    def owner_of(self, call_id: str) -> Optional[str]:
        """The worker carrying (or that carried) call_id, if known."""
        for link in self.links.values():
            if call_id in link.calls:
                return link.name
        return self.owners.get(call_id)

    def workers(self) -> list[dict]:
        """The workers as the dashboard lists them."""
        out = []
        for endpoint in self._last:
            link = self.links.get(endpoint.name)
            out.append({"name": endpoint.name, "index": endpoint.index, "pid": endpoint.pid,
                        "healthy": endpoint.healthy, "draining": endpoint.draining,
                        "calls_active": endpoint.calls_active,
                        "linked": bool(link is not None and link.synced)})
        return out

    def linked(self) -> int:
        return sum(1 for link in self.links.values() if link.synced)

    def synced_links(self) -> list[WorkerLink]:
        """The links whose mirrors are current (connected, snapshot received)."""
        return [link for link in self.links.values() if link.synced]
