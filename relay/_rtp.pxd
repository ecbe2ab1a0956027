"""C-level declarations of relay/_rtp.pyx's stream types, for other extensions to cimport
(relay/_media.pyx calls push/pop and build without going through the interpreter)."""

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
