# cython: language_level=3
"""RTP (RFC 3550) packets, the send-side stream state and the receive jitter buffer.

This module owns the bytes of RTP: parsing and building packets (RtpPacket, parse_rtp_header,
build_rtp, build_rtp_into), the sequence/timestamp/marker state of one outgoing stream
(RtpSender), and the reordering of one incoming stream (JitterBuffer). It does no I/O, keeps
no clock and logs nothing: callers pass datagrams in and take payloads out.

Every read is bounds-checked by hand (the extension is compiled with boundscheck and
wraparound off): malformed input raises RtpError, or, in JitterBuffer.push(), is reported as
a status code, and never reads outside the buffer it was given.
"""

import os

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_CheckExact,
    PyByteArray_GET_SIZE,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.math cimport NAN
from libc.string cimport memcpy, memmove, memset

RTP_VERSION = 2
RTP_HEADER_SIZE = 12

# JitterBuffer.push() statuses. Their C enum (_PUSH_*), like the attributes of RtpSender and
# JitterBuffer, is declared in relay/_rtp.pxd for other extensions to cimport.
PUSH_OK = _PUSH_OK
PUSH_REORDERED = _PUSH_REORDERED
PUSH_RESTARTED = _PUSH_RESTARTED
PUSH_DUPLICATE = _PUSH_DUPLICATE
PUSH_LATE = _PUSH_LATE
PUSH_MALFORMED = _PUSH_MALFORMED
PUSH_TOO_LARGE = _PUSH_TOO_LARGE

