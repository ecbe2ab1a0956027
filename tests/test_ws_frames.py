"""relay/_ws.pyx: client frames as RFC 6455 wants them, server frames parsed whatever the cut."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay._ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    WebSocketProtocolError,
    append_frame,
    client_frame,
)
from relay.realtime_events import input_audio_append_json


def unmask(frame: bytes) -> tuple[int, int, bytes]:
    """(first byte, payload length, payload) of a client frame, checked against RFC 6455."""
    assert frame[1] & 0x80, "client frames must be masked"
    n, at = frame[1] & 0x7F, 2
    if n == 126:
        n, at = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, at = struct.unpack("!Q", frame[2:10])[0], 10
    key, body = frame[at:at + 4], frame[at + 4:]
    assert len(body) == n
    return frame[0], n, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def server_frame(payload: bytes, opcode=OP_TEXT, fin=True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n <= 0xFFFF:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70001])
def test_client_frames_carry_the_payload_masked_with_the_right_length(size):
    payload = bytes(i % 251 for i in range(size))
    first, n, body = unmask(client_frame(payload, OP_BINARY))
    assert first == 0x80 | OP_BINARY and n == size and body == payload


def test_text_is_utf8_and_masking_keys_change():
    frames = [client_frame("héllo") for _ in range(3)]
    assert all(unmask(f)[2] == "héllo".encode() for f in frames)
    assert len({f[2:6] for f in frames}) == 3


def test_a_control_frame_over_125_bytes_is_refused():
    with pytest.raises(ValueError):
        client_frame(b"x" * 126, OP_PING)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.integers(1, 50))
def test_messages_come_out_whole_however_the_bytes_are_cut(payloads, step):
    wire = b"".join(server_frame(p) for p in payloads)
    reader, out = FrameReader(), []
    for i in range(0, len(wire), step):
        out += reader.feed(wire[i:i + step])
    assert out == [(OP_TEXT, p) for p in payloads] and reader.buffered == 0


def test_fragments_are_joined_and_control_frames_pass_between_them():
    reader = FrameReader()
    wire = (server_frame(b"he", OP_TEXT, fin=False) + server_frame(b"ping", OP_PING)
            + server_frame(b"ll", 0, fin=False) + server_frame(b"o", 0))
    assert reader.feed(wire) == [(OP_PING, b"ping"), (OP_TEXT, b"hello")]


@pytest.mark.parametrize("wire, code", [
    (bytes([0x81, 0x81, 1, 2, 3, 4, 5]), 1002),                 # masked by the server
    (bytes([0xC1, 0x00]), 1002),                                 # reserved bit
    (bytes([0x83, 0x00]), 1002),                                 # unknown opcode
    (server_frame(b"x", 0), 1002),                               # continuation of nothing
    (server_frame(b"a", OP_TEXT, fin=False) + server_frame(b"b"), 1002),  # new msg inside one
    (bytes([0x09, 0x00]), 1002),                                 # fragmented control frame
    (bytes([0x88, 126, 0, 200]) + b"x" * 200, 1002),             # control frame too long
    (bytes([0x81, 127]) + struct.pack("!Q", 1 << 63), 1009),     # absurd length
])
def test_protocol_violations_raise_with_a_close_code(wire, code):
    with pytest.raises(WebSocketProtocolError) as caught:
        FrameReader().feed(wire)
    assert caught.value.close_code == code


def test_a_message_over_the_limit_is_refused_before_it_is_buffered():
    reader = FrameReader(max_message=100)
    with pytest.raises(WebSocketProtocolError) as caught:
        reader.feed(bytes([0x81, 126]) + struct.pack("!H", 101))
    assert caught.value.close_code == 1009
    reader = FrameReader(max_message=100)
    reader.feed(server_frame(b"x" * 60, OP_TEXT, fin=False))
    with pytest.raises(WebSocketProtocolError):
        reader.feed(server_frame(b"y" * 60, 0))


def test_close_frames_come_out_with_their_payload():
    assert FrameReader().feed(server_frame(struct.pack("!H", 1000) + b"bye", OP_CLOSE)) == [
        (OP_CLOSE, struct.pack("!H", 1000) + b"bye")]


@given(st.binary(max_size=70_000))
def test_the_append_frame_is_the_append_event_framed(audio):
    """append_frame writes the event's JSON and base64 into the frame itself: the same message
    as the event encoded, then framed (every length: base64 padding, 7- and 16-bit lengths)."""
    first, n, payload = unmask(append_frame(audio))
    assert first == 0x80 | OP_TEXT
    assert payload == input_audio_append_json(audio) == unmask(
        client_frame(input_audio_append_json(audio)))[2]


def test_the_append_frame_takes_any_buffer_and_refuses_what_is_not_one():
    assert unmask(append_frame(bytearray(b"abc")))[2] == input_audio_append_json(b"abc")
    assert unmask(append_frame(memoryview(b"abcd")))[2] == input_audio_append_json(b"abcd")
    with pytest.raises(TypeError):
        append_frame("text")
