"""The operator's side of relay: the dashboard page, the REST API, the event WebSocket, /metrics
and the health checks. One gevent server per worker (relay.web.server.WebServer); with several
worker processes, the master's relay.web.fleet.FleetWebServer serves the same over all of them
(the workers' own servers then listen on 127.0.0.1 only)."""

from relay.web.server import WebServer

__all__ = ["WebServer"]
