"""A model that misbehaves never leaves the caller in silence, and secrets never reach a log:
relay between the simulated PBX and a simulated model that injects faults, over real sockets.

- a socket dropped, closed with 1011 or expired in the middle of a response: the caller hears
  the answer without speaking again, and no item of the old socket is ever truncated;
- events of the wrong shape change nothing but a counter;
- a stalled model: "one moment" (the hold sound), then the apology, then the agent's ending;
- a service that drops every socket at once: a handful of attempts per call with growing
  delays, then the worker's breaker opens and new calls give up at once;
- a secret quoted in a model error: in no log line, transcript file, /ws message or API body.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gevent
import pytest
import stack as stack_module
import websocket
from stack import AGENTS_DIR, API_KEY, wait_for

from relay.metrics import render
from relay.sim.model.audio import speech_audio
from relay.sim.model.faults import WRONG_SHAPES
from relay.sim.pbx.server import SimPbx
from relay.sounds import load_sound
from relay.tools.registry import BUILTINS, Builtin
from relay.watchdog import DEFAULT_APOLOGY_SOUND, DEFAULT_HOLD_SOUND

HELLO = "Hello, I would like to check the status of my order."
ANSWER = "Sure. What is your order number?"
STOP = "Sorry, stop please."
LONG = ("Our opening hours are eight to six on weekdays and nine to one on Saturdays, "
        "and we are closed on Sundays and public holidays, except in December.")
SCRIPT = {
    "phrasebook": [HELLO, STOP],
    "rules": [{"keywords": ["status"], "say": ANSWER},
              {"keywords": ["stop"], "say": "Of course."}],
}
WATCHDOG = {"timeout_s": 1.0, "hold_s": 0.5, "give_up_s": 1.5}
ARI_PASSWORD = "ari-pass-9f2c71"


def agent(base: str, **changes) -> dict:
    data = json.loads((AGENTS_DIR / f"{base}.json").read_text())
    data.update(changes)
    return data


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    """The test agents, plus ones with a quick watchdog and each kind of ending."""
    folder = tmp_path / "agents"
    shutil.copytree(AGENTS_DIR, folder)
    quick = {
        "watchful": agent("default", watchdog=WATCHDOG),
        "watchful_greeter": agent("greeter", watchdog=WATCHDOG),
        "watchful_transfer": agent("default", watchdog={
            **WATCHDOG, "ending": {"endpoint": "PJSIP/desk"}}),
        "watchful_continue": agent("default", watchdog={
            **WATCHDOG, "ending": {"context": "operators", "extension": "9"}}),
    }
    for key, data in quick.items():
        (folder / f"{key}.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def make(stack, agents, monkeypatch):
    """A Stack whose agents are the ones above (and whose ARI password is distinctive)."""
    monkeypatch.setattr(stack_module, "SimPbx", lambda **kw: SimPbx(password=ARI_PASSWORD, **kw))

    def start(agent_key: str = "default", session_limit_s: float = 3600.0, **settings):
        return stack(model_script=SCRIPT, session_limit_s=session_limit_s, settings={
            "agent.configs_dir": str(agents), "agent.active": agent_key, **settings})

    return start


def heard(capture) -> bytes:
    return b"".join(p["payload"] for p in capture.packets())


def events_of(call) -> list[str]:
    return [e["text"] for e in call.transcript.entries() if e["kind"] == "event"]


def client_types(session) -> list[str]:
    return [e.get("type") for e in session.client_events]


# a socket replaced in the middle of a response -------------------------------------------------

FAULTS = {
    "drop": [{"kind": "drop"}],
    "close 1011": [{"kind": "close", "close_code": 1011, "close_reason": "server_error"}],
    "session expired": [
        {"kind": "error", "error": {"type": "invalid_request_error", "code": "session_expired",
                                    "message": "Your session hit the maximum duration of 60 "
                                               "minutes."}},
        {"kind": "close", "close_code": 1001,
         "close_reason": "invalid_request_error.session_expired"}],
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_answer_arrives_after_the_socket_ends_mid_response(make, fault):
    s = make()
    for spec in FAULTS[fault]:      # before the third audio delta of the first session's reply
        s.model.inject(target="next", on_event="response.output_audio.delta", count=3, **spec)
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"wait_agent_done": {"silence_ms": 1500, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 40)
    assert result["end_reason"] == "script ended"      # the caller was answered, then left
    first, second = s.model.sessions
    assert first.faults_fired == [spec["kind"] for spec in FAULTS[fault]]
    # the new socket got the conversation so far and was asked for the answer, once
    assert client_types(second).count("response.create") == 1
    assert [r["status"] for r in second.responses] == ["completed"]
    assert relay_call.session.resumed == 1 and relay_call.session.reconnects == 1
    # the caller heard the beginning of the cut reply, then the whole answer
    answer = speech_audio(ANSWER, "audio/pcmu")
    audio = heard(capture)
    assert audio.endswith(answer) and len(audio) > len(answer)
    assert relay_call.transcript.turns() == [("caller", HELLO), ("assistant", ANSWER)]
    # nothing refers to an item the new session does not have
    assert "conversation.item.truncate" not in client_types(second)
    assert not second.errors_sent
    assert relay_call.summary()["model_bad_events"] == 0


def test_a_barge_in_after_a_replacement_never_truncates_an_item_of_the_old_socket(make):
    s = make(agent_key="greeter")
    s.model.script = dict(SCRIPT, greeting=LONG)
    s.model.inject(kind="drop", target="next", on_event="response.output_audio.delta", count=10)
    call_id = s.call({"steps": [{"barge_in": STOP, "after_ms": 500},
                                {"wait_agent_done": {"silence_ms": 1000, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 40)
    first, second = s.model.sessions
    old_items = {item["id"] for item in first.conversation.history}
    assert relay_call.barge_ins >= 1
    [(cut_item, _)] = relay_call.truncations[:1]
    assert cut_item in old_items                     # the caller cut the old socket's reply
    truncated = [e.get("item_id") for e in second.client_events
                 if e.get("type") == "conversation.item.truncate"]
    assert not set(truncated) & old_items
    assert not [e for e in second.errors_sent if e.get("code") == "invalid_value"]
    assert ("assistant", "Of course.") in relay_call.transcript.turns()


# events of the wrong shape ----------------------------------------------------------------------

def test_events_of_the_wrong_shape_change_nothing_but_a_counter(make):
    s = make()
    call_id = s.call({"steps": [{"pause_ms": 1500}, {"say": HELLO},
                                {"wait_agent_done": {"silence_ms": 800, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active" and s.model.open_sessions(), 10, "the call")
    for shape in sorted(WRONG_SHAPES):
        s.model.inject(kind="event", shape=shape)
    wait_for(lambda: relay_call.watch.bad_events == len(WRONG_SHAPES), 10, "the bad events")
    s.wait_calls([call_id], 30)
    summary = s.finished(call_id)
    assert summary["transcript"] == [("caller", HELLO), ("assistant", ANSWER)]
    assert summary["model_bad_events"] == len(WRONG_SHAPES)
    assert summary["model_reconnects"] == 0 and summary["model_sockets"] == 1
    assert summary["model_errors"] == {}
    assert summary["watchdog"]["retries"] == 0
    assert s.worker.counters["model_bad_events"] == len(WRONG_SHAPES)
    assert f"relay_model_bad_events_total {len(WRONG_SHAPES)}" in render(s.worker)
    warnings = [e for e in relay_call.transcript.entries() if "unexpected shape" in e["text"]]
    assert len(warnings) == 1                        # said once per call, counted always


# a stalled model ---------------------------------------------------------------------------------

def sound(path: str) -> bytes:
    return load_sound(path, "ulaw")


@pytest.mark.parametrize("agent_key, ending", [
    ("watchful", {"continued": None, "redirected": None}),
    ("watchful_transfer", {"continued": None, "redirected": "PJSIP/desk"}),
    ("watchful_continue", {"continued": {"context": "operators", "extension": "9",
                                         "priority": 1}, "redirected": None}),
])
def test_a_model_that_stops_answering_gets_the_hold_sound_then_the_ending(make, agent_key,
                                                                          ending):
    s = make(agent_key=agent_key)
    # the model hears the caller's turn (speech_stopped, committed), then says nothing more
    s.model.inject(kind="stall", target="next", on_event="response.created")
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"wait_hangup": {"timeout_ms": 20000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 30)
    for key, value in ending.items():
        assert result[key] == value
    if agent_key == "watchful":
        assert result["end_reason"] == "hung up"          # by relay, not by the caller
    assert relay_call.end_reason.startswith("model unresponsive")
    # asked again once, then "one moment", then the apology, in that order, heard by the caller
    notes = [t for t in events_of(relay_call) if t.startswith("watchdog:")]
    assert [n.split(":")[1].split()[0] for n in notes] == ["no", "still", "giving"]
    [session] = s.model.sessions
    assert client_types(session).count("response.create") == 1     # the retry
    audio = heard(capture)
    hold, apology = sound(DEFAULT_HOLD_SOUND), sound(DEFAULT_APOLOGY_SOUND)
    assert hold in audio and apology in audio
    assert audio.index(hold) < audio.index(apology)
    assert audio.endswith(apology)                   # the apology was heard to its end
    counters = s.worker.counters["watchdog"]
    assert counters == {"retry": 1, "hold": 1, "giveup": 1}
    assert 'relay_watchdog_total{action="giveup"} 1' in render(s.worker)
    summary = s.finished(call_id)
    assert summary["watchdog"]["retries"] == 1 and summary["watchdog"]["gave_up"] is True


def test_a_model_stalled_from_the_first_moment(make):
    s = make(agent_key="watchful_greeter")
    s.model.inject(kind="stall", target="next", on_event="session.created")
    call_id = s.call({"steps": [{"wait_hangup": {"timeout_ms": 20000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert result["end_reason"] == "hung up"
    audio = heard(capture)
    hold, apology = sound(DEFAULT_HOLD_SOUND), sound(DEFAULT_APOLOGY_SOUND)
    assert audio.index(hold) < audio.index(apology)
    assert not relay_call.session.has_been_ready
    assert s.worker.counters["watchdog"]["giveup"] == 1


def test_a_model_that_never_configures_the_session_is_bounded_by_the_setup_timeout(make):
    s = make(agent_key="default", **{"call.setup_timeout_s": 1.5})
    s.model.inject(kind="stall", target="next", on_event="session.updated")
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"wait_hangup": {"timeout_ms": 20000}}]})
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert result["end_reason"] == "hung up"
    assert "call.setup_timeout_s" in relay_call.end_reason
    assert s.worker.counters["watchdog"] == {"giveup": 1}     # before the agent's 4 s limit


def _slow_lookup(ctx, args):
    gevent.sleep(1.6)           # longer than the agent's watchdog.timeout_s (1 s)
    return {"status": "shipped"}


def test_a_slow_tool_is_not_a_stalled_model(make, agents):
    BUILTINS.add(Builtin("test_slow_lookup", _slow_lookup, "Looks an order up, slowly."))
    try:
        (agents / "watchful_tools.json").write_text(json.dumps(agent(
            "default", watchdog=WATCHDOG, tools=[{"name": "test_slow_lookup"}])))
        s = make(agent_key="watchful_tools")
        s.model.script = dict(SCRIPT, rules=[{"keywords": ["status"], "calls": [
            {"name": "test_slow_lookup", "arguments": {}}], "then": "It shipped yesterday."}])
        call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                    {"wait_agent_done": {"silence_ms": 800,
                                                         "timeout_ms": 15000}}]})
        relay_call = s.relay_call(call_id)
        s.wait_calls([call_id], 30)
    finally:
        BUILTINS.remove("test_slow_lookup")
    assert ("assistant", "It shipped yesterday.") in relay_call.transcript.turns()
    assert s.worker.counters["watchdog"] == {}
    assert not [t for t in events_of(relay_call) if t.startswith("watchdog: no model audio")]


# a service that drops every socket at once ----------------------------------------------------

def test_a_socket_dropping_service_gets_a_handful_of_attempts_then_the_breaker_opens(make):
    s = make(agent_key="watchful", **{
        "openai.max_reconnects": 3, "openai.breaker_threshold": 4,
        "openai.breaker_cooldown_s": 120.0})
    s.model.inject(kind="drop", target="all")
    script = {"steps": [{"wait_hangup": {"timeout_ms": 20000}}]}

    def one_call():
        call_id = s.call(script)
        relay_call = s.relay_call(call_id)
        wait_for(lambda: relay_call.state != "setup", 10, "the call to be set up")
        capture = s.pbx.capture(call_id)
        [result] = s.wait_calls([call_id], 30)
        assert result["end_reason"] == "hung up"
        assert heard(capture).endswith(sound(DEFAULT_APOLOGY_SOUND))    # never in silence
        return relay_call

    first = one_call()
    # three sockets, each dying before its session.updated, with growing waits in between
    assert len(s.model.sessions) == 3 == first.session.connections
    assert list(first.session.delays) == sorted(first.session.delays)
    assert len(first.session.delays) == 2
    assert "3 attempts in a row failed" in first.end_reason
    assert s.worker.model_breaker.state == "closed"
    second = one_call()             # its first failure is the 4th in a row: the breaker opens
    assert s.worker.model_breaker.state == "open"
    assert second.session.connections == 1 and len(s.model.sessions) == 4
    third = one_call()              # the breaker is open: no socket at all, the apology at once
    assert third.session.connections == 0 and len(s.model.sessions) == 4
    assert "circuit breaker is open" in third.end_reason
    for call in (first, second, third):
        assert "watchdog: giving up" in " ".join(events_of(call))
    metrics = render(s.worker)
    assert "relay_model_breaker_open 1" in metrics
    assert "relay_model_breaker_opened_total 1" in metrics
    assert "relay_model_connect_failures_total 4" in metrics
    assert 'relay_watchdog_total{action="giveup"} 3' in metrics


# secrets ----------------------------------------------------------------------------------------

def test_a_secret_quoted_by_the_model_appears_nowhere(make, tmp_path, caplog):
    from relay.serve import setup_logging
    from relay.web import WebServer

    caplog.set_level(logging.DEBUG)
    log_file = tmp_path / "relay.log"
    file_handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(file_handler)
    other_key = "sk-proj-" + "Zq3" * 16         # shaped like a key, configured nowhere
    s = make(agent_key="watchful", **{"web.port": 0})
    setup_logging("DEBUG")              # relay's logging set-up: the redaction on every handler
    web = WebServer(s.worker).start()
    try:
        ws = websocket.create_connection(web.url.replace("http://", "ws://") + "ws", timeout=5)
        call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                    {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}},
                                    {"wait_hangup": {"timeout_ms": 20000}}]})
        relay_call = s.relay_call(call_id)
        wait_for(lambda: ("assistant", ANSWER) in relay_call.transcript.turns(), 15, "an answer")
        s.model.inject(kind="error", quote_key=True, error={
            "code": "server_error", "message": f"Upstream refused (password {ARI_PASSWORD}, "
                                               f"other key {other_key})"})
        wait_for(lambda: relay_call.model_errors.get("server_error"), 10, "the first error")
        # a fatal one: the call gives up with the key in its reason
        s.model.inject(kind="error", quote_key=True, error={
            "type": "invalid_request_error", "code": "invalid_api_key",
            "message": "Incorrect API key provided"})
        [result] = s.wait_calls([call_id], 30)
        assert result["end_reason"] == "hung up"
        assert relay_call.end_reason.startswith("model error invalid_api_key")
        messages = []
        ws.settimeout(5)
        ended = f'"id":"{relay_call.id}"'
        while not (messages and messages[-1].startswith('{"type":"call"')
                   and ended in messages[-1] and '"state":"ended"' in messages[-1]):
            messages.append(ws.recv())      # bounded by the socket's 5 s timeout
        ws.close()
        body = json.dumps(s.worker.finished[-1]) + "\n".join(messages)
        import requests
        body += requests.get(f"{web.url}api/calls/{relay_call.id}", timeout=5).text
        body += requests.get(f"{web.url}metrics", timeout=5).text
    finally:
        web.stop()
        logging.getLogger().removeHandler(file_handler)
        file_handler.close()
    transcripts = "".join(p.read_text() for p in (tmp_path / "transcripts").glob("*.jsonl"))
    logged = caplog.text + log_file.read_text()
    # the errors did reach each place, scrubbed
    assert "Upstream refused (password ***, other key ***): ***" in transcripts
    assert "Upstream refused" in logged and "Incorrect API key provided: ***" in logged
    assert "model error invalid_api_key" in body
    for secret in (API_KEY, ARI_PASSWORD, other_key):
        for name, text in (("the log", logged), ("a transcript file", transcripts),
                           ("the dashboard", body)):
            assert secret not in text, f"{secret[:6]}... reached {name}"
