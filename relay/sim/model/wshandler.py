"""WebSocket plumbing of the simulated model, on gevent.pywsgi + geventwebsocket.

Owns: the fixes geventwebsocket 0.10.1 needs here. Its close frame carries no status code (the
tests check close codes, so `SimWebSocket.close` sends code + reason as RFC 6455 says); it
checks every byte of a message with a Python UTF-8 state machine and unmasks with a Python loop
(too slow for 50 appends per second per call: bytes.decode and big-int XOR do it in C); and two
greenlets may send on one socket (the pump sends events, the reader answers pings), so frames
are sent one at a time. `SimHandler` installs SimWebSocket and keeps no access log.
"""

from __future__ import annotations

import struct
from typing import Any, Union

from gevent.lock import Semaphore
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket

MAX_FRAME_BYTES = 32 << 20  # 15 MiB of audio, base64-encoded, fits


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, in C (big-int arithmetic)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class SimWebSocket(WebSocket):
    """geventwebsocket's WebSocket, fixed and made cheap (see the module docstring)."""

    __slots__ = ("_send_lock",)

    def __init__(self, environ: dict, stream: Stream, handler: WebSocketHandler) -> None:
        super().__init__(environ, stream, handler)
        self._send_lock = Semaphore()

    def send_frame(self, message: Any, opcode: int) -> None:
        """One frame at a time: the pump's events and the reader's pongs never interleave."""
        with self._send_lock:
            super().send_frame(message, opcode)

    def read_frame(self) -> tuple:
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError("reserved bits set")
        if header.length > MAX_FRAME_BYTES:
            raise FrameTooLargeException(f"frame of {header.length} bytes")
        if not header.length:
            return header, b""
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = _unmask(payload, header.mask)
        return header, payload

    def validate_utf8(self, payload: bytes) -> None:
        pass

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


class SimHandler(WebSocketHandler):
    """The WebSocket handler that hands the application a SimWebSocket."""

    def upgrade_connection(self) -> Any:
        result = super().upgrade_connection()
        old = getattr(self, "websocket", None)
        if old is not None and type(old) is WebSocket:
            old.closed = True  # never let its __del__ send a code-less close frame
            self.websocket = SimWebSocket(self.environ, Stream(self), self)
            self.environ["wsgi.websocket"] = self.websocket
        return result

    def log_request(self) -> None:  # no access log
        pass
