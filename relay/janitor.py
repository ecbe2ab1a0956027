"""Removing from Asterisk what relay created there, however the requests fail.

Owns: the deletion of bridges and channels (relay's own externalMedia channels, and callers to
hang up) until Asterisk confirms they are gone, and the listing of what is left on Asterisk.

- `Janitor.remove(kind, id)` makes one attempt at once (the normal case costs one request and
  the caller of `remove` knows the resource is gone when it returns True). A 404 is success; a
  5xx, a timeout or an unreachable Asterisk is retried in the background with exponential
  backoff and jitter, for `attempts` tries. A resource whose creation request had no answer
  (timed out: it may still land on Asterisk after our DELETE) is `uncertain`: its 404 is not
  final, it is asked again after each delay of `recheck_s`.
- `leftovers(owned)` lists the bridges and channels whose ids carry the worker's prefix and
  that no live call owns: what a crashed run, a lost DELETE or a creation that landed late
  left behind. `waiting_callers(...)` lists the callers sitting in the app with no
  conversation (their StasisStart was lost, or the run that had them died).

Every greenlet it starts is its own and is killed by `stop()`. No call logic: what to do with a
waiting caller is the worker's choice. Used by the worker (relay.worker) and, for what a dead
fleet worker left, by the master's cleanup (relay.fleet.cleanup).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import quote

import gevent

from relay.ari import AriClient, AriError

log = logging.getLogger(__name__)

OWN_CHANNEL_PREFIXES = ("UnicastRTP/", "Snoop/", "WebSocket/", "AudioSocket/")
RETRYABLE_STATUSES = frozenset({0, 500, 502, 503, 504})   # 0: timeout or no connection
KINDS = ("bridge", "channel", "caller")
DELETED, NOT_FOUND, RETRY, REFUSED = "deleted", "not found", "retry", "refused"


def retryable(error: AriError) -> bool:
    """Worth asking again: Asterisk failed, or we could not reach it (not a 4xx answer)."""
    return error.status in RETRYABLE_STATUSES


def backoff_delays(initial: float, cap: float, count: Optional[int] = None,
                   rng: Callable[[], float] = random.random) -> Iterator[float]:
    """`count` delays (None: for ever) doubling from `initial` up to `cap`, each with ±20%
    jitter, drawn as they are asked for."""
    delay = initial
    for _ in range(count) if count is not None else itertools.repeat(None):
        yield delay * (0.8 + 0.4 * rng())
        delay = min(delay * 2, cap)


@dataclass
class Leftovers:
    """What `Janitor.leftovers` found: ids of bridges and channels nobody owns."""

    bridges: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)


def in_stasis(channel: dict) -> bool:
    """Is this channel (as GET /channels lists it) running Stasis()?"""
    dialplan = channel.get("dialplan")
    if not isinstance(dialplan, dict):
        return False
    return str(dialplan.get("app_name") or "").lower() == "stasis"


def is_own_channel(channel: dict, prefix: str) -> bool:
    """One of the media/snoop channels relay creates (never a caller)."""
    return (str(channel.get("id", "")).startswith(prefix)
            or str(channel.get("name", "")).startswith(OWN_CHANNEL_PREFIXES))


class Janitor:
    """Converging removal of relay's resources on one Asterisk, for one resource prefix."""

    def __init__(self, ari: AriClient, prefix: str, *, attempts: int = 8,
                 retry_initial_s: float = 0.25, retry_max_s: float = 5.0,
                 recheck_s: Iterable[float] = (2.0, 10.0, 30.0),
                 hangup_reason: str = "normal") -> None:
        self.ari = ari
        self.prefix = prefix
        self.attempts = max(1, attempts)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.recheck_s = tuple(recheck_s)
        self.hangup_reason = hangup_reason
        self._greenlets: set[gevent.Greenlet] = set()
        self._pending: set[tuple[str, str]] = set()     # (kind, id) being retried
        self._stopped = False
        self.counters: dict[str, dict[str, int]] = {
            "removed": dict.fromkeys(KINDS, 0),      # deleted by a request of ours
            "retries": dict.fromkeys(KINDS, 0),      # requests repeated after a failure
            "gave_up": dict.fromkeys(KINDS, 0),      # still failing after every attempt
        }

    # removal
    def remove(self, kind: str, resource_id: str, uncertain: bool = False,
               reason: Optional[str] = None) -> bool:
        """Delete `resource_id` (kind: bridge, channel, caller). True when Asterisk confirmed
        it gone now; False when the work goes on in the background (retries, rechecks)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        outcome = self._attempt(kind, resource_id, reason)
        if outcome in (DELETED, REFUSED) or (outcome == NOT_FOUND and not uncertain):
            return outcome != REFUSED
        self._background(kind, resource_id, uncertain, reason, first=outcome)
        return False

    @property
    def pending(self) -> set[tuple[str, str]]:
        """(kind, id) of the removals still being retried or rechecked."""
        return set(self._pending)

    def _attempt(self, kind: str, resource_id: str, reason: Optional[str]) -> str:
        """One DELETE: DELETED, NOT_FOUND (404: gone already, or not created yet), RETRY (a
        5xx, a timeout, no connection) or REFUSED (another 4xx: final, logged and counted)."""
        try:
            if kind == "bridge":
                self.ari.destroy_bridge(resource_id)
            else:
                self.ari.hangup(resource_id, reason or self.hangup_reason)
        except AriError as exc:
            if exc.status == 404:
                return NOT_FOUND
            if retryable(exc):
                log.info("janitor: %s %s: %s (will retry)", kind, resource_id, exc)
                return RETRY
            log.warning("janitor: %s %s: Asterisk refused: %s", kind, resource_id, exc)
            self.counters["gave_up"][kind] += 1
            return REFUSED
        self.counters["removed"][kind] += 1
        return DELETED

    def _background(self, kind: str, resource_id: str, uncertain: bool,
                    reason: Optional[str], first: str) -> None:
        if self._stopped or (kind, resource_id) in self._pending:
            return
        self._pending.add((kind, resource_id))
        greenlet = gevent.spawn(self._converge, kind, resource_id, uncertain, reason, first)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)

    def _converge(self, kind: str, resource_id: str, uncertain: bool,
                  reason: Optional[str], outcome: str) -> None:
        try:
            if outcome == RETRY:
                for delay in backoff_delays(self.retry_initial_s, self.retry_max_s,
                                            self.attempts - 1):
                    gevent.sleep(delay)
                    self.counters["retries"][kind] += 1
                    outcome = self._attempt(kind, resource_id, reason)
                    if outcome != RETRY:
                        break
                else:
                    self.counters["gave_up"][kind] += 1
                    log.warning("janitor: %s %s still not removed after %d attempts; the "
                                "periodic sweep will try again", kind, resource_id,
                                self.attempts)
                    return
            if outcome == NOT_FOUND and uncertain:
                # Its creation had no answer and may still land after our 404: look again.
                for delay in self.recheck_s:
                    gevent.sleep(delay)
                    if self._attempt(kind, resource_id, reason) == DELETED:
                        log.info("janitor: %s %s was created after its DELETE; removed now",
                                 kind, resource_id)
                        return
        finally:
            self._pending.discard((kind, resource_id))

    def stop(self) -> None:
        """Kill the background retries (what they did not remove, the next sweep will)."""
        self._stopped = True
        gevent.killall(list(self._greenlets), block=True, timeout=2)
        self._pending.clear()       # a greenlet killed before it ran never cleared its entry

    # what is left on Asterisk
    def list_channels(self) -> list[dict]:
        channels = self.ari.list_channels()
        return [c for c in channels if isinstance(c, dict)] if isinstance(channels, list) else []

    def list_bridges(self) -> list[dict]:
        bridges = self.ari.request("GET", "/bridges") or []
        return [b for b in bridges if isinstance(b, dict)] if isinstance(bridges, list) else []

    def leftovers(self, owned: Callable[[], set[str]], channels: Optional[list[dict]] = None
                  ) -> Leftovers:
        """The bridges and channels with our prefix that no live call owns (AriError when
        Asterisk cannot list them). `owned()` is asked after the listing, so a call that
        started meanwhile keeps what it has just created."""
        if channels is None:
            channels = self.list_channels()
        bridges = self.list_bridges()
        mine = owned()
        found = Leftovers()
        for bridge in bridges:
            bid = str(bridge.get("id", ""))
            if bid.startswith(self.prefix) and bid not in mine:
                found.bridges.append(bid)
        for channel in channels:
            cid = str(channel.get("id", ""))
            if cid.startswith(self.prefix) and cid not in mine:
                found.channels.append(cid)
        return found

    def app_channel_ids(self, app: str) -> Optional[set[str]]:
        """The channels Asterisk lists for application `app`; None when it does not know the
        app (404). AriError for any other failure."""
        try:
            info = self.ari.request("GET", f"/applications/{quote(app)}") or {}
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        ids = info.get("channel_ids") if isinstance(info, dict) else None
        return {str(c) for c in ids or []}

    def waiting_callers(self, app: str, channels: list[dict]) -> list[dict]:
        """Callers in app `app`'s Stasis (as Asterisk lists them), relay's own channels
        excluded: the caller decides which of them have a conversation."""
        in_app = self.app_channel_ids(app) or set()
        return [c for c in channels
                if str(c.get("id", "")) in in_app and in_stasis(c)
                and not is_own_channel(c, self.prefix)]
