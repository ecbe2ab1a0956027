"""The dispatcher: the public ARI application, handing each new caller to one worker.

Owns the public app's events socket (relay.ari.AriEvents; Asterisk delivers an app's events to
one connection only, so only the dispatcher holds the public name, `ari.app`, and each worker
its own), the choice of worker for each caller, the move (`POST /channels/{id}/move` with
`app=<worker's app>` and `appArgs=<the caller's Stasis args, comma-joined>`, so `agent=KEY`
still chooses the agent), what a failed move means, the refusals, and its counters.

- The choice: among the targets the master lists as healthy, the least loaded (calls as last
  polled plus the moves sent to it since, relay.fleet.process.WorkerProcess.load); ties go
  round the workers in turn. A move counts against its target as soon as it is chosen, so a
  burst of callers spreads evenly between two polls.
- A failed move: 404 (the caller is gone) ends there; any other error (or no answer in the ARI
  timeout) tries the next worker; Asterisk's ApplicationMoveFailed event (the worker's app had
  no connection) too. Each caller tries each worker at most once.
- No worker to take it (none healthy, or every one failed), or the master draining: the caller
  is hung up with cause congestion and counted (`refused`, by reason).
- On every (re)connection, callers already waiting in the public app (their StasisStart was
  lost with the connection, or a previous master never moved them) are dispatched too; not
  those this connection has seen arrive or leave meanwhile (a caller arriving as the socket
  connects is in the listing and in a StasisStart: moved twice, its call would end).
- Another connection taking the public app (Asterisk's ApplicationReplaced: a second master
  with the same app name) is logged as an error and shown (`connected` false); the dispatcher
  does not take it back, which would make the two flap.

No media and no call logic: a caller spends about a millisecond here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Protocol, Sequence
from urllib.parse import quote

import gevent
from gevent.pool import Pool

from relay.ari import AriClient, AriError, AriEvents
from relay.call import MEDIA_ARG
from relay.fleet.assignments import Assignments
from relay.janitor import OWN_CHANNEL_PREFIXES, in_stasis

log = logging.getLogger(__name__)

MAX_CONCURRENT_MOVES = 256     # dispatching greenlets; more callers wait for a free one
MAX_ATTEMPTS_KEPT = 10_000     # callers being dispatched whose outcome is not known yet
MAX_ADOPTED = 1000             # waiting callers picked up per (re)connection
REFUSE_CAUSE = "congestion"


class Target(Protocol):
    """A worker as the dispatcher sees it (relay.fleet.process.WorkerProcess is one)."""

    app: str
    moves_in_flight: int

    @property
    def healthy(self) -> bool: ...

    @property
    def load(self) -> int: ...

    def note_dispatched(self) -> None: ...

    def undo_dispatched(self) -> None: ...


def least_loaded(targets: Sequence[Target], exclude: Iterable[str] = (),
                 start: int = 0) -> Optional[Target]:
    """The healthy target with the lowest load, not in `exclude`; on a tie, the first from
    position `start` (going round)."""
    excluded = set(exclude)
    best: Optional[Target] = None
    count = len(targets)
    for i in range(count):
        target = targets[(start + i) % count]
        if not target.healthy or target.app in excluded:
            continue
        if best is None or target.load < best.load:
            best = target
    return best


def _remember(table: OrderedDict, channel_id: str, value: object) -> None:
    """table[channel_id] = value, the oldest entries dropped beyond MAX_ATTEMPTS_KEPT."""
    table[channel_id] = value
    while len(table) > MAX_ATTEMPTS_KEPT:
        table.popitem(last=False)


@dataclass
class _Attempt:
    """One caller being dispatched."""

    args: list[str]
    tried: set[str] = field(default_factory=set)
    greenlet: Optional[gevent.Greenlet] = None
    target: Optional[Target] = None     # where its last successful move request went


class Dispatcher:
    """`Dispatcher(ari, events_url, targets, assignments).start()`; `.refuse_all(reason)`;
    `.stop()`. targets() -> the workers that may get calls now (the master's current
    generation), each with `.healthy` and `.load`."""

    def __init__(self, ari: AriClient, events_url: str, targets: Callable[[], Sequence[Target]],
                 assignments: Assignments, *, reconnect_initial_s: float = 0.25,
                 reconnect_max_s: float = 10.0) -> None:
        self.ari = ari
        self.app = ari.app
        self._targets = targets
        self.assignments = assignments
        self.events = AriEvents(events_url, on_event=self.on_event,
                                on_connected=self._on_connected,
                                on_disconnected=self._on_disconnected,
                                initial_backoff=reconnect_initial_s, max_backoff=reconnect_max_s)
        self._pool = Pool(MAX_CONCURRENT_MOVES)
        self._attempts: OrderedDict[str, _Attempt] = OrderedDict()
        # callers whose StasisEnd this connection heard (moved on, or gone): not to be adopted
        self._left: OrderedDict[str, None] = OrderedDict()
        self._turn = 0
        self.refusing: Optional[str] = None
        self.replaced = False     # another connection took the public app (ApplicationReplaced)
        self.counters: dict = {
            "calls": 0,               # callers that entered the public app
            "dispatched": {},         # {worker app: moves that Asterisk accepted}
            "move_errors": {},        # {worker app: moves refused or failed}
            "refused": {},            # {reason: callers hung up with congestion}
            "caller_gone": 0,         # callers gone before their move
        }

    # life cycle
    def start(self) -> "Dispatcher":
        self.events.start()
        return self

    @property
    def connected(self) -> bool:
        """Its events socket is up and still hears the public app: the app is registered on
        Asterisk (connecting the socket is what registers it), so Stasis(<app>) finds it."""
        return self.events.connected and not self.replaced

    @property
    def was_connected(self) -> bool:
        """Its events socket has been up at least once (if down now, it dropped)."""
        return self.events.connections > 0

    def refuse_all(self, reason: str) -> None:
        """From now on every new caller is refused (the master is draining or stopping)."""
        self.refusing = reason

    def stop(self, timeout: float = 5.0) -> None:
        self.events.stop()
        self._pool.join(timeout=timeout)
        self._pool.kill(block=False)
        self.ari.close()

    # events
    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "ApplicationReplaced":
            self.replaced = True
            log.error("dispatcher: another connection took the ARI app %r (a second master "
                      "with the same ARI_APP_NAME on this Asterisk?): this master gets no more "
                      "callers", self.app)
            return
        channel = event.get("channel") or {}
        channel_id = str(channel.get("id", ""))
        if not channel_id:
            return
        if kind == "StasisStart":
            args = [str(a) for a in event.get("args") or []]
            if MEDIA_ARG in args or str(channel.get("name", "")).startswith(
                    OWN_CHANNEL_PREFIXES):
                return
            self.counters["calls"] += 1
            self._begin(channel_id, args)
        elif kind == "ApplicationMoveFailed":
            self._move_failed(channel_id, str(event.get("destination", "")))
        elif kind == "StasisEnd":
            self._attempts.pop(channel_id, None)    # moved on (or hung up)
            _remember(self._left, channel_id, None)

    def _begin(self, channel_id: str, args: list[str]) -> None:
        if channel_id in self._attempts:
            return
        self._left.pop(channel_id, None)      # back in the public app
        attempt = _Attempt(args)
        _remember(self._attempts, channel_id, attempt)
        attempt.greenlet = self._pool.spawn(self._dispatch, channel_id, attempt)

    def _move_failed(self, channel_id: str, destination: str) -> None:
        """Asterisk could not move the caller (the worker's app has no connection): it is
        still ours; try the next worker."""
        self._count("move_errors", destination)
        attempt = self._attempts.get(channel_id)
        log.warning("dispatch %s: Asterisk could not move it to %s; trying another worker",
                    channel_id, destination)
        if attempt is None:      # not one we know (the table was full): start afresh
            attempt = _Attempt([])
            self._attempts[channel_id] = attempt
        attempt.tried.add(destination)
        self.assignments.forget(channel_id)
        previous = attempt.greenlet
        attempt.greenlet = self._pool.spawn(self._retry, channel_id, attempt, destination,
                                            previous)

    def _retry(self, channel_id: str, attempt: _Attempt, destination: str,
               previous: Optional[gevent.Greenlet]) -> None:
        if previous is not None and previous is not gevent.getcurrent():
            previous.join(timeout=2 * self.ari.timeout)   # its move request may not be back
        target = attempt.target
        if target is not None and target.app == destination:
            target.undo_dispatched()
            self._count("dispatched", destination, -1)
            attempt.target = None
        self._dispatch(channel_id, attempt)

    # the choice and the move
    def _dispatch(self, channel_id: str, attempt: _Attempt) -> None:
        app_args = ",".join(attempt.args)
        while True:
            if self.refusing:
                self._refuse(channel_id, self.refusing)
                return
            targets = self._targets()
            self._turn += 1
            target = least_loaded(targets, attempt.tried, self._turn)
            if target is None:
                self._refuse(channel_id, "all_moves_failed" if attempt.tried and any(
                    t.healthy for t in targets) else "no_worker")
                return
            attempt.tried.add(target.app)
            target.note_dispatched()
            target.moves_in_flight += 1
            try:
                self.ari.move(channel_id, target.app, app_args)
            except AriError as exc:
                target.undo_dispatched()
                if exc.status == 404:
                    self.counters["caller_gone"] += 1
                    self._attempts.pop(channel_id, None)
                    log.info("dispatch %s: the caller left before the move", channel_id)
                    return
                self._count("move_errors", target.app)
                log.warning("dispatch %s: move to %s failed (%s); trying another worker",
                            channel_id, target.app, exc)
                continue
            finally:
                target.moves_in_flight -= 1
            attempt.target = target
            self._count("dispatched", target.app)
            self.assignments.record(channel_id, target.app)
            log.info("dispatch %s: to %s%s", channel_id, target.app,
                     f" ({app_args})" if app_args else "")
            return

    def _refuse(self, channel_id: str, reason: str) -> None:
        self._count("refused", reason)
        log.warning("dispatch %s: refused (%s): hanging up with cause %s", channel_id, reason,
                    REFUSE_CAUSE)
        try:
            self.ari.hangup(channel_id, REFUSE_CAUSE)
        except AriError as exc:
            if exc.status != 404:
                log.warning("dispatch %s: cannot hang up: %s", channel_id, exc)
            self._attempts.pop(channel_id, None)      # gone, or to be adopted again
            return
        # Asterisk answers the DELETE before the channel is torn down (FACTS.md): until its
        # StasisEnd (which forgets the attempt) a listing of waiting callers still shows it,
        # and _adopt_waiting must not take it again.

    def _count(self, key: str, label: str, delta: int = 1) -> None:
        table = self.counters[key]
        value = table.get(label, 0) + delta
        if value > 0:
            table[label] = value
        else:
            table.pop(label, None)

    # connections
    def _on_connected(self) -> None:
        self.replaced = False
        self._left.clear()          # what left while disconnected may have come back unheard
        gevent.spawn(self._adopt_waiting)

    def _on_disconnected(self, reason: str) -> None:
        log.warning("dispatcher: the public app's events socket dropped (%s): new callers "
                    "wait in Asterisk until it is back", reason)

    def _known(self, channel_id: str) -> bool:
        """Being dispatched, or heard leaving the public app on this connection."""
        return channel_id in self._attempts or channel_id in self._left

    def _adopt_waiting(self) -> None:
        """Dispatch the callers already in the public app that nobody is dispatching."""
        try:
            info = self.ari.request("GET", f"/applications/{quote(self.app)}") or {}
        except AriError as exc:
            if exc.status != 404:
                log.warning("dispatcher: cannot list the callers waiting in %s: %s",
                            self.app, exc)
            return
        waiting = [str(c) for c in info.get("channel_ids") or []
                   if not self._known(str(c))][:MAX_ADOPTED]
        for channel_id in waiting:
            try:
                channel = self.ari.get_channel(channel_id)
            except AriError:
                continue
            if not in_stasis(channel) or str(channel.get("name", "")).startswith(
                    OWN_CHANNEL_PREFIXES):
                continue
            app, _, rest = str(channel["dialplan"].get("app_data", "")).partition(",")
            if app != self.app or self._known(channel_id):    # heard of since the listing
                continue
            log.info("dispatcher: %s was waiting in %s; dispatching it", channel_id, self.app)
            self.counters["calls"] += 1
            self._begin(channel_id, rest.split(",") if rest else [])
