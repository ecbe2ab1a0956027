"""RTP packet parse/build (RFC 3550) and the send-side stream state of relay._rtp."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay._rtp import (
    RTP_HEADER_SIZE,
    RTP_VERSION,
    RtpError,
    RtpPacket,
    RtpSender,
    build_rtp,
    build_rtp_into,
    parse_rtp_header,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=300),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension_profile=st.none() | u16,
    extension=st.none(),
    padding=st.integers(0, 255),
) | st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=300),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension_profile=u16,
    extension=st.integers(0, 20).flatmap(lambda words: st.binary(min_size=4 * words,
                                                                 max_size=4 * words)),
    padding=st.integers(0, 255),
)


def header(b0: int = 0x80, b1: int = 0, seq: int = 1, ts: int = 2, ssrc: int = 3) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


def test_constants():
    assert RTP_VERSION == 2
    assert RTP_HEADER_SIZE == 12
    assert issubclass(RtpError, ValueError)


# ----------------------------------------------------------------------------- round trips

@FAST
@given(packets)
def test_round_trip_any_valid_packet(packet: RtpPacket):
    data = bytes(packet)
    parsed = RtpPacket.parse(data)
    assert parsed == packet
    assert bytes(parsed) == data
    pt, marker, seq, ts, ssrc, offset, length = parse_rtp_header(data)
    assert (pt, marker, seq, ts, ssrc) == (
        packet.payload_type, packet.marker, packet.sequence, packet.timestamp, packet.ssrc)
    assert type(marker) is bool
    assert data[offset:offset + length] == packet.payload
    assert len(data) - offset - length == packet.padding


@FAST
@given(packets)
def test_parse_accepts_any_bytes_like(packet: RtpPacket):
    data = bytes(packet)
    for view in (bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert RtpPacket.parse(view) == packet
        assert parse_rtp_header(view) == parse_rtp_header(data)


def test_known_bytes():
    packet = RtpPacket(payload_type=0, marker=True, sequence=0x1234, timestamp=0xDEADBEEF,
                       ssrc=0x33840CF3, payload=b"\xff" * 4)
    assert bytes(packet) == bytes.fromhex("80 80 1234 deadbeef 33840cf3 ffffffff")
    with_everything = RtpPacket(payload_type=8, sequence=1, timestamp=2, ssrc=3, csrc=(7,),
                                extension_profile=0xBEDE, extension=b"abcd", padding=3,
                                payload=b"xy")
    assert bytes(with_everything) == bytes.fromhex(
        "b1 08 0001 00000002 00000003 00000007 bede0001 61626364 7879 0000 03")


def test_packet_equality_and_repr():
    a = RtpPacket(sequence=5, payload=b"a")
    assert a == RtpPacket(sequence=5, payload=bytearray(b"a"))
    assert a != RtpPacket(sequence=6, payload=b"a")
    assert a != RtpPacket(sequence=5, payload=b"a", padding=1)
    assert a != RtpPacket(sequence=5, payload=b"a", extension_profile=1)
    assert a != "not a packet"
    assert "sequence=5" in repr(a)
    # The extension profile alone means an empty extension (4-byte header, 0 words).
    empty_ext = RtpPacket(extension_profile=0x1000)
    assert empty_ext.extension == b""
    assert len(bytes(empty_ext)) == 16
    assert RtpPacket.parse(bytes(empty_ext)) == empty_ext


def test_plain_packet_has_no_optional_parts():
    packet = RtpPacket.parse(build_rtp(0, False, 1, 2, 3, b"abc"))
    assert packet.csrc == ()
    assert packet.extension_profile is None
    assert packet.extension is None
    assert packet.padding == 0
    assert packet.payload == b"abc"


def test_empty_payload():
    data = build_rtp(0, False, 1, 2, 3, b"")
    assert len(data) == 12
    assert parse_rtp_header(data) == (0, False, 1, 2, 3, 12, 0)
    assert RtpPacket.parse(data).payload == b""


# ----------------------------------------------------------------------------- malformed

MALFORMED = [
    (b"", r"too short: 0 bytes, the fixed header is 12 bytes"),
    (header()[:11], r"too short: 11 bytes, the fixed header is 12 bytes"),
    (header(b0=0x40), r"version must be 2, got 1"),
    (header(b0=0x00) + b"payload", r"version must be 2, got 0"),
    (header(b0=0xC0), r"version must be 2, got 3"),
    (header(b0=0x81), r"too short for CSRC count 1: needs 16 bytes, has 12"),
    (header(b0=0x8F) + b"\0" * 56, r"too short for CSRC count 15: needs 72 bytes, has 68"),
    (header(b0=0x90), r"too short for its header extension header: needs 16 bytes, has 12"),
    (header(b0=0x90) + b"\xbe\xde\x00", r"extension header: needs 16 bytes, has 15"),
    (header(b0=0x90) + b"\xbe\xde\x00\x02abcd",
     r"extension of 2 words runs past the end: needs 24 bytes, has 20"),
    (header(b0=0x91) + b"\0\0\0\0" + b"\xbe\xde\xff\xff",
     r"extension of 65535 words runs past the end: needs 262160 bytes, has 20"),
    (header(b0=0xA0) + b"abc\x00", r"padding count must be at least 1, got 0"),
    (header(b0=0xA0), r"padding bit set but no byte follows the header for its count"),
    (header(b0=0xB0) + b"\0\0\0\0", r"padding bit set but no byte follows the header"),
    (header(b0=0xA0) + b"\x02", r"padding count 2 is larger than the 1 byte\(s\) after"),
    (header(b0=0xA0) + b"ab\x04", r"padding count 4 is larger than the 3 byte\(s\) after"),
    (header(b0=0xB0) + b"\0\0\0\0" + b"\x02",
     r"padding count 2 is larger than the 1 byte\(s\) after"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_is_rejected_with_a_clear_error(data: bytes, message: str):
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)
    with pytest.raises(RtpError, match=message):
        parse_rtp_header(data)
    with pytest.raises(RtpError, match=message):
        parse_rtp_header(bytearray(data))


def test_padding_exactly_filling_the_packet_is_valid():
    data = header(b0=0xA0) + b"\0\0\x03"
    assert parse_rtp_header(data)[5:] == (12, 0)
    assert RtpPacket.parse(data).padding == 3


def test_parse_rejects_non_buffers():
    with pytest.raises(TypeError):
        parse_rtp_header(12)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RtpPacket.parse("80" * 12)  # type: ignore[arg-type]


def _parse_or_error(data: bytes):
    try:
        header_tuple = parse_rtp_header(data)
    except RtpError as exc:
        with pytest.raises(RtpError, match=str(exc).replace("(", r"\(").replace(")", r"\)")):
            RtpPacket.parse(data)
        return None
    packet = RtpPacket.parse(data)
    pt, marker, seq, ts, ssrc, offset, length = header_tuple
    assert (packet.payload_type, packet.marker, packet.sequence, packet.timestamp,
            packet.ssrc) == (pt, marker, seq, ts, ssrc)
    assert 12 <= offset <= offset + length <= len(data)
    assert packet.payload == data[offset:offset + length]
    assert bytes(packet) == data or packet.padding  # padding bytes other than the count: lost
    return packet


@FAST
@given(st.binary(max_size=120))
def test_random_bytes_never_crash(data: bytes):
    _parse_or_error(data)


@FAST
@given(st.integers(0x80, 0xBF), st.binary(max_size=120))
def test_random_version_2_bytes_never_crash(b0: int, rest: bytes):
    # Forcing version 2 reaches the CSRC / extension / padding checks with random lengths.
    _parse_or_error(bytes([b0]) + rest)


# ----------------------------------------------------------------------------- build

@FAST
@given(st.integers(0, 127), st.booleans(), u16, u32, u32, st.binary(max_size=300))
def test_build_rtp_matches_packet(pt, marker, seq, ts, ssrc, payload):
    data = build_rtp(pt, marker, seq, ts, ssrc, payload)
    assert data == bytes(RtpPacket(pt, marker, seq, ts, ssrc, payload))
    assert parse_rtp_header(data) == (pt, marker, seq, ts, ssrc, 12, len(payload))
    out = bytearray(len(data) + 5)
    assert build_rtp_into(out, pt, marker, seq, ts, ssrc, payload) == len(data)
    assert out[:len(data)] == data
    assert out[len(data):] == b"\0" * 5


def test_build_into_memoryview_and_overlapping_payload():
    out = bytearray(200)
    out[12:172] = bytes(range(160))
    # The payload already sits where it belongs in the output buffer.
    n = build_rtp_into(out, 0, True, 7, 8, 9, memoryview(out)[12:172])
    assert out[:n] == build_rtp(0, True, 7, 8, 9, bytes(range(160)))
    view = memoryview(bytearray(20))
    assert build_rtp_into(view, 0, False, 1, 2, 3, b"abcd") == 16
    assert bytes(view[:16]) == build_rtp(0, False, 1, 2, 3, b"abcd")


def test_build_into_too_small_or_read_only():
    with pytest.raises(ValueError, match="output buffer too small: 15 bytes, the packet needs 16"):
        build_rtp_into(bytearray(15), 0, False, 1, 2, 3, b"abcd")
    with pytest.raises((TypeError, BufferError)):
        build_rtp_into(bytes(100), 0, False, 1, 2, 3, b"abcd")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((128, False, 0, 0, 0), "payload type must be 0..127, got 128"),
        ((-1, False, 0, 0, 0), "payload type must be 0..127, got -1"),
        ((0, False, 65536, 0, 0), "sequence number must be 0..65535, got 65536"),
        ((0, False, -1, 0, 0), "sequence number must be 0..65535, got -1"),
        ((0, False, 0, 2**32, 0), r"timestamp must be 0..2\*\*32-1, got 4294967296"),
        ((0, False, 0, 0, -5), r"SSRC must be 0..2\*\*32-1, got -5"),
    ],
)
def test_build_rejects_out_of_range_fields(args, message):
    with pytest.raises(ValueError, match=message):
        build_rtp(*args, b"")
    with pytest.raises(ValueError, match=message):
        build_rtp_into(bytearray(100), *args, b"")
    with pytest.raises(ValueError, match=message):
        RtpPacket(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"csrc": tuple(range(16))}, "at most 15 CSRC identifiers"),
        ({"csrc": (2**32,)}, "CSRC must be"),
        ({"extension": b"abcd"}, "needs an extension_profile"),
        ({"extension_profile": 1, "extension": b"abc"}, "multiple of 4 bytes, got 3"),
        ({"extension_profile": 65536}, "extension profile must be 0..65535"),
        ({"padding": 256}, "padding must be 0..255 bytes, got 256"),
        ({"padding": -1}, "padding must be 0..255 bytes, got -1"),
    ],
)
def test_packet_rejects_invalid_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RtpPacket(**kwargs)


def test_packet_fields_changed_after_construction_are_checked_when_serialised():
    packet = RtpPacket(payload=b"x")
    packet.sequence = 70000
    with pytest.raises(ValueError, match="sequence number"):
        bytes(packet)
    packet.sequence = 65535
    packet.payload = bytearray(b"yz")
    assert RtpPacket.parse(bytes(packet)).payload == b"yz"


def test_payload_must_be_bytes_like():
    with pytest.raises(TypeError):
        RtpPacket(payload=5)  # type: ignore[arg-type]  # bytes(5) would be 5 zero bytes
    with pytest.raises(TypeError):
        build_rtp(0, False, 0, 0, 0, "text")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- RtpSender

def test_sender_sequence_timestamp_and_marker():
    sender = RtpSender(ssrc=0x1234, payload_type=0, initial_sequence=100, initial_timestamp=1000)
    assert (sender.ssrc, sender.payload_type, sender.sequence, sender.timestamp) == (
        0x1234, 0, 100, 1000)
    first = parse_rtp_header(sender.build(b"\xff" * 160))
    second = parse_rtp_header(sender.build(b"\xff" * 12))
    third = parse_rtp_header(sender.build(b"\xff" * 160))
    assert first[:5] == (0, True, 100, 1000, 0x1234)
    assert second[:5] == (0, False, 101, 1160, 0x1234)
    assert third[:5] == (0, False, 102, 1172, 0x1234)  # the 12-byte payload advanced by 12
    assert (sender.sequence, sender.timestamp) == (103, 1332)
    assert (sender.packets_sent, sender.octets_sent) == (3, 332)


def test_sender_talkspurt_marks_and_advances_the_clock():
    sender = RtpSender(ssrc=1, initial_sequence=0, initial_timestamp=0)
    sender.build(b"a" * 160)
    sender.start_talkspurt(silent_samples=8000)
    _pt, marker, seq, ts, *_ = parse_rtp_header(sender.build(b"b" * 160))
    assert (marker, seq, ts) == (True, 1, 160 + 8000)
    assert parse_rtp_header(sender.build(b"c" * 160))[1] is False
    sender.start_talkspurt()
    assert parse_rtp_header(sender.build(b"d" * 160))[1:4] == (True, 3, 8480)
    with pytest.raises(ValueError, match="silent_samples must be >= 0"):
        sender.start_talkspurt(-1)


def test_sender_wraps_sequence_and_timestamp():
    sender = RtpSender(ssrc=1, initial_sequence=65534, initial_timestamp=2**32 - 200)
    seqs, stamps = [], []
    for _ in range(4):
        _, _, seq, ts, *_ = parse_rtp_header(sender.build(b"\0" * 160))
        seqs.append(seq)
        stamps.append(ts)
    assert seqs == [65534, 65535, 0, 1]
    assert stamps == [2**32 - 200, 2**32 - 40, 120, 280]
    sender.start_talkspurt(2**32)  # a whole cycle of silence: the timestamp comes back
    assert sender.timestamp == 440


def test_sender_explicit_samples_and_build_into():
    a = RtpSender(ssrc=9, payload_type=118, initial_sequence=5, initial_timestamp=0)
    b = RtpSender(ssrc=9, payload_type=118, initial_sequence=5, initial_timestamp=0)
    out = bytearray(1500)
    for payload, samples in ((b"\0" * 640, 320), (b"\0" * 24, 12), (b"", 0), (b"\0" * 640, -1)):
        built = a.build(payload, samples)
        n = b.build_into(out, payload, samples)
        assert out[:n] == built
    assert a.timestamp == b.timestamp == 320 + 12 + 0 + 640
    assert a.sequence == b.sequence == 9
    assert parse_rtp_header(built)[0] == 118
    with pytest.raises(ValueError, match="samples must be >= 0"):
        a.build(b"x", -2)
    with pytest.raises(ValueError, match="samples must be >= 0"):
        a.build_into(out, b"x", -2)
    assert a.sequence == 9  # a refused packet does not advance the stream
    with pytest.raises(ValueError, match="output buffer too small"):
        b.build_into(bytearray(10), b"x")
    assert b.sequence == 9 and b.packets_sent == 4


def test_sender_random_initial_state_is_in_range():
    senders = [RtpSender() for _ in range(20)]
    assert all(0 <= s.ssrc < 2**32 and 0 <= s.sequence < 2**16 and 0 <= s.timestamp < 2**32
               for s in senders)
    assert len({s.ssrc for s in senders}) > 1
    first = parse_rtp_header(senders[0].build(b"x"))
    assert first[1] is True


def test_sender_rejects_bad_fields():
    with pytest.raises(ValueError, match="payload type"):
        RtpSender(payload_type=200)
    with pytest.raises(ValueError, match="SSRC"):
        RtpSender(ssrc=2**32)
    with pytest.raises(ValueError, match="sequence"):
        RtpSender(initial_sequence=65536)


def test_every_truncation_of_a_full_packet_is_handled():
    data = bytes(RtpPacket(sequence=1, csrc=(1, 2, 3), extension_profile=0xBEDE,
                           extension=b"12345678", padding=4, payload=b"p" * 20))
    for size in range(len(data)):
        _parse_or_error(data[:size])
    assert RtpPacket.parse(data).payload == b"p" * 20
