"""The simulated model's socket I/O in C (relay/sim/_ws_reader.pyx), on socket pairs, and what
the shared reader makes of bad frames (relay/sim/model/reader.py) on a real connection."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

import pytest
import ujson
import websocket
from sim_model_socket import sim_model_socket

from relay.sim._ws_reader import (
    APPEND,
    END,
    RESERVED,
    TOO_LARGE,
    StreamSet,
    send_nowait,
    text_frame,
)

KEY = "sk-reader-test"


def _client_frame(payload: bytes, opcode: int = 1, fin: bool = True,
                  mask: bytes = b"\x01\x02\x03\x04", first: int = 0) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode | first])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _append(audio: bytes) -> bytes:
    return b'{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(audio) + b'"}'


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    streams = StreamSet()
    yield streams, a, b
    streams.close()
    a.close()
    b.close()


def _poll_until(streams, count):
    frames = []
    for _ in range(100):    # bounded: the writes are local, a poll or two suffices
        frames += streams.poll()
        if len(frames) >= count:
            return frames
        time.sleep(0.01)
    return frames


def test_frames_whole_split_and_of_every_length(pair):
    streams, a, b = pair
    assert streams.add(a.fileno(), "k") == [] and len(streams) == 1
    text = b'{"type":"x"}'
    big = b"y" * 70_000
    b.sendall(_client_frame(_append(b"abc")) + _client_frame(text) + _client_frame(big[:300]))
    frames = _poll_until(streams, 3)
    assert frames == [("k", APPEND, 1, b"abc"), ("k", 1, 1, text), ("k", 1, 1, big[:300])]
    data = _client_frame(big, opcode=2, fin=False)
    b.sendall(data[:5])                                 # a header cut short: nothing yet
    assert streams.poll() == []
    b.sendall(data[5:])
    assert _poll_until(streams, 1) == [("k", 2, 0, big)]
    b.sendall(_client_frame(b"", opcode=9) + bytes([0x81, 3]) + b"abc")    # unmasked: as is
    assert _poll_until(streams, 2) == [("k", 9, 1, b""), ("k", 1, 1, b"abc")]


def test_initial_bytes_are_framed_at_once(pair):
    streams, a, b = pair
    frame = _client_frame(b'{"type":"a"}')
    assert streams.add(a.fileno(), "k", frame + frame[:3]) == [("k", 1, 1, b'{"type":"a"}')]
    b.sendall(frame[3:])
    assert _poll_until(streams, 1) == [("k", 1, 1, b'{"type":"a"}')]


def test_eof_reset_and_bad_frames_end_the_stream(pair):
    streams, a, b = pair
    streams.add(a.fileno(), "k", max_frame=100)
    b.sendall(_client_frame(b"z" * 101))
    assert _poll_until(streams, 1) == [("k", TOO_LARGE, 0, None)] and len(streams) == 0
    assert streams.remove(a.fileno()) is False
    c, d = socket.socketpair()
    with c, d:
        streams.add(c.fileno(), "r")
        d.sendall(_client_frame(b"ok") + _client_frame(b"no", first=0x40))     # RSV1 set
        assert _poll_until(streams, 2) == [("r", 1, 1, b"ok"), ("r", RESERVED, 0, None)]
    e, f = socket.socketpair()
    with e:
        streams.add(e.fileno(), "e")
        f.sendall(_client_frame(b"last") + b"\x81")      # then EOF inside a frame
        f.close()
        assert _poll_until(streams, 2) == [("e", 1, 1, b"last"), ("e", END, 0, None)]
    streams.add(b.fileno(), "k2")
    with pytest.raises(ValueError):
        streams.add(b.fileno(), "k3")                       # watched already
    with pytest.raises(OSError):
        streams.add(os.open(os.devnull, os.O_RDONLY), "not a socket")


def test_server_text_frames_and_writes_that_would_block(pair):
    streams, a, b = pair
    for n in (0, 125, 126, 65535, 65536):
        frame = text_frame("x" * n)
        header = {0: 2, 125: 2, 126: 4, 65535: 4, 65536: 10}[n]
        assert frame[0] == 0x81 and len(frame) == header + n
    assert text_frame("é")[1:] == bytes([2]) + "é".encode()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rest = send_nowait(a.fileno(), b"q" * 10_000_000)  # nobody reads b: the kernel takes some
    assert 0 < len(rest) < 10_000_000
    assert send_nowait(a.fileno(), b"more") == b"more"  # full: nothing taken
    b.close()
    with pytest.raises(OSError):
        send_nowait(a.fileno(), b"after the peer is gone")


@pytest.fixture
def raw():
    with sim_model_socket(KEY) as (model, conn):
        yield model, conn


def _close_code(conn) -> int:
    opcode, data = conn.recv_data(control_frame=True)
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, data = conn.recv_data(control_frame=True)
    return struct.unpack("!H", data[:2])[0]


@pytest.mark.parametrize("frame,code", [
    (_client_frame(b"x", first=0x20), 1002),                       # a reserved bit
    (_client_frame(b"x", opcode=0), 1002),                         # a continuation of nothing
    (_client_frame(b"x", opcode=3), 1002),                         # an unknown opcode
    (_client_frame(b"x", opcode=1, fin=False) + _client_frame(b"y", opcode=1), 1002),
    (_client_frame(b"\x03", opcode=8), 1002),                      # a close frame of one byte
    (_client_frame(struct.pack("!H", 999), opcode=8), 1002),       # an invalid close code
    (_client_frame(struct.pack("!H", 1000) + b"\xff", opcode=8), 1007),
    (_client_frame(struct.pack("!H", 4000) + b"bye", opcode=8), 4000),     # echoed
    (_client_frame(b"", opcode=8), 1000),
])
def test_bad_frames_close_as_geventwebsocket_did(raw, frame, code):
    model, conn = raw
    conn.sock.sendall(frame)
    assert _close_code(conn) == code
    model.wait_until(lambda: model.connection_count == 0)


def test_a_ping_gets_its_pong_and_an_oversized_message_1002(raw):
    model, conn = raw
    conn.sock.sendall(_client_frame(b"hi", opcode=9))
    assert conn.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"hi")
    conn.sock.sendall(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 40) + b"mask")
    assert _close_code(conn) == 1002
    model.wait_until(lambda: model.connection_count == 0)


def test_a_failing_session_ends_its_connection_only(raw):
    model, conn = raw
    other = websocket.create_connection(f"{model.url}?model=gpt-realtime", timeout=10,
                                        header=[f"Authorization: Bearer {KEY}"])
    try:
        assert ujson.loads(other.recv())["type"] == "session.created"
        session = model.sessions[0]

        def broken(*args):
            raise RuntimeError("a simulator bug")
        session.receive_audio = broken
        conn.send(_append(b"abcd").decode())
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                conn.recv()
        other.send(ujson.dumps({"type": "conversation.item.retrieve", "item_id": "nope"}))
        assert ujson.loads(other.recv())["type"] == "error"
    finally:
        other.close()
