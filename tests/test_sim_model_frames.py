"""The simulated model reads every kind of client frame the same, fast path or not
(relay.sim.model.reader on relay/sim/_ws_reader.pyx): appends are decoded in C; fragments,
64-bit lengths and control frames take the general path; bad UTF-8 closes with 1007 either way."""

from __future__ import annotations

import base64
import struct
import time

import pytest
import ujson
import websocket
from sim_model_socket import sim_model_socket

KEY = "sk-frames-test"


@pytest.fixture
def ws():
    with sim_model_socket(KEY) as (model, conn):
        yield conn


def _retrieve(tag: str, pad: int = 0) -> str:
    """An event the model answers with an error naming `tag` (no such item), padded."""
    return ujson.dumps({"type": "conversation.item.retrieve", "item_id": "item_" + "x" * pad,
                        "event_id": tag})


def _answer(ws) -> dict:
    event = ujson.loads(ws.recv())
    assert event["type"] == "error"
    return event["error"]


@pytest.mark.parametrize("pad", [0, 200, 70_000])     # 7-bit, 16-bit and 64-bit lengths
def test_text_frames_of_every_length(ws, pad):
    ws.send(_retrieve(f"len{pad}", pad))
    assert _answer(ws)["event_id"] == f"len{pad}"


def test_fragmented_message_and_a_ping_between_the_fragments(ws):
    text = _retrieve("fragments", 300).encode()
    ABNF = websocket.ABNF
    ws.send_frame(ABNF.create_frame(text[:100], ABNF.OPCODE_TEXT, fin=0))
    ws.send_frame(ABNF.create_frame(b"ping", ABNF.OPCODE_PING))
    ws.send_frame(ABNF.create_frame(text[100:], ABNF.OPCODE_CONT, fin=1))
    opcode, frame = ws.recv_data_frame(True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"ping")
    assert _answer(ws)["event_id"] == "fragments"


def test_empty_text_is_an_invalid_event_and_the_session_goes_on(ws):
    ws.send("")
    assert _answer(ws)["type"] == "invalid_request_error"
    ws.send(_retrieve("after"))
    assert _answer(ws)["event_id"] == "after"


@pytest.mark.parametrize("size", [10, 300])
def test_bad_utf8_closes_with_1007(ws, size):
    ws.send_frame(websocket.ABNF.create_frame(b"\xff" * size, websocket.ABNF.OPCODE_TEXT))
    opcode, frame = ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 1007


@pytest.fixture
def model_ws():
    with sim_model_socket(KEY) as (model, conn):
        yield model, conn


def _append(audio: bytes) -> str:
    return ujson.dumps({"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(audio).decode()})


def _masked_frame(text: str, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    data = text.encode()
    header = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else \
        bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(data))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_appends_decoded_in_c_whole_or_split_across_reads(model_ws):
    model, conn = model_ws
    audio = bytes(range(256)) * 2
    whole = _masked_frame(_append(audio[:160]))
    split = _masked_frame(_append(audio[:400]))                # 16-bit length
    conn.sock.sendall(whole + whole)                           # both buffered: one read each
    for cut in (1, 3, 5, 20):                                  # header or payload cut short
        conn.sock.sendall(split[:cut])
        time.sleep(0.02)
        conn.sock.sendall(split[cut:])
    session = model.sessions[0]
    model.wait_until(lambda: session.appends == 6)
    assert session.audio_bytes_received == 2 * 160 + 4 * 400
    assert session.buffer.take() == audio[:160] * 2 + audio[:400] * 4
    assert session.errors_sent == type(session.errors_sent)()


@pytest.mark.parametrize("text,code", [
    ('{"type":"input_audio_buffer.append","audio":"QUJ"}', "invalid_value"),      # truncated
    ('{"type":"input_audio_buffer.append","audio":"QU*D"}', "invalid_value"),
    ('{"type":"input_audio_buffer.append","audio":"QUJD"', "invalid_json"),       # broken JSON
    ('{"type":"input_audio_buffer.append","audio":"QUJD","x":1}', "unknown_parameter"),
])
def test_bad_appends_get_the_same_errors_as_before(model_ws, text, code):
    model, conn = model_ws
    conn.send(text)
    assert _answer(conn)["code"] == code
    assert model.sessions[0].appends == 0


def test_append_with_an_event_id_takes_the_general_path_and_is_heard(model_ws):
    model, conn = model_ws
    conn.send('{"type":"input_audio_buffer.append","audio":"QUJD","event_id":"e1"}')
    conn.send(_append(b"xyz"))
    session = model.sessions[0]
    model.wait_until(lambda: session.appends == 2)
    assert session.buffer.take() == b"ABCxyz"
