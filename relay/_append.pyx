# cython: language_level=3
"""The caller's audio handed to the model's WebSocket from C: one call's AppendWriter.

Owns the hot end of caller → model: the pacer's tick (relay/_media.pyx CallMedia) hands each
chunk of caller audio here; the input_audio_buffer.append frame is built in C
(relay/_ws.pyx append_frame_from) and, when the session's socket is a plain TCP one whose
sender is idle, written with one write(2) without a Python call in between. Everything else
goes through the socket's own Python path (relay/wsclient.py JsonWebSocket), which stays the
one authority on a socket's send state:

- a TLS socket (wss://, the real OpenAI) or a socket that is not a JsonWebSocket (tests'
  fakes): JsonWebSocket.send_frame;
- frames already waiting (a backlog) or a frame being written by the writer greenlet: behind
  them, through send_frame, so that frames never overtake each other;
- a partial write or a full kernel buffer: the rest to the backlog (JsonWebSocket.took);
- a failed write: the socket fails as a Python write's failure would
  (JsonWebSocket.write_failed).

The session (relay/realtime_session.py) points the writer at its current socket, or at None
between sockets (the audio is then dropped, as it always was without a socket).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t
from posix.unistd cimport write

from relay._clock cimport monotonic
from relay._ws cimport append_frame_from

import os

cdef extern from "<errno.h>":
    int EWOULDBLOCK


cdef class AppendWriter:
    """append(audio, stamp): send input_audio_buffer.append with audio (bytes) on the current
    socket; stamp (time.monotonic() of the oldest caller packet in it, or None) feeds the
    socket's on_sent. True when the socket took the frame or queued it."""

    def __init__(self):
        self._socket = None
        self._direct = False
        self.direct_writes = 0

    @property
    def socket(self):
        return self._socket

    def point_at(self, socket, bint direct):
        """From now on write to socket (None: drop the audio). direct: it is a JsonWebSocket,
        whose plain-TCP writes may be done here."""
        self._socket = socket
        self._direct = direct and socket is not None

    cpdef bint append(self, bytes audio, object stamp) except -1:
        cdef object sock = self._socket
        cdef bytes frame
        cdef Py_ssize_t size, sent
        cdef object fd, on_sent
        if sock is None:
            return False
        frame = append_frame_from(<const uint8_t *>PyBytes_AS_STRING(audio),
                                  PyBytes_GET_SIZE(audio))
        if not self._direct:
            return sock.send_frame(frame, stamp)
        if sock._ws is None or sock._closed_reported:
            return False
        fd = sock._fd
        if fd is None or sock._writing or sock._backlog:
            return sock.send_frame(frame, stamp)
        size = PyBytes_GET_SIZE(frame)
        sent = write(<int>fd, PyBytes_AS_STRING(frame), size)
        if sent == size:
            self.direct_writes += 1
            sock.messages_out += 1
            if stamp is not None:
                on_sent = sock._on_sent
                if on_sent is not None:
                    on_sent(monotonic() - <double>stamp)
            return True
        if sent < 0:
            if errno != EAGAIN and errno != EWOULDBLOCK and errno != EINTR:
                sock.write_failed(OSError(errno, os.strerror(errno)))
                return False
            sent = 0
        return sock.took(frame, sent, stamp)
