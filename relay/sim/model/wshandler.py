"""WebSocket plumbing of the simulated model, on gevent.pywsgi + geventwebsocket.

Owns: the simulated model's WebSocket class and handler, on relay.wsserver's fixes (close codes,
cheap framing, one frame sent at a time), with a message limit large enough for audio appends.
"""

from __future__ import annotations

from relay.wsserver import SafeHandler, SafeWebSocket

MAX_FRAME_BYTES = 32 << 20  # 15 MiB of audio, base64-encoded, fits


class SimWebSocket(SafeWebSocket):
    """A WebSocket of the simulated model: large messages allowed (audio appends)."""

    __slots__ = ()
    max_message_bytes = MAX_FRAME_BYTES


class SimHandler(SafeHandler):
    """The WebSocket handler that hands the application a SimWebSocket."""

    websocket_class = SimWebSocket
