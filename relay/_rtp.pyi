"""RTP (RFC 3550) packets, the send-side stream state and the receive jitter buffer
(Cython: relay/_rtp.pyx).

Parsing never reads out of bounds and never crashes: any malformed input raises RtpError
(a ValueError) with a message that says what is wrong. The jitter buffer's push() reports bad
input with a status code instead of raising, so the per-packet path throws nothing.
"""

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
        """ValueError on out-of-range fields (pt > 127, > 15 CSRCs, extension not a multiple of 4...)."""

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
