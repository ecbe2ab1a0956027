"""Cleaning up on Asterisk after a worker that died: its callers, its channels, its bridges.

Owns that sweep, through the master's ARI client. A worker that dies (killed, crashed, stopped
past its deadline) leaves on Asterisk what only it would have deleted — Asterisk does not: its
bridges and externalMedia (and snoop) channels, whose ids start with the worker's app name
(relay.worker.resource_prefix), and its callers, left silent in the Stasis of an app nobody
serves. The sweep:

  1. asks Asterisk what the dead app still holds (GET /applications/{app}: channel_ids);
  2. lists the channels and bridges (GET /channels, GET /bridges);
  3. hangs up the callers still in the dead app: those it lists, and, if Asterisk does not know
     the app, the callers the dispatcher handed to it (`callers`) that are still in a Stasis
     application (never a caller that left Stasis, e.g. transferred by a tool);
  4. hangs up the channels and destroys the bridges whose ids carry the dead app's prefix.

Each request has the ARI client's timeout, at most CONCURRENCY run at once; "already gone"
(404) is success. It must run once the dead worker can no longer create anything (its process
has exited) and no move to it is still under way (the master waits for those).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional
from urllib.parse import quote

from gevent.pool import Pool

from relay.ari import AriClient, AriError
from relay.worker import resource_prefix

log = logging.getLogger(__name__)

CONCURRENCY = 16


@dataclass
class CleanupResult:
    callers: int = 0          # callers hung up
    channels: int = 0         # the worker's own channels hung up
    bridges: int = 0          # its bridges destroyed
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.callers} caller(s) hung up, {self.channels} channel(s) and "
                f"{self.bridges} bridge(s) removed")
        return text + (f", {len(self.errors)} error(s)" if self.errors else "")


def _app_channels(ari: AriClient, app: str) -> Optional[set[str]]:
    """The channels subscribed to `app`; None when Asterisk does not know it (or says no)."""
    try:
        info = ari.request("GET", f"/applications/{quote(app)}") or {}
    except AriError as exc:
        if exc.status != 404:
            log.warning("fleet cleanup %s: cannot ask Asterisk about the app: %s", app, exc)
        return None
    return {str(c) for c in info.get("channel_ids") or []}


def clean_up_after(ari: AriClient, app: str, callers: Iterable[str] = (),
                   reason: str = "normal") -> CleanupResult:
    """Remove from Asterisk everything the dead worker of app `app` left there."""
    result = CleanupResult()
    prefix = resource_prefix(app)
    in_app = _app_channels(ari, app)
    try:
        channels = ari.list_channels()
        bridges = ari.request("GET", "/bridges") or []
    except AriError as exc:
        result.errors.append(f"listing: {exc}")
        log.warning("fleet cleanup %s: cannot list channels and bridges: %s", app, exc)
        channels, bridges = [], []
    own_channels = [c["id"] for c in channels if str(c.get("id", "")).startswith(prefix)]
    own_bridges = [b["id"] for b in bridges if str(b.get("id", "")).startswith(prefix)]
    in_stasis = {c.get("id") for c in channels
                 if ((c.get("dialplan") or {}).get("app_name") or "").lower() == "stasis"}
    doomed = set(in_app or ())
    if in_app is None:
        doomed.update(cid for cid in callers if cid in in_stasis)
    doomed.difference_update(own_channels)

    def run(kind: str, fn: Callable[[str], None], item: str) -> None:
        try:
            fn(item)
        except AriError as exc:
            if exc.status != 404:
                result.errors.append(f"{kind} {item}: {exc}")
                return
        setattr(result, kind, getattr(result, kind) + 1)

    pool = Pool(CONCURRENCY)
    for cid in own_channels:
        pool.spawn(run, "channels", lambda i: ari.hangup(i, reason), cid)
    for bid in own_bridges:
        pool.spawn(run, "bridges", ari.destroy_bridge, bid)
    for cid in sorted(doomed):
        pool.spawn(run, "callers", lambda i: ari.hangup(i, reason), cid)
    pool.join()
    for error in result.errors[:5]:
        log.warning("fleet cleanup %s: %s", app, error)
    return result
