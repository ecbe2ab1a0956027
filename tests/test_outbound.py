"""Outbound calls end to end (relay.outbound): relay originates through ARI into the simulated
PBX, whose callees answer, are busy, never answer, reject, fail or are answering machines; the
outcome reaches the callback; an answered call runs as an inbound one, its agent's texts and
tools getting the call variables; AMD results are acted on; nothing is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from stack import Stack, wait_for
from test_call_memory import cycles_kept

from relay.outbound import DialRequest
from relay.outbound.dialer import DialError
from relay.tools.registry import BUILTINS, Builtin

ORDER_QUESTION = "Where is my order?"
VARIABLES = {"customer_name": "Alice Martin", "order_number": "A-1234"}
SCRIPT = {
    "phrasebook": [ORDER_QUESTION],
    "greeting": "Hello, this is the shop calling.",
    "rules": [{"keywords": ["order"], "say": "Let me check.",
               "calls": [{"name": "order_status", "arguments": {}},
                         {"name": "test_variables", "arguments": {}}],
               "then": "It ships tomorrow."}],
    "default": "I see.",
}
ASKS_THEN_HANGS_UP = {"steps": [
    {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}},
    {"say": ORDER_QUESTION},
    {"wait_agent_done": {"silence_ms": 800, "timeout_ms": 15000}},
    {"hangup": True}]}
MESSAGE = "Hello {customer_name}, please call us back about order {order_number}."


class Hooks:
    """A local webhook server recording each request's JSON."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self.server.start()

    def app(self, environ, start_response):
        self.requests.append(json.loads(environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "shipped"}']


def agent(hooks: Hooks, outbound: dict) -> dict:
    return {
        "name": "Outbound tester",
        "instructions": "You call {customer_name} about order {order_number}. Literal {{x}}.",
        "greeting": {"instructions": "Greet {customer_name} and name order {order_number}."},
        "audio_format": "audio/pcmu",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        "input_transcription": {"model": "gpt-4o-transcribe"},
        "tools": [
            {"name": "order_status", "description": "The order's status.",
             "webhook": {"url": f"http://127.0.0.1:{hooks.server.server_port}/order"}},
            {"name": "test_variables", "builtin": "test_variables"},
        ],
        "outbound": outbound,
    }


AGENTS = {
    "caller": {"amd": False},
    "machine_message": {"amd": True, "on_machine": "message", "machine_message": MESSAGE},
    "machine_hangup": {"amd": True, "on_machine": "hangup"},
    "machine_talk": {"amd": True, "on_machine": "talk"},
}


@pytest.fixture
def stack(tmp_path: Path):
    BUILTINS.add(Builtin("test_variables", lambda ctx, args: {
        "variables": ctx.variables, "direction": ctx.direction}, "The call variables."))
    hooks = Hooks()
    agents = tmp_path / "agents"
    agents.mkdir()
    for key, outbound in AGENTS.items():
        (agents / f"{key}.json").write_text(json.dumps(agent(hooks, outbound)))
    stacks: list[Stack] = []

    def make(settings: dict | None = None) -> Stack:
        s = Stack(tmp_path, model_script=SCRIPT, settings={
            "agent.configs_dir": str(agents), "agent.active": "caller", **(settings or {})})
        s.hooks = hooks
        stacks.append(s)
        return s

    try:
        yield make
    finally:
        for s in stacks:
            s.stop()
        hooks.server.stop(timeout=1)
        BUILTINS.remove("test_variables")


def dial(s: Stack, endpoint: str, agent_key: str = "caller", **fields) -> tuple:
    """Dial and wait for the final outcome: (outcome, the list the callback filled)."""
    got: list = []
    outcome = s.worker.dialer.dial(DialRequest(
        endpoint=endpoint, agent=agent_key, variables=fields.pop("variables", VARIABLES),
        caller_id='"Shop" <5550100>', **fields), on_outcome=got.append)
    wait_for(lambda: got, 30, f"the outcome of {endpoint}")
    return outcome, got


def no_leftovers(s: Stack) -> None:
    wait_for(lambda: not s.pbx.inspect()["channels"], 10, "the PBX to have no channel")
    wait_for(lambda: not s.worker.calls and not s.worker.dialer.pending, 10, "relay to be idle")
    s.assert_no_leftovers()


def events_of(s: Stack, channel_id: str) -> list[dict]:
    return [e for e in s.pbx.model.history if (e.get("channel") or {}).get("id") == channel_id
            or (e.get("peer") or {}).get("id") == channel_id]


def test_answered_call_greets_with_the_variables_and_tools_receive_them(stack):
    s = stack()
    s.pbx.model.history_limit = 5000
    s.pbx.register_endpoint("alice", {"answer": "answer", "ring_ms": [200, 400],
                                      "script": ASKS_THEN_HANGS_UP})
    outcome, got = dial(s, "PJSIP/alice")
    assert got == [outcome] and outcome.outcome == "answered"
    assert outcome.reason == "caller hung up" and outcome.cause == 16
    assert outcome.answered_at is not None and outcome.amd is None
    call = s.seen_calls[outcome.channel_id]
    assert call.direction == "outbound" and call.caller_number == "alice"
    assert call.outbound == {"endpoint": "PJSIP/alice", "outcome": "answered", "cause": 16,
                             "amd": None, "campaign_id": None, "attempt": 1,
                             "variables": VARIABLES}
    session = s.model.sessions[0]
    assert session.config["instructions"] == \
        "You call Alice Martin about order A-1234. Literal {x}."
    [greeting] = [e for e in session.client_events if e["type"] == "response.create"][:1]
    assert greeting["response"]["instructions"] == "Greet Alice Martin and name order A-1234."
    turns = call.transcript.turns()
    assert ("assistant", "Hello, this is the shop calling.") in turns
    assert ("assistant", "It ships tomorrow.") in turns
    # the tools got the variables: the webhook in its context, the built-in through ctx
    [request] = s.hooks.requests
    assert request["context"] == {"call_id": call.id, "caller_number": "alice",
                                  "agent": "caller", "direction": "outbound",
                                  "variables": VARIABLES}
    outputs = [json.loads(i["output"]) for i in session.conversation.history
               if i.get("type") == "function_call_output"]
    assert {"variables": VARIABLES, "direction": "outbound"} in outputs
    # what Asterisk sent: Ringing before Up, StasisStart only after the answer
    kinds = [(e["type"], (e.get("channel") or {}).get("state"))
             for e in events_of(s, outcome.channel_id)]
    assert kinds.index(("ChannelStateChange", "Ringing")) < kinds.index(
        ("ChannelStateChange", "Up")) < kinds.index(("StasisStart", "Up"))
    assert [f for f in s.worker.finished if f["id"] == call.id][0]["direction"] == "outbound"
    no_leftovers(s)


@pytest.mark.parametrize("behaviour, expected, cause", [
    ("busy", "busy", 17), ("reject", "rejected", 21), ("congestion", "failed", 34),
    ("failure", "failed", 38)])
def test_refused_dials_end_with_their_cause(stack, behaviour, expected, cause):
    s = stack()
    s.pbx.model.history_limit = 5000
    s.pbx.register_endpoint("bob", {"answer": behaviour})
    outcome, got = dial(s, "PJSIP/bob")
    assert (outcome.outcome, outcome.cause) == (expected, cause)
    assert outcome.answered_at is None and outcome.channel_id not in s.seen_calls
    events = events_of(s, outcome.channel_id)
    assert [e["cause"] for e in events if e["type"] == "ChannelDestroyed"] == [cause]
    assert [e["cause"] for e in events if e["type"] == "ChannelHangupRequest"] == [cause]
    assert not [e for e in events if e["type"] == "StasisStart"]
    no_leftovers(s)


def test_no_answer_at_the_ring_timeout(stack):
    s = stack()
    s.pbx.register_endpoint("carol", {"answer": "no_answer"})
    outcome, _ = dial(s, "PJSIP/carol", ring_timeout_s=1)
    assert (outcome.outcome, outcome.cause) == ("no_answer", 19)
    assert outcome.ended_at - outcome.started_at >= 1.0       # Asterisk's timeout, not ours
    no_leftovers(s)


def test_a_callee_answering_after_the_ring_timeout_is_no_answer(stack):
    s = stack()
    s.pbx.register_endpoint("slow", {"answer": "answer", "ring_ms": [3000, 3000]})
    outcome, _ = dial(s, "PJSIP/slow", ring_timeout_s=1)
    assert (outcome.outcome, outcome.cause) == ("no_answer", 19)
    no_leftovers(s)


def test_originate_refused_by_asterisk_is_failed_with_the_reason(stack):
    s = stack()
    outcome, got = dial(s, "Foo/bar")
    assert outcome.outcome == "failed" and "500" in outcome.reason
    assert "Allocation failed" in outcome.reason and got == [outcome]
    no_leftovers(s)


def test_originate_without_an_answer_is_failed_and_its_late_channel_removed(stack):
    s = stack({"ari.request_timeout_s": 0.5})
    s.pbx.register_endpoint("late", {"answer": "answer", "ring_ms": [100, 100],
                                     "script": {"steps": [], "end": "wait"}})
    s.pbx.add_fault({"kind": "late", "method": "POST", "path": "^/channels/relay-test-out-",
                     "delay_s": 1.0})
    outcome, _ = dial(s, "PJSIP/late")
    assert outcome.outcome == "failed" and "no answer from Asterisk" in outcome.reason
    # the originate landed after relay gave up: its channel rang, answered, entered the app,
    # and relay hung it up (it is recognised as relay's, never taken for a waiting caller)
    no_leftovers(s)
    assert outcome.channel_id not in s.seen_calls


def test_dial_errors_before_anything_is_sent(stack):
    s = stack()
    before = s.worker.ari.requests_made
    with pytest.raises(DialError, match=r"\{order_number\}"):
        s.worker.dialer.dial(DialRequest("PJSIP/alice", "caller",
                                         variables={"customer_name": "Al"}))
    with pytest.raises(DialError, match="TECH/RESOURCE"):
        s.worker.dialer.dial(DialRequest("alice", "caller", variables=VARIABLES))
    with pytest.raises(DialError, match="nobody"):
        s.worker.dialer.dial(DialRequest("PJSIP/alice", "nobody", variables=VARIABLES))
    with pytest.raises(DialError, match="identifier"):
        s.worker.dialer.dial(DialRequest("PJSIP/alice", "caller",
                                         variables={**VARIABLES, "bad name": "x"}))
    assert s.worker.ari.requests_made == before and not s.worker.dialer.pending


def test_machine_with_message_plays_it_then_hangs_up(stack):
    s = stack()
    s.pbx.model.history_limit = 5000
    s.pbx.register_endpoint("machine", {"answer": "machine"})
    outcome, _ = dial(s, "PJSIP/machine", "machine_message")
    assert outcome.outcome == "machine"
    assert outcome.amd == {"status": "MACHINE", "cause": "LONGGREETING-2000-1500",
                           "action": "message"}
    assert outcome.reason == "message left on the answering machine"
    call = s.seen_calls[outcome.channel_id]
    session = s.model.sessions[0]
    [create] = [e for e in session.client_events if e["type"] == "response.create"]
    assert create["response"]["instructions"].endswith(
        "Hello Alice Martin, please call us back about order A-1234.")
    assert call.media.stats()["rtp_out"] > 0             # the message was played ...
    pbx_call = next(c for c in s.pbx.calls() if c["channel_id"] == outcome.channel_id)
    assert pbx_call["agent"]["voiced_packets"] > 0   # ... and heard by the machine
    said = [e for e in call.transcript.entries() if e["kind"] == "assistant"]
    assert said and not any(e.get("interrupted") for e in said)   # after the beep: whole
    # relay hung up (DELETE: a soft hangup request), not the machine
    [request] = [e for e in events_of(s, outcome.channel_id)
                 if e["type"] == "ChannelHangupRequest"]
    assert request.get("soft") is True
    no_leftovers(s)


def test_machine_with_hangup_has_no_conversation(stack):
    s = stack()
    s.pbx.register_endpoint("machine", {"answer": "machine"})
    outcome, _ = dial(s, "PJSIP/machine", "machine_hangup")
    assert outcome.outcome == "machine" and outcome.amd["action"] == "hangup"
    assert outcome.channel_id not in s.seen_calls and not s.model.sessions
    no_leftovers(s)


def test_machine_with_talk_and_a_human_with_amd_both_talk(stack):
    s = stack()
    s.pbx.register_endpoint("machine", {"answer": "machine", "script": {"steps": [
        {"say": "Leave a message."}, {"tone": 1000, "ms": 300},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 10000}}, {"hangup": True}]}})
    s.pbx.register_endpoint("human", {"answer": "answer", "script": ASKS_THEN_HANGS_UP})
    machine, _ = dial(s, "PJSIP/machine", "machine_talk")
    assert machine.outcome == "machine" and machine.amd["action"] == "talk"
    assert machine.channel_id in s.seen_calls
    human, _ = dial(s, "PJSIP/human", "machine_talk")
    assert human.outcome == "answered"
    assert human.amd == {"status": "HUMAN", "cause": "HUMAN-800-600", "action": "talk"}
    assert ("assistant", "It ships tomorrow.") in s.seen_calls[human.channel_id].transcript.turns()
    no_leftovers(s)


