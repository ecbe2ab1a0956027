"""A client WebSocket carrying JSON text messages: one reader, a writer only when needed.

Owns: one connection (the ARI events socket, or one call's Realtime socket): connecting with a
timeout (the opening handshake, TLS and proxies are websocket-client's), then the frames both
ways through relay/_ws.pyx: reading (by a reader greenlet of its own, or, given a worker's
relay/socket_reader.py SocketReader, by that reader's one greenlet for every call's socket)
parses what the socket returns and hands each decoded message to a callback (answering
pings), and a send() that writes the frame at once when the socket can take it, never
waiting: what the socket cannot take yet goes to a bounded backlog that a writer greenlet
(started only then, gone once the backlog is empty: most connections never need one) drains,
so a slow peer never blocks the caller of send(). It reports how the connection ended (close
code and reason, or the error) exactly once. It knows nothing of what the messages mean.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
import time
from collections import deque
from typing import Any, Callable, Optional, Union

import gevent
import ujson
import websocket

from relay._ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketProtocolError,
    client_frame,
)

log = logging.getLogger(__name__)

CLOSE_ABNORMAL = 1006
RECEIVE_SIZE = 16384       # per recv: 64 KiB ones left the heap fragmented (+50 KB RSS per call)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class JsonWebSocket:
    """One JSON-over-WebSocket client connection.

    on_message(obj) runs in the reader greenlet for each valid JSON message; on_bad_message(text,
    error) for a message that is not JSON; on_closed(code, reason) once, when the connection is
    over for any reason (peer close, error, or close()). on_sent(seconds) runs after a message
    sent with a stamp (a time.monotonic() value) was handed to the socket: seconds since it.
    on_raw(payload) -> bool, when given, sees each text message first, as bytes: True means it
    handled the message itself (a fast path for one kind of message), False hands it on to JSON
    decoding and on_message. reader: a SocketReader to read this socket with the worker's
    other model sockets (its handlers must not wait), instead of a greenlet of its own.
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
        on_raw: Optional[Callable[[bytes], bool]] = None,
        connect_timeout: float = 10.0,
        send_queue_max: int = 1024,
        max_message: int = 16 << 20,
        name: str = "ws",
        reader: Any = None,
    ) -> None:
        self.url = url
        self.name = name
        self._headers = headers or []
        self._on_message = on_message
        self._on_closed = on_closed
        self._on_bad_message = on_bad_message
        self._on_sent = on_sent
        self._on_raw = on_raw
        self._connect_timeout = connect_timeout
        self._backlog_max = send_queue_max
        self._max_message = max_message
        self._ws: Optional[websocket.WebSocket] = None
        self._sock: Any = None
        # _fd, _backlog, _writing, _ws, _closed_reported and _on_sent are also read by
        # relay/_append.pyx at each append it writes from C (see took / write_failed)
        self._fd: Optional[int] = None      # a plain TCP socket's fd: written with one write(2)
        self._backlog: deque[tuple[Union[bytes, memoryview], Optional[float]]] = deque()
        self._writing = False
        self._reader: Optional[gevent.Greenlet] = None
        self._shared = reader               # the SocketReader serving this socket, if any
        self._watched_fd: Optional[int] = None      # the fd registered with it
        self._frames = FrameReader(max_message)
        self._writer: Optional[gevent.Greenlet] = None
        self._closed_reported = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.messages_in = 0
        self.messages_out = 0
        self.send_dropped = 0
        self.send_deferred = 0      # frames the socket could not take at once (backlogged)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed_reported

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def connect(self) -> None:
        """Open the connection (blocks this greenlet up to connect_timeout) and start the
        reader. Raises OSError / websocket exceptions when it cannot connect."""
        ws = websocket.WebSocket(enable_multithread=False, skip_utf8_validation=True)
        ws.settimeout(self._connect_timeout)
        ws.connect(self.url, header=self._headers, suppress_origin=True)
        ws.settimeout(None)
        self._ws = ws
        self._sock = ws.sock
        # TLS must go through the SSL object; plain TCP needs no wrapper for a write that
        # never waits (the fd is non-blocking under gevent)
        self._fd = None if hasattr(ws.sock, "do_handshake") else ws.sock.fileno()
        if self._shared is None:
            self._reader = gevent.spawn(self._read_loop)
            return
        # TLS: the handshake's reads may have left frames decrypted in the TLS object already
        try:
            self._shared.add(ws.sock.fileno(), self, due=self._fd is None)
        except Exception:
            self._fd, self._ws = None, None
            ws.shutdown()           # the reader is stopped (the worker is): not left open
            raise
        self._watched_fd = ws.sock.fileno()

    # sending
    def send(self, message: Any, stamp: Optional[float] = None) -> bool:
        """Send a message: a dict/list (JSON-encoded here) or JSON text already encoded (str or
        bytes). False (and counted) when the connection is gone or the backlog full. With a
        stamp (time.monotonic()), on_sent gets the time from it to the frame on the socket."""
        if self._ws is None or self._closed_reported:
            return False
        if not isinstance(message, (str, bytes)):
            message = ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False)
        return self.send_frame(client_frame(message, OP_TEXT), stamp)

    def send_frame(self, frame: bytes, stamp: Optional[float] = None) -> bool:
        """Send a client frame already built (relay/_ws.pyx append_frame: the caller's audio,
        25-50 times a second per call), as send() does a message."""
        if self._ws is None or self._closed_reported:
            return False
        if self._write(frame, stamp):
            self.messages_out += 1
            return True
        return False

    def took(self, frame: bytes, sent: int, stamp: Optional[float] = None) -> bool:
        """The socket took `sent` bytes of a frame written outside (relay/_append.pyx, which
        writes appends from C while nothing waits here): the rest waits in the backlog, as
        send_frame's would."""
        if self._written(frame, sent, stamp):
            self.messages_out += 1
            return True
        return False

    def write_failed(self, exc: OSError) -> None:
        """A write done outside (relay/_append.pyx) failed: as send_frame's failing would."""
        self._fail(f"send failed: {exc}")

    def _write(self, frame: bytes, stamp: Optional[float] = None) -> bool:
        if self._backlog or self._writing:
            return self._defer(frame, stamp)
        try:
            sent = self._send_now(frame)
        except OSError as exc:
            self._fail(f"send failed: {exc}")
            return False
        return self._written(frame, sent, stamp)

    def _written(self, frame: bytes, sent: int, stamp: Optional[float]) -> bool:
        if sent == len(frame):
            self._sent(stamp)
            return True
        # the rest of a frame already begun must follow it, whatever the backlog's limit
        return self._defer(memoryview(frame)[sent:] if sent else frame, stamp, begun=sent > 0)

    def _send_now(self, data: Union[bytes, memoryview]) -> int:
        """Whatever the socket takes without waiting (plain or TLS): the byte count."""
        if self._fd is not None:
            try:
                return os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                return 0
        sock = self._sock
        sock.settimeout(0.0)       # no yield until restored: the reader never sees it
        try:
            return sock.send(data)
        except _WOULD_BLOCK:
            return 0
        finally:
            sock.settimeout(None)

    def _defer(self, data: Union[bytes, memoryview], stamp: Optional[float],
               begun: bool = False) -> bool:
        if len(self._backlog) >= self._backlog_max and not begun:
            self.send_dropped += 1
            return False
        self._backlog.append((data, stamp))
        self.send_deferred += 1
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        return True

    def _sent(self, stamp: Optional[float]) -> None:
        if stamp is not None and self._on_sent is not None:
            self._on_sent(time.monotonic() - stamp)

    def _write_loop(self) -> None:
        sock, backlog = self._sock, self._backlog
        try:
            while backlog:
                data, stamp = backlog.popleft()
                self._writing = True
                sock.sendall(data)          # waits (this greenlet only) until taken
                self._writing = False
                self._sent(stamp)
        except gevent.GreenletExit:
            return
        except OSError as exc:
            self._writing = False
            self._fail(f"send failed: {exc}")
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None

    # receiving
    def _read_loop(self) -> None:
        """The connection's own reader greenlet (without a SocketReader)."""
        sock = self._sock
        try:
            while not self._take(sock.recv(RECEIVE_SIZE)):
                pass
        except gevent.GreenletExit:
            return
        except Exception as exc:
            self._read_failed(exc)

    def _read_ready(self) -> None:
        """The SocketReader's: read what the socket has without waiting and deliver it."""
        try:
            while not self._closed_reported:
                data = self._receive_nowait()
                if data is None or self._take(data):
                    return
                if self._fd is not None or not self._sock.pending():
                    return      # TLS: bytes decrypted already are not in the kernel any more
        except Exception as exc:
            self._read_failed(exc)

    def _receive_nowait(self) -> Optional[bytes]:
        """What the socket has (b"" at its end), None when nothing yet (plain or TLS)."""
        if self._fd is not None:
            try:
                return os.read(self._fd, RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
        sock = self._sock
        sock.settimeout(0.0)        # no yield until restored: a writer never sees it
        try:
            return sock.recv(RECEIVE_SIZE)
        except _WOULD_BLOCK:
            return None
        finally:
            sock.settimeout(None)

    def _take(self, data: bytes) -> bool:
        """Deliver what was read; True when the connection is over (and reported)."""
        if not data:
            self._end(CLOSE_ABNORMAL, "connection lost")
            return True
        closing = self._on_frames(self._frames.feed(data))
        if closing is not None:
            self._end(*closing)
            return True
        return self._closed_reported        # a handler closed it

    def _read_failed(self, exc: Exception) -> None:
        if isinstance(exc, WebSocketProtocolError):
            self._send_close(exc.close_code, str(exc))
            self._end(exc.close_code, f"protocol error: {exc}")
        elif isinstance(exc, OSError):
            self._end(CLOSE_ABNORMAL,
                      f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        else:   # a handler bug must not leave the connection half-alive
            log.error("%s: message handler failed", self.name, exc_info=exc)
            self._end(CLOSE_ABNORMAL, f"handler error: {exc}")

    def _end(self, code: int, reason: str) -> None:
        self._shutdown()
        self._report_closed(code, reason)

    def _on_frames(self, frames: list) -> Optional[tuple[int, str]]:
        """Deliver the messages; (code, reason) when the peer closed."""
        for opcode, payload in frames:
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self.messages_in += 1
                if self._on_raw is not None and opcode == OP_TEXT and self._on_raw(payload):
                    continue
                try:
                    message = ujson.loads(payload)
                except ValueError as exc:
                    if self._on_bad_message is not None:
                        self._on_bad_message(payload[:200].decode("utf-8", "replace"), exc)
                    continue
                self._on_message(message)
            elif opcode == OP_PING:
                self._write(client_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                if len(payload) >= 2:
                    return (struct.unpack("!H", payload[:2])[0],
                            payload[2:].decode("utf-8", "replace"))
                return 1005, ""
        return None

    # closing
    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and end both greenlets; reports on_closed if not yet done."""
        if self._ws is not None and not self._closed_reported:
            self._send_close(code, reason)
        self._shutdown()
        self._report_closed(code, reason or "closed by relay")

    def _send_close(self, code: int, reason: str) -> None:
        """A close frame, best effort and without waiting (the peer may be gone); not while a
        frame is half written, which it would corrupt."""
        if self._writing or self._backlog:
            return
        try:
            self._send_now(client_frame(struct.pack("!H", code) + reason.encode()[:120],
                                        OP_CLOSE))
        except Exception:
            pass

    def _fail(self, reason: str) -> None:
        self._shutdown()
        self._report_closed(CLOSE_ABNORMAL, reason)

    def _shutdown(self) -> None:
        self._fd = None       # never write(2) to a number the kernel may give to another file
        if self._watched_fd is not None:    # before the socket is closed
            self._shared.remove(self._watched_fd, self)
            self._watched_fd = None
        if self._ws is not None:
            try:
                self._ws.shutdown()
            except Exception:
                pass
        self._backlog.clear()
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
