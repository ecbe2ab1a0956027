"""The operator's side of a worker: the dashboard page, the REST API, the event WebSocket,
/metrics and the health checks, served by one gevent server per worker (relay.web.server)."""

from relay.web.server import WebServer

__all__ = ["WebServer"]
