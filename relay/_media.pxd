"""C-level declarations of relay/_media.pyx's types, for relay/_engine.pyx to cimport (the
worker's media engine feeds CallMedia from recvmmsg and ticks it from the pacer's wheel in C)."""

from libc.stdint cimport uint8_t, uint32_t

from relay._append cimport AppendWriter
from relay._rtp cimport JitterBuffer, RtpSender


cdef class ItemProgress:
    cdef public object item_id
    cdef public long long received
    cdef public long long sent
    cdef public bint finished      # the model said output_audio.done for it
    cdef public bint dropped       # flushed by a barge-in: further audio is ignored


cdef class PlayoutQueue:
    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t frame_bytes
    cdef Py_ssize_t _max_items
    cdef object _chunks                  # deque of (ItemProgress, bytearray), in arrival order
    cdef readonly Py_ssize_t queued_bytes
    cdef readonly dict items             # item id -> ItemProgress, the last max_items
    cdef object _order                   # deque of their ids, oldest first
    cdef readonly long long overflow_bytes
    cdef readonly ItemProgress last_item     # the item of the last frame sent

    cpdef ItemProgress item(self, item_id)
    cpdef Py_ssize_t add(self, item_id, audio) except -1
    cpdef bytes next_frame(self)


cdef class SendQueue:
    cdef list _items                     # (RTP packet, packed sockaddr), in sending order
    cdef bint _scheduled
    cdef object _schedule                # called when the first datagram of a batch waits

    cdef int add(self, bytes packet, bytes address) except -1


cdef class CallMedia:
    cdef readonly str line_format
    cdef readonly str model_format
    cdef uint8_t _silence_byte
    cdef object _send_rtp
    cdef SendQueue _sink                 # the socket's send queue, when attached
    cdef bytes _sink_address             # the caller's packed sockaddr, for the queue
    cdef object _send_to_model
    cdef AppendWriter _model_writer      # the session's appender, when attached
    cdef object _on_played               # each frame sent to the caller (when play_events)
    cdef object _on_heard                # each caller frame (recordings, fallback STT)
    # seconds from a model delta's arrival (into an idle playout) to its first RTP frame
    cdef object _on_model_audio_latency
    # each chunk of caller audio handed to the model, in the line codec, silence fill
    # included (recording, fallback transcription); set by the call only when needed
    cdef public object on_input
    # the call's events, called from tick() only when they happen (see CallMedia.tick)
    cdef public bint play_events         # call on_played for each frame sent (default True)
    cdef public object on_drained        # once, when drained_wanted and nothing is queued
    cdef public bint drained_wanted
    cdef public object on_idle_tick      # once, at the first tick that sent no frame
    cdef public bint idle_tick_wanted
    cdef public object on_housekeeping   # on_housekeeping(now), every housekeeping_s
    cdef public object on_tick_failed    # on_tick_failed(exc): the pacer dropped the stream
    cdef public double housekeeping_s
    cdef double _next_housekeeping
    cdef readonly JitterBuffer jitter
    cdef readonly RtpSender sender
    cdef readonly PlayoutQueue playout
    cdef Py_ssize_t _append_bytes
    cdef double _long_silence_s          # caller silence after which the fill goes in...
    cdef Py_ssize_t _long_fill_bytes     # ...appends of this size (0: never)
    cdef bytearray _pending
    cdef bint _pending_stamped
    cdef double _pending_since           # arrival of its oldest caller packet, when stamped
    cdef bint _first_delta_waiting
    cdef double _first_delta_at          # a delta waiting for its first frame
    cdef bint _pcm
    cdef object _up
    cdef object _down
    cdef bytes _pcm_rest
    cdef bint _started
    cdef double _started_at
    cdef long long _input_bytes          # caller audio handed to the model, silence included
    cdef public double _last_rtp_at
    cdef double _fill_due                # before this, _keep_input_flowing has nothing to do
    cdef long long _ticks
    cdef bint _talking
    cdef readonly uint32_t _first_timestamp
    cdef public bint enabled
    # statistics
    cdef readonly long long frames_out
    cdef readonly long long talkspurts
    cdef readonly long long silence_filled_bytes
    cdef readonly double last_frame_out_at
    cdef readonly double jitter_samples  # RFC 3550 interarrival jitter of caller packets
    cdef bint _has_transit
    cdef double _transit

    cpdef void on_rtp(self, data, double now)
    cdef int on_datagram(self, const uint8_t* p, Py_ssize_t n, double now) except -1
    cdef int _measure_jitter(self, const uint8_t* p, double now) except -1
    cdef int _drain(self, bint force) except -1
    cdef int _fill_silence(self, Py_ssize_t samples) except -1
    cdef int _flush_input(self) except -1
    cdef int _top_up_silence(self, double now) except -1
    cdef int _keep_input_flowing(self, double now) except -1
    cdef int _send_frame(self, bytes frame, double now) except -1
    cdef int _events(self, double now) except -1
    cpdef void tick(self, double now)
