"""The one reader of every client WebSocket of the simulated model, after the upgrade.

Owns: the StreamSet (relay/sim/_ws_reader.pyx: one epoll descriptor, frames split and unmasked
in C, appends decoded in C), the one io watcher and the one greenlet that read it (at load,
every READ_INTERVAL_S), and turning frames into what each connection gets, as geventwebsocket's
receive() did: a message (text, or a bytearray for binary) or an append's audio; fragments
assembled up to the message limit, a ping answered with a pong (an empty one gets none), a close
frame answered with its echo (or 1002 for a bad one, 1007 for a reason that is not UTF-8), a
protocol error (reserved bits, an unexpected opcode or continuation, a frame or message over the
limit) closed with 1002 and bad UTF-8 text with 1007; then the connection's reading ends, as it
does at EOF or a reset. Once our close frame is out, the next message, ping or close frame ends
the reading.
A failure while handling one connection's frame ends that connection only.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Optional

import gevent

from relay.sim._ws_reader import APPEND, END, RESERVED, TOO_LARGE, StreamSet

if TYPE_CHECKING:
    from relay.sim.model.connection import Connection

log = logging.getLogger(__name__)

# after a read, the next one waits this long: at load the frames of many connections are read in
# one go (fewer wake-ups, system calls and greenlet switches); a message waits at most this more
READ_INTERVAL_S = 0.001
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A server's control frame (close, pong): unmasked, at most 125 bytes of payload."""
    payload = payload[:125]
    return bytes((0x80 | opcode, len(payload))) + payload


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason[:123]


def take_buffered(handler) -> bytes:
    """The bytes the handler's buffered reader holds past the upgrade request, without
    waiting for more (the client may have sent its first frames with the request)."""
    sock, rfile = handler.socket, handler.rfile
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        data = rfile.peek(1)
    except OSError:
        data = b""
    finally:
        sock.settimeout(timeout)
    return bytes(data or b"")


class SharedReader:
    """Reads the frames of every registered connection with one greenlet (start/stop)."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._streams = StreamSet()
        self._watcher = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self.connections: set = set()

    def start(self) -> None:
        self._watcher = gevent.get_hub().loop.io(self._streams.fileno(), 1)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=True, timeout=1.0)
        for conn in list(self.connections):
            conn.end_reading()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._streams.close()

    def add(self, conn: "Connection") -> None:
        """Read `conn` from now on (its frames already buffered by the handler first)."""
        self.connections.add(conn)
        frames = self._streams.add(conn.fd, conn, take_buffered(conn.ws.handler),
                                   self.max_message_bytes)
        if frames:
            self._dispatch(frames)

    def remove(self, conn: "Connection") -> None:
        self.connections.discard(conn)
        self._streams.remove(conn.fd)

    def _run(self) -> None:
        wait, watcher, poll = gevent.get_hub().wait, self._watcher, self._streams.poll
        sleep = gevent.sleep
        while True:
            wait(watcher)
            frames = poll()
            while frames:   # at load: read again after the interval, the watcher left alone
                self._dispatch(frames)
                sleep(READ_INTERVAL_S)
                frames = poll()

    def _dispatch(self, frames: list) -> None:
        for conn, kind, fin, data in frames:
            if conn.reading_ended:
                continue
            try:
                if kind == APPEND and conn.fragment is None and not conn.ws.closed:
                    conn.on_audio(data)
                else:
                    self._frame(conn, kind, fin, data)
            except Exception:  # a bug in the simulator ends this connection only
                log.exception("sim-model: reading a frame of %s failed", conn.session_id)
                conn.fail()

    def _frame(self, conn: "Connection", kind: int, fin: int, data: Optional[bytes]) -> None:
        if kind == END:
            conn.end_reading()
        elif kind in (TOO_LARGE, RESERVED):
            self._refuse(conn, 1002)
        elif kind == APPEND:            # a whole text frame: a new message
            if conn.fragment is not None:
                self._refuse(conn, 1002)
            else:
                conn.end_reading()      # our close frame is out
        elif kind in (OP_TEXT, OP_BINARY):
            if conn.fragment is not None:
                self._refuse(conn, 1002)
            elif fin:
                self._message(conn, kind, data)
            else:
                conn.fragment = [kind, bytearray(data)]
        elif kind == OP_CONTINUATION:
            fragment = conn.fragment
            if fragment is None:
                self._refuse(conn, 1002)
                return
            fragment[1] += data
            if len(fragment[1]) > self.max_message_bytes:
                self._refuse(conn, 1002)
            elif fin:
                conn.fragment = None
                self._message(conn, fragment[0], bytes(fragment[1]))
        elif kind == OP_PING:
            if conn.ws.closed:
                conn.end_reading()
            elif data:
                conn.send_raw(control_frame(OP_PONG, data))
        elif kind == OP_PONG:
            pass
        elif kind == OP_CLOSE:
            self._close_frame(conn, data)
        else:
            self._refuse(conn, 1002)

    def _message(self, conn: "Connection", opcode: int, payload: bytes) -> None:
        if conn.ws.closed:
            conn.end_reading()
            return
        if opcode == OP_BINARY:
            conn.on_message(bytearray(payload))
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(conn, 1007)
            return
        conn.on_message(text)

    def _close_frame(self, conn: "Connection", payload: bytes) -> None:
        if not payload:
            self._refuse(conn, 1000)
            return
        if len(payload) < 2:
            self._refuse(conn, 1002)
            return
        code = struct.unpack("!H", payload[:2])[0]
        reason = payload[2:]
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(conn, 1007)
            return
        if not conn.ws._is_valid_close_code(code):
            self._refuse(conn, 1002)
            return
        self._refuse(conn, code, reason)

    def _refuse(self, conn: "Connection", code: int, reason: bytes = b"") -> None:
        """Our close frame (unless one is out already), then the reading ends."""
        if not conn.ws.closed:
            conn.ws.closed = True
            conn.send_raw(control_frame(OP_CLOSE, close_payload(code, reason)))
        conn.end_reading()
