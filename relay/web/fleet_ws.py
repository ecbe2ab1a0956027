"""The fleet's event WebSocket (/ws): every worker's events for every dashboard, one page.

Owns `FleetHub`, the relay.web.ws.ClientHub of the fleet web server (so the same bounded
per-client queues, the same dropping of a client that does not keep up, the same messages as a
single worker's /ws): its snapshot is the merge of the workers' mirrors (relay.web.fleet_links)
— live calls, the last ended ones, recent events, the merged status (relay.web.fleet_merge)
and the workers list; "call" and "transcript" messages are relayed as the links receive them
(tagged with the worker); every stats_interval_s a merged "stats" message goes out. When a
worker's mirror is replaced by a snapshot (a link opened or reopened), a link is lost (its
worker's calls leave the merged views until it is back: relay.web.fleet_links) or a worker
leaves, the browsers' picture is stale: the next stats tick sends a fresh merged snapshot
instead of the stats (at most one per interval, however many links flap). Relaying never
blocks a link.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from relay.web import fleet_merge as merge
from relay.web.ws import ClientHub

if TYPE_CHECKING:
    from relay.web.fleet_links import Fleet, WorkerLink

SNAPSHOT_FINISHED = 20      # ended calls in a snapshot, as a worker's
SNAPSHOT_RECENT = 500       # recent events in a snapshot, all workers together


class FleetHub(ClientHub):
    """Fans the workers' events out to the fleet dashboard's clients."""

    def __init__(self, fleet: "Fleet", *, queue_max: int, stats_interval_s: float,
                 max_clients: int, agent: Optional[str] = None,
                 scrub: Callable[[str], str] = lambda text: text) -> None:
        super().__init__(queue_max=queue_max, stats_interval_s=stats_interval_s,
                         max_clients=max_clients, scrub=scrub)
        self.fleet = fleet
        self.agent = agent
        self.resyncs = 0
        self._resync = False

    # the links' listener: in a link's reader greenlet, never blocks
    def on_link_message(self, link: "WorkerLink", message: dict) -> None:
        self.broadcast(message)

    def on_link_synced(self, link: "WorkerLink") -> None:
        if self.clients:
            self._resync = True

    def on_link_lost(self, link: "WorkerLink") -> None:
        if self.clients:
            self._resync = True

    def on_link_gone(self, link: "WorkerLink") -> None:
        if self.clients:
            self._resync = True

    # what the clients see
    def _links(self) -> list["WorkerLink"]:
        return self.fleet.synced_links()

    def status(self) -> dict:
        """The merged status of the workers whose mirrors have one."""
        return merge.worker_status([link.status for link in self._links() if link.status],
                                   self.agent)

    def _live(self) -> list[dict]:
        return merge.live_calls(c for link in self._links() for c in link.calls.values())

    def snapshot(self) -> dict:
        links = self._links()
        share = SNAPSHOT_RECENT // max(1, len(links))
        recent = [m for link in links for m in list(link.recent)[-share:]]
        finished = merge.finished_calls((c for link in links for c in link.finished),
                                        SNAPSHOT_FINISHED)
        return {"type": "snapshot", "t": time.time(), "calls": self._live(),
                "finished": finished, "recent": recent, "worker": self.status(),
                "workers": self.fleet.workers()}

    def stats_message(self) -> dict:
        if self._resync:
            self._resync = False
            self.resyncs += 1
            return self.snapshot()
        return {"type": "stats", "t": time.time(), "calls": self._live(),
                "worker": self.status(), "workers": self.fleet.workers()}