cdef enum:
    _MAX_MISORDER = 100  # packets behind the newest one still taken as late, not a restart


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet (RFC 3550 section 5.1)."""


# --------------------------------------------------------------------------- byte access

cdef struct _Bytes:
    const uint8_t* ptr
    Py_ssize_t size
    bint release        # True when view must be released
    Py_buffer view


cdef inline int _acquire(object data, _Bytes* b, bint writable) except -1:
    """Point b at the bytes of data: bytes and bytearray directly, anything else through the
    buffer protocol. A bytearray is not locked against resizing: callers run no Python code
    between _acquire() and their last use of b.ptr."""
    if not writable and PyBytes_CheckExact(data):
        b.ptr = <const uint8_t*>PyBytes_AS_STRING(data)
        b.size = PyBytes_GET_SIZE(data)
        b.release = False
        return 0
    if PyByteArray_CheckExact(data):
        b.ptr = <const uint8_t*>PyByteArray_AS_STRING(data)
        b.size = PyByteArray_GET_SIZE(data)
        b.release = False
        return 0
    PyObject_GetBuffer(data, &b.view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    b.ptr = <const uint8_t*>b.view.buf
    b.size = b.view.len
    b.release = True
    return 0


cdef inline void _release(_Bytes* b) noexcept:
    if b.release:
        PyBuffer_Release(&b.view)
        b.release = False


cdef bytes _to_bytes(object data):
    """A bytes copy of any bytes-like object (TypeError for anything else, ints included)."""
    cdef _Bytes b
    if PyBytes_CheckExact(data):
        return <bytes>data
    _acquire(data, &b, False)
    try:
        return PyBytes_FromStringAndSize(<const char*>b.ptr, b.size)
    finally:
        _release(&b)


# --------------------------------------------------------------------------- header parse

# _Status, _Header and _parse(): relay/_rtp.pxd (other extensions parse with them too)


cdef object _parse_error(int status, _Header* h, const uint8_t* p):
    """The RtpError that explains a non-zero _parse() status (p: the datagram)."""
    cdef str msg
    if status == _E_SHORT:
        msg = (f"RTP packet too short: {h.size} bytes, the fixed header is "
               f"{<int>_HEADER} bytes (RFC 3550 5.1)")
    elif status == _E_VERSION:
        msg = f"RTP version must be 2, got {p[0] >> 6} (RFC 3550 5.1)"
    elif status == _E_CSRC:
        msg = (f"RTP packet too short for CSRC count {h.csrc_count}: "
               f"needs {h.needed} bytes, has {h.size} (RFC 3550 5.1)")
    elif status == _E_EXT_HEADER:
        msg = (f"RTP packet too short for its header extension header: "
               f"needs {h.needed} bytes, has {h.size} (RFC 3550 5.3.1)")
    elif status == _E_EXT:
        msg = (f"RTP header extension of {h.extension_length // 4} words runs past the end: "
               f"needs {h.needed} bytes, has {h.size} (RFC 3550 5.3.1)")
    elif status == _E_PAD_NONE:
        msg = "RTP padding bit set but no byte follows the header for its count (RFC 3550 5.1)"
    elif status == _E_PAD_ZERO:
        msg = "RTP padding count must be at least 1, got 0 (RFC 3550 5.1)"
    else:
        msg = (f"RTP padding count {h.padding} is larger than the {h.size - h.needed} "
               f"byte(s) after the header (RFC 3550 5.1)")
    return RtpError(msg)


def parse_rtp_header(data):
    """Hot-path parse: (payload_type, marker, sequence, timestamp, ssrc, payload_offset,
    payload_length), skipping CSRCs, the extension and padding (RFC 3550 5.1, 5.3.1).
    RtpError when malformed."""
    cdef _Bytes b
    cdef _Header h
    cdef int status
    _acquire(data, &b, False)
    status = _parse(b.ptr, b.size, &h)
    if status != _OK:
        try:
            raise _parse_error(status, &h, b.ptr)
        finally:
            _release(&b)
    _release(&b)
    return (h.payload_type, h.marker, h.sequence, h.timestamp, h.ssrc,
            h.payload_offset, h.payload_length)


# --------------------------------------------------------------------------- build

# _write_header(): relay/_rtp.pxd


cdef inline int _check_fields(long long payload_type, long long sequence, long long timestamp,
                              long long ssrc) except -1:
    if payload_type < 0 or payload_type > 127:
        raise ValueError(f"RTP payload type must be 0..127, got {payload_type}")
    if sequence < 0 or sequence > 0xFFFF:
        raise ValueError(f"RTP sequence number must be 0..65535, got {sequence}")
    if timestamp < 0 or timestamp > 0xFFFFFFFF:
        raise ValueError(f"RTP timestamp must be 0..2**32-1, got {timestamp}")
    if ssrc < 0 or ssrc > 0xFFFFFFFF:
        raise ValueError(f"RTP SSRC must be 0..2**32-1, got {ssrc}")
    return 0


cdef inline bytes _build(int payload_type, bint marker, uint16_t sequence, uint32_t timestamp,
                         uint32_t ssrc, object payload):
    cdef _Bytes b
    cdef bytes out
    cdef uint8_t* o
    _acquire(payload, &b, False)
    try:
        out = PyBytes_FromStringAndSize(NULL, _HEADER + b.size)
        o = <uint8_t*>PyBytes_AS_STRING(out)
        _write_header(o, payload_type, marker, sequence, timestamp, ssrc)
        if b.size:
            memcpy(o + _HEADER, b.ptr, b.size)
    finally:
        _release(&b)
    return out


cdef inline Py_ssize_t _build_into(object out, int payload_type, bint marker,
                                   uint16_t sequence, uint32_t timestamp, uint32_t ssrc,
                                   object payload) except -1:
    cdef _Bytes o, b
    cdef Py_ssize_t n
    # The payload first: acquiring a buffer may run Python code, which must not run while
    # `o` points into a bytearray.
    _acquire(payload, &b, False)
    try:
        _acquire(out, &o, True)
        try:
            n = _HEADER + b.size
            if o.size < n:
                raise ValueError(f"output buffer too small: {o.size} bytes, the packet "
                                 f"needs {n}")
            # The payload may live inside out (memoryview(out)[12:]): memmove, payload first.
            if b.size:
                memmove(<uint8_t*>o.ptr + _HEADER, b.ptr, b.size)
            _write_header(<uint8_t*>o.ptr, payload_type, marker, sequence, timestamp, ssrc)
        finally:
            _release(&o)
    finally:
        _release(&b)
    return n


def build_rtp(int payload_type, bint marker, long long sequence, long long timestamp,
              long long ssrc, payload):
    """A plain RTP packet (RFC 3550 5.1): version 2, no padding, extension or CSRC."""
    _check_fields(payload_type, sequence, timestamp, ssrc)
    return _build(payload_type, marker, <uint16_t>sequence, <uint32_t>timestamp,
                  <uint32_t>ssrc, payload)


def build_rtp_into(out, int payload_type, bint marker, long long sequence, long long timestamp,
                   long long ssrc, payload):
    """build_rtp() into a caller-owned writable buffer; returns the packet length.
    ValueError when the buffer is too small."""
    _check_fields(payload_type, sequence, timestamp, ssrc)
    return _build_into(out, payload_type, marker, <uint16_t>sequence, <uint32_t>timestamp,
                       <uint32_t>ssrc, payload)


# --------------------------------------------------------------------------- RtpPacket

cdef class RtpPacket:
    """One RTP packet as a small value (RFC 3550 5.1): parse() from the wire, bytes() back.

    padding is the number of padding bytes at the end, its count byte included (0 = the P bit
    is clear). extension_profile is None when there is no header extension (RFC 3550 5.3.1);
    extension holds its data words without the 4-byte extension header.
    """

    cdef public int payload_type
    cdef public bint marker
    cdef public long long sequence
    cdef public long long timestamp
    cdef public long long ssrc
    cdef public object csrc
    cdef public object extension_profile
    cdef public object extension
    cdef public int padding
    cdef public object payload

    def __init__(self, int payload_type=0, bint marker=False, long long sequence=0,
                 long long timestamp=0, long long ssrc=0, payload=b"", csrc=(),
                 extension_profile=None, extension=None, int padding=0):
        self.payload_type = payload_type
        self.marker = marker
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = _to_bytes(payload)
        self.csrc = tuple(csrc)
        self.extension_profile = extension_profile
        if extension is None and extension_profile is not None:
            extension = b""
        self.extension = None if extension is None else _to_bytes(extension)
        self.padding = padding
        self._validate()

    cdef int _validate(self) except -1:
        _check_fields(self.payload_type, self.sequence, self.timestamp, self.ssrc)
        if len(self.csrc) > 15:
            raise ValueError(f"at most 15 CSRC identifiers fit in an RTP header, got "
                             f"{len(self.csrc)}")
        for c in self.csrc:
            if not 0 <= c <= 0xFFFFFFFF:
                raise ValueError(f"RTP CSRC must be 0..2**32-1, got {c}")
        if self.extension_profile is None:
            if self.extension is not None:
                raise ValueError("an RTP header extension needs an extension_profile")
        else:
            if not 0 <= self.extension_profile <= 0xFFFF:
                raise ValueError(f"RTP extension profile must be 0..65535, got "
                                 f"{self.extension_profile}")
            if len(self.extension) % 4:
                raise ValueError(f"RTP header extension must be a multiple of 4 bytes, got "
                                 f"{len(self.extension)} (RFC 3550 5.3.1)")
            if len(self.extension) > 4 * 0xFFFF:
                raise ValueError(f"RTP header extension too long: {len(self.extension)} bytes")
        if self.padding < 0 or self.padding > 255:
            raise ValueError(f"RTP padding must be 0..255 bytes, got {self.padding}")
        return 0

    @classmethod
    def parse(cls, data):
        """Parse one datagram (RFC 3550 5.1, 5.3.1); RtpError on anything malformed."""
        cdef _Bytes b
        cdef _Header h
        cdef int status, i
        cdef RtpPacket pkt = cls.__new__(cls)   # before _acquire: it may run Python code
        _acquire(data, &b, False)
        try:
            status = _parse(b.ptr, b.size, &h)
            if status != _OK:
                raise _parse_error(status, &h, b.ptr)
            pkt.payload_type = h.payload_type
            pkt.marker = h.marker
            pkt.sequence = h.sequence
            pkt.timestamp = h.timestamp
            pkt.ssrc = h.ssrc
            pkt.csrc = tuple([_u32(b.ptr + _HEADER + 4 * i) for i in range(h.csrc_count)])
            if h.has_extension:
                pkt.extension_profile = h.extension_profile
                pkt.extension = PyBytes_FromStringAndSize(
                    <const char*>b.ptr + h.extension_offset, h.extension_length)
            else:
                pkt.extension_profile = None
                pkt.extension = None
            pkt.padding = h.padding
            pkt.payload = PyBytes_FromStringAndSize(
                <const char*>b.ptr + h.payload_offset, h.payload_length)
        finally:
            _release(&b)
        return pkt

    def __bytes__(self):
        self._validate()
        cdef bytes payload = _to_bytes(self.payload)
        cdef bytes ext = b"" if self.extension is None else _to_bytes(self.extension)
        cdef Py_ssize_t ncsrc = len(self.csrc)
        cdef Py_ssize_t size = _HEADER + 4 * ncsrc + len(payload) + self.padding
        cdef Py_ssize_t off = _HEADER
        cdef uint32_t c
        if self.extension_profile is not None:
            size += 4 + len(ext)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
        _write_header(o, self.payload_type, self.marker, <uint16_t>self.sequence,
                      <uint32_t>self.timestamp, <uint32_t>self.ssrc)
        o[0] |= <uint8_t>ncsrc
        for value in self.csrc:
            c = value
            o[off] = <uint8_t>(c >> 24)
            o[off + 1] = <uint8_t>(c >> 16)
            o[off + 2] = <uint8_t>(c >> 8)
            o[off + 3] = <uint8_t>c
            off += 4
        cdef uint16_t profile, words
        if self.extension_profile is not None:
            profile = self.extension_profile
            words = <uint16_t>(len(ext) // 4)
            o[0] |= 0x10
            o[off] = <uint8_t>(profile >> 8)
            o[off + 1] = <uint8_t>profile
            o[off + 2] = <uint8_t>(words >> 8)
            o[off + 3] = <uint8_t>words
            off += 4
            memcpy(o + off, PyBytes_AS_STRING(ext), len(ext))
            off += len(ext)
        memcpy(o + off, PyBytes_AS_STRING(payload), len(payload))
        off += len(payload)
        if self.padding:
            o[0] |= 0x20
            memset(o + off, 0, self.padding - 1)
            o[size - 1] = <uint8_t>self.padding
        return out

    def _key(self):
        return (self.payload_type, self.marker, self.sequence, self.timestamp, self.ssrc,
                tuple(self.csrc), self.extension_profile,
                None if self.extension is None else bytes(self.extension), self.padding,
                bytes(self.payload))

    def __eq__(self, other):
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return self._key() == (<RtpPacket>other)._key()

    __hash__ = None

    def __repr__(self):
        return (f"RtpPacket(payload_type={self.payload_type}, marker={self.marker}, "
                f"sequence={self.sequence}, timestamp={self.timestamp}, ssrc={self.ssrc:#010x}, "
                f"payload=<{len(self.payload)} bytes>, csrc={self.csrc!r}, "
                f"extension_profile={self.extension_profile!r}, extension={self.extension!r}, "
                f"padding={self.padding})")


# --------------------------------------------------------------------------- RtpSender

cdef int _bad_samples(long long samples) except -1:
    raise ValueError(f"samples must be >= 0 (or -1 for the payload length), got {samples}")


def _random32():
    return int.from_bytes(os.urandom(4), "big")


cdef class RtpSender:
    """Send-side state of one outgoing RTP stream (RFC 3550 5.1).

    The sequence advances by one per packet and the timestamp by the samples actually sent
    (for G.711, one byte = one sample, so a 12-byte payload advances it by 12); both wrap
    (2**16, 2**32). The first packet of the stream and of every talkspurt carries the marker.
    """

    def __init__(self, ssrc=None, int payload_type=0, initial_sequence=None,
                 initial_timestamp=None):
        cdef long long s = _random32() if ssrc is None else ssrc
        cdef long long q = _random32() & 0xFFFF if initial_sequence is None else initial_sequence
        cdef long long t = _random32() if initial_timestamp is None else initial_timestamp
        _check_fields(payload_type, q, t, s)
        self._ssrc = <uint32_t>s
        self._payload_type = payload_type
        self._sequence = <uint16_t>q
        self._timestamp = <uint32_t>t
        self._marker_next = True
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def ssrc(self):
        return self._ssrc

    @property
    def payload_type(self):
        return self._payload_type

    @property
    def sequence(self):
        """The sequence number the next packet gets."""
        return self._sequence

    @property
    def timestamp(self):
        """The timestamp the next packet gets."""
        return self._timestamp

    cpdef void start_talkspurt(self, long long silent_samples=0):
        """The next packet starts a talkspurt: it carries the marker, and the timestamp first
        advances by silent_samples (the time nothing was sent, so timestamps follow the clock)."""
        if silent_samples < 0:
            raise ValueError(f"silent_samples must be >= 0, got {silent_samples}")
        self._timestamp = <uint32_t>(self._timestamp + <uint32_t>silent_samples)
        self._marker_next = True

    cdef void _advance(self, Py_ssize_t size, long long samples) noexcept:
        self._sequence = <uint16_t>(self._sequence + 1)
        if samples == -1:
            samples = size      # G.711: one byte, one sample
        self._timestamp = <uint32_t>(self._timestamp + <uint32_t>samples)
        self._marker_next = False
        self.packets_sent += 1
        self.octets_sent += size

    cpdef bytes build(self, payload, long long samples=-1):
        """The next packet of the stream; samples defaults to len(payload) (G.711)."""
        if samples < -1:
            _bad_samples(samples)
        cdef bytes out = _build(self._payload_type, self._marker_next, self._sequence,
                                self._timestamp, self._ssrc, payload)
        self._advance(PyBytes_GET_SIZE(out) - _HEADER, samples)
        return out

    def build_into(self, out, payload, long long samples=-1):
        """build() into a caller-owned buffer; returns the packet length."""
        if samples < -1:
            _bad_samples(samples)
        cdef Py_ssize_t n = _build_into(out, self._payload_type, self._marker_next,
                                        self._sequence, self._timestamp, self._ssrc, payload)
        self._advance(n - _HEADER, samples)
        return n


# --------------------------------------------------------------------------- JitterBuffer

cdef enum _SlotState:
    _EMPTY = 0
    _WAITING = 1     # received, not popped yet
    _POPPED = 2      # popped; kept to tell a duplicate from a late packet


cdef class JitterBuffer:
    """Receive-side reordering of one RTP stream over a power-of-two ring of preallocated
    payload slots, indexed by extended sequence number (RFC 3550 A.1 serial arithmetic).

    push(datagram) -> PUSH_* status (never raises for bad bytes); pop(force=False) -> the next
    in-order payload or None, giving up on a missing packet once `depth` later ones wait and
    describing what was skipped in last_gap_packets / last_gap_samples. A new SSRC or a
    sequence jump beyond the window restarts the stream; a timestamp jump is never loss.
    With adaptive=True, `depth` follows how late packets arrive (push(data, now)): it grows at
    once to cover the lateness just seen and shrinks by one frame after shrink_after_s seconds
    in which no packet needed it. relay/_rtp.pyi documents the full contract and the counters.
    """

    def __cinit__(self, int capacity=32, int depth=3, int max_payload=1500,
                  int bytes_per_sample=1, *, bint adaptive=False, int max_depth=8,
                  int clock_rate=8000, int frame_samples=160, double shrink_after_s=2.0):
        if capacity < 2 or capacity > 32768 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in 2..32768, got {capacity}")
        if depth < 1 or depth >= capacity:
            raise ValueError(f"depth must be 1..capacity-1, got {depth}")
        if adaptive and (max_depth < depth or max_depth >= capacity):
            raise ValueError(f"max_depth must be depth..capacity-1 ({depth}..{capacity - 1}), "
                             f"got {max_depth}")
        if clock_rate < 1 or frame_samples < 1:
            raise ValueError(f"clock_rate and frame_samples must be >= 1, got {clock_rate} "
                             f"and {frame_samples}")
        if not shrink_after_s > 0:
            raise ValueError(f"shrink_after_s must be positive, got {shrink_after_s}")
        if max_payload < 0 or max_payload > 65535:
            raise ValueError(f"max_payload must be 0..65535, got {max_payload}")
        if bytes_per_sample < 1:
            raise ValueError(f"bytes_per_sample must be >= 1, got {bytes_per_sample}")
        self._slots = <_Slot*>PyMem_Malloc(capacity * sizeof(_Slot))
        self._data = <uint8_t*>PyMem_Malloc(<size_t>capacity * max_payload + 1)
        if self._slots == NULL or self._data == NULL:
            raise MemoryError()
        memset(self._slots, 0, capacity * sizeof(_Slot))
        self._capacity = capacity
        self._mask = capacity - 1
        self.depth = depth
        self.adaptive = adaptive
        self.min_depth = depth
        self.max_depth = max_depth if adaptive else depth
        self.max_depth_reached = depth
        self._clock_rate = clock_rate
        self._frame_samples = frame_samples
        self._shrink_after_s = shrink_after_s
        self._calm_since = NAN
        self._calm_needed = depth
        self.max_payload = max_payload
        self.bytes_per_sample = bytes_per_sample
        self._started = False
        self._waiting = 0
        self._has_last = False

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._data)

    @property
    def capacity(self):
        return self._capacity

    @property
    def ssrc(self):
        """SSRC of the current stream; None before the first packet."""
        return self._ssrc if self._started else None

    @property
    def waiting(self):
        """Packets stored and not popped yet."""
        return self._waiting

    cdef void _clear(self) noexcept:
        cdef int i
        for i in range(self._capacity):
            if self._slots[i].state == _WAITING:
                self.dropped += 1
            self._slots[i].state = _EMPTY
        self._waiting = 0
        self._has_last = False

    cdef void _start(self, uint32_t ssrc, uint16_t sequence) noexcept:
        """(Re)start the stream at this packet; what was waiting is dropped."""
        self._clear()
        self._has_floor = False      # a new stream may have a new timestamp base
        self._started = True
        self._ssrc = ssrc
        # Extended numbers start one cycle up, so a packet up to 32768 behind stays > 0.
        self._next = 0x10000 + <int64_t>sequence
        self._highest = self._next

    cdef void _store(self, int64_t ext, const uint8_t* payload, int length, uint32_t timestamp,
                     bint marker) noexcept:
        cdef int64_t i = ext & self._mask
        cdef _Slot* s = &self._slots[i]
        s.ext = ext
        s.timestamp = timestamp
        s.length = length
        s.marker = marker
        s.state = _WAITING
        if length:
            memcpy(self._data + i * self.max_payload, payload, length)
        self._waiting += 1
        self.received += 1

    cdef void _skip_to(self, int64_t new_next) noexcept:
        """Move the head to new_next: what was waiting before it is dropped, what never came
        is lost."""
        cdef _Slot* s
        while self._next < new_next:
            s = &self._slots[self._next & self._mask]
            if s.ext == self._next and s.state == _WAITING:
                s.state = _EMPTY
                self._waiting -= 1
                self.dropped += 1
            else:
                self.lost += 1
            self._next += 1

    cdef int _push(self, const uint8_t* p, Py_ssize_t n) noexcept:
        cdef _Header h
        cdef int64_t ext, ahead
        cdef _Slot* s
        if _parse(p, n, &h) != _OK:
            self.malformed += 1
            return _PUSH_MALFORMED
        if h.payload_length > self.max_payload:
            self.too_large += 1
            return _PUSH_TOO_LARGE
        if not self._started:
            self._start(h.ssrc, h.sequence)
            self._store(self._next, p + h.payload_offset, <int>h.payload_length, h.timestamp,
                        h.marker)
            return _PUSH_OK
        if h.ssrc != self._ssrc:
            self.ssrc_changes += 1
            self.restarts += 1
            self._start(h.ssrc, h.sequence)
            self._store(self._next, p + h.payload_offset, <int>h.payload_length, h.timestamp,
                        h.marker)
            return _PUSH_RESTARTED
        # Serial-number arithmetic: the 16-bit distance to the newest packet, as signed.
        ext = self._highest + <int16_t>(<uint16_t>(h.sequence - <uint16_t>self._highest))
        ahead = ext - self._highest
        if ahead >= self._capacity or -ahead >= max(self._capacity, _MAX_MISORDER):
            # A jump beyond the window: the sender restarted its numbering, not a loss burst.
            self.restarts += 1
            self._start(h.ssrc, h.sequence)
            self._store(self._next, p + h.payload_offset, <int>h.payload_length, h.timestamp,
                        h.marker)
            return _PUSH_RESTARTED
        s = &self._slots[ext & self._mask]
        if ext < self._next and not self._has_last and self._highest - ext < self._capacity:
            # Nothing popped since the stream (re)started: a packet that was sent before the
            # first one received is not late, the head just moves back to it.
            self._next = ext
        if ext < self._next:
            if s.ext == ext and s.state == _POPPED:
                self.duplicate += 1
                return _PUSH_DUPLICATE
            self.late += 1
            return _PUSH_LATE
        if s.ext == ext and s.state == _WAITING:
            self.duplicate += 1
            return _PUSH_DUPLICATE
        if ahead > 0:
            self._highest = ext
            if ext - self._next >= self._capacity:
                # Nobody popped for a whole ring: drop the oldest to keep the newest.
                self._skip_to(ext - self._capacity + 1)
            self._store(ext, p + h.payload_offset, <int>h.payload_length, h.timestamp,
                        h.marker)
            return _PUSH_OK
        self.reordered += 1
        self._store(ext, p + h.payload_offset, <int>h.payload_length, h.timestamp, h.marker)
        return _PUSH_REORDERED

    cpdef int push(self, data, double now=NAN) except -1:
        """Take one raw datagram; returns a PUSH_* status and never raises for bad bytes.
        now (seconds, any monotonic clock): its arrival time, which an adaptive buffer
        measures; without it the depth does not change."""
        cdef _Bytes b
        cdef int status
        _acquire(data, &b, False)
        status = self._push_at(b.ptr, b.size, now)
        _release(&b)
        return status

    cdef int _push_at(self, const uint8_t* p, Py_ssize_t n, double now) noexcept:
        """push() of a datagram in a C buffer (relay/_engine.pyx: the receive buffer)."""
        cdef int status = self._push(p, n)
        if self.adaptive and now == now and (status < _PUSH_DUPLICATE or status == _PUSH_LATE):
            # a packet that parsed: at least the 12-byte header
            self._adapt(_u32(p + 4),
                        <int16_t>(<uint16_t>(<uint16_t>self._highest
                                             - ((<uint16_t>p[2] << 8) | p[3]))),
                        now)
        return status

    cdef void _adapt(self, uint32_t timestamp, int behind, double now) noexcept:
        """Measure how late this packet came and move the depth.

        Lateness is the packet's transit (arrival minus timestamp, RFC 3550 6.4.1) above the
        lowest transit of the last one or two windows of shrink_after_s: how much later than
        the fastest recent packet it came, relative to its place in the timestamp schedule. A
        packet L late is passed by about L / frame later packets, so the depth it needs is
        1 + L // frame (and at least behind + 1, the packets that overtook it). The floor is a
        windowed minimum, not an average, so that clock drift and a route change move it
        within two windows; a lateness over a second is a timestamp jump (a new base), not
        delay."""
        cdef double transit, shift, floor, lateness
        cdef int needed
        transit = now * self._clock_rate - <double>(<int32_t>(timestamp - self._anchor_ts))
        if not self._has_floor or transit - min(self._floor_previous,
                                               self._floor_current) > self._clock_rate:
            self._has_floor = True
            self._anchor_ts = timestamp
            transit = now * self._clock_rate
            self._floor_previous = transit
            self._floor_current = transit
            self._window_end = now + self._shrink_after_s
            if self._calm_since != self._calm_since:     # NaN: the first measured packet
                self._calm_since = now
        elif now >= self._window_end:
            # A new window; the anchor moves to this packet so that timestamp differences
            # stay small however long the call.
            shift = <double>(<int32_t>(timestamp - self._anchor_ts))
            self._anchor_ts = timestamp
            transit += shift
            self._floor_previous = self._floor_current + shift
            self._floor_current = transit
            self._window_end = now + self._shrink_after_s
        floor = min(self._floor_previous, self._floor_current)
        lateness = transit - floor
        if lateness < 0.0:
            lateness = 0.0
        if transit < self._floor_current:
            self._floor_current = transit
        self.last_lateness_s = lateness / self._clock_rate
        needed = 1 + <int>(lateness / self._frame_samples)
        if behind + 1 > needed:
            needed = behind + 1
        if needed > self.max_depth:
            needed = self.max_depth
        if needed > self.depth:
            self.depth = needed
            self.depth_increases += 1
            if needed > self.max_depth_reached:
                self.max_depth_reached = needed
            self._calm_since = now
            self._calm_needed = self.min_depth
            return
        if needed > self._calm_needed:
            self._calm_needed = needed
        if now - self._calm_since >= self._shrink_after_s:
            if self._calm_needed < self.depth:
                # One frame shallower: pop() gives up a hole one packet sooner; nothing that
                # waits is dropped (in-order packets never wait).
                self.depth -= 1
                self.depth_decreases += 1
            self._calm_since = now
            self._calm_needed = self.min_depth

    cpdef object pop(self, bint force=False):
        """The next in-order payload, or None when it is not there yet."""
        cdef _Slot* s
        cdef int64_t ext, gap, duration, ts_gap, shortest, longest
        if self._waiting == 0:
            return None
        if not self._has_last and not force and self._waiting < self.depth:
            return None      # a new stream: wait for `depth` packets to know where it begins
        s = &self._slots[self._next & self._mask]
        if not (s.ext == self._next and s.state == _WAITING):
            if not force and self._waiting < self.depth:
                return None
            ext = self._next + 1
            while True:      # _waiting > 0, so a waiting slot lies within the ring
                s = &self._slots[ext & self._mask]
                if s.ext == ext and s.state == _WAITING:
                    break
                ext += 1
            self.lost += ext - self._next
            self._next = ext
        ext = self._next
        duration = s.length // self.bytes_per_sample
        gap = 0
        ts_gap = 0
        if self._has_last:
            gap = ext - self._last_ext - 1
            if gap > 0:
                # Timestamps may stamp a frame's start (RFC 3550) or, like Asterisk, its end:
                # minus the shorter frame is right either way; cap at `gap` longest frames so
                # a timestamp jump after silence is not reported as lost audio.
                shortest = min(duration, self._last_duration)
                longest = max(duration, self._last_duration)
                ts_gap = <int32_t>(<uint32_t>(s.timestamp - self._last_ts)) - shortest
                ts_gap = min(max(ts_gap, 0), gap * longest)
        self.last_gap_packets = gap
        self.last_gap_samples = ts_gap
        self.last_sequence = <uint16_t>ext
        self.last_timestamp = s.timestamp
        self.last_marker = s.marker
        self._has_last = True
        self._last_ext = ext
        self._last_ts = s.timestamp
        self._last_duration = duration
        s.state = _POPPED
        self._waiting -= 1
        self.popped += 1
        self._next = ext + 1
        return PyBytes_FromStringAndSize(
            <const char*>self._data + (ext & self._mask) * self.max_payload, s.length)
