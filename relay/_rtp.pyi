"""RTP (RFC 3550) packets, the send-side stream state and the receive jitter buffer
(Cython: relay/_rtp.pyx).

Parsing never reads out of bounds and never crashes: any malformed input raises RtpError
(a ValueError) with a message that says what is wrong. The jitter buffer's push() reports bad
input with a status code instead of raising, so the per-packet path throws nothing.
"""

import math
from typing import Optional, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]

RTP_VERSION: int        # 2
RTP_HEADER_SIZE: int    # 12

class RtpError(ValueError): ...

class RtpPacket:
    """One RTP packet as a small value: parse() from the wire, bytes() back to it."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    csrc: Tuple[int, ...]
    extension_profile: Optional[int]   # None when there is no header extension
    extension: Optional[bytes]         # the extension's data words, without its 4-byte header
    padding: int                       # padding bytes at the end (0 = no padding bit)
    payload: bytes

    def __init__(
        self,
        payload_type: int = 0,
        marker: bool = False,
        sequence: int = 0,
        timestamp: int = 0,
        ssrc: int = 0,
        payload: Buffer = b"",
        csrc: Tuple[int, ...] = (),
        extension_profile: Optional[int] = None,
        extension: Optional[Buffer] = None,
        padding: int = 0,
    ) -> None:
        """ValueError on out-of-range fields (pt > 127, > 15 CSRCs, an extension that is not a
        multiple of 4 bytes...)."""

    @classmethod
    def parse(cls, data: Buffer) -> "RtpPacket":
        """Parse one datagram; RtpError on anything malformed."""

    def __bytes__(self) -> bytes: ...
    def __eq__(self, other: object) -> bool: ...

def parse_rtp_header(data: Buffer) -> Tuple[int, bool, int, int, int, int, int]:
    """Hot-path parse: (payload_type, marker, sequence, timestamp, ssrc, payload_offset,
    payload_length), skipping CSRCs, the extension and padding. RtpError when malformed."""

def build_rtp(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
              payload: Buffer) -> bytes:
    """A plain RTP packet: version 2, no padding, extension or CSRC."""

def build_rtp_into(out: Union[bytearray, memoryview], payload_type: int, marker: bool,
                   sequence: int, timestamp: int, ssrc: int, payload: Buffer) -> int:
    """build_rtp() into a caller-owned buffer; returns the packet length."""

class RtpSender:
    """Send-side state of one outgoing RTP stream.

    The sequence advances by one per packet and the timestamp by the samples actually sent
    (for G.711, one byte = one sample, so a 12-byte payload advances it by 12). The first
    packet of the stream and of every talkspurt carries the marker bit.
    """

    ssrc: int
    payload_type: int
    sequence: int          # the sequence number the next packet gets
    timestamp: int         # the timestamp the next packet gets
    packets_sent: int
    octets_sent: int

    def __init__(self, ssrc: Optional[int] = None, payload_type: int = 0,
                 initial_sequence: Optional[int] = None,
                 initial_timestamp: Optional[int] = None) -> None:
        """Random SSRC, sequence and timestamp where not given (RFC 3550 section 5.1)."""

    def start_talkspurt(self, silent_samples: int = 0) -> None:
        """The next packet starts a talkspurt: it carries the marker, and the timestamp first
        advances by silent_samples (the time nothing was sent, so timestamps follow the clock)."""

    def build(self, payload: Buffer, samples: int = -1) -> bytes:
        """The next packet of the stream; samples defaults to len(payload) (G.711)."""

    def build_into(self, out: Union[bytearray, memoryview], payload: Buffer,
                   samples: int = -1) -> int:
        """build() into a caller-owned buffer; returns the packet length."""

# JitterBuffer.push() statuses. Values below PUSH_DUPLICATE mean the packet was stored.
PUSH_OK: int          # 0: stored in order (or as the first packet of the stream)
PUSH_REORDERED: int   # 1: stored, arrived after a later one (fills a hole)
PUSH_RESTARTED: int   # 2: stored as the first packet of a new stream (new SSRC or seq jump)
PUSH_DUPLICATE: int   # 3: dropped, a copy of a packet already stored or popped
PUSH_LATE: int        # 4: dropped, its place was already passed by pop()
PUSH_MALFORMED: int   # 5: dropped, not a valid RTP packet
PUSH_TOO_LARGE: int   # 6: dropped, payload longer than max_payload

class JitterBuffer:
    """Receive-side reordering of one RTP stream (sans-IO: datagrams in, payloads out).

    A power-of-two ring of `capacity` preallocated slots of `max_payload` bytes, indexed by the
    extended sequence number (serial-number arithmetic, RFC 3550 A.1), so memory is fixed at
    about capacity * max_payload bytes whatever arrives. Timestamps are never used to order or
    to detect loss: a timestamp jump (Asterisk after silence, with the marker) is not loss.

    Typical loop: after each push(), `while (p := jb.pop()) is not None: ...`; when the stream
    has gone quiet for a while, drain with pop(force=True) the same way. A new stream (first
    packet, restart) is held until `depth` packets wait, so a packet that overtook the first
    one does not make that one late; after that, an in-order packet comes out at once.

    Stream changes: a new SSRC, or a sequence jump of `capacity` or more ahead (or of
    max(capacity, 100) or more behind) of the newest packet, restarts the stream at that packet
    (PUSH_RESTARTED, counted in `restarts`, and in `ssrc_changes` for a new SSRC); packets of
    the old stream still waiting are dropped. When `capacity` packets wait unpopped, a newer
    packet drops the oldest ones (never growing memory).

    Counters (cumulative, exact):
      every push() lands in exactly one of received, duplicate, late, malformed, too_large;
      received == popped + dropped + waiting.
      lost: sequence numbers pop() skipped without having received them (a packet that still
      arrives afterwards is then also counted late).
    """

    capacity: int           # ring slots (a power of two)
    depth: int              # later packets that must wait before pop() gives up on a hole
                            # (the current one when adaptive)
    max_payload: int        # largest payload accepted, bytes
    bytes_per_sample: int   # payload bytes per RTP timestamp unit (1 for G.711, 2 for L16)

    received: int       # packets stored (PUSH_OK, PUSH_REORDERED, PUSH_RESTARTED)
    popped: int         # payloads returned by pop()
    lost: int
    late: int
    duplicate: int
    reordered: int      # stored after a later packet (PUSH_REORDERED)
    malformed: int
    too_large: int
    dropped: int        # stored packets discarded unpopped (stream restart, ring overflow)
    restarts: int       # stream restarts, SSRC changes included
    ssrc_changes: int

    # The payload most recently returned by pop() (0 / False before the first one).
    last_sequence: int
    last_timestamp: int
    last_marker: bool
    last_gap_packets: int   # sequence numbers skipped right before it (lost or dropped)
    last_gap_samples: int   # audio missing right before it, in RTP timestamp units: the
                            # timestamp distance minus one frame, capped at last_gap_packets
                            # frames; 0 when nothing was skipped. Fill this much silence.

    # Adaptive depth (adaptive=True; otherwise depth never changes and these stay put).
    adaptive: bool
    min_depth: int          # the depth given: the adaptive depth starts and ends here
    max_depth: int          # the deepest it may grow (== depth when not adaptive)
    max_depth_reached: int
    depth_increases: int
    depth_decreases: int
    last_lateness_s: float  # how late the last measured packet came (0: as early as any)

    def __init__(self, capacity: int = 32, depth: int = 3, max_payload: int = 1500,
                 bytes_per_sample: int = 1, *, adaptive: bool = False, max_depth: int = 8,
                 clock_rate: int = 8000, frame_samples: int = 160,
                 shrink_after_s: float = 2.0) -> None:
        """ValueError unless capacity is a power of two in 2..32768, 1 <= depth < capacity,
        0 <= max_payload <= 65535, bytes_per_sample >= 1, clock_rate and frame_samples >= 1
        (RTP timestamp units per second and per frame), shrink_after_s > 0, and (adaptive)
        depth <= max_depth < capacity.

        Adaptive depth. push(data, now) measures each packet's lateness: its transit (now
        minus timestamp / clock_rate, RFC 3550 6.4.1) above the lowest transit of the current
        and the previous window of shrink_after_s seconds, i.e. how much later than the
        fastest recent packet it came for its place in the timestamp schedule. A packet L
        seconds late is passed by about L / frame later packets before it comes, so it needs a
        depth of 1 + L // frame, and at least one more than the packets that overtook it. The
        depth grows to that at once (capped at max_depth), whether the packet was stored or
        came too late (PUSH_LATE); it shrinks by one frame after each shrink_after_s seconds in
        which no packet needed the current depth. Shrinking drops nothing: in-order packets
        never wait, so a shallower depth only gives up on a hole one packet sooner. The floor
        is a windowed minimum (not an average: one late packet must not move it) so that clock
        drift or a route change moves it within two windows; a lateness over a second is a
        new timestamp base (a jump without a restart), measured from afresh, as is a restarted
        stream. Duplicates, malformed packets and pushes without `now` measure nothing.
        """

    @property
    def ssrc(self) -> int | None:
        """SSRC of the current stream; None before the first packet."""

    @property
    def waiting(self) -> int:
        """Packets stored and not popped yet."""

    def push(self, data: Buffer, now: float = math.nan) -> int:
        """Take one raw datagram (parsed here); returns a PUSH_* status. Never raises for bad
        bytes (only TypeError for something that is not bytes-like). now: its arrival time
        in seconds on any monotonic clock, which an adaptive buffer measures (NaN: none)."""

    def pop(self, force: bool = False) -> bytes | None:
        """The next in-order payload (possibly empty), or None when it is not there yet.

        When the next packet is missing and at least `depth` later ones wait (or force is
        true and any waits), gives up on it: counts it lost, returns the next one that is
        there and sets last_gap_packets / last_gap_samples. force never waits: it returns
        whatever waits, in order, and None only when nothing does.
        """