def test_no_amd_result_in_time_ends_failed(stack):
    s = stack({"outbound.amd_wait_s": 0.5})
    s.pbx.register_endpoint("deep", {"answer": "answer", "amd": {"after_ms": 30000}})
    outcome, _ = dial(s, "PJSIP/deep", "machine_hangup")
    assert outcome.outcome == "failed" and "no answering-machine result" in outcome.reason
    no_leftovers(s)


def test_a_dial_relay_ends_is_not_taken_for_the_callee_hanging_up(stack):
    """relay ends the dial (no AMD result in time) and hangs up; a loaded Asterisk sends the
    hangup's ChannelDestroyed before the DELETE's answer: the outcome stays relay's."""
    s = stack({"outbound.amd_wait_s": 0.5})
    s.pbx.register_endpoint("deep", {"answer": "answer", "amd": {"after_ms": 30000}})
    s.pbx.add_fault(kind="slow_answer", method="DELETE", path="^/channels/", delay_s=0.5)
    outcome, _ = dial(s, "PJSIP/deep", "machine_hangup")
    assert outcome.outcome == "failed" and "no answering-machine result" in outcome.reason
    no_leftovers(s)


def test_reconciliation_never_takes_a_dial_for_a_waiting_caller(stack):
    s = stack({"ari.waiting_confirm_s": 0.05, "call.waiting_callers": "hang_up"})
    s.pbx.register_endpoint("human", {"answer": "answer", "ring_ms": [300, 300],
                                      "script": ASKS_THEN_HANGS_UP})
    s.pbx.register_endpoint("machine", {"answer": "machine", "amd": {"after_ms": 500}})
    results: list = []
    dials = [gevent.spawn(lambda e=e, a=a: results.append(dial(s, e, a)[0]))
             for e, a in (("PJSIP/human", "machine_talk"), ("PJSIP/machine", "machine_hangup"))]
    while not all(d.ready() for d in dials):
        s.worker.reconcile_once()       # through ringing, AMD, Stasis entries and the talk
        gevent.sleep(0.02)
    assert s.worker.counters["waiting_callers"] == {"taken_over": 0, "hung_up": 0}
    assert s.worker.counters["leftovers_removed"]["channel"] == 0
    assert sorted(r.outcome for r in results) == ["answered", "machine"]
    no_leftovers(s)


