"""The fleet web server: the one dashboard, API and /metrics of `relay serve --workers N`.

Owns the wiring of the master's public server (web.host:web.port): relay.web.server's
DashboardServer — the same page, login, token, same-origin rules, redaction and clean stop as a
single worker's — over the fleet backend: relay.web.fleet_api.FleetApi (the REST routes and
/metrics, answered from the workers' internal APIs through relay.web.fleet_http) and
relay.web.fleet_ws.FleetHub (/ws, fed by one event link per worker, relay.web.fleet_links). The
workers' own servers listen on 127.0.0.1 with the internal token; this server never hands that
token out (it is one more secret its redactor scrubs). It needs gevent's monkey-patched sockets,
like the rest of relay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from relay.config import Settings
from relay.web.fleet_api import FleetApi
from relay.web.fleet_http import WorkerHttp
from relay.web.fleet_links import Fleet
from relay.web.fleet_ws import FleetHub
from relay.web.server import DashboardServer

if TYPE_CHECKING:
    from relay.fleet.endpoints import WorkerEndpoint


class FleetWebServer(DashboardServer):
    """`FleetWebServer(settings, endpoints, internal_token).start()`; `.url`, `.port`,
    `.stop(timeout)`.

    endpoints() -> the master's current list of WorkerEndpoint (called often: keep it cheap and
    non-blocking); internal_token: the bearer token of the workers' servers; master_status() ->
    a JSON-able dict shown as "master" in /api/calls; master_metrics() -> Prometheus text
    lines (with their HELP/TYPE) added to /metrics; readiness() -> the /readyz verdict
    (relay.fleet.status.verdict: "ready", "public_app_connected", "workers_accepting",
    "reasons"; without it, /readyz is about the listed workers alone); history_store() -> the
    call-history store the master reads for /api/history and /api/stats/daily (None: those
    answer 503). Settings from the `web`
    section; host and port may be overridden. request_timeout_s bounds each request to a
    worker; link_* tune the event links' reconnection; sync_interval_s is how often endpoints()
    is read for workers that came or went. expect_workers_to_stop(): the master is stopping its
    workers, their links' closes are expected (no warning, no reconnection).
    """

    label = "fleet dashboard"

    def __init__(self, settings: Settings, endpoints: Callable[[], list["WorkerEndpoint"]],
                 internal_token: str, master_status: Optional[Callable[[], dict]] = None,
                 master_metrics: Optional[Callable[[], str]] = None,
                 host: Optional[str] = None, port: Optional[int] = None, *,
                 readiness: Optional[Callable[[], dict]] = None,
                 history_store: Optional[Callable[[], object]] = None,
                 campaign_store: Optional[Callable[[], object]] = None,
                 request_timeout_s: float = 3.0, link_backoff_initial_s: float = 0.2,
                 link_backoff_max_s: float = 5.0, sync_interval_s: float = 0.5) -> None:
        super().__init__(settings, host, port, extra_secrets=[internal_token])
        web = settings.tree["web"]
        self.fleet = Fleet(endpoints, internal_token, sync_interval_s=sync_interval_s,
                           backoff_initial_s=link_backoff_initial_s,
                           backoff_max_s=link_backoff_max_s,
                           connect_timeout_s=request_timeout_s)
        self.hub = FleetHub(self.fleet, queue_max=web["ws_queue_max"],
                            stats_interval_s=web["stats_interval_s"],
                            max_clients=web["ws_max_clients"],
                            agent=settings.get("agent.active"), scrub=self.redactor.scrub)
        self.fleet.listener = self.hub
        self.http = WorkerHttp(internal_token, request_timeout_s)
        self.api = FleetApi(settings, self.fleet, self.http, web_stats=self.hub.stats,
                            master_status=master_status, master_metrics=master_metrics,
                            readiness=readiness, history_store=history_store,
                            campaign_store=campaign_store)

    def expect_workers_to_stop(self) -> None:
        """The master is stopping every worker: their event links close as they exit, which is
        logged at INFO and not reconnected (relay.web.fleet_links)."""
        self.fleet.expect_workers_to_stop()

    def _start_backend(self) -> None:
        self.hub.start()
        self.fleet.start()

    def _stop_backend(self, timeout: float) -> None:
        self.fleet.stop()
        self.hub.stop(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Close the event links and the clients, end the handlers, then the HTTP pool."""
        super().stop(timeout)
        self.http.close()
