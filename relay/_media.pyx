# cython: language_level=3
"""The per-call media path as extension types: the playout queue (PlayoutQueue and ItemProgress,
re-exported by relay/playout.py) and one call's audio (CallMedia, re-exported by
relay/call_media.py); those modules say what each owns. The constants live here, beside the C
code that uses them.

Attributes are typed C fields, and the per-packet and per-tick methods call each other, and
JitterBuffer and RtpSender (relay/_rtp.pxd), in C: no dictionary lookup or interpreter dispatch
of their own (bench/bench_call_media.py measures them).
"""

from collections import deque

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memset

from relay._g711 import Resampler, ulaw_decode, ulaw_encode
from relay._rtp cimport _PUSH_DUPLICATE, JitterBuffer, RtpSender


def _ignore(*args):
    """Where a detached CallMedia sends its frames and appends: nowhere."""


cdef enum:
    _SAMPLE_RATE = 8000
    _FRAME_BYTES = 160         # 20 ms of G.711 at 8 kHz
    _BYTES_PER_MS = 8
    _MAX_PAYLOAD = 320         # 40 ms of G.711: larger RTP payloads are refused (memory per call)

SAMPLE_RATE = _SAMPLE_RATE
FRAME_S = 0.020
FRAME_BYTES = _FRAME_BYTES
BYTES_PER_MS = _BYTES_PER_MS
MAX_FILL_S = 1.0          # at most this much silence is added in one go
MAX_PAYLOAD = _MAX_PAYLOAD

cdef Py_ssize_t _MAX_FILL = int(MAX_FILL_S * SAMPLE_RATE)     # in samples
cdef double _FRAME_S = FRAME_S

# agent audio format -> (externalMedia format, RTP payload type, silence byte)
LINE_FORMATS = {
    "audio/pcmu": ("ulaw", 0, 0xFF),
    "audio/pcma": ("alaw", 8, 0xD5),
    "audio/pcm": ("ulaw", 0, 0xFF),      # the relay converts to/from 24 kHz PCM16
}


# --------------------------------------------------------------------------- playout

cdef class ItemProgress:
    """How much audio of one assistant item came from the model and how much was sent."""

    def __init__(self, item_id, long long received=0, long long sent=0, bint finished=False,
                 bint dropped=False):
        self.item_id = item_id
        self.received = received
        self.sent = sent
        self.finished = finished
        self.dropped = dropped

    @property
    def fully_played(self):
        return self.finished and self.sent >= self.received

    def heard_ms(self):
        """Milliseconds of this item the caller heard (a partial frame counts for what was sent),
        never beyond what was received."""
        return min(self.sent, self.received) // _BYTES_PER_MS

    def __repr__(self):
        return (f"ItemProgress(item_id={self.item_id!r}, received={self.received}, "
                f"sent={self.sent}, finished={self.finished}, dropped={self.dropped})")


