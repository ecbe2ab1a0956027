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
(404) is success; a 5xx or no answer is retried by the janitor (relay.janitor), the same
converging removal a worker uses for its own calls. It must run once the dead worker can no
longer create anything (its process has exited) and no move to it is still under way (the
master waits for those).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import gevent
from gevent.pool import Pool

from relay.ari import AriClient, AriError
from relay.janitor import Janitor, Leftovers, in_stasis
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


def clean_up_after(ari: AriClient, app: str, callers: Iterable[str] = (),
                   reason: str = "normal", wait_s: float = 60.0) -> CleanupResult:
    """Remove from Asterisk everything the dead worker of app `app` left there, through a
    Janitor (relay.janitor): failed requests are retried until Asterisk confirms, for at most
    `wait_s` (what is still failing then is in `errors`; the next sweep of a worker on that
    prefix, or of this master, would find it again)."""
    result = CleanupResult()
    janitor = Janitor(ari, resource_prefix(app), hangup_reason=reason)
    try:
        in_app = janitor.app_channel_ids(app)
    except AriError as exc:
        log.warning("fleet cleanup %s: cannot ask Asterisk about the app: %s", app, exc)
        in_app = None
    try:
        channels = janitor.list_channels()
        leftovers = janitor.leftovers(set, channels)
    except AriError as exc:
        result.errors.append(f"listing: {exc}")
        log.warning("fleet cleanup %s: cannot list channels and bridges: %s", app, exc)
        channels, leftovers = [], Leftovers()
    in_stasis_now = {c.get("id") for c in channels if in_stasis(c)}
    doomed = set(in_app or ())
    if in_app is None:
        doomed.update(cid for cid in callers if cid in in_stasis_now)
    doomed.difference_update(leftovers.channels)

    pool = Pool(CONCURRENCY)
    for kind, ids in (("channel", leftovers.channels), ("bridge", leftovers.bridges),
                      ("caller", sorted(doomed))):
        for item in ids:
            pool.spawn(janitor.remove, kind, item)
    pool.join()
    deadline = time.monotonic() + wait_s
    while janitor.pending and time.monotonic() < deadline:
        gevent.sleep(0.05)
    unfinished = Counter(kind for kind, _ in janitor.pending)
    for kind, item in sorted(janitor.pending):
        result.errors.append(f"{kind} {item}: still not removed after {wait_s:.0f} s")
    janitor.stop()
    gave_up = janitor.counters["gave_up"]
    # removed: what was asked for, less what failed for good or was still being retried
    for attr, kind, asked in (("channels", "channel", len(leftovers.channels)),
                              ("bridges", "bridge", len(leftovers.bridges)),
                              ("callers", "caller", len(doomed))):
        setattr(result, attr, asked - gave_up[kind] - unfinished[kind])
    for kind in ("channel", "bridge", "caller"):
        if gave_up[kind]:
            result.errors.append(f"{gave_up[kind]} {kind}(s) could not be removed")
    for error in result.errors[:5]:
        log.warning("fleet cleanup %s: %s", app, error)
    return result
