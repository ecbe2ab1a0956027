"""The simulated PBX's originate of PJSIP callees (relay.sim.pbx.callees): the events and hangup
causes of each behaviour, in Asterisk's order and valid against the ARI Swagger, the originate
timeout, the AMD context, and the callee spec's validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from ari_swagger import AriSpec

from relay.sim.pbx.callees import MACHINE_SCRIPT, parse_callee
from relay.sim.pbx.model import AriError, NullMedia, Pbx
from relay.sim.pbx.timing import PbxTiming
from relay.sim.speech import utterance_ulaw

APP = "voicebot"


@pytest.fixture(scope="module")
def spec(reference_dir: Path) -> AriSpec:
    return AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")


@pytest.fixture
def pbx(spec: AriSpec):
    model = Pbx(NullMedia(), wall=lambda: 1795000000.25, now=100.0,
                timing=PbxTiming.instant(dial_ms=(50, 50)))
    model.register_app(APP, object())
    callees: dict = {}
    model.callee_for = callees.get
    model.callees = callees
    yield model
    problems = [p for _, e, _ in model.outbox for p in spec.validate_event(
        dict(e, application=APP))]
    assert not problems, problems[:5]


def seen(pbx: Pbx) -> list[tuple]:
    """(type, state or cause or dialstatus) of every event sent to the app."""
    out = []
    for _, e, _ in pbx.outbox:
        detail = e.get("dialstatus", e.get("cause", (e.get("channel") or {}).get("state")))
        out.append((e["type"], detail))
    return out


def originate(pbx: Pbx, name: str, timeout: int = 30):
    return pbx.originate(f"PJSIP/{name}", app=APP, app_args="relay-outbound", channel_id="O",
                         timeout=timeout, variables={"RELAY_APP": APP})


@pytest.mark.parametrize("behaviour, cause, dialstatus", [
    ("busy", 17, "BUSY"), ("reject", 21, "NOANSWER"), ("congestion", 34, "CONGESTION"),
    ("failure", 38, "NOANSWER")])
def test_a_refusal_rings_then_hangs_up_with_its_cause(pbx, behaviour, cause, dialstatus):
    pbx.callees["x"] = parse_callee({"answer": behaviour, "ring_ms": [200, 200]})
    ch = originate(pbx, "x")
    assert ch.state == "Down" and pbx.outbox == []      # the 200 comes first, ringing later
    pbx.advance(100.0)
    assert seen(pbx) == [("Dial", "")]
    pbx.advance(100.05)
    assert seen(pbx)[1:] == [("ChannelStateChange", "Ringing"), ("Dial", "RINGING")]
    pbx.advance(100.249)
    assert len(pbx.outbox) == 3
    pbx.advance(100.25)
    assert seen(pbx)[3:] == [("ChannelHangupRequest", cause), ("Dial", dialstatus),
                             ("ChannelDestroyed", cause)]
    assert pbx.channels == {}


def test_no_answer_is_the_originate_timeout_cause_19_without_a_hangup_request(pbx):
    pbx.callees["x"] = parse_callee({"answer": "no_answer"})
    originate(pbx, "x", timeout=5)
    pbx.advance(104.9)
    assert "O" in pbx.channels
    pbx.advance(105.0)
    assert seen(pbx)[-1] == ("ChannelDestroyed", 19)
    assert "ChannelHangupRequest" not in [t for t, _ in seen(pbx)]
    assert pbx.channels == {}


def test_an_answer_after_the_timeout_never_comes(pbx):
    pbx.callees["x"] = parse_callee({"answer": "answer", "ring_ms": [6000, 6000]})
    originate(pbx, "x", timeout=5)
    pbx.advance(200.0)
    assert seen(pbx)[-1] == ("ChannelDestroyed", 19)
    assert "StasisStart" not in [t for t, _ in seen(pbx)]


def test_relay_hanging_up_a_ringing_channel_cancels_its_answer(pbx):
    pbx.callees["x"] = parse_callee({"answer": "answer", "ring_ms": [500, 500]})
    originate(pbx, "x")
    pbx.advance(100.1)
    pbx.hangup("O")
    pbx.advance(200.0)
    assert [t for t, _ in seen(pbx)][-2:] == ["ChannelHangupRequest", "ChannelDestroyed"]
    assert "StasisStart" not in [t for t, _ in seen(pbx)] and pbx.channels == {}


def test_answer_then_the_amd_context_then_stasis_with_the_result(pbx):
    pbx.callees["m"] = parse_callee({"answer": "machine", "ring_ms": [100, 100],
                                     "amd": {"after_ms": 2000}})
    originate(pbx, "m")
    pbx.advance(100.15)
    assert seen(pbx)[-3:] == [("Dial", "ANSWER"), ("ChannelVarset", "Up"), ("StasisStart", "Up")]
    pbx.outbox.clear()
    pbx.continue_in_dialplan("O", "relay-amd", "s", 1)
    pbx.advance(101.0)
    types = [t for t, _ in seen(pbx)]
    assert types[:3] == ["StasisEnd", "ChannelVarset", "ChannelDialplan"]   # still subscribed
    assert "StasisStart" not in types
    pbx.advance(102.15)
    start = pbx.outbox[-1][1]
    assert start["type"] == "StasisStart"
    assert start["args"] == ["relay-amd", "MACHINE", "LONGGREETING-2000-1500"]
    assert pbx.channels["O"].variables["AMDSTATUS"] == "MACHINE"


def test_the_amd_context_without_relay_app_fails_stasis_and_hangs_up(pbx):
    pbx.callees["h"] = parse_callee({"answer": "answer", "ring_ms": [0, 0]})
    pbx.originate("PJSIP/h", app=APP, channel_id="O")
    pbx.advance(100.1)
    pbx.continue_in_dialplan("O", "relay-amd", "s", 1)
    pbx.advance(110.0)
    assert seen(pbx)[-1] == ("ChannelDestroyed", 16) and pbx.channels == {}


def test_endpoint_errors_as_asterisk_answers_them(pbx):
    with pytest.raises(AriError) as err:
        pbx.originate("Foo/bar", app=APP)
    assert (err.value.status, err.value.message) == (500, "Allocation failed")
    with pytest.raises(AriError) as err:
        pbx.originate("PJSIP", app=APP)
    assert (err.value.status, err.value.message) == (400, "Invalid endpoint specified")


@pytest.mark.parametrize("spec_, message", [
    ({"answer": "maybe"}, "answer must be one of"),
    ({"answer": "busy", "colour": 1}, "unknown callee key"),
    ({"answer": "busy", "ring_ms": [5, 1]}, "ring_ms"),
    ({"amd": {"status": "ROBOT"}}, "amd status"),
    ({"amd": {"after_ms": -1}}, "after_ms"),
    ("busy", "a callee is an object"),
])
def test_bad_callee_specs_say_what_is_wrong(spec_, message):
    with pytest.raises(ValueError, match=message):
        parse_callee(spec_)


def test_a_machine_result_waits_for_its_greeting_and_beep():
    callee = parse_callee({"answer": "machine", "script": {"steps": [
        {"pause_ms": 1500}, {"tone": 1000, "ms": 500}, {"wait_hangup": {}}]}})
    assert callee.amd_after_ms == 1500 + 500 + 1000
    greeting = parse_callee({"answer": "machine"})       # a spoken greeting, then a beep
    said = len(utterance_ulaw(MACHINE_SCRIPT["steps"][0]["say"])) / 8.0
    assert said > 3000 and greeting.amd_after_ms == said + 600 + 1000
    assert parse_callee({"steps": []}).behaviour == "answer"
