"""What the master knows of one running worker process, as handed to the aggregated web view.

Owns only the `WorkerEndpoint` value: the master (relay/fleet/master.py) builds these from its
worker table; the fleet web server (relay/web/fleet.py) reads them to merge the workers'
dashboards, APIs and /metrics. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerEndpoint:
    """One worker as the master sees it now."""

    name: str           # the worker's own ARI application name, e.g. "relay-w1-3"
    index: int          # its slot in the master (0 .. workers-1); a restarted worker keeps it
    pid: int
    web_url: str        # base URL of the worker's internal API, e.g. "http://127.0.0.1:41234"
    healthy: bool       # alive, ARI events connected and accepting calls
    calls_active: int = 0
    draining: bool = False
    generation: int = 0     # which reload of the master started it (1: the first)
    rtp_port: int = 0
