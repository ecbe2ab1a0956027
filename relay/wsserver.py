"""Server-side WebSockets on gevent.pywsgi + geventwebsocket 0.10.1, with what it lacks fixed.

Owns the fixes both of relay's WebSocket servers (the dashboard, the simulated model) need:
- close frames carry a status code and reason (RFC 6455); geventwebsocket sends none;
- one frame is sent at a time: a connection's writer greenlet and its reader greenlet (answering
  pings) never interleave frames;
- unmasking and UTF-8 checks run in C (big-int XOR, bytes.decode) instead of per-byte Python
  loops, which are too slow for 50 messages a second per call;
- a message larger than the server's limit (`max_message_bytes`) is refused before it is read.
`SafeHandler` installs the WebSocket class a subclass names and keeps no access log.
"""

from __future__ import annotations

import struct
from typing import Any, Union

from gevent.lock import Semaphore
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, in C (big-int arithmetic)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class SafeWebSocket(WebSocket):
    """geventwebsocket's WebSocket, fixed and made cheap (see the module docstring)."""

    __slots__ = ("_send_lock", "_message_bytes")
    max_message_bytes = 1 << 20

    def __init__(self, environ: dict, stream: Stream, handler: WebSocketHandler) -> None:
        super().__init__(environ, stream, handler)
        self._send_lock = Semaphore()
        self._message_bytes = 0

    def send_frame(self, message: Any, opcode: int) -> None:
        with self._send_lock:
            super().send_frame(message, opcode)

    def read_frame(self) -> tuple:
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError("reserved bits set")
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self._message_bytes = header.length
        elif header.opcode == self.OPCODE_CONTINUATION:
            self._message_bytes += header.length
        if max(header.length, self._message_bytes) > self.max_message_bytes:
            raise FrameTooLargeException(f"a message over {self.max_message_bytes} bytes")
        if not header.length:
            return header, b""
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("unexpected end of the frame")
        if header.mask:
            payload = unmask(payload, header.mask)
        return header, payload

    def validate_utf8(self, payload: bytes) -> None:
        pass        # bytes.decode checks it, in C, when the message is decoded

    def close(self, code: int = 1000, message: Union[str, bytes] = b"") -> None:
        if self.closed:
            return
        reason = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
        try:
            self.send_frame(struct.pack("!H", code) + reason[:123], self.OPCODE_CLOSE)
        except (WebSocketError, OSError):
            pass
        finally:
            self.closed = True  # the stream stays: the reader still drains the client's reply


class SafeHandler(WebSocketHandler):
    """Hands the application a `websocket_class` instance; keeps no access log."""

    websocket_class: type = SafeWebSocket

    def upgrade_connection(self) -> Any:
        result = super().upgrade_connection()
        old = getattr(self, "websocket", None)
        if old is not None and type(old) is WebSocket:
            old.closed = True  # never let its __del__ send a code-less close frame
            self.websocket = self.websocket_class(self.environ, Stream(self), self)
            self.environ["wsgi.websocket"] = self.websocket
        return result

    def log_request(self) -> None:
        pass