cdef class PlayoutQueue:
    """Frames of model audio for one caller, bounded by max_bytes."""

    def __init__(self, Py_ssize_t max_bytes=120 * 8000,
                 Py_ssize_t frame_bytes=_FRAME_BYTES, Py_ssize_t max_items=64):
        self.max_bytes = max_bytes
        self.frame_bytes = frame_bytes
        self._max_items = max_items
        self._chunks = deque()
        self.queued_bytes = 0
        self.items = {}
        self._order = deque()
        self.overflow_bytes = 0
        self.last_item = None

    def __bool__(self):
        return self.queued_bytes > 0

    cpdef ItemProgress item(self, item_id):
        cdef ItemProgress progress = self.items.get(item_id)
        if progress is None:
            progress = self.items[item_id] = ItemProgress(item_id)
            self._order.append(item_id)
            while len(self._order) > self._max_items:
                old = self._order.popleft()
                if old != item_id and self.items.get(old) is not self.last_item:
                    self.items.pop(old, None)
        return progress

    @cython.wraparound(True)     # _chunks[-1]: the extensions are built without wraparound
    cpdef Py_ssize_t add(self, item_id, audio) except -1:
        """Queue audio of an item; returns the bytes accepted (the rest is counted as overflow)."""
        cdef ItemProgress progress = self.item(item_id)
        cdef Py_ssize_t size, room
        if progress.dropped or not audio:
            return 0
        size = len(audio)
        room = self.max_bytes - self.queued_bytes
        if room <= 0:
            self.overflow_bytes += size
            return 0
        if size > room:
            self.overflow_bytes += size - room
            audio = audio[:room]
            size = room
        progress.received += size
        if self._chunks and (<tuple>self._chunks[-1])[0] is progress:
            (<bytearray>(<tuple>self._chunks[-1])[1]).extend(audio)
        else:
            self._chunks.append((progress, bytearray(audio)))
        self.queued_bytes += size
        return size

    def finish(self, item_id):
        """The model sent all of this item's audio: its last partial frame may now go."""
        self.item(item_id).finished = True

    cpdef bytes next_frame(self):
        """The next frame to send (a short one only at the end of a finished item), or None."""
        cdef tuple chunk
        cdef ItemProgress progress
        cdef bytearray buffer
        cdef bytes frame
        cdef Py_ssize_t size
        while self._chunks:
            chunk = self._chunks[0]
            progress, buffer = chunk
            size = PyByteArray_GET_SIZE(buffer)
            if size >= self.frame_bytes:
                frame = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buffer), self.frame_bytes)
                del buffer[:self.frame_bytes]
            elif progress.finished or len(self._chunks) > 1:
                frame = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buffer), size)
                PyByteArray_Resize(buffer, 0)
            else:
                return None    # wait for the rest of this item
            if not PyByteArray_GET_SIZE(buffer):
                self._chunks.popleft()
            size = PyBytes_GET_SIZE(frame)
            if not size:
                continue
            self.queued_bytes -= size
            progress.sent += size
            self.last_item = progress
            return frame
        return None

    def flush(self):
        """Barge-in: drop everything queued, refuse the rest of the items concerned, and return
        the item the caller was hearing (None when nothing was being played)."""
        cdef ItemProgress playing = self.last_item
        cdef ItemProgress progress
        for progress, _ in self._chunks:
            progress.dropped = True
        if playing is not None and not playing.fully_played:
            playing.dropped = True
        self._chunks.clear()
        self.queued_bytes = 0
        return playing if playing is not None and not playing.fully_played else None

    def drop_item(self, item_id):
        """Ignore any further audio of this item (its response was cancelled)."""
        self.item(item_id).dropped = True
        kept = deque((p, b) for p, b in self._chunks if p.item_id != item_id)
        self.queued_bytes = sum(len(b) for _, b in kept)
        self._chunks = kept


# --------------------------------------------------------------------------- send queue

cdef class SendQueue:
    """RTP datagrams waiting for the socket's next batched send (relay/media.py MediaSocket).

    CallMedia.tick puts its frame here in C; the first datagram of a batch calls `schedule`
    (once), which arranges for the socket to take() and send them all together.
    """

    def __init__(self, schedule):
        self._items = []
        self._scheduled = False
        self._schedule = schedule

    def __len__(self):
        return len(self._items)

    cdef int add(self, bytes packet, bytes address) except -1:
        self._items.append((packet, address))
        if not self._scheduled:
            self._scheduled = True
            self._schedule()
        return 0

    def put(self, bytes packet, bytes address):
        """Queue one datagram (packet, the peer's packed sockaddr)."""
        self.add(packet, address)

    def take(self):
        """Every datagram queued, in order; the queue is empty afterwards."""
        items = self._items
        self._items = []
        self._scheduled = False
        return items


# --------------------------------------------------------------------------- one call's audio

