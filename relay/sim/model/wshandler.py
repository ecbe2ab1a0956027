"""WebSocket plumbing of the simulated model, on gevent.pywsgi + geventwebsocket.

Owns: the simulated model's WebSocket class and handler, on relay.wsserver's fixes (close codes,
cheap framing, one frame sent at a time), with a message limit large enough for audio appends,
and a fast path for the frame a client sends 25 to 50 times a second per call: one
unfragmented, masked text frame is read with two buffered reads and no Header object. Anything
else (control frames, fragments, binary, 64-bit lengths) takes the general path, unchanged.
"""

from __future__ import annotations

from geventwebsocket.exceptions import FrameTooLargeException, WebSocketError

from relay.wsserver import SafeHandler, SafeWebSocket, unmask

MAX_FRAME_BYTES = 32 << 20  # 15 MiB of audio, base64-encoded, fits
_FIN_TEXT = 0x81
_MASKED = 0x80


class SimWebSocket(SafeWebSocket):
    """A WebSocket of the simulated model: large messages allowed (audio appends)."""

    __slots__ = ()
    max_message_bytes = MAX_FRAME_BYTES

    def read_message(self):
        rfile = self.handler.rfile
        head = rfile.peek(2)
        if len(head) < 2 or head[0] != _FIN_TEXT or not head[1] & _MASKED \
                or head[1] & 0x7F == 127:
            return super().read_message()
        short = head[1] & 0x7F
        header = rfile.read(6 if short < 126 else 8)
        if len(header) != (6 if short < 126 else 8):
            raise WebSocketError("Unexpected EOF while decoding header")
        if short < 126:
            length, mask = short, header[2:6]
        else:
            length, mask = (header[2] << 8) | header[3], header[4:8]
        if length > self.max_message_bytes:
            raise FrameTooLargeException(f"a message over {self.max_message_bytes} bytes")
        self._message_bytes = length
        if not length:
            return ""
        payload = rfile.read(length)
        if len(payload) != length:
            raise WebSocketError("unexpected end of the frame")
        return self._decode_bytes(unmask(payload, mask))


class SimHandler(SafeHandler):
    """The WebSocket handler that hands the application a SimWebSocket."""

    websocket_class = SimWebSocket
