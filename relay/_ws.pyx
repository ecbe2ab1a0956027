# cython: language_level=3
"""WebSocket framing (RFC 6455) for relay's client connections: the bytes, not the socket.

This module owns the per-message work of the Realtime and ARI sockets: building a client frame
(FIN set, payload masked with a fresh 4-byte key, section 5.3) in one pass, and parsing the
server's frames out of whatever the socket returned (FrameReader: partial frames kept for the
next feed, fragmented messages reassembled, protocol violations raised as WebSocketProtocolError
with the close code to send). The opening handshake, TLS and the socket itself stay in Python
(relay/wsclient.py); this module does no I/O.

Masking keys come from os.urandom, read 4 KiB at a time (RFC 6455 10.3 asks for a strong
source of entropy; reading it per frame would cost a system call each).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import os

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

cdef enum:
    KEY_POOL = 4096
    MAX_CONTROL = 125


class WebSocketProtocolError(ValueError):
    """The peer broke RFC 6455; close_code is what to close the connection with."""

    def __init__(self, message, close_code=1002):
        super().__init__(message)
        self.close_code = close_code


cdef bytes _keys = b""
cdef Py_ssize_t _key_at = KEY_POOL


cdef inline uint32_t _next_key() except? 0:
    global _keys, _key_at
    cdef uint32_t key
    if _key_at + 4 > KEY_POOL:
        _keys = os.urandom(KEY_POOL)
        _key_at = 0
    memcpy(&key, PyBytes_AS_STRING(_keys) + _key_at, 4)
    _key_at += 4
    return key


cdef inline void _mask_copy(uint8_t *dst, const uint8_t *src, Py_ssize_t n,
                            uint32_t key) noexcept nogil:
    """dst = src XOR the repeated 4-byte key (key in memory order), 8 bytes at a time."""
    cdef uint64_t wide = (<uint64_t>key << 32) | key
    cdef uint64_t word
    cdef Py_ssize_t i = 0
    cdef uint8_t *k = <uint8_t *>&key
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= wide
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ k[i & 3]
        i += 1


cdef inline Py_ssize_t _header_size(Py_ssize_t n) noexcept:
    """A masked client frame's header bytes for an n-byte payload (key included)."""
    return 2 + (0 if n < 126 else (2 if n <= 0xFFFF else 8)) + 4


cdef Py_ssize_t _write_header(uint8_t *out, uint8_t first, Py_ssize_t n,
                              uint32_t key) noexcept:
    """The header of a masked frame (first byte, length, key) into out; returns its size."""
    cdef int i
    out[0] = first
    if n < 126:
        out[1] = 0x80 | <uint8_t>n
        i = 2
    elif n <= 0xFFFF:
        out[1] = 0x80 | 126
        out[2] = <uint8_t>(n >> 8)
        out[3] = <uint8_t>n
        i = 4
    else:
        out[1] = 0x80 | 127
        for i in range(8):
            out[2 + i] = <uint8_t>((<uint64_t>n) >> (8 * (7 - i)))
        i = 10
    memcpy(out + i, &key, 4)
    return i + 4


