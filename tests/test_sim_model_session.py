"""The simulated model's sans-IO core: validation, VAD, script, session — no sockets, no sleeps.

Time is a plain number passed in; every event a session emits is validated against the
`openai` package's server-event models.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any, Optional

import pytest
import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from realtime_schema import UnknownFieldError, validate_client_event, validate_server_event

from relay import _g711
from relay.sim import speech
from relay.sim.model import validation
from relay.sim.model.audio import PCMU
from relay.sim.model.faults import Fault
from relay.sim.model.handshake import Rejection, check_connection
from relay.sim.model.input_buffer import InputAudioBuffer
from relay.sim.model.script import Script
from relay.sim.model.session import RealtimeSession
from relay.sim.model.vad import STARTED, STOPPED, Vad, threshold_dbov

PHRASES = ["I would like a refund for my order", "Please transfer me to sales"]


class Driver:
    """A session and a fake clock; collects and validates everything the session emits."""

    def __init__(self, script: Optional[dict] = None, **kwargs: Any) -> None:
        self.now = 0.0
        self.session = RealtimeSession(script=Script.from_dict(script), now=0.0,
                                       wall_time=1_700_000_000.0, **kwargs)
        self.events = self._check(self.session.open())

    @staticmethod
    def _check(events: list[dict]) -> list[dict]:
        for event in events:
            validate_server_event(ujson.loads(ujson.dumps(event)))
        return events

    def send(self, event: Any) -> list[dict]:
        text = event if isinstance(event, str) else ujson.dumps(event)
        out = self._check(self.session.receive(text, self.now))
        self.events.extend(out)
        return out

    def advance(self, seconds: float, step: float = 0.01) -> list[dict]:
        """Run the clock forward, ticking at every deadline on the way."""
        out: list[dict] = []
        end = self.now + seconds
        while True:
            deadline = self.session.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            out.extend(self._check(self.session.tick(self.now)))
        self.now = end
        out.extend(self._check(self.session.tick(self.now)))
        self.events.extend(out)
        return out

    def append(self, audio: bytes, frame: int = 160) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(audio), frame):
            out.extend(self.send({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(audio[i:i + frame]).decode()}))
        return out

    def configure(self, **session: Any) -> dict:
        out = self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        assert [e["type"] for e in out] == ["session.updated"], out
        return out[0]["session"]


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def error_of(events: list[dict]) -> dict:
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert len(errors) == 1, events
    return errors[0]


def pcmu(transcription: bool = True, turn_detection: Any = "vad") -> dict:
    audio_in: dict = {"format": {"type": "audio/pcmu"}}
    if turn_detection == "vad":
        audio_in["turn_detection"] = {"type": "server_vad"}
    else:
        audio_in["turn_detection"] = turn_detection
    if transcription:
        audio_in["transcription"] = {"model": "gpt-4o-transcribe"}
    return {"audio": {"input": audio_in, "output": {"format": {"type": "audio/pcmu"}}}}


def turn(text: str) -> bytes:
    return b"\xff" * 1600 + speech.utterance_ulaw(text) + b"\xff" * 6400


# ---- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("event,code,param", [
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu", "rate": 8000}}}}}, "unknown_parameter",
     "session.audio.input.format.rate"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
                                                    "content": [{"type": "input_text",
                                                                 "text": "x"}]}},
     "invalid_value", "item.content[0].type"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                    "content": [{"type": "input_text",
                                                                 "text": "x", "foo": 1}]}},
     "unknown_parameter", "item.content[0].foo"),
    ({"session": {}}, "missing_required_parameter", "type"),
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    ({"type": "session.update", "session": {"type": "realtime", "instructions": 5}},
     "invalid_type", "session.instructions"),
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "threshold": 2.0}}}}}, "invalid_value",
     "session.audio.input.turn_detection.threshold"),
    ({"type": "response.create", "response": {"max_output_tokens": 99999}}, "invalid_value",
     "response.max_output_tokens"),
    ({"type": "response.cancel", "extra": True}, "unknown_parameter", "extra"),
])
def test_validation_errors(event, code, param):
    with pytest.raises(validation.EventError) as info:
        validation.validate({**event, "event_id": "e9"})
    assert (info.value.code, info.value.param, info.value.event_id) == (code, param, "e9")


def test_valid_events_pass_both_validators():
    events = [
        {"type": "session.update", "session": {"type": "realtime", **pcmu(),
                                                "tools": [{"type": "function", "name": "f",
                                                           "parameters": {"type": "object",
                                                                          "x-any": 1}}],
                                                "tool_choice": "auto",
                                                "max_output_tokens": "inf"}},
        {"type": "response.create", "response": {"instructions": "hi", "metadata": {"k": "v"},
                                                  "conversation": "none"}},
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
         "audio_end_ms": 0},
    ]
    for event in events:
        validation.validate(event)
        validate_client_event(event)


def test_schema_helper_rejects_unknown_fields():
    with pytest.raises(UnknownFieldError, match=r"session\.voice"):
        validate_client_event({"type": "session.update",
                               "session": {"type": "realtime", "voice": "marin"}})
    validate_client_event({"type": "session.update",
                           "session": {"type": "realtime", "voice": "marin"}}, strict=False)


def test_append_fast_path():
    assert validation.decode_append({"type": "input_audio_buffer.append",
                                     "audio": "AAEC", "event_id": "x"}) == b"\x00\x01\x02"
    for bad, code in [({"type": "input_audio_buffer.append"}, "missing_required_parameter"),
                      ({"type": "input_audio_buffer.append", "audio": 5}, "invalid_type"),
                      ({"type": "input_audio_buffer.append", "audio": "A"}, "invalid_value"),
                      ({"type": "input_audio_buffer.append", "audio": "", "x": 1},
                       "unknown_parameter")]:
        with pytest.raises(validation.EventError) as info:
            validation.decode_append(bad)
        assert info.value.code == code


# ---- VAD and the input buffer --------------------------------------------------------------------

def test_vad_edges_in_audio_time():
    vad = Vad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=100, min_speech_ms=40)
    assert threshold_dbov(0.5) == -35.0
    levels = [-127.0] * 10 + [-20.0] * 5 + [-127.0] * 3 + [-20.0] + [-127.0] * 6
    edges = []
    for i, level in enumerate(levels):
        edge = vad.feed(level, (i + 1) * 20)
        if edge:
            edges.append((edge, (i + 1) * 20))
    # voiced from 200 ms; confirmed at 240 ms; a 60 ms gap is not the end; 100 ms of silence is
    assert edges == [(STARTED, 240), (STOPPED, 480)]
    assert not vad.speaking


def test_input_buffer_stays_bounded_in_silence_and_gives_the_turn():
    buf, vad = InputAudioBuffer(PCMU), Vad()
    for _ in range(3000):  # 60 s of silence
        assert buf.append(b"\xff" * 160, vad) is None
    assert buf.received_ms == 60_000
    assert buf.buffered_ms < 1000
    edges, turn_audio = [], b""
    audio = speech.utterance_ulaw(PHRASES[0]) + b"\xff" * 4800
    for i in range(0, len(audio), 160):
        for edge, ms in buf.append(audio[i:i + 160], vad) or ():
            edges.append((edge, ms))
            if edge == STOPPED:  # the session takes the turn at once, as here
                turn_audio = buf.take(edges[0][1], ms)
    (started, start_ms), (stopped, end_ms) = edges
    assert (started, stopped) == (STARTED, STOPPED)
    assert 59_700 <= start_ms < 60_100
    assert len(turn_audio) == 8 * (end_ms - start_ms)
    assert speech.identify(turn_audio, PHRASES) == PHRASES[0]
    assert buf.buffered_ms < 1000


# ---- script --------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,message", [
    ({"rules": [{"match": "("}]}, "rules[0].match"),
    ({"rules": [{"keywords": ["x"]}]}, "says nothing"),
    ({"default": {"calls": [{"name": "f", "arguments": "{not json"}]}}, "not JSON"),
    ({"transcription": {"mode": "sometimes"}}, "transcription.mode"),
    ({"chunk_ms": 5}, "chunk_ms"),
    ({"surprise": 1}, "script.surprise"),
])
def test_script_errors_name_the_path(data, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Script.from_dict(data)


def test_script_matching():
    script = Script.from_dict({"rules": [{"match": r"\brefund", "say": "refund"},
                                         {"keywords": ["Sales"], "say": "sales"}],
                               "default": "default"})
    assert script.reply_for("I want a REFUND").say == "refund"
    assert script.reply_for("transfer to sales please").say == "sales"
    assert script.reply_for("nothing").say == "default"


# ---- sessions ------------------------------------------------------------------------------------

def test_session_update_errors_leave_the_config_alone():
    d = Driver()
    before = d.session.config
    out = d.send({"type": "session.update", "event_id": "x", "session": {
        "type": "realtime", "instructions": "new", "model": "gpt-realtime-2"}})
    assert error_of(out)["param"] == "session.model"
    assert d.session.config is before
    assert d.configure(instructions="")["instructions"] == ""  # "" clears
    assert d.configure(tools=[])["tools"] == []


def test_delayed_transcription_arrives_on_tick():
    d = Driver({"phrasebook": PHRASES, "transcription": {"delay_ms": 300}})
    d.configure(**pcmu())
    out = d.append(turn(PHRASES[1]))
    assert "conversation.item.input_audio_transcription.completed" not in types(out)
    assert "response.created" in types(out)
    early = d.advance(0.29)
    assert "conversation.item.input_audio_transcription.completed" not in types(early)
    later = d.advance(0.02)
    completed = [e for e in later
                 if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [c["transcript"] for c in completed] == [PHRASES[1]]


def test_two_function_calls_then_the_follow_up():
    d = Driver({"default": {"calls": [{"name": "a", "arguments": {"n": 1}},
                                      {"name": "b", "arguments": "{\"m\": 2}"}],
                            "then": "Outputs: {output}."}})
    d.send({"type": "response.create"})  # no speech, no latency: the response is done at once
    done = d.events[-1]
    calls = done["response"]["output"]
    assert [(c["name"], c["arguments"]) for c in calls] == [("a", '{"n":1}'), ("b", '{"m": 2}')]
    assert [e["output_index"] for e in d.events
            if e["type"] == "response.function_call_arguments.done"] == [0, 1]
    for call, output in zip(calls, ["one", "two"]):
        d.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": output}})
    d.send({"type": "response.create"})
    final = d.advance(5.0)[-1]
    assert final["response"]["output"][0]["content"][0]["transcript"] == "Outputs: two."


def test_items_create_delete_retrieve_and_order():
    d = Driver()
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    d.send({"type": "conversation.item.create", "item": {**user, "id": "a"}})
    out = d.send({"type": "conversation.item.create", "previous_item_id": "root",
                  "item": {**user, "id": "b"}})
    assert out[0]["previous_item_id"] is None
    assert [i["id"] for i in d.session.conversation] == ["b", "a"]
    assert error_of(d.send({"type": "conversation.item.create", "previous_item_id": "zz",
                            "item": user}))["param"] == "previous_item_id"
    assert error_of(d.send({"type": "conversation.item.create",
                            "item": {**user, "id": "a"}}))["param"] == "item.id"
    assert types(d.send({"type": "conversation.item.retrieve", "item_id": "a"})) == \
        ["conversation.item.retrieved"]
    assert types(d.send({"type": "conversation.item.delete", "item_id": "a"})) == \
        ["conversation.item.deleted"]
    assert error_of(d.send({"type": "conversation.item.delete", "item_id": "a"}))["code"] == \
        "invalid_value"
    assert [i["id"] for i in d.session.conversation.history] == ["a", "b"]  # kept for tests
    truncate = {"type": "conversation.item.truncate", "item_id": "b", "content_index": 0,
                "audio_end_ms": 0}
    assert error_of(d.send(truncate))["code"] == "unsupported_content_type"


def test_out_of_band_text_response_and_failure():
    d = Driver({"rules": [{"keywords": ["summary"], "say": "A short summary."},
                          {"keywords": ["break"], "fail": {"code": "server_error"}}]})
    d.send({"type": "response.create", "response": {
        "conversation": "none", "output_modalities": ["text"], "metadata": {"purpose": "x"},
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "a summary please"}]}]}})
    out = d.advance(1.0)
    assert "conversation.item.added" not in types(out)
    assert "response.output_text.done" in types(out)
    done = out[-1]["response"]
    assert done["conversation_id"] is None and done["metadata"] == {"purpose": "x"}
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "A short summary."}]
    assert len(d.session.conversation) == 0
    d.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text",
                                                        "text": "break it"}]}})
    failed = d.send({"type": "response.create"})[-1]["response"]
    assert failed["status"] == "failed" and failed["status_details"]["type"] == "failed"


def test_client_cancel_and_a_second_cancel():
    d = Driver({"greeting": "Hello and welcome to the simulated call centre.",
                "chunk_interval_ms": 100, "chunk_ms": 100})
    d.configure(**pcmu())
    d.send({"type": "response.create"})
    d.advance(0.25)
    out = d.send({"type": "response.cancel"})
    assert out[-1]["response"]["status_details"] == {"type": "cancelled",
                                                     "reason": "client_cancelled"}
    assert error_of(d.send({"type": "response.cancel"}))["code"] == "response_cancel_not_active"
    assert d.advance(5.0) == []


def test_interrupt_response_false_lets_the_response_finish():
    d = Driver({"phrasebook": PHRASES, "greeting": "Welcome to the simulated call centre, how "
                "may I direct your call today?", "chunk_interval_ms": 100, "chunk_ms": 100})
    d.configure(**pcmu(turn_detection={"type": "server_vad", "interrupt_response": False,
                                       "create_response": False}))
    d.send({"type": "response.create"})
    d.advance(0.2)
    out = d.append(turn(PHRASES[0]))
    assert "input_audio_buffer.speech_started" in types(out)
    assert "response.done" not in types(out)
    assert d.advance(10.0)[-1]["response"]["status"] == "completed"


def test_pcma_is_recognised_by_its_envelope():
    d = Driver({"phrasebook": PHRASES})
    d.configure(audio={"input": {"format": {"type": "audio/pcma"},
                                 "transcription": {"model": "whisper-1"},
                                 "turn_detection": {"type": "server_vad"}}})
    pcm = b"\0\0" * 1600 + speech.utterance_pcm(PHRASES[1]) + b"\0\0" * 6400
    out = d.append(_g711.alaw_encode(pcm))
    completed = [e for e in out
                 if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [c["transcript"] for c in completed] == [PHRASES[1]]


def test_expiry_on_tick():
    d = Driver(session_limit_s=2.0)
    assert d.session.next_deadline() == 2.0
    out = d.advance(2.0)
    assert error_of(out)["code"] == "session_expired"
    assert d.session.close_request == (1001, "invalid_request_error.session_expired")
    assert d.session.next_deadline() is None
    assert d.send({"type": "response.create"}) == []


def test_records_are_bounded_and_appends_only_counted():
    d = Driver(record_limit=5)
    for i in range(20):
        d.send({"type": "conversation.item.retrieve", "item_id": f"none{i}"})
    d.append(b"\xff" * 1600)
    assert len(d.session.client_events) == 5 and len(d.session.errors_sent) == 5
    assert d.session.appends == 10
    assert d.session.inspect()["audio_ms_received"] == 1600 // 48  # default: 24 kHz PCM


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["type", "session", "item", "audio", "event_id",
                                       "response", "item_id", "x"]), children, max_size=4),
    max_leaves=10)
_types = st.sampled_from(["session.update", "response.create", "conversation.item.create",
                          "input_audio_buffer.append", "conversation.item.truncate",
                          "response.cancel", "input_audio_buffer.commit", "bogus"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(lambda t, extra: ujson.dumps({"type": t, **extra}), _types,
              st.dictionaries(st.sampled_from(["session", "item", "audio", "event_id",
                                               "response", "item_id", "audio_end_ms",
                                               "content_index", "zzz"]),
                              _json_values, max_size=3))), max_size=8))
def test_any_input_gets_valid_events_and_never_raises(messages):
    d = Driver()
    for message in messages:
        for event in d.send(message):
            if event["type"] == "error":
                assert event["error"]["message"]


# ---- handshake and faults ------------------------------------------------------------------------

def test_handshake_checks():
    ok = {"authorization": "Bearer k1"}
    assert check_connection(ok, {"model": "gpt-realtime-2"}, "k1") == "gpt-realtime-2"
    assert check_connection(ok, {}, "k1") == "gpt-realtime"
    for headers, query, code in [({}, {}, 3000), ({"authorization": "Bearer k2"}, {}, 3000),
                                 ({**ok, "openai-beta": "realtime=v1"}, {}, 4000),
                                 (ok, {"model": "gpt-4o-realtime-preview"}, 3000)]:
        verdict = check_connection(headers, query, "k1")
        assert isinstance(verdict, Rejection) and verdict.close_code == code
        validate_server_event({"type": "error", "event_id": "e", "error": verdict.error})


def test_fault_descriptions():
    assert Fault.from_dict({"kind": "delay", "delay_ms": 5}).fires_before("anything")
    assert not Fault("error", on_event="response.done").fires_before("response.created")
    for bad in [{"kind": "explode"}, {"kind": "drop", "when": 1}, {"kind": "delay",
                                                                    "delay_ms": -1}, []]:
        with pytest.raises(ValueError):
            Fault.from_dict(bad)


def test_ids_are_unique_per_session():
    a, b = Driver().session, Driver().session
    ids = [a.ids.new("item") for _ in range(100)] + [b.ids.new("item") for _ in range(100)]
    assert len(set(ids)) == 200 and a.id != b.id
    assert all(i.startswith("item_") for i in itertools.islice(ids, 5))
