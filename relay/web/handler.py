"""The dashboard's connection handler on gevent.pywsgi + geventwebsocket.

Owns: what geventwebsocket 0.10.1 needs fixed for the dashboard. A client frame larger than
MAX_CLIENT_FRAME is refused (the dashboard's clients only ever send tiny messages); frames are
sent one at a time (the client's writer greenlet sends events while its reader greenlet answers
pings); close frames carry a status code; `abort()` ends a connection at once, without writing
(a client that stopped reading would block any write), so a stuck writer greenlet wakes up. The
upgrade is only attempted when the server's gate says so (right path, authorised, same origin):
otherwise the request reaches the WSGI application as plain HTTP and gets a proper error. No
access log is kept (a `?token=` must never reach a log).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable, Union

from gevent.lock import Semaphore
from gevent.pywsgi import WSGIHandler
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket

MAX_CLIENT_FRAME = 16 * 1024
SEND_BUFFER = 64 * 1024      # per event socket (the bounded queue in front of it holds more)


class DashboardWebSocket(WebSocket):
    """geventwebsocket's WebSocket, bounded and safe to share between two greenlets."""

    __slots__ = ("_send_lock", "_message_bytes")

    def __init__(self, environ: dict, stream: Stream, handler: WebSocketHandler) -> None:
        super().__init__(environ, stream, handler)
        self._send_lock = Semaphore()
        self._message_bytes = 0

    def read_frame(self) -> tuple:
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError("reserved bits set")
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self._message_bytes = header.length
        elif header.opcode == self.OPCODE_CONTINUATION:
            self._message_bytes += header.length
        if max(header.length, self._message_bytes) > MAX_CLIENT_FRAME:
            raise FrameTooLargeException(f"a client message over {MAX_CLIENT_FRAME} bytes")
        payload = self.raw_read(header.length) if header.length else b""
        if len(payload) != header.length:
            raise WebSocketError("unexpected end of the frame")
        if header.mask:
            payload = header.mask_payload(payload)
        return header, payload

    def validate_utf8(self, payload: bytes) -> None:
        pass        # bytes.decode checks it, in C, when the message is decoded

    def send_frame(self, message: Any, opcode: int) -> None:
        with self._send_lock:
            super().send_frame(message, opcode)

    def close(self, code: int = 1000, message: Union[str, bytes] = b"") -> None:
        if self.closed:
            return
        reason = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
        try:
            self.send_frame(struct.pack("!H", code) + reason[:123], self.OPCODE_CLOSE)
        except (WebSocketError, OSError):
            pass
        finally:
            self.closed = True

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


class DashboardHandler(WebSocketHandler):
    """Upgrades only the requests the server's gate lets through; no access log."""

    def run_application(self) -> Any:
        gate: Callable[[dict], bool] = getattr(self.server, "websocket_gate", None)
        if gate is None or not gate(self.environ):
            return WSGIHandler.run_application(self)
        return super().run_application()

    def upgrade_connection(self) -> Any:
        result = super().upgrade_connection()
        old = getattr(self, "websocket", None)
        if old is not None and type(old) is WebSocket:
            old.closed = True       # its __del__ must not write a close frame
            self.websocket = DashboardWebSocket(self.environ, Stream(self), self)
            self.environ["wsgi.websocket"] = self.websocket
            try:    # a bounded kernel backlog: a client that stops reading shows up soon
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
        return result

    def log_request(self) -> None:
        pass
