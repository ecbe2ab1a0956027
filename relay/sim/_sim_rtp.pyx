# cython: language_level=3
"""The simulated PBX's per-packet work in C: what an externalMedia channel does with each RTP
packet it receives from the relay, and each one it sends.

Owns four base classes, each extended in Python where nothing is hot, and `send_slot`, the
frames of one pacer tick sent in one batch:
- `CaptureCore` (of relay.sim.pbx.capture.RtpCapture): recording a received packet (arrival,
  header, payload) into the capture's arrays.
- `AgentActivity` (used as is by relay.sim.pbx.caller): when the agent spoke, the callers' turn
  latencies and barge-ins, updated from each packet's arrival and level.
- `SourceCore` (of relay.sim.pbx.sounds.Source): the frame a source plays at a pacer tick
  (and `frames_at`, those of several sources to mix).
- `EndpointCore` (of relay.sim.pbx.media.RtpEndpoint): a datagram's handling (counted, parsed,
  recorded, the Echo() inbound and the activity fed) and the next packet to send (the plan's
  frame, sequence, timestamp, marker after a silence, A-law at the edge).
Behaviour is exactly that of the Python it replaced (tests/test_sim_pbx_media.py and the other
sim-PBX tests); only the interpreter's cost per packet is gone (bench/RESULTS.md, #15).
"""

from cpython cimport array
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport isnan, NAN
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from relay._rtp cimport _HEADER, _Header, _OK, _parse, _write_header

import array as _array_module
from collections import deque

from relay._g711 import alaw_dbov, alaw_to_ulaw, ulaw_dbov, ulaw_to_alaw

AGENT_HANGOVER_S = 0.3        # agent voice this close together is one talkspurt
MAX_TURNS_KEPT = 1000         # turn latencies kept per call
VOICE_DBOV = -45.0            # a received frame louder than this counts as the agent speaking
FRAME_TICKS = 20              # relay.sim.pbx.sounds' (a test checks they agree)
FRAME_SAMPLES = 160           # 20 ms at 8 kHz

cdef double _HANGOVER = AGENT_HANGOVER_S
cdef double _VOICE = VOICE_DBOV
cdef long long _FRAME_TICKS = FRAME_TICKS


cdef inline object _optional(double value):
    return None if isnan(value) else value


cdef inline double _from_optional(object value) except? -1.0:
    return NAN if value is None else <double>value


cdef class CaptureCore:
    """Every RTP packet received on one socket, in arrival order (bounded by max_packets):
    arrival (monotonic seconds) in `times`; in `hdr` seq << 48 | payload length << 32 |
    payload type << 8 | marker << 1 | foreign (foreign: not from the announced external_host);
    in `tss` timestamp << 32 | SSRC; the payloads one after another in `payload` (keep_audio)."""

    cdef public array.array times
    cdef public array.array hdr
    cdef public array.array tss
    cdef public bytearray payload
    cdef public Py_ssize_t max_packets
    cdef public bint keep_audio
    cdef public long long dropped
    cdef public long long malformed
    cdef public long long foreign_count

    def __init__(self, Py_ssize_t max_packets=90_000, bint keep_audio=True):
        self.times = _array_module.array("d")
        self.hdr = _array_module.array("Q")
        self.tss = _array_module.array("Q")
        self.payload = bytearray()
        self.max_packets = max_packets
        self.keep_audio = keep_audio
        self.dropped = 0
        self.malformed = 0
        self.foreign_count = 0

    def __len__(self):
        return len(self.times)

    def add(self, double now, int pt, bint marker, long long seq, long long ts, long long ssrc,
            payload, bint foreign):
        """Record one packet (the receive hot path: three appends and the payload)."""
        cdef const unsigned char[:] view = payload
        self._add(now, pt, marker, <uint64_t>seq, <uint64_t>ts, <uint64_t>ssrc, &view[0]
                  if view.shape[0] else NULL, view.shape[0], foreign)

    cdef int _add(self, double now, int pt, bint marker, uint64_t seq, uint64_t ts,
                  uint64_t ssrc, const unsigned char *payload, Py_ssize_t length,
                  bint foreign) except -1:
        cdef Py_ssize_t n = len(self.times)
        cdef Py_ssize_t size
        if n >= self.max_packets:
            self.dropped += 1
            return 0
        array.resize_smart(self.times, n + 1)
        array.resize_smart(self.hdr, n + 1)
        array.resize_smart(self.tss, n + 1)
        self.times.data.as_doubles[n] = now
        (<uint64_t *>self.hdr.data.as_voidptr)[n] = (
            seq << 48 | <uint64_t>length << 32 | <uint64_t>pt << 8 | <uint64_t>marker << 1
            | <uint64_t>foreign)
        (<uint64_t *>self.tss.data.as_voidptr)[n] = ts << 32 | ssrc
        if self.keep_audio and length:
            size = PyByteArray_GET_SIZE(self.payload)
            PyByteArray_Resize(self.payload, size + length)
            memcpy(PyByteArray_AS_STRING(self.payload) + size, payload, length)
        return 0


