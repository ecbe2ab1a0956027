"""C-level declarations of relay/_rtp.pyx's stream types, for other extensions to cimport
(relay/_media.pyx calls push/pop and build without going through the interpreter; the
simulated PBX, relay/sim/_sim_rtp.pyx, parses and writes headers with _parse and
_write_header)."""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

# JitterBuffer.push() statuses. Values below _PUSH_DUPLICATE mean the packet was stored.
cdef enum:
    _PUSH_OK = 0
    _PUSH_REORDERED = 1
    _PUSH_RESTARTED = 2
    _PUSH_DUPLICATE = 3
    _PUSH_LATE = 4
    _PUSH_MALFORMED = 5
    _PUSH_TOO_LARGE = 6


cdef class RtpSender:
    cdef uint32_t _ssrc
    cdef int _payload_type
    cdef uint16_t _sequence
    cdef uint32_t _timestamp
    cdef bint _marker_next
    cdef readonly long long packets_sent
    cdef readonly long long octets_sent

    cpdef void start_talkspurt(self, long long silent_samples=*)
    cdef void _advance(self, Py_ssize_t size, long long samples) noexcept
    cpdef bytes build(self, payload, long long samples=*)


cdef struct _Slot:
    int64_t ext          # extended (32+ bit) sequence number of the packet in the slot
    uint32_t timestamp
    int32_t length
    uint8_t state
    uint8_t marker


cdef class JitterBuffer:
    cdef _Slot* _slots
    cdef uint8_t* _data
    cdef int _capacity
    cdef int64_t _mask
    cdef readonly int depth         # current depth; fixed unless adaptive
    cdef readonly bint adaptive
    cdef readonly int min_depth
    cdef readonly int max_depth
    cdef readonly int max_depth_reached
    cdef readonly long long depth_increases
    cdef readonly long long depth_decreases
    cdef readonly double last_lateness_s   # how late the last measured packet came
    cdef readonly int max_payload
    cdef readonly int bytes_per_sample

    cdef bint _started
    cdef uint32_t _ssrc
    cdef int64_t _next          # extended sequence number pop() wants next
    cdef int64_t _highest       # highest extended sequence number stored
    cdef int _waiting

    cdef bint _has_last
    cdef int64_t _last_ext
    cdef uint32_t _last_ts
    cdef int64_t _last_duration

    cdef readonly long long received
    cdef readonly long long popped
    cdef readonly long long lost
    cdef readonly long long late
    cdef readonly long long duplicate
    cdef readonly long long reordered
    cdef readonly long long malformed
    cdef readonly long long too_large
    cdef readonly long long dropped
    cdef readonly long long restarts
    cdef readonly long long ssrc_changes

    cdef readonly int last_sequence
    cdef readonly long long last_timestamp
    cdef readonly bint last_marker
    cdef readonly long long last_gap_packets
    cdef readonly long long last_gap_samples

    # adaptive depth (JitterBuffer docstring): the transit floor, in timestamp units
    cdef double _clock_rate
    cdef double _frame_samples
    cdef double _shrink_after_s
    cdef bint _has_floor
    cdef uint32_t _anchor_ts     # transits are measured against this timestamp
    cdef double _floor_previous  # lowest transit of the previous window
    cdef double _floor_current   # lowest transit of the current window so far
    cdef double _window_end
    cdef double _calm_since
    cdef int _calm_needed        # deepest depth a packet needed since _calm_since

    cdef void _clear(self) noexcept
    cdef void _start(self, uint32_t ssrc, uint16_t sequence) noexcept
    cdef void _store(self, int64_t ext, const uint8_t* payload, int length, uint32_t timestamp,
                     bint marker) noexcept
    cdef void _skip_to(self, int64_t new_next) noexcept
    cdef int _push(self, const uint8_t* p, Py_ssize_t n) noexcept
    cdef int _push_at(self, const uint8_t* p, Py_ssize_t n, double now) noexcept
    cdef void _adapt(self, uint32_t timestamp, int behind, double now) noexcept
    cpdef int push(self, data, double now=*) except -1
    cpdef object pop(self, bint force=*)