cdef class CallMedia:
    """Audio of one call. on_rtp() is fed by the worker's socket, tick() by the pacer.

    The fields are declared in relay/_media.pxd (relay/_engine.pyx calls on_datagram and tick
    in C). The call's own per-tick logic runs only on its events: each frame sent while
    play_events is set (on_played), the playout drained (on_drained, once when drained_wanted),
    the first tick that sends nothing (on_idle_tick, once when idle_tick_wanted), and
    housekeeping every housekeeping_s (on_housekeeping).
    """

    def __init__(self, *, str model_format, send_rtp, send_to_model, int jitter_depth=3,
                 int append_frames=2, double playout_max_s=120.0, on_played=None,
                 on_heard=None, on_model_audio_latency=None, bint jitter_adaptive=False,
                 int jitter_max_depth=8, double long_silence_s=0.0,
                 int long_silence_frames=10):
        """jitter_adaptive: the jitter buffer's depth starts at one frame and follows the
        measured lateness up to jitter_max_depth frames; otherwise it is jitter_depth.
        long_silence_s (0: never): once the caller has been silent this long, the silence fill
        goes to the model in appends of long_silence_frames frames instead of append_frames
        (the same silence, in fewer messages); the first packet after it tops the silence up
        to where the fill would have been."""
        self.line_format, payload_type, self._silence_byte = LINE_FORMATS[model_format]
        self.model_format = model_format
        self._send_rtp = send_rtp
        self._send_to_model = send_to_model
        self._on_played = on_played
        self._on_heard = on_heard
        self._on_model_audio_latency = on_model_audio_latency
        self.on_input = None
        self.jitter = JitterBuffer(capacity=32, depth=1 if jitter_adaptive else jitter_depth,
                                   max_payload=_MAX_PAYLOAD, adaptive=jitter_adaptive,
                                   max_depth=jitter_max_depth, clock_rate=_SAMPLE_RATE,
                                   frame_samples=_FRAME_BYTES)
        self.sender = RtpSender(payload_type=payload_type)
        self.playout = PlayoutQueue(max_bytes=int(playout_max_s * _SAMPLE_RATE))
        self._append_bytes = append_frames * _FRAME_BYTES
        self._long_silence_s = long_silence_s
        self._long_fill_bytes = max(long_silence_frames, append_frames) * _FRAME_BYTES \
            if long_silence_s > 0 else 0
        self._pending = bytearray()
        self._pcm = model_format == "audio/pcm"
        self._up = Resampler(8000, 24000) if self._pcm else None
        self._down = Resampler(24000, 8000) if self._pcm else None
        self._pcm_rest = b""
        self._first_timestamp = self.sender._timestamp
        self.enabled = True
        self.play_events = True
        self.housekeeping_s = 0.25
        # the other C fields start at 0, 0.0 or False: not started, no ticks, nothing pending

    @property
    def ticks(self):
        """Pacer ticks so far: the frame sent by the current tick has index ticks - 1."""
        return self._ticks

    @property
    def started_at(self):
        return self._started_at if self._started else None

    def start(self, double now):
        self._started = True
        self._started_at = now
        self._last_rtp_at = now
        self._fill_due = now

    def attach_sink(self, SendQueue queue, bytes address):
        """Send frames by putting them on the socket's send queue (with the caller's packed
        sockaddr) instead of calling send_rtp; None detaches."""
        self._sink = queue
        self._sink_address = address if queue is not None else None

    def attach_model_writer(self, AppendWriter writer):
        """Hand the caller's audio to the model session's appender (relay/_append.pyx) from C
        instead of calling send_to_model; None detaches."""
        self._model_writer = writer

    # caller -> model
    cpdef void on_rtp(self, data, double now):
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.on_datagram(<const uint8_t*>view.buf, view.len, now)
        finally:
            PyBuffer_Release(&view)

    cdef int on_datagram(self, const uint8_t* p, Py_ssize_t n, double now) except -1:
        """One caller datagram (the socket's buffer: read here, not kept)."""
        if not self.enabled or self.jitter._push_at(p, n, now) >= _PUSH_DUPLICATE:
            return 0
        if (self._long_fill_bytes and self._started
                and now - self._last_rtp_at >= self._long_silence_s):
            self._top_up_silence(now)
        self._last_rtp_at = now
        self._measure_jitter(p, now)
        if not self._pending_stamped:
            self._pending_stamped = True
            self._pending_since = now
        self._drain(False)
        return 0

    cdef int _measure_jitter(self, const uint8_t* p, double now) except -1:
        """RFC 3550 section 6.4.1: J += (|D| - J) / 16, in samples (a stream restart's
        timestamp jump of a second or more is not jitter). p: a packet the jitter buffer
        took, so at least an RTP header long."""
        cdef double transit, d
        transit = now * _SAMPLE_RATE - <double>(
            (<uint32_t>p[4] << 24) | (<uint32_t>p[5] << 16) | (<uint32_t>p[6] << 8) | p[7])
        if self._has_transit:
            d = abs(transit - self._transit)
            if d < _SAMPLE_RATE:
                self.jitter_samples += (d - self.jitter_samples) / 16.0
        self._has_transit = True
        self._transit = transit
        return 0

    cdef int _drain(self, bint force) except -1:
        cdef JitterBuffer jitter = self.jitter
        cdef bytes payload
        cdef long long gap
        while True:
            payload = jitter.pop(force)
            if payload is None:
                break
            gap = jitter.last_gap_samples
            if gap > 0:
                self._fill_silence(min(gap, _MAX_FILL))
            self._pending += payload
            if self._on_heard is not None:
                self._on_heard(payload)
        if PyByteArray_GET_SIZE(self._pending) >= self._append_bytes:
            self._flush_input()
        return 0

    cdef int _fill_silence(self, Py_ssize_t samples) except -1:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self._pending)
        PyByteArray_Resize(self._pending, size + samples)
        memset(PyByteArray_AS_STRING(self._pending) + size, self._silence_byte, samples)
        self.silence_filled_bytes += samples
        return 0

    cdef int _flush_input(self) except -1:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self._pending)
        if not size:
            return 0
        audio = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._pending), size)
        PyByteArray_Resize(self._pending, 0)
        stamp = self._pending_since if self._pending_stamped else None
        self._pending_stamped = False
        self._input_bytes += size
        if self.on_input is not None:
            self.on_input(audio)
        if self._pcm:
            audio = self._up.process(ulaw_decode(audio))
        if self._model_writer is not None:
            self._model_writer.append(audio, stamp)
        else:
            self._send_to_model(audio, stamp)
        return 0

    cdef int _top_up_silence(self, double now) except -1:
        """The caller speaks after a long silence, whose fill went in large appends: add the
        whole appends' worth of silence the usual fill would have sent by now (before this
        packet's audio), so the model's input clock is where it would have been."""
        cdef double slack = (self.jitter.depth + 1) * _FRAME_S
        cdef long long due, missing
        due = <long long>((now - self._started_at - slack) * _SAMPLE_RATE)
        missing = due - self._input_bytes - PyByteArray_GET_SIZE(self._pending)
        missing -= missing % self._append_bytes
        if missing > 0:
            self._fill_silence(min(missing, _MAX_FILL))
        return 0

    cdef int _keep_input_flowing(self, double now) except -1:
        """While the caller is silent Asterisk may send nothing: keep the model's input clock
        running with silence, a jitter-buffer depth (the current one, plus a frame) behind
        real time. With an adaptive buffer, caller audio short of a full append is sent as
        soon as the next packet is a quarter frame overdue (the end of a talkspurt) instead of
        waiting for the silence fill."""
        cdef JitterBuffer jitter = self.jitter
        cdef double slack
        cdef long long due, missing
        cdef Py_ssize_t chunk
        if not self._started:
            return 0
        if (self._pending_stamped and jitter.adaptive
                and now - self._last_rtp_at >= (jitter.depth + 0.25) * _FRAME_S):
            self._flush_input()
        if now < self._fill_due:
            return 0
        slack = (jitter.depth + 1) * _FRAME_S
        if now - self._last_rtp_at < slack:
            self._fill_due = self._last_rtp_at + slack
            return 0
        self._drain(True)
        chunk = self._append_bytes
        if self._long_fill_bytes and now - self._last_rtp_at >= self._long_silence_s:
            chunk = self._long_fill_bytes
        due = <long long>((now - self._started_at - slack) * _SAMPLE_RATE)
        missing = due - self._input_bytes - PyByteArray_GET_SIZE(self._pending)
        if missing >= chunk:
            self._fill_silence(min(missing, _MAX_FILL))
            self._flush_input()
        # nothing more to do until one more append's worth of audio is missing
        self._fill_due = self._started_at + slack + <double>(
            self._input_bytes + PyByteArray_GET_SIZE(self._pending) + chunk
        ) / _SAMPLE_RATE
        return 0

    # model -> caller
    def add_model_audio(self, item_id, audio, arrived=None):
        """Queue a delta from the model (converted to the line codec when needed). arrived
        (time.monotonic() of its event) starts the model-audio latency clock when the playout
        was idle: the time to its first RTP frame is relay's own delay, not queued speech."""
        if arrived is not None and not self._talking and not self.playout.queued_bytes:
            self._first_delta_waiting = True
            self._first_delta_at = arrived
        if self._pcm:
            audio = self._pcm_rest + audio
            cut = len(audio) - len(audio) % 2
            self._pcm_rest = audio[cut:]
            audio = ulaw_encode(self._down.process(audio[:cut]))
        return self.playout.add(item_id, audio)

    cpdef void tick(self, double now):
        """One 20 ms frame time: send the next frame, if any; keep the input flowing; then the
        call's events that are due."""
        cdef bytes frame = None
        self._ticks += 1
        if self.playout.queued_bytes and self.enabled:
            frame = self.playout.next_frame()
        if frame is not None:
            self._send_frame(frame, now)
        else:
            self._talking = False
        self._keep_input_flowing(now)
        self._events(now)

    cdef int _send_frame(self, bytes frame, double now) except -1:
        cdef uint32_t due_ts, behind
        if not self._talking:
            self._talking = True
            self.talkspurts += 1
            due_ts = self._first_timestamp + <uint32_t>(self._ticks - 1) * _FRAME_BYTES
            behind = due_ts - self.sender._timestamp
            self.sender.start_talkspurt(behind if behind < 0x80000000 else 0)
        if self._sink is not None:
            self._sink.add(self.sender.build(frame), self._sink_address)
        else:
            self._send_rtp(self.sender.build(frame))
        self.frames_out += 1
        self.last_frame_out_at = now
        if self._first_delta_waiting:
            if self._on_model_audio_latency is not None:
                self._on_model_audio_latency(now - self._first_delta_at)
            self._first_delta_waiting = False
        if self._on_played is not None and self.play_events:
            self._on_played(frame)
        return 0

    cdef int _events(self, double now) except -1:
        """The call's logic, only when something happened (no Python call on a plain tick)."""
        if self.drained_wanted and not self.playout.queued_bytes:
            self.drained_wanted = False
            if self.on_drained is not None:
                self.on_drained()
        if self.idle_tick_wanted and self.last_frame_out_at != now:
            self.idle_tick_wanted = False
            if self.on_idle_tick is not None:
                self.on_idle_tick()
        if self.on_housekeeping is not None and now >= self._next_housekeeping:
            self._next_housekeeping = now + self.housekeeping_s
            self.on_housekeeping(now)
        return 0

    def detach(self):
        """Once the call has ended: every callback (each one holds the call) is forgotten, so
        that the call and its media are freed by reference counting as soon as nobody holds
        the call, not left for the garbage collector's next full pass. Disabled for good: a
        late packet, tick or delta does nothing."""
        self.enabled = False
        self.play_events = self.drained_wanted = self.idle_tick_wanted = False
        self._send_rtp = self._send_to_model = _ignore
        self._model_writer = None
        self._on_played = self._on_heard = self._on_model_audio_latency = None
        self.on_input = self.on_drained = self.on_idle_tick = self.on_housekeeping = None
        self.on_tick_failed = None

    def flush_playout(self):
        """Barge-in: nothing more is sent from what was queued; returns the item cut short."""
        self._talking = False
        self._first_delta_waiting = False
        return self.playout.flush()

    def stats(self):
        cdef JitterBuffer jb = self.jitter
        return {
            "rtp_in": jb.received, "lost": jb.lost, "late": jb.late, "duplicate": jb.duplicate,
            "reordered": jb.reordered, "malformed": jb.malformed,
            "rtp_out": self.frames_out, "talkspurts": self.talkspurts,
            "silence_filled_ms": self.silence_filled_bytes // 8,
            "playout_overflow_bytes": self.playout.overflow_bytes,
            "queued_ms": self.playout.queued_bytes // 8,
            "jitter_ms": round(self.jitter_samples / (_SAMPLE_RATE / 1000), 2),
            "jitter_depth": jb.depth, "jitter_depth_ms": jb.depth * 20,
            "jitter_depth_max": jb.max_depth_reached,
            "jitter_depth_max_ms": jb.max_depth_reached * 20,
        }
