"""A client WebSocket carrying JSON text messages, owned by one greenlet pair.

Owns: one connection (the ARI events socket, or one call's Realtime socket): connecting with a
timeout, a reader greenlet that hands each decoded message to a callback, and a writer greenlet
fed by a bounded queue so that a slow peer never blocks the caller of send(). It reports how the
connection ended (close code and reason, or the error) exactly once. It knows nothing of what
the messages mean.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any, Callable, Optional

import gevent
import ujson
import websocket
from gevent.queue import Full, Queue

log = logging.getLogger(__name__)

CLOSE_ABNORMAL = 1006


class JsonWebSocket:
    """One JSON-over-WebSocket client connection.

    on_message(obj) runs in the reader greenlet for each valid JSON message; on_bad_message(text,
    error) for a message that is not JSON; on_closed(code, reason) once, when the connection is
    over for any reason (peer close, error, or close()). on_sent(seconds) runs in the writer
    after a message sent with a stamp (a time.monotonic() value) went out: seconds since it.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Optional[list[str]] = None,
        on_message: Callable[[Any], None],
        on_closed: Callable[[int, str], None],
        on_bad_message: Optional[Callable[[str, Exception], None]] = None,
        on_sent: Optional[Callable[[float], None]] = None,
        connect_timeout: float = 10.0,
        send_queue_max: int = 1024,
        name: str = "ws",
    ) -> None:
        self.url = url
        self.name = name
        self._headers = headers or []
        self._on_message = on_message
        self._on_closed = on_closed
        self._on_bad_message = on_bad_message
        self._on_sent = on_sent
        self._connect_timeout = connect_timeout
        self._queue: Queue = Queue(maxsize=send_queue_max)
        self._ws: Optional[websocket.WebSocket] = None
        self._reader: Optional[gevent.Greenlet] = None
        self._writer: Optional[gevent.Greenlet] = None
        self._closed_reported = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.messages_in = 0
        self.messages_out = 0
        self.send_dropped = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed_reported

    def connect(self) -> None:
        """Open the connection (blocks this greenlet up to connect_timeout) and start the
        reader and writer. Raises OSError / websocket exceptions when it cannot connect."""
        ws = websocket.WebSocket(enable_multithread=False, skip_utf8_validation=True)
        ws.settimeout(self._connect_timeout)
        ws.connect(self.url, header=self._headers, suppress_origin=True)
        ws.settimeout(None)
        self._ws = ws
        self._reader = gevent.spawn(self._read_loop)
        self._writer = gevent.spawn(self._write_loop)

    def send(self, message: Any, stamp: Optional[float] = None) -> bool:
        """Queue a message; False (and counted) when the connection is gone or the queue full.
        With a stamp (time.monotonic()), on_sent gets the time from it to the message sent."""
        if self._ws is None or self._closed_reported:
            return False
        try:
            self._queue.put_nowait((message, stamp))
        except Full:
            self.send_dropped += 1
            return False
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and end both greenlets; reports on_closed if not yet done."""
        ws = self._ws
        if ws is not None:
            try:
                ws.send_close(struct.pack("!H", code) + reason.encode()[:120])
            except Exception:  # the peer may be gone already
                pass
            try:
                ws.shutdown()
            except Exception:
                pass
        self._report_closed(code, reason or "closed by relay")
        current = gevent.getcurrent()
        for greenlet in (self._reader, self._writer):
            if greenlet is not None and greenlet is not current:
                greenlet.kill(block=False)

    def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        code, reason = CLOSE_ABNORMAL, "connection lost"
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    data = frame.data or b""
                    if len(data) >= 2:
                        code = struct.unpack("!H", data[:2])[0]
                        reason = data[2:].decode("utf-8", "replace")
                    else:
                        code, reason = 1005, ""
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                self.messages_in += 1
                try:
                    message = ujson.loads(frame.data)
                except ValueError as exc:
                    if self._on_bad_message is not None:
                        self._on_bad_message(frame.data[:200].decode("utf-8", "replace"), exc)
                    continue
                self._on_message(message)
        except gevent.GreenletExit:
            return
        except (OSError, websocket.WebSocketException) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a handler bug must not leave the connection half-alive
            log.exception("%s: message handler failed", self.name)
            reason = f"handler error: {exc}"
        self._shutdown()
        self._report_closed(code, reason)

    def _write_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            on_sent, clock = self._on_sent, time.monotonic
            while True:
                message, stamp = self._queue.get()
                ws.send(ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False))
                self.messages_out += 1
                if stamp is not None and on_sent is not None:
                    on_sent(clock() - stamp)
        except gevent.GreenletExit:
            return
        except (OSError, websocket.WebSocketException) as exc:
            self._shutdown()
            self._report_closed(CLOSE_ABNORMAL, f"send failed: {exc}")

    def _shutdown(self) -> None:
        if self._ws is not None:
            try:
                self._ws.shutdown()
            except Exception:
                pass
        current = gevent.getcurrent()
        for greenlet in (self._reader, self._writer):
            if greenlet is not None and greenlet is not current:
                greenlet.kill(block=False)

    def _report_closed(self, code: int, reason: str) -> None:
        if self._closed_reported:
            return
        self._closed_reported = True
        self.close_code, self.close_reason = code, reason
        try:
            self._on_closed(code, reason)
        except Exception:
            log.exception("%s: close handler failed", self.name)