cdef class AgentActivity:
    """When the agent (the audio the relay sends to the caller) spoke, from RTP arrivals; and
    what the caller experienced: turn latencies, from the end of the caller's speech to the
    first RTP packet from the relay after it, and barge-ins, from the moment the caller
    started talking over the agent to the last packet of the agent before it fell silent.
    Times are monotonic seconds; None: not yet (or no longer)."""

    cdef double _speaking_since
    cdef double _last_voice_at
    cdef double _last_packet_at
    cdef double _turn_end_at
    cdef double _barge_in_at
    cdef public long long voiced_packets
    cdef public object on_onset
    # (end of the caller's speech, seconds until the first packet after it), bounded
    cdef public object turns
    # (the caller's talking over the agent began, seconds until the agent's last packet)
    cdef public object barge_ins

    def __init__(self, on_onset=None):
        self._speaking_since = self._last_voice_at = self._last_packet_at = NAN
        self._turn_end_at = self._barge_in_at = NAN
        self.voiced_packets = 0
        self.on_onset = on_onset
        self.turns = deque(maxlen=MAX_TURNS_KEPT)
        self.barge_ins = deque(maxlen=MAX_TURNS_KEPT)

    @property
    def speaking_since(self):
        return _optional(self._speaking_since)

    @property
    def last_voice_at(self):
        return _optional(self._last_voice_at)

    @property
    def last_packet_at(self):
        return _optional(self._last_packet_at)

    @property
    def turn_end_at(self):
        return _optional(self._turn_end_at)

    @turn_end_at.setter
    def turn_end_at(self, value):
        self._turn_end_at = _from_optional(value)

    @property
    def barge_in_at(self):
        return _optional(self._barge_in_at)

    @barge_in_at.setter
    def barge_in_at(self, value):
        self._barge_in_at = _from_optional(value)

    def caller_speaks(self, double start, double end):
        """The caller says something from `start` to `end` (monotonic): the next packet from
        the relay after `end` is the first of the agent's answer; if the agent is speaking at
        `start`, the caller is talking over it."""
        self._turn_end_at = end
        if self.speaking(start) and isnan(self._barge_in_at):
            self._barge_in_at = start

    cpdef update(self, double now, bint voiced):
        """A packet from the relay arrived at `now`, voiced or not."""
        cdef double end = self._turn_end_at
        cdef double barge = self._barge_in_at
        cdef double last
        if not isnan(end) and now >= end:
            self._turn_end_at = NAN
            self.turns.append((end, now - end))
        if not isnan(barge):
            last = self._last_packet_at
            if not isnan(last) and now - last > _HANGOVER:   # fell silent before
                self._barge_in_at = NAN
                self.barge_ins.append((barge, max(0.0, last - barge)))
        self._last_packet_at = now
        if not voiced:
            return
        last = self._last_voice_at
        self._last_voice_at = now
        self.voiced_packets += 1
        if isnan(last) or now - last > _HANGOVER:
            self._speaking_since = now
            if self.on_onset is not None:
                self.on_onset()

    cpdef bint speaking(self, double now):
        return not isnan(self._last_voice_at) and now - self._last_voice_at <= _HANGOVER