def test_the_callee_hanging_up_during_amd_is_answered_with_amd_hangup(stack):
    s = stack()
    s.pbx.register_endpoint("short", {"answer": "answer", "amd": {"after_ms": 5000},
                                      "script": {"steps": [{"pause_ms": 300},
                                                           {"hangup": True}]}})
    outcome, _ = dial(s, "PJSIP/short", "machine_hangup")
    # the app stays subscribed to the channel it originated while the dialplan runs AMD()
    assert (outcome.outcome, outcome.cause) == ("answered", 16)
    assert outcome.amd == {"status": "HANGUP", "cause": "", "action": ""}
    assert "during answering-machine detection" in outcome.reason
    no_leftovers(s)


def test_a_refused_continue_to_amd_fails_the_dial_and_hangs_up(stack):
    s = stack()
    s.pbx.register_endpoint("human", {"answer": "answer", "script": {"steps": [],
                                                                     "end": "wait"}})
    s.pbx.add_fault({"kind": "respond", "method": "POST", "path": "/continue$",
                     "status": 400, "message": "Requested context does not exist"})
    outcome, _ = dial(s, "PJSIP/human", "machine_talk")
    assert outcome.outcome == "failed"
    assert "cannot start answering-machine detection" in outcome.reason
    assert "Requested context does not exist" in outcome.reason
    no_leftovers(s)