def client_frame(payload, int opcode=OP_TEXT):
    """One complete masked client frame (FIN set) carrying payload (bytes, or str as UTF-8)."""
    if isinstance(payload, str):
        payload = (<str>payload).encode("utf-8")
    elif not isinstance(payload, bytes):
        payload = bytes(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if opcode & 0x8 and n > MAX_CONTROL:
        raise ValueError("a control frame carries at most 125 bytes")
    frame = PyBytes_FromStringAndSize(NULL, _header_size(n) + n)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(frame)
    cdef uint32_t key = _next_key()
    cdef Py_ssize_t i = _write_header(out, 0x80 | (opcode & 0x0F), n, key)
    _mask_copy(out + i, <const uint8_t *>PyBytes_AS_STRING(payload), n, key)
    return frame


cdef const char* _B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef bytes _APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
cdef bytes _APPEND_TAIL = b'"}'


cdef Py_ssize_t _base64_into(uint8_t *out, const uint8_t *src, Py_ssize_t n) noexcept nogil:
    """Standard base64 (RFC 4648, padded) of src into out; returns the bytes written."""
    cdef Py_ssize_t i = 0, o = 0
    cdef uint32_t v
    while i + 3 <= n:
        v = (<uint32_t>src[i] << 16) | (<uint32_t>src[i + 1] << 8) | src[i + 2]
        out[o] = _B64[v >> 18]
        out[o + 1] = _B64[(v >> 12) & 63]
        out[o + 2] = _B64[(v >> 6) & 63]
        out[o + 3] = _B64[v & 63]
        i += 3
        o += 4
    if n - i == 1:
        v = <uint32_t>src[i] << 16
        out[o] = _B64[v >> 18]
        out[o + 1] = _B64[(v >> 12) & 63]
        out[o + 2] = 61        # '='
        out[o + 3] = 61
        o += 4
    elif n - i == 2:
        v = (<uint32_t>src[i] << 16) | (<uint32_t>src[i + 1] << 8)
        out[o] = _B64[v >> 18]
        out[o + 1] = _B64[(v >> 12) & 63]
        out[o + 2] = _B64[(v >> 6) & 63]
        out[o + 3] = 61
        o += 4
    return o


def append_frame(audio):
    """The masked text frame of input_audio_buffer.append carrying audio (bytes), built in one
    pass: the event's JSON (`{"type":"input_audio_buffer.append","audio":"<base64>"}`, which
    needs no escaping) is written, base64 included, straight into the frame and masked there.
    The same bytes as client_frame(input_audio_append_json(audio)), with one allocation."""
    if type(audio) is bytes:
        return append_frame_from(<const uint8_t *>PyBytes_AS_STRING(audio),
                                 PyBytes_GET_SIZE(audio))
    cdef const uint8_t[::1] view = audio
    return append_frame_from(&view[0] if view.shape[0] else NULL, view.shape[0])


cdef bytes append_frame_from(const uint8_t *audio, Py_ssize_t size):
    """append_frame() of the size bytes at audio (relay/_append.pyx calls it from C)."""
    cdef Py_ssize_t head = PyBytes_GET_SIZE(_APPEND_HEAD)
    cdef Py_ssize_t n = head + (size + 2) // 3 * 4 + PyBytes_GET_SIZE(_APPEND_TAIL)
    frame = PyBytes_FromStringAndSize(NULL, _header_size(n) + n)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(frame)
    cdef uint32_t key = _next_key()
    cdef uint8_t *payload = out + _write_header(out, 0x81, n, key)     # FIN, text
    memcpy(payload, PyBytes_AS_STRING(_APPEND_HEAD), head)
    if size:
        _base64_into(payload + head, audio, size)
    memcpy(payload + n - 2, PyBytes_AS_STRING(_APPEND_TAIL), 2)
    _mask_copy(payload, payload, n, key)
    return frame


cdef class FrameReader:
    """feed(data) -> list of (opcode, payload bytes): whole messages and control frames.

    Text/binary messages come out once complete (continuation frames joined, with the opcode
    of their first frame); ping, pong and close frames come out as they arrive. A message
    larger than max_message raises WebSocketProtocolError(close code 1009).
    """

    cdef bytearray _buffer
    cdef Py_ssize_t _start
    cdef list _fragments
    cdef int _fragment_opcode
    cdef Py_ssize_t _fragment_size
    cdef public Py_ssize_t max_message

    def __cinit__(self, Py_ssize_t max_message=16 << 20):
        self._buffer = bytearray()
        self._start = 0
        self._fragments = []
        self._fragment_opcode = -1
        self._fragment_size = 0
        self.max_message = max_message

    @property
    def buffered(self):
        """Bytes received and not yet returned (a partial frame, unfinished fragments)."""
        return len(self._buffer) - self._start + self._fragment_size

    def feed(self, data):
        cdef list out = []
        cdef const uint8_t *p
        cdef Py_ssize_t available, header, length, end
        cdef int opcode, fin, masked, i
        cdef uint64_t wide
        self._buffer += data
        while True:
            available = len(self._buffer) - self._start
            if available < 2:
                break
            p = <const uint8_t *>(<char *>self._buffer) + self._start
            fin = p[0] & 0x80
            opcode = p[0] & 0x0F
            if p[0] & 0x70:
                raise WebSocketProtocolError("reserved bits set (no extension was negotiated)")
            masked = p[1] & 0x80
            if masked:
                raise WebSocketProtocolError("a server frame must not be masked")
            length = p[1] & 0x7F
            header = 2
            if length == 126:
                if available < 4:
                    break
                length = (p[2] << 8) | p[3]
                header = 4
            elif length == 127:
                if available < 10:
                    break
                wide = 0
                for i in range(8):
                    wide = (wide << 8) | p[2 + i]
                if wide >> 62:
                    raise WebSocketProtocolError("frame length out of range", 1009)
                length = <Py_ssize_t>wide
                header = 10
            if opcode & 0x8:
                if not fin or length > MAX_CONTROL:
                    raise WebSocketProtocolError("a control frame must be whole and short")
            elif length + self._fragment_size > self.max_message:
                raise WebSocketProtocolError(
                    f"message over {self.max_message} bytes", 1009)
            if available < header + length:
                break
            end = self._start + header + length
            payload = PyBytes_FromStringAndSize(<const char *>p + header, length)
            self._start = end
            if opcode & 0x8:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._fragment_opcode < 0:
                    raise WebSocketProtocolError("continuation frame with nothing to continue")
                self._fragments.append(payload)
                self._fragment_size += length
                if fin:
                    out.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
                    self._fragment_opcode = -1
                    self._fragment_size = 0
            elif opcode == OP_TEXT or opcode == OP_BINARY:
                if self._fragment_opcode >= 0:
                    raise WebSocketProtocolError("a new message began inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [payload]
                    self._fragment_size = length
            else:
                raise WebSocketProtocolError(f"unknown opcode {opcode:#x}")
        if self._start:
            # keep only the partial frame, in a buffer of its own size: a read of many frames
            # must not leave a connection holding tens of kilobytes until its next message
            if self._start == len(self._buffer):
                self._buffer = bytearray()
            else:
                self._buffer = bytearray(memoryview(self._buffer)[self._start:])
            self._start = 0
        return out
