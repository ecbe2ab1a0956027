"""WebSocket plumbing of the simulated model, on gevent.pywsgi + geventwebsocket.

Owns: the simulated model's WebSocket class and handler for the upgrade, on relay.wsserver's
fixes (close codes, one frame sent at a time), with a message limit large enough for audio
appends. After the upgrade the client's frames are read by the shared reader
(relay/sim/model/reader.py), not by this class; it still sends what a connection's pump sends
(faults, the closing handshake) and the going-away close frame.
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