def test_a_failing_callback_and_a_stopping_dialer_leave_nothing(stack):
    s = stack()
    s.pbx.register_endpoint("busy", {"answer": "busy"})
    s.pbx.register_endpoint("ringing", {"answer": "no_answer"})

    def explode(outcome):
        raise RuntimeError("the campaign engine broke")
    first = s.worker.dialer.dial(DialRequest("PJSIP/busy", "caller", variables=VARIABLES),
                                 on_outcome=explode)
    wait_for(lambda: first.outcome == "busy", 10, "the busy outcome")
    got: list = []
    ringing = s.worker.dialer.dial(DialRequest("PJSIP/ringing", "caller", variables=VARIABLES),
                                   on_outcome=got.append)
    wait_for(lambda: ringing.state == "ringing", 10, "the dial to ring")
    s.worker.dialer.stop()
    assert got == [ringing] and ringing.outcome == "failed"
    assert ringing.reason == "relay stopped before the dial ended"
    no_leftovers(s)
    assert s.worker.ready           # neither took the worker down


def test_every_dial_is_in_the_call_history_with_its_outcome(stack, tmp_path):
    # answered ones with their conversation, the others (busy, no answer) as dials
    from relay.history.query import HistoryQuery
    from relay.history.store import open_store

    s = stack()
    s.pbx.register_endpoint("alice", {"answer": "answer", "ring_ms": [100, 200],
                                      "script": ASKS_THEN_HANGS_UP})
    s.pbx.register_endpoint("+15550199", {"answer": "busy"})
    s.pbx.register_endpoint("carol", {"answer": "no_answer"})
    answered, _ = dial(s, "PJSIP/alice")
    busy, _ = dial(s, "PJSIP/+15550199@trunk")
    unanswered, _ = dial(s, "PJSIP/carol", ring_timeout_s=1)
    store = open_store(str(tmp_path / "relay.db"))
    try:
        def stored() -> dict:
            if store.version() == 0:
                return {}
            page = store.search(HistoryQuery(direction="outbound"), 50, None)
            return {row["id"]: row for row in page["calls"]}
        wait_for(lambda: len(stored()) == 3, 15, "the three dials in the history")
        rows = stored()
        full = {i: store.get(i) for i in rows}
        assert full[answered.channel_id]["outbound"]["outcome"] == "answered"
        assert full[answered.channel_id]["answered_at"] is not None
        assert ("assistant", "It ships tomorrow.") in [
            (e["kind"], e["text"]) for e in full[answered.channel_id]["transcript"]]
        assert full[busy.channel_id]["outbound"]["outcome"] == "busy"
        assert full[busy.channel_id]["outbound"]["cause"] == 17
        assert full[busy.channel_id]["caller_number"] == "+15550199"
        assert rows[busy.channel_id]["end_reason"].startswith("busy")
        assert full[unanswered.channel_id]["outbound"]["outcome"] == "no_answer"
        # the callee's number is searchable like a caller's
        page = store.search(HistoryQuery(number="5550199"), 50, None)
        assert [row["id"] for row in page["calls"]] == [busy.channel_id]
    finally:
        store.close()
    no_leftovers(s)


def test_an_answered_outbound_call_with_a_tool_call_leaves_no_reference_cycle(stack):
    """The dial and its call hold each other while the call lasts; once it has ended, nothing
    of either is left for the garbage collector (tests/test_call_memory.py)."""
    s = stack()
    s.pbx.register_endpoint("alice", {"answer": "answer", "ring_ms": [50, 100],
                                      "script": ASKS_THEN_HANGS_UP})
    dial(s, "PJSIP/alice")                 # warm up: what the first call creates for good
    no_leftovers(s)
    with cycles_kept() as found:
        outcome, _ = dial(s, "PJSIP/alice")
        no_leftovers(s)
        assert outcome.outcome == "answered" and len(s.hooks.requests) == 2   # the tool ran
        s.seen_calls.clear()
        del outcome
        assert found() == []
