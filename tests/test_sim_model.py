"""The simulated Realtime model over real WebSockets on 127.0.0.1 (websocket-client).

Every server event received in these scenarios is validated against the `openai` package's
server-event models (tests/realtime_schema.py); every well-formed client event we send is
validated strictly before sending. Waits are bounded by socket timeouts, never by sleeps.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
import ujson
import websocket
from realtime_schema import validate_client_event, validate_server_event

from relay import _g711
from relay.sim import speech
from relay.sim.model import Fault, SimModel
from relay.sim.model.faults import WRONG_SHAPES

KEY = "sk-test-sim-model"
ROOT = Path(__file__).resolve().parents[1]
SILENCE = b"\xff"  # one u-law sample of digital silence
CALLER_PHRASES = ["I would like a refund for my order", "Please transfer me to sales",
                  "What are your opening hours"]


class Closed(Exception):
    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code, self.reason = code, reason


class Client:
    """A test client: sends JSON events, receives and validates every server event."""

    def __init__(self, model: SimModel | str, key: str = KEY, extra_headers: tuple = (),
                 model_name: str = "gpt-realtime", timeout: float = 10.0) -> None:
        url = model if isinstance(model, str) else model.url
        headers = [f"Authorization: Bearer {key}", *extra_headers]
        self.ws = websocket.create_connection(f"{url}?model={model_name}", header=headers,
                                              timeout=timeout)
        self.events: list[dict] = []
        self.raw_texts: list[str] = []

    def send(self, event: dict, check: bool = True) -> None:
        if check:
            validate_client_event(event)
        self.ws.send(ujson.dumps(event))

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def recv(self) -> dict:
        opcode, frame = self.ws.recv_data_frame(True)
        data = frame.data
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            raise Closed(code, data[2:].decode("utf-8"))
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        self.raw_texts.append(text)
        event = ujson.loads(text)
        validate_server_event(event)
        self.events.append(event)
        return event

    def wait_for(self, event_type: str, where: Callable[[dict], bool] = lambda e: True) -> dict:
        while True:
            event = self.recv()
            if event["type"] == event_type and where(event):
                return event

    def wait_closed(self) -> Closed:
        try:
            while True:
                self.recv()
        except Closed as closed:
            return closed

    def configure(self, **session: Any) -> dict:
        self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return self.wait_for("session.updated")["session"]

    def append(self, audio: bytes, frame: int = 160) -> None:
        for i in range(0, len(audio), frame):
            self.ws.send(ujson.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(audio[i:i + frame]).decode()}))

    def barrier(self) -> list[dict]:
        """Round trip: everything the server sent before it answered a harmless bad event."""
        start = len(self.events)
        self.send({"type": "conversation.item.retrieve", "item_id": "item_none",
                   "event_id": "barrier"})
        while True:
            event = self.recv()
            if event["type"] == "error" and event["error"].get("event_id") == "barrier":
                return self.events[start:-1]

    def close(self) -> None:
        self.ws.close()


def pcmu_session(transcription: bool = True, **turn: Any) -> dict:
    audio_in: dict = {"format": {"type": "audio/pcmu"},
                      "turn_detection": {"type": "server_vad", "silence_duration_ms": 500, **turn}}
    if transcription:
        audio_in["transcription"] = {"model": "gpt-4o-transcribe", "language": "en"}
    return {"output_modalities": ["audio"], "instructions": "You are a phone agent.",
            "audio": {"input": audio_in,
                      "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}


def caller_turn(text: str) -> bytes:
    """Speech-like u-law for `text`, with 200 ms of silence before and 800 ms after."""
    return SILENCE * 1600 + speech.utterance_ulaw(text) + SILENCE * 6400


def delta_audio(events: list[dict], item_id: Optional[str] = None) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta"
                    and (item_id is None or e["item_id"] == item_id))


def shape(events: list[dict]) -> list[str]:
    """Event types in order, transcription events left out, runs of deltas as one 'deltas'."""
    out: list[str] = []
    for e in events:
        kind = e["type"]
        if kind.startswith("conversation.item.input_audio_transcription."):
            continue
        if kind in ("response.output_audio.delta", "response.output_audio_transcript.delta"):
            kind = "deltas"
        if not (out and out[-1] == kind == "deltas"):
            out.append(kind)
    return out


SPOKEN_RESPONSE = ["response.created", "rate_limits.updated", "response.output_item.added",
                   "conversation.item.added", "response.content_part.added", "deltas",
                   "response.output_audio.done", "response.output_audio_transcript.done",
                   "response.content_part.done", "response.output_item.done",
                   "conversation.item.done", "response.done"]
VAD_TURN = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]

SCRIPT = {
    "greeting": "Thank you for calling. How can I help you today?",
    "phrasebook": CALLER_PHRASES,
    "default_transcript": "(unclear)",
    "rules": [
        {"match": "refund", "say": "Sure, I can help you with a refund."},
        {"keywords": ["transfer"], "say": "One moment please.",
         "calls": [{"name": "transfer_call", "arguments": {"dept": "sales"}}],
         "then": "You are now connected to {output}."},
    ],
    "default": "I see. Tell me more.",
    "chunk_ms": 200, "chunk_interval_ms": 2,
}


@pytest.fixture
def model():
    with SimModel(api_key=KEY, script=SCRIPT) as sim:
        yield sim
    assert sim.greenlet_count == 0 and sim.connection_count == 0


@pytest.fixture
def client(model):
    c = Client(model)
    created = c.wait_for("session.created")
    assert created["session"]["id"] == model.sessions[-1].id
    yield c
    c.close()


# ---- connecting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["sk-wrong-key-123456", ""])
def test_bad_key_gets_error_then_close_3000(model, key):
    c = Client(model, key=key)
    error = c.recv()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "invalid_api_key"
    closed = c.wait_closed()
    assert (closed.code, closed.reason) == (3000, "invalid_request_error.invalid_api_key")
    assert model.sessions == []


def test_beta_header_gets_error_then_close_4000(model):
    c = Client(model, extra_headers=("OpenAI-Beta: realtime=v1",))
    assert c.recv()["error"]["code"] == "beta_api_shape_disabled"
    assert c.wait_closed().code == 4000


def test_unknown_model_is_refused(model):
    c = Client(model, model_name="gpt-4o-realtime-preview")
    assert c.recv()["error"]["code"] == "model_not_found"
    assert c.wait_closed().code == 3000


def test_session_created_has_the_full_session(client, model):
    session = client.events[0]["session"]
    assert session["object"] == "realtime.session" and session["type"] == "realtime"
    assert session["id"].startswith("sess_") and session["model"] == "gpt-realtime"
    assert isinstance(session["expires_at"], int)
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


# ---- session.update and validation --------------------------------------------------------------

def test_session_update_applies_only_the_fields_sent(client, model):
    first = client.configure(**pcmu_session())
    assert first["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert first["instructions"] == "You are a phone agent."
    td = first["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 500 and td["prefix_padding_ms"] == 300  # default filled
    second = client.configure(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                  "threshold": 0.7}}})
    assert second["instructions"] == "You are a phone agent."
    assert second["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert second["audio"]["input"]["turn_detection"]["threshold"] == 0.7
    assert second["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert second["id"] == first["id"] and second["object"] == "realtime.session"
    assert model.sessions[-1].config == second


@pytest.mark.parametrize("session,param", [
    ({"type": "realtime", "input_audio_format": "pcm16"}, "session.input_audio_format"),
    ({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                 "eagerness": "low"}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"type": "realtime", "tools": [{"type": "function", "name": "x", "strict": True}]},
     "session.tools[0].strict"),
])
def test_unknown_parameter_refuses_the_whole_update(client, model, session, param):
    before = model.sessions[-1].config
    client.send({"type": "session.update", "event_id": "evt_42", "session": {
        **session, "instructions": "changed"}}, check=False)
    error = client.wait_for("error")["error"]
    assert error["code"] == "unknown_parameter"
    assert error["param"] == param
    assert error["event_id"] == "evt_42"
    assert model.sessions[-1].config == before  # nothing applied
    assert model.sessions[-1].client_events[-1]["event_id"] == "evt_42"


@pytest.mark.parametrize("event,code,param", [
    ({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0},
     "missing_required_parameter", "audio_end_ms"),
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {
        "voice": "robot"}}}}, "invalid_value", "session.audio.output.voice"),
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcm"}}}}}, "missing_required_parameter",
     "session.audio.input.format.rate"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                    "content": [{"type": "input_text"}]}},
     "missing_required_parameter", "item.content[0].text"),
    ({"type": "response.create", "response": {"output_modalities": ["audio", "text"]}},
     "invalid_value", "response.output_modalities"),
    ({"type": "no.such.event"}, "invalid_value", "type"),
    ({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
      "audio_end_ms": "10"}, "invalid_type", "audio_end_ms"),
])
def test_invalid_events_get_the_service_errors(client, event, code, param):
    client.send({**event, "event_id": "evt_bad"}, check=False)
    error = client.wait_for("error")["error"]
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "evt_bad")


def test_broken_json_is_an_error_and_the_session_goes_on(client):
    client.send_raw('{"type": "session.update", "session": ')
    assert client.wait_for("error")["error"]["code"] == "invalid_json"
    client.send_raw("[1, 2]")
    assert client.wait_for("error")["error"]["code"] == "invalid_json"
    assert client.configure(instructions="still here")["instructions"] == "still here"


def test_bad_append_is_refused_without_breaking_the_session(client, model):
    client.send({"type": "input_audio_buffer.append", "audio": "***", "event_id": "a1"},
                check=False)
    assert client.wait_for("error")["error"]["param"] == "audio"
    client.send({"type": "input_audio_buffer.append", "audio": "AAAA", "extra": 1},
                check=False)
    assert client.wait_for("error")["error"]["code"] == "unknown_parameter"
    client.configure(instructions="ok")


# ---- a server-VAD turn ---------------------------------------------------------------------------

def test_full_vad_turn_from_speech(client, model):
    client.configure(**pcmu_session())
    start = len(client.events)
    client.append(caller_turn("I would like a refund for my order"))
    done = client.wait_for("response.done")
    turn = client.events[start:]
    assert shape(turn) == VAD_TURN + SPOKEN_RESPONSE
    started = next(e for e in turn if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in turn if e["type"] == "input_audio_buffer.speech_stopped")
    # audio time: speech begins after 200 ms of silence (+ the phrase's lead-in), minus 300 ms
    # of prefix padding; it ends 500 ms of silence after the phrase's last voiced frame
    assert started["audio_start_ms"] == 0
    duration = speech.duration_ms_for("I would like a refund for my order")
    assert duration < stopped["audio_end_ms"] <= 200 + duration + 500
    assert started["item_id"] == stopped["item_id"]
    committed = next(e for e in turn if e["type"] == "input_audio_buffer.committed")
    assert committed["item_id"] == started["item_id"]
    # transcription, from the phrasebook
    transcripts = [e for e in turn if e["type"] ==
                   "conversation.item.input_audio_transcription.completed"]
    assert [t["transcript"] for t in transcripts] == ["I would like a refund for my order"]
    assert transcripts[0]["item_id"] == started["item_id"]
    # the reply: scripted text, real speech-like audio of the right length
    reply = "Sure, I can help you with a refund."
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens"] > 0
    item_id = done["response"]["output"][0]["id"]
    audio = delta_audio(turn, item_id)
    assert len(audio) == 8 * speech.duration_ms_for(reply)
    assert audio == speech.utterance_ulaw(reply, voice="assistant")
    transcript = "".join(e["delta"] for e in turn
                         if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == reply
    session = model.sessions[-1]
    assert [i["role"] for i in session.conversation] == ["user", "assistant"]
    assert list(session.conversation)[0]["content"][0]["transcript"] == \
        "I would like a refund for my order"


def test_unrecognised_speech_uses_the_default_transcript(client):
    client.configure(**pcmu_session())
    client.append(caller_turn("Something nobody scripted at all"))
    completed = client.wait_for("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "(unclear)"
    done = client.wait_for("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == "I see. Tell me more."


def test_transcription_can_fail_or_be_omitted(model):
    model.script = {**SCRIPT, "transcription": {"per_phrase": {
        "What are your opening hours": {"mode": "fail"},
        "I would like a refund for my order": {"mode": "omit"}}}}
    c = Client(model)
    c.configure(**pcmu_session())
    c.append(caller_turn("What are your opening hours"))
    failed = c.wait_for("conversation.item.input_audio_transcription.failed")
    assert failed["error"]["code"] == "audio_unintelligible"
    c.wait_for("response.done")
    start = len(c.events)
    c.append(caller_turn("I would like a refund for my order"))
    done = c.wait_for("response.done")
    assert not [e for e in c.events[start:] if "input_audio_transcription" in e["type"]]
    # the model still understood it (its reply follows the refund rule)
    assert "refund" in done["response"]["output"][0]["content"][0]["transcript"]
    c.close()


def test_without_turn_detection_the_client_commits(client, model):
    client.configure(**{**pcmu_session(), "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None,
        "transcription": {"model": "whisper-1"}}}})
    client.append(SILENCE * 400)  # 50 ms
    client.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
    error = client.wait_for("error")["error"]
    assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "c1")
    client.append(speech.utterance_ulaw("Please transfer me to sales"))
    client.send({"type": "input_audio_buffer.commit"})
    committed = client.wait_for("input_audio_buffer.committed")
    completed = client.wait_for("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "Please transfer me to sales"
    assert completed["item_id"] == committed["item_id"]
    later = client.barrier()
    assert not [e for e in later if e["type"].startswith(("response.", "input_audio_buffer.s"))]
    client.send({"type": "input_audio_buffer.clear"})
    client.wait_for("input_audio_buffer.cleared")


# ---- responses -----------------------------------------------------------------------------------

def test_assistant_speaks_first(client):
    client.configure(**pcmu_session())
    client.send({"type": "response.create", "response": {"instructions": "Greet the caller."}})
    done = client.wait_for("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == SCRIPT["greeting"]
    assert delta_audio(client.events) == speech.utterance_ulaw(SCRIPT["greeting"],
                                                               voice="assistant")


def test_function_call_turn(model):
    model.script = {**SCRIPT, "chunk_ms": 100, "chunk_interval_ms": 150}  # speaks for ~1.6 s
    c = Client(model)
    c.configure(**pcmu_session(), tools=[{
        "type": "function", "name": "transfer_call", "description": "Transfer the caller",
        "parameters": {"type": "object", "properties": {"dept": {"type": "string"}}}}])
    c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Please transfer me to sales"}]}})
    c.wait_for("conversation.item.done")
    c.send({"type": "response.create"})
    c.wait_for("response.output_audio.delta")
    c.send({"type": "response.create", "event_id": "too_early"})  # still speaking
    error = c.wait_for("error")["error"]
    assert (error["code"], error["event_id"]) == ("conversation_already_has_active_response",
                                                  "too_early")
    args = c.wait_for("response.function_call_arguments.done")
    assert args["name"] == "transfer_call" and ujson.loads(args["arguments"]) == {"dept": "sales"}
    item_done = c.wait_for("response.output_item.done",
                           lambda e: e["item"]["type"] == "function_call")
    assert item_done["item"]["call_id"] == args["call_id"]
    assert item_done["item"]["status"] == "completed"
    done = c.wait_for("response.done")
    assert [i["type"] for i in done["response"]["output"]] == ["message", "function_call"]
    model.script = SCRIPT  # fast pacing from now on, for the open session too
    c.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": args["call_id"], "output": "the sales desk"}})
    c.wait_for("conversation.item.done")
    c.send({"type": "response.create"})
    final = c.wait_for("response.done")
    assert final["response"]["output"][0]["content"][0]["transcript"] == \
        "You are now connected to the sales desk."
    outputs = [i for i in model.sessions[-1].conversation.history
               if i["type"] == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [(args["call_id"], "the sales desk")]
    c.send({"type": "conversation.item.create", "event_id": "bogus", "item": {
        "type": "function_call_output", "call_id": "call_nope", "output": "x"}})
    assert c.wait_for("error")["error"]["code"] == "invalid_tool_call_id"
    c.close()


def test_response_cancel_with_nothing_active(client):
    client.send({"type": "response.cancel", "event_id": "cx"})
    error = client.wait_for("error")["error"]
    assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "cx")


def test_barge_in_cancels_then_truncate(model):
    long_reply = ("Our opening hours are nine to five on weekdays, ten to four on Saturdays, "
                  "and we are closed on Sundays and public holidays.")
    model.script = {**SCRIPT, "greeting": long_reply, "chunk_ms": 100, "chunk_interval_ms": 100}
    c = Client(model)
    c.configure(**pcmu_session())
    c.send({"type": "response.create"})
    first = c.wait_for("response.output_audio.delta")
    response_id, item_id = first["response_id"], first["item_id"]
    c.append(caller_turn("What are your opening hours"))
    c.wait_for("input_audio_buffer.speech_started")
    done = c.wait_for("response.done")
    assert done["response"]["id"] == response_id
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["response"]["output"][0]["status"] == "incomplete"
    cancelled_at = c.events.index(done)
    c.barrier()  # everything sent after the cancel has arrived
    assert not [e for e in c.events[cancelled_at:] if e.get("response_id") == response_id]
    received_ms = len(delta_audio(c.events, item_id)) // 8
    assert 0 < received_ms < speech.duration_ms_for(long_reply)
    assert model.sessions[-1].conversation.audio_ms[item_id] == received_ms
    c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": received_ms // 2})
    truncated = c.wait_for("conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, received_ms // 2)
    c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": received_ms + 500, "event_id": "t2"})
    error = c.wait_for("error")["error"]
    assert error["message"] == (f"Audio content of {received_ms // 2}ms is already shorter "
                                f"than {received_ms + 500}ms")
    assert error["event_id"] == "t2"
    assert list(model.sessions[-1].truncations) == [(item_id, received_ms // 2)]
    c.close()


def test_voice_cannot_change_after_audio(client):
    client.configure(**pcmu_session())
    assert client.configure(audio={"output": {"voice": "cedar"}})["audio"]["output"][
        "voice"] == "cedar"  # no audio yet: allowed
    client.send({"type": "response.create"})
    client.wait_for("response.done")
    client.send({"type": "session.update", "event_id": "v1", "session": {
        "type": "realtime", "audio": {"output": {"voice": "marin"}}}})
    error = client.wait_for("error")["error"]
    assert (error["code"], error["event_id"]) == ("cannot_update_voice", "v1")
    same = client.configure(audio={"output": {"voice": "cedar"}})  # unchanged voice: fine
    assert same["audio"]["output"]["voice"] == "cedar"


def test_pcm_24khz_mode(client):
    client.configure(audio={
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": "gpt-4o-transcribe"},
                  "turn_detection": {"type": "server_vad"}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}})
    phrase = "Please transfer me to sales"
    pcm8 = b"\0\0" * 1600 + speech.utterance_pcm(phrase) + b"\0\0" * 8000
    client.append(_g711.Resampler(8000, 24000).process(pcm8), frame=960)
    stopped = client.wait_for("input_audio_buffer.speech_stopped")
    assert 1600 < stopped["audio_end_ms"] < 200 + speech.duration_ms_for(phrase) + 600
    completed = client.wait_for("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == phrase
    done = client.wait_for("response.done")
    assert done["response"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    audio = delta_audio(client.events)
    assert len(audio) == 48 * speech.duration_ms_for("One moment please.")


# ---- session limit, faults, control, lifecycle ---------------------------------------------------

def test_session_expiry_errors_then_closes_1001():
    with SimModel(api_key=KEY, session_limit_s=0.3) as sim:
        c = Client(sim)
        c.wait_for("session.created")
        error = c.wait_for("error")["error"]
        assert error["code"] == "session_expired"
        assert c.wait_closed().code == 1001
        sim.wait_until(lambda: sim.connection_count == 0)
        assert sim.sessions[-1].closed


def test_fault_drop_cuts_the_connection(client, model):
    model.inject(Fault("drop"))
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        client.recv()  # EOF, no close frame


def test_fault_error_and_malformed_then_session_goes_on(client, model):
    model.inject(kind="error", error={"code": "rate_limit_exceeded", "type": "rate_limit"})
    error = client.wait_for("error")["error"]
    assert error["code"] == "rate_limit_exceeded"
    model.inject(kind="malformed")
    _, frame = client.ws.recv_data_frame(True)
    with pytest.raises(ValueError):
        ujson.loads(frame.data)
    assert client.configure(instructions="after faults")["instructions"] == "after faults"
    assert model.sessions[-1].errors_sent[-1]["code"] == "rate_limit_exceeded"


def test_faults_for_the_next_session_on_an_event_and_over_http(model):
    reply = requests.post(f"{model.http_url}/sim/faults", timeout=5, json={
        "kind": "close", "target": "next", "on_event": "response.output_audio.delta",
        "close_code": 1011, "close_reason": "boom"})
    assert reply.status_code == 200 and reply.json()["ok"]
    requests.post(f"{model.http_url}/sim/faults", timeout=5,
                  json={"kind": "delay", "target": "next", "delay_ms": 50})
    bad = requests.post(f"{model.http_url}/sim/faults", timeout=5, json={"kind": "explode"})
    assert bad.status_code == 400
    c = Client(model)
    c.configure(**pcmu_session())
    c.send({"type": "response.create"})
    closed = c.wait_closed()
    assert (closed.code, closed.reason) == (1011, "boom")
    kinds = [e["type"] for e in c.events]
    assert "response.content_part.added" in kinds  # closed right before the first audio delta
    assert "response.output_audio.delta" not in kinds
    assert model.sessions[-1].faults_fired == ["delay", "close"]
    c2 = Client(model)  # the faults were for one session only
    c2.wait_for("session.created")
    c2.send({"type": "response.create"})
    c2.wait_for("response.done")
    c2.close()


def test_fault_stall_keeps_the_socket_open_and_sends_nothing(client, model):
    client.configure(**pcmu_session())
    [conn] = model._connections.values()
    session = model.sessions[-1]
    model.inject(kind="stall")
    client.send({"type": "response.create"})
    model.wait_until(lambda: len(session.responses) == 1)     # it answered, into the void
    assert conn.stalled_events > 0 and not session.closed and model.connection_count == 1
    assert session.faults_fired == ["stall"]
    assert session.sent_types["response.created"] == 0
    assert [e["type"] for e in session.client_events][-1] == "response.create"


def test_a_timed_stall_ends_and_events_flow_again(client, model):
    [conn] = model._connections.values()
    model.inject(kind="stall", delay_ms=100)
    model.wait_until(lambda: conn.stalled_until > 0)
    model.wait_until(lambda: model.clock() >= conn.stalled_until)
    assert client.configure(instructions="after the stall")["instructions"] == "after the stall"


def test_fault_drop_after_some_audio_deltas(client, model):
    client.configure(**pcmu_session())
    model.inject(kind="drop", on_event="response.output_audio.delta", count=3)
    client.send({"type": "response.create"})
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            client.recv()
    kinds = [e["type"] for e in client.events]
    assert kinds.count("response.output_audio.delta") == 2 and "response.done" not in kinds


def test_short_lived_sockets_every_new_connection_dies_at_once(model):
    model.inject(kind="drop", target="all")
    for _ in range(3):
        c = Client(model)
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            c.recv()                    # not even session.created
        c.close()
    model.wait_until(lambda: model.connection_count == 0)
    assert len(model.sessions) == 3
    assert all(s.faults_fired == ["drop"] and not s.sent_types for s in model.sessions)


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_fault_event_sends_json_of_the_wrong_shape(client, model, shape):
    model.inject(kind="event", shape=shape)
    _, frame = client.ws.recv_data_frame(True)
    assert ujson.loads(frame.data) == WRONG_SHAPES[shape]
    assert client.configure(instructions="still here")["instructions"] == "still here"
    with pytest.raises(ValueError):
        Fault(kind="event")                         # an event fault needs what to send


def test_fault_error_can_quote_the_clients_api_key(client, model):
    model.inject(kind="error", quote_key=True, error={"code": "server_error",
                                                      "message": "Refused"})
    error = client.wait_for("error")["error"]
    assert error["code"] == "server_error" and error["message"] == f"Refused: {KEY}"


def test_plain_http_on_the_realtime_path_needs_an_upgrade(model):
    reply = requests.get(f"{model.http_url}/v1/realtime", timeout=5)
    assert reply.status_code == 426
    assert requests.get(f"{model.http_url}/sim/health", timeout=5).json()["ok"]


def test_ping_is_answered(client):
    client.ws.ping(b"are you there")
    opcode, frame = client.ws.recv_data_frame(True)
    assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are you there")


def test_client_close_is_answered_with_its_code(client, model):
    client.ws.send_close(4321, b"client leaving")
    closed = client.wait_closed()
    assert (closed.code, closed.reason) == (4321, "client leaving")
    model.wait_until(lambda: model.connection_count == 0)
    assert model.sessions[-1].closed


def test_http_inspection(client, model):
    client.configure(instructions="inspect me")
    sessions = requests.get(f"{model.http_url}/sim/sessions", timeout=5).json()
    assert [s["id"] for s in sessions] == [model.sessions[-1].id]
    assert sessions[0]["open"]
    detail = requests.get(f"{model.http_url}/sim/sessions/{sessions[0]['id']}", timeout=5).json()
    assert detail["config"]["instructions"] == "inspect me"
    assert detail["client_events"][0]["type"] == "session.update"
    assert requests.get(f"{model.http_url}/sim/sessions/nope", timeout=5).status_code == 404
    assert requests.put(f"{model.http_url}/sim/script", timeout=5,
                        json={"default": "New default."}).json() == {"ok": True}
    assert model.script.default.say == "New default."
    assert requests.get(f"{model.http_url}/sim/script", timeout=5).json() == \
        {"default": "New default."}
    assert requests.put(f"{model.http_url}/sim/script", timeout=5,
                        json={"rules": "nope"}).status_code == 400


def test_stop_closes_everything():
    sim = SimModel(api_key=KEY).start()
    port = sim.port
    clients = [Client(sim) for _ in range(3)]
    for c in clients:
        c.wait_for("session.created")
    assert sim.connection_count == 3
    sim.stop()
    for c in clients:
        assert c.wait_closed().code == 1001
    assert sim.connection_count == 0 and sim.greenlet_count == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_cli_runs_until_sigterm(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(ujson.dumps({"greeting": "Hi from the CLI."}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "sim-model", "--port", "0", "--api-key", KEY,
         "--script", str(script), "--session-limit", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line, proc.stderr.read()
        c = Client(line.split()[3])
        c.wait_for("session.created")
        c.send({"type": "response.create"})
        done = c.wait_for("response.done")
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Hi from the CLI."
        proc.send_signal(signal.SIGTERM)
        assert c.wait_closed().code == 1001
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
