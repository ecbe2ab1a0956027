"""The dashboard's connection handler on gevent.pywsgi + geventwebsocket.

Owns, on relay.wsserver's fixes (close codes, cheap framing, one frame sent at a time): a
client message larger than MAX_CLIENT_FRAME is refused (the dashboard's clients only ever send
tiny messages); `abort()` ends a connection at once, without writing (a client that stopped
reading would block any write), so a stuck writer greenlet wakes up. The
upgrade is only attempted when the server's gate says so (right path, authorised, same origin):
otherwise the request reaches the WSGI application as plain HTTP and gets a proper error. No
access log is kept (a `?token=` must never reach a log).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from gevent.pywsgi import WSGIHandler

from relay.wsserver import SafeHandler, SafeWebSocket

MAX_CLIENT_FRAME = 16 * 1024
SEND_BUFFER = 64 * 1024      # per event socket (the bounded queue in front of it holds more)


class DashboardWebSocket(SafeWebSocket):
    """A dashboard client's WebSocket: tiny messages only, and abortable."""

    __slots__ = ()
    max_message_bytes = MAX_CLIENT_FRAME

    def abort(self) -> None:
        """End the connection now, writing nothing: both directions are shut down, which
        wakes any greenlet blocked reading or writing on it. Never blocks."""
        self.closed = True
        handler = getattr(self, "handler", None)
        sock = getattr(handler, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DashboardHandler(SafeHandler):
    """Upgrades only the requests the server's gate lets through; no access log."""

    websocket_class = DashboardWebSocket

    def run_application(self) -> Any:
        gate: Callable[[dict], bool] = getattr(self.server, "websocket_gate", None)
        if gate is None or not gate(self.environ):
            return WSGIHandler.run_application(self)
        return super().run_application()

    def upgrade_connection(self) -> Any:
        result = super().upgrade_connection()
        if isinstance(getattr(self, "websocket", None), DashboardWebSocket):
            try:    # a bounded kernel backlog: a client that stops reading shows up soon
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
        return result
