"""WebSocket plumbing of the simulated model, on gevent.pywsgi + geventwebsocket.

Owns: the simulated model's WebSocket class and handler, on relay.wsserver's fixes (close codes,
cheap framing, one frame sent at a time), with a message limit large enough for audio appends,
and a fast path for the frame a client sends 25 to 50 times a second per call: one
unfragmented, masked text frame is read with one buffered read when it is all buffered (two
otherwise) and no Header object, unmasked in C, and when it is an append in the compact shape
its audio is decoded in C and returned as an AppendAudio (no UTF-8 decode, no JSON parse).
Anything else (control frames, fragments, binary, 64-bit lengths) takes the general path,
unchanged.
"""

from __future__ import annotations

from geventwebsocket.exceptions import FrameTooLargeException, WebSocketError

from relay.sim._sim_audio import masked_text
from relay.wsserver import SafeHandler, SafeWebSocket

MAX_FRAME_BYTES = 32 << 20  # 15 MiB of audio, base64-encoded, fits
_FIN_TEXT = 0x81
_MASKED = 0x80


class AppendAudio:
    """What receive() returns for an append in the compact shape: its audio, already decoded
    (relay.sim._sim_audio); every other message is returned as text, as geventwebsocket does."""

    __slots__ = ("audio",)

    def __init__(self, audio: bytes) -> None:
        self.audio = audio


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
        header_len = 6 if short < 126 else 8
        if short < 126:
            length = short
        elif len(head) >= 4:
            length = (head[2] << 8) | head[3]
        else:
            length = -1                 # not known yet: read the header first
        if length > self.max_message_bytes:
            raise FrameTooLargeException(f"a message over {self.max_message_bytes} bytes")
        if length >= 0 and len(head) >= header_len + length:
            # the whole frame is buffered already (the usual case): one read
            frame = rfile.read(header_len + length)
            mask = frame[header_len - 4:header_len]
        else:
            header = rfile.read(header_len)
            if len(header) != header_len:
                raise WebSocketError("Unexpected EOF while decoding header")
            length = short if short < 126 else (header[2] << 8) | header[3]
            if length > self.max_message_bytes:
                raise FrameTooLargeException(f"a message over {self.max_message_bytes} bytes")
            mask = header[header_len - 4:]
            frame = rfile.read(length)
            if len(frame) != length:
                raise WebSocketError("unexpected end of the frame")
            header_len = 0
        self._message_bytes = length
        if not length:
            return ""
        audio, payload = masked_text(frame, header_len, length, mask)
        if audio is not None:
            return AppendAudio(audio)
        return self._decode_bytes(payload)


class SimHandler(SafeHandler):
    """The WebSocket handler that hands the application a SimWebSocket."""

    websocket_class = SimWebSocket