cdef class SourceCore:
    """The frame-at-a-tick of relay.sim.pbx.sounds.Source (which owns the rest): the 20 ms of
    `audio` starting at `tick` on the pacer's grid, shorter at the end of a non-looping audio,
    None when nothing is playing or before `start_tick`."""

    cdef public object audio            # bytes, or None
    cdef public long long start_tick
    cdef public bint loop
    cdef public bint muted
    cdef public Py_ssize_t length
    cdef public object label

    cpdef object frame(self, long long tick):
        cdef long long k, off
        if self.audio is None:
            return None
        k = tick - self.start_tick
        if k < 0:
            return None
        off = (k // _FRAME_TICKS) * FRAME_SAMPLES
        if off >= self.length:
            if not self.loop:
                return None
            off %= self.length
        return self.audio[off:off + FRAME_SAMPLES]


def frames_at(tuple sources, long long tick):
    """The frames the unmuted `sources` play at `tick`, in order (those with nothing to play
    left out): what a mixing bridge, or an Echo() hearing it, gets to mix."""
    frames = []
    for src in sources:
        if not src.muted:
            f = src.frame(tick)
            if f is not None:
                frames.append(f)
    return frames


cdef class EndpointCore:
    """The per-packet state of one externalMedia channel (RtpEndpoint owns the rest)."""

    # receiving
    cdef public CaptureCore capture
    cdef public AgentActivity activity
    cdef public object inbound          # an InboundSource while an Echo() hears this channel
    cdef public object packed_remote    # the remote's sockaddr when the MediaEngine batches I/O
    cdef public long long received
    cdef public double t0               # the pacer's tick 0 (monotonic seconds)
    cdef public int payload_type
    # sending: the plan, then the RTP state and its counts
    cdef public object single
    cdef public tuple sources
    cdef public bint softmix
    cdef public object override
    cdef public long long ssrc
    cdef public long long seq           # the sequence number of the last packet sent
    cdef public long long ts            # timestamp of the last packet (the first is 160)
    cdef public long long last_tick
    cdef public long long packets_sent
    cdef public long long octets_sent
    cdef public long long markers_sent
    cdef public long long short_sent
    cdef public long long send_errors
    cdef public int fd                  # the socket's descriptor
    cdef double _first_sent_at
    cdef double _last_sent_at

    def __cinit__(self):
        self.sources = ()
        self.last_tick = -1
        self._first_sent_at = self._last_sent_at = NAN

    @property
    def first_sent_at(self):
        return _optional(self._first_sent_at)

    @property
    def last_sent_at(self):
        return _optional(self._last_sent_at)

    def on_datagram(self, bytes data, bytes name, double now):
        """One datagram read for this endpoint by the engine's SocketSet (in the hub): `name`
        is the sender's sockaddr, `now` its arrival (monotonic)."""
        cdef bint foreign = self.packed_remote is None or name != self.packed_remote
        self.take(now, data, foreign, self.source_of(name) if foreign else None)

    def source_of(self, bytes name):
        """The (host, port) of a sockaddr (RtpEndpoint: relay._udp.unpack_address)."""
        raise NotImplementedError

    cpdef take(self, double now, data, bint foreign, object source):
        """A datagram received at `now`: counted, parsed (a malformed one is counted and
        dropped), one from another source than the channel's remote noted, then recorded
        into the capture, the Echo() inbound and the activity detector."""
        cdef CaptureCore cap = self.capture
        cdef _Header h
        cdef bytes packet = data if type(data) is bytes else bytes(data)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(packet)
        self.received += 1
        if _parse(p, PyBytes_GET_SIZE(packet), &h) != _OK:
            cap.malformed += 1
            return
        if foreign:
            cap.foreign_count += 1
            sources = (<object>cap).foreign_sources     # RtpCapture's (a set)
            if len(sources) < 64:
                sources.add(source)
        cap._add(now, h.payload_type, h.marker, h.sequence, h.timestamp, h.ssrc,
                 p + h.payload_offset, h.payload_length, foreign)
        if h.payload_type != self.payload_type or (self.inbound is None and
                                                   self.activity is None):
            return
        payload = PyBytes_FromStringAndSize(<const char *>p + h.payload_offset, h.payload_length)
        if self.inbound is not None:
            self.inbound.push(int((now - self.t0) * 1000.0),
                              alaw_to_ulaw(payload) if h.payload_type else payload)
        if self.activity is not None:
            self.activity.update(now, (alaw_dbov if h.payload_type else ulaw_dbov)(payload)
                                 > _VOICE)

    cpdef object next_packet(self, long long tick):
        """This endpoint's RTP packet for `tick` (None: nothing to send); the sequence number
        and timestamp advance whether or not it is then sent (the pacer's hot path)."""
        cdef object payload
        cdef Py_ssize_t n
        cdef bint marker = False
        cdef long long last = self.last_tick
        if self.override is not None:
            payload = self.override.frame(tick)
        elif self.softmix:
            payload = _mix(frames_at(self.sources, tick))
        else:
            src = self.single
            if src is None or src.muted:
                return None
            payload = (<SourceCore>src).frame(tick) if isinstance(src, SourceCore) \
                else src.frame(tick)
        if payload is None:
            return None
        n = len(payload)
        if last < 0 or tick - last <= _FRAME_TICKS:
            self.ts = (self.ts + n) & 0xFFFFFFFF
        else:
            self.ts = (self.ts + (tick - last) // _FRAME_TICKS * FRAME_SAMPLES) & 0xFFFFFFFF
            marker = True
            self.markers_sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.last_tick = tick
        if self.payload_type:
            payload = ulaw_to_alaw(payload)
        elif type(payload) is not bytes:
            payload = bytes(payload)
        n = PyBytes_GET_SIZE(payload)
        packet = PyBytes_FromStringAndSize(NULL, _HEADER + n)
        _write_header(<uint8_t *>PyBytes_AS_STRING(packet), self.payload_type, marker,
                      <uint16_t>self.seq, <uint32_t>self.ts, <uint32_t>self.ssrc)
        memcpy(PyBytes_AS_STRING(packet) + _HEADER, PyBytes_AS_STRING(payload), n)
        return packet

    cpdef sent(self, Py_ssize_t n, double now):
        """Count a packet of `n` payload bytes sent at `now`."""
        self.packets_sent += 1
        self.octets_sent += n
        if n != FRAME_SAMPLES:
            self.short_sent += 1
        if isnan(self._first_sent_at):
            self._first_sent_at = now
        self._last_sent_at = now


def send_slot(sockets, list endpoints, long long tick, double now):
    """The frames of one pacer tick: those of the endpoints with a packed remote sent in one
    `sockets.send` (relay._udp.SocketSet: a sendto each from each endpoint's own socket), each
    counted as sent or refused. Returns the endpoints it left alone (no packed remote: their
    own send_frame)."""
    cdef EndpointCore ep
    cdef Py_ssize_t i
    batch = []
    senders = []
    unbatched = []
    for item in endpoints:
        ep = <EndpointCore?>item
        if ep.packed_remote is None:
            unbatched.append(ep)
            continue
        packet = ep.next_packet(tick)
        if packet is not None:
            batch.append((ep.fd, packet, ep.packed_remote))
            senders.append(ep)
    if not batch:
        return unbatched
    failed = sockets.send(batch)
    refused = set(failed) if failed else None
    for i in range(len(senders)):
        ep = <EndpointCore>senders[i]
        if refused is not None and i in refused:
            ep.send_errors += 1
        else:
            ep.sent(PyBytes_GET_SIZE(batch[i][1]) - _HEADER, now)
    return unbatched


_mix_ulaw = None


cdef object _mix(list frames):
    global _mix_ulaw
    if _mix_ulaw is None:       # relay.sim.pbx.sounds imports nothing of this module's users
        from relay.sim.pbx.sounds import mix_ulaw
        _mix_ulaw = mix_ulaw
    return _mix_ulaw(frames)