# --------------------------------------------------------------------------- header parse

cdef enum:
    _HEADER = 12        # the fixed header's bytes


cdef enum _Status:
    _OK = 0
    _E_SHORT = 1
    _E_VERSION = 2
    _E_CSRC = 3
    _E_EXT_HEADER = 4
    _E_EXT = 5
    _E_PAD_ZERO = 6
    _E_PAD_LONG = 7
    _E_PAD_NONE = 8


cdef struct _Header:
    int payload_type
    bint marker
    uint16_t sequence
    uint32_t timestamp
    uint32_t ssrc
    int csrc_count
    bint has_extension
    uint16_t extension_profile
    Py_ssize_t extension_offset   # first byte of the extension data (after its 4-byte header)
    Py_ssize_t extension_length   # bytes of extension data
    int padding                   # padding bytes, count byte included (0 = no padding)
    Py_ssize_t payload_offset
    Py_ssize_t payload_length
    Py_ssize_t size               # datagram length
    Py_ssize_t needed             # for error messages: bytes the header claims


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline int _parse(const uint8_t* p, Py_ssize_t n, _Header* h) noexcept nogil:
    """Validate and decode the RTP header of p[0:n] (RFC 3550 5.1, 5.3.1). Returns a _Status."""
    cdef uint8_t b0, b1
    cdef Py_ssize_t off, end
    cdef int pad
    h.size = n
    if n < _HEADER:
        return _E_SHORT
    b0 = p[0]
    if (b0 >> 6) != 2:
        return _E_VERSION
    b1 = p[1]
    h.payload_type = b1 & 0x7F
    h.marker = (b1 & 0x80) != 0
    h.sequence = (<uint16_t>p[2] << 8) | p[3]
    h.timestamp = _u32(p + 4)
    h.ssrc = _u32(p + 8)
    h.csrc_count = b0 & 0x0F
    off = _HEADER + 4 * h.csrc_count
    if off > n:
        h.needed = off
        return _E_CSRC
    h.has_extension = (b0 & 0x10) != 0
    if h.has_extension:
        if off + 4 > n:
            h.needed = off + 4
            return _E_EXT_HEADER
        h.extension_profile = (<uint16_t>p[off] << 8) | p[off + 1]
        h.extension_length = 4 * ((<Py_ssize_t>p[off + 2] << 8) | p[off + 3])
        off += 4
        h.extension_offset = off
        if off + h.extension_length > n:
            h.needed = off + h.extension_length
            return _E_EXT
        off += h.extension_length
    else:
        h.extension_profile = 0
        h.extension_offset = off
        h.extension_length = 0
    end = n
    h.padding = 0
    if b0 & 0x20:
        h.needed = off
        if off == n:
            return _E_PAD_NONE
        pad = p[n - 1]       # n > off >= 12: a byte after the header
        h.padding = pad
        if pad == 0:
            return _E_PAD_ZERO
        if pad > n - off:
            return _E_PAD_LONG
        end = n - pad
    h.payload_offset = off
    h.payload_length = end - off
    return _OK


# --------------------------------------------------------------------------- build

cdef inline void _write_header(uint8_t* out, int payload_type, bint marker, uint16_t sequence,
                               uint32_t timestamp, uint32_t ssrc) noexcept nogil:
    out[0] = 0x80
    out[1] = <uint8_t>(payload_type | (0x80 if marker else 0))
    out[2] = <uint8_t>(sequence >> 8)
    out[3] = <uint8_t>sequence
    out[4] = <uint8_t>(timestamp >> 24)
    out[5] = <uint8_t>(timestamp >> 16)
    out[6] = <uint8_t>(timestamp >> 8)
    out[7] = <uint8_t>timestamp
    out[8] = <uint8_t>(ssrc >> 24)
    out[9] = <uint8_t>(ssrc >> 16)
    out[10] = <uint8_t>(ssrc >> 8)
    out[11] = <uint8_t>ssrc
