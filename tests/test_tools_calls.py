"""Tools end to end: the simulated model calls tools, relay runs them (built-ins, and webhooks
against a local HTTP server), the outputs reach the model, and the conversation goes on; end_call
and transfer_call reach the simulated PBX as the right ARI requests."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from stack import Stack, wait_for

from relay.tools.registry import BUILTINS, Builtin

KEY_VAR, TOKEN_VAR = "RELAY_TEST_TOOL_KEY", "RELAY_TEST_TOOL_TOKEN"
CALLER = "5551234"

TIME = "What time is it?"
STOCK = "Any keyboards in stock?"
BROKEN = "Try the broken tools."
SLOW = "Try the slow one."
BYE = "Goodbye."
SALES = "Sales, please."
ACCOUNTS = "My invoice, please."
TONES = "Press the keys."
BOOK = "Book a table for us."

# A webhook whose parameters use what OpenAI accepts beyond the basics: const, format, anyOf,
# $defs/$ref, minItems, nested arrays of objects.
BOOKING = {
    "type": "object", "additionalProperties": False, "required": ["kind", "date", "guests"],
    "properties": {
        "kind": {"const": "table"},
        "date": {"type": "string", "format": "date"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"$ref": "#/$defs/phone"}]},
        "guests": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/guest"}},
        "courses": {"type": "array", "items": {"type": "array", "items": {
            "type": "object", "required": ["dish"], "properties": {"dish": {"type": "string"}}}}},
    },
    "$defs": {
        "guest": {"type": "object", "required": ["name"],
                  "properties": {"name": {"type": "string", "minLength": 1}}},
        "phone": {"type": "object", "required": ["number"],
                  "properties": {"number": {"type": "string", "pattern": "^[+0-9 ]{6,}$"}}},
    },
}
GOOD_BOOKING = {"kind": "table", "date": "2025-06-30", "contact": {"number": "+44 20 7946"},
                "guests": [{"name": "Ann"}], "courses": [[{"dish": "soup"}], []]}
BAD_BOOKINGS = {     # arguments -> what the model must be told
    "const": (dict(GOOD_BOOKING, kind="chair"), "arguments.kind: must be 'table'; got 'chair'"),
    "date": (dict(GOOD_BOOKING, date="30/06/2025"),
             "arguments.date: not a valid date: '30/06/2025'"),
    "email": (dict(GOOD_BOOKING, contact="ann-at-example"),
              "form 0: arguments.contact: not a valid email: 'ann-at-example'"),
    "anyOf": (dict(GOOD_BOOKING, contact={"number": "ring me"}),
              "arguments.contact: matches none of the allowed forms (anyOf)"),
    "minItems": (dict(GOOD_BOOKING, guests=[]),
                 "arguments.guests: fewer than the minimum 1 item(s)"),
    "$ref": (dict(GOOD_BOOKING, guests=[{"name": "Ann"}, {"name": ""}]),
             "arguments.guests[1].name: shorter than the minimum length 1"),
    "nested": (dict(GOOD_BOOKING, courses=[[{"dish": "soup"}, {"wine": "red"}]]),
               "arguments.courses[0][1]: missing required property 'dish'"),
}

SCRIPT = {
    "phrasebook": [TIME, STOCK, BROKEN, SLOW, BYE, SALES, ACCOUNTS, TONES, BOOK],
    "rules": [
        {"keywords": ["time is it"], "calls": [{"name": "get_current_time", "arguments": {}}],
         "then": "It is late."},
        {"keywords": ["stock"],
         "calls": [{"name": "check_stock", "arguments": {"sku": "KB-100", "quantity": 2}}],
         "then": "Yes."},
        {"keywords": ["broken"], "calls": [
            {"name": "no_such_tool", "arguments": {}},
            {"name": "lookup_order", "arguments": "[4, 2, 7]"},
            {"name": "lookup_order", "arguments": {"order": 427}},
            {"name": "test_explode", "arguments": {}},
            {"name": "failing_hook", "arguments": {}},
            {"name": "refused_hook", "arguments": {}},
        ], "then": "Sorry."},
        {"keywords": ["slow one"], "calls": [{"name": "test_slow", "arguments": {}},
                                             {"name": "get_current_time", "arguments": {}}],
         "then": "Here."},
        {"keywords": ["goodbye"], "say": "Goodbye, have a nice day.",
         "calls": [{"name": "end_call", "arguments": {"reason": "the caller is done"}}],
         "then": "This must never be said."},
        {"keywords": ["sales"], "say": "Putting you through.",
         "calls": [{"name": "transfer_call", "arguments": {"department": "sales"}}],
         "then": "This must never be said."},
        {"keywords": ["invoice"], "say": "One moment.",
         "calls": [{"name": "transfer_call", "arguments": {"department": "accounts"}}],
         "then": "This must never be said."},
        {"keywords": ["press"], "calls": [{"name": "send_dtmf", "arguments": {"digits": "12#"}}],
         "then": "Done."},
        {"keywords": ["table"], "calls": [{"name": "book_table", "arguments": GOOD_BOOKING}] + [
            {"name": "book_table", "arguments": bad} for bad, _ in BAD_BOOKINGS.values()],
         "then": "Booked."},
    ],
}


class Hooks:
    """A local webhook server: records each request, answers by path."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self.server.start()
        self.port = self.server.server_port

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read()
        self.requests.append({
            "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
            "headers": {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                        if k.startswith("HTTP_")},
            "content_type": environ.get("CONTENT_TYPE"), "json": json.loads(body)})
        if environ["PATH_INFO"] == "/stock":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"sku": "KB-100", "in_stock": 12}']
        if environ["PATH_INFO"] == "/book":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"booked": true}']
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"database exploded: the connection pool is exhausted" + b" and more" * 60]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent(hooks: Hooks) -> dict:
    base = f"http://127.0.0.1:{hooks.port}"
    return {
        "name": "Tool tester", "instructions": "You are a test agent with tools.",
        "timezone": "Europe/Paris", "audio_format": "audio/pcmu",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        "input_transcription": {"model": "gpt-4o-transcribe"},
        "tools": [
            {"name": "get_current_time"},
            {"name": "lookup_order", "builtin": "lookup_order"},
            {"name": "end_call", "builtin": "end_call"},
            {"name": "send_dtmf", "builtin": "send_dtmf"},
            {"name": "transfer_call", "builtin": "transfer_call", "config": {"targets": {
                "sales": {"context": "sales", "extension": "200"},
                "accounts": {"endpoint": "PJSIP/accounts"}}}},
            {"name": "check_stock", "description": "Is an item in stock?",
             "parameters": {"type": "object", "required": ["sku"], "properties": {
                 "sku": {"type": "string"}, "quantity": {"type": "integer"}}},
             "webhook": {"url": f"{base}/stock", "method": "POST", "timeout_s": 5,
                         "headers": {"X-Key": f"${{{KEY_VAR}}}",
                                     "Authorization": f"Bearer ${{{TOKEN_VAR}}}"}}},
            {"name": "book_table", "description": "Book a table.", "parameters": BOOKING,
             "webhook": {"url": f"{base}/book"}},
            {"name": "failing_hook", "description": "Always fails.",
             "webhook": {"url": f"{base}/fail"}},
            {"name": "refused_hook", "description": "Nobody listens.",
             "webhook": {"url": f"http://127.0.0.1:{closed_port()}/x"}},
            {"name": "test_explode", "builtin": "test_explode"},
            {"name": "test_slow", "builtin": "test_slow", "timeout_s": 0.3},
        ],
    }


def _explode(ctx, args):
    raise RuntimeError("the flux capacitor broke")


def _slow(ctx, args):
    gevent.sleep(5)
    return {"never": "returned"}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "k3y-from-env")
    monkeypatch.setenv(TOKEN_VAR, "t0ken")
    BUILTINS.add(Builtin("test_explode", _explode, "Raises."))
    BUILTINS.add(Builtin("test_slow", _slow, "Takes too long."))
    hooks = Hooks()
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "tooly.json").write_text(json.dumps(agent(hooks)))
    stacks: list[Stack] = []

    def make(settings: dict | None = None) -> Stack:
        s = Stack(tmp_path, model_script=SCRIPT, settings={
            "agent.configs_dir": str(agents), "agent.active": "tooly", **(settings or {})})
        s.hooks = hooks
        stacks.append(s)
        return s

    try:
        yield make
    finally:
        for s in stacks:
            s.stop()
        hooks.stop()
        BUILTINS.remove("test_explode")
        BUILTINS.remove("test_slow")


def ask(phrase: str) -> dict:
    return {"caller": {"number": CALLER},
            "steps": [{"pause_ms": 300}, {"say": phrase},
                      {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]}


def ask_and_wait_hangup(phrase: str) -> dict:
    return {"caller": {"number": CALLER},
            "steps": [{"pause_ms": 300}, {"say": phrase}, {"wait_hangup": {"timeout_ms": 15000}}]}


def outputs(session) -> dict[str, list[dict]]:
    """Tool name -> the function_call_outputs the model received for it (decoded)."""
    names = {i["call_id"]: i["name"] for i in session.conversation.history
             if i.get("type") == "function_call"}
    out: dict[str, list[dict]] = {}
    for item in session.conversation.history:
        if item.get("type") == "function_call_output":
            out.setdefault(names[item["call_id"]], []).append(json.loads(item["output"]))
    return out


def creates(session) -> int:
    return sum(1 for e in session.client_events if e.get("type") == "response.create")


def tool_entries(call, status: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for entry in call.transcript.entries({"tool"}):
        if entry["status"] == status:
            found.setdefault(entry["text"], []).append(entry)
    return found


def test_a_builtin_answers_the_model_and_the_conversation_goes_on(stack):
    s = stack()
    call_id = s.call(ask(TIME))
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    session = s.model.sessions[0]
    [output] = outputs(session)["get_current_time"]
    assert output["timezone"] == "Europe/Paris"
    assert output["utc_offset"] in ("+01:00", "+02:00")
    assert output["iso"].endswith(output["utc_offset"])
    assert creates(session) == 1
    assert ("assistant", "It is late.") in relay_call.transcript.turns()
    [entry] = tool_entries(relay_call, "ok")["get_current_time"]
    assert entry["arguments"] == {} and json.loads(entry["result"]) == output
    assert entry["duration_ms"] >= 0
    # ... and the worker published it for observers (the dashboard)
    published = [m["entry"] for m in s.worker.recent if m["type"] == "transcript"
                 and m["entry"]["kind"] == "tool"]
    assert [e["status"] for e in published] == ["running", "ok"]


def test_a_webhook_gets_the_exact_request_and_its_answer_reaches_the_model(stack):
    s = stack()
    call_id = s.call(ask(STOCK))
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    [request] = s.hooks.requests
    assert request["method"] == "POST" and request["path"] == "/stock"
    assert request["headers"]["x-key"] == "k3y-from-env"
    assert request["headers"]["authorization"] == "Bearer t0ken"
    assert request["content_type"] == "application/json"
    assert request["json"] == {
        "arguments": {"sku": "KB-100", "quantity": 2},
        "context": {"call_id": relay_call.id, "caller_number": CALLER, "agent": "tooly"}}
    session = s.model.sessions[0]
    assert outputs(session)["check_stock"] == [{"sku": "KB-100", "in_stock": 12}]
    assert creates(session) == 1
    assert ("assistant", "Yes.") in relay_call.transcript.turns()


# The simulated model's script only takes valid JSON arguments: a function call with broken
# JSON is slipped into its event stream as a raw frame (a fault of kind "malformed").
BAD_JSON_CALL = json.dumps({
    "type": "response.function_call_arguments.done", "event_id": "event_injected",
    "response_id": "resp_injected", "item_id": "item_injected", "output_index": 9,
    "call_id": "call_injected", "name": "lookup_order", "arguments": '{"order_number": 4'})


def test_every_failure_comes_back_as_an_error_and_the_call_goes_on(stack):
    s = stack()
    call_id = s.call(dict(ask(BROKEN), steps=[{"pause_ms": 800}] + ask(BROKEN)["steps"][1:]))
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    s.model.inject(kind="malformed", target="current",
                   on_event="response.function_call_arguments.done", text=BAD_JSON_CALL)
    s.wait_calls([call_id], 30)
    session = s.model.sessions[0]
    got = outputs(session)
    codes = {name: sorted(o["error"]["code"] for o in found) for name, found in got.items()}
    assert codes == {
        "no_such_tool": ["unknown_tool"],
        "lookup_order": ["invalid_arguments", "invalid_arguments"],
        "test_explode": ["tool_failed"], "failing_hook": ["http_error"],
        "refused_hook": ["connection_error"],
    }
    errors = {name: [o["error"] for o in found] for name, found in got.items()}
    assert "no_such_tool" in errors["no_such_tool"][0]["message"]
    messages = sorted(e["message"] for e in errors["lookup_order"])
    assert "missing required property 'order_number'" in messages[0]
    assert "unexpected property 'order'" in messages[0]
    assert messages[1] == "the arguments must be a JSON object"
    [bad_json] = [json.loads(e["item"]["output"]) for e in session.client_events
                  if e.get("type") == "conversation.item.create"
                  and e["item"].get("call_id") == "call_injected"]
    assert bad_json["error"]["code"] == "invalid_json"
    errors = {name: {e["code"]: e for e in found} for name, found in errors.items()}
    assert "flux capacitor" in errors["test_explode"]["tool_failed"]["message"]
    http = errors["failing_hook"]["http_error"]
    assert http["status"] == 500 and http["body"].startswith("database exploded")
    assert len(http["body"]) <= 200
    assert "Connection refused" in errors["refused_hook"]["connection_error"]["message"]
    # six outputs, then exactly one response.create, and the conversation goes on
    assert sum(len(v) for v in got.values()) == 6
    assert creates(session) == 1
    assert ("assistant", "Sorry.") in relay_call.transcript.turns()
    assert len([e for found in tool_entries(relay_call, "error").values() for e in found]) == 7
    assert relay_call.end_reason == "caller hung up"


def test_arguments_breaking_a_rich_schema_go_back_to_the_model_naming_the_path(stack):
    s = stack()
    call_id = s.call(ask(BOOK))
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    session = s.model.sessions[0]
    got = outputs(session)["book_table"]
    assert {"booked": True} in got and len(got) == 1 + len(BAD_BOOKINGS)
    messages = [o["error"]["message"] for o in got if "error" in o]
    assert all(o["error"]["code"] == "invalid_arguments" for o in got if "error" in o)
    for keyword, (_, expected) in BAD_BOOKINGS.items():
        assert any(expected in m for m in messages), (keyword, messages)
    # only the valid call reached the webhook, and the conversation went on once
    assert [r["json"]["arguments"] for r in s.hooks.requests] == [GOOD_BOOKING]
    assert creates(session) == 1
    assert ("assistant", "Booked.") in relay_call.transcript.turns()


def test_a_tool_slower_than_its_timeout_and_a_fast_one_in_the_same_response(stack):
    s = stack()
    call_id = s.call(ask(SLOW))
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    session = s.model.sessions[0]
    got = outputs(session)
    assert got["test_slow"][0]["error"]["code"] == "timeout"
    assert "0.3 s" in got["test_slow"][0]["error"]["message"]
    assert got["get_current_time"][0]["timezone"] == "Europe/Paris"
    # the slow one finished after response.done: its output came last, then the one create
    kinds = [(e["type"], e.get("item", {}).get("type")) for e in session.client_events
             if e.get("type") in ("conversation.item.create", "response.create")]
    assert kinds == [("conversation.item.create", "function_call_output")] * 2 + [
        ("response.create", None)]
    assert ("assistant", "Here.") in relay_call.transcript.turns()
    [slow] = tool_entries(relay_call, "error")["test_slow"]
    assert slow["error"]["code"] == "timeout" and slow["duration_ms"] >= 300
    # relay_tool_calls_total counts each outcome
    assert s.worker.counters["tool_calls"] == {"ok": 1, "timeout": 1}


@pytest.mark.parametrize("continue_in_dialplan", [False, True])
def test_end_call_hangs_up_after_the_goodbye_was_heard(stack, continue_in_dialplan):
    s = stack({"call.continue_in_dialplan": continue_in_dialplan})
    call_id = s.call(ask_and_wait_hangup(BYE))
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 30)
    if continue_in_dialplan:       # the call (or the agent's end_call config) says so
        assert result["continued"] is not None and result["end_reason"] == "continued in dialplan"
    else:
        assert result["end_reason"] == "hung up"          # by relay, not by the caller
        assert result["continued"] is None
    assert result["redirected"] is None
    assert relay_call.end_reason == "the agent ended the call: the caller is done"
    session = s.model.sessions[0]
    assert outputs(session)["end_call"][0]["ok"] is True
    assert creates(session) == 0                           # no response after end_call
    # the whole goodbye was played, and the hangup came after its last packet
    [item_id] = [i["id"] for i in session.conversation.history if i.get("role") == "assistant"]
    generated_ms = session.conversation.audio_ms[item_id]
    packets = capture.packets()
    assert abs(sum(p["len"] for p in packets) / 8 - generated_ms) <= 20
    assert packets[-1]["t"] < result["ended_at"]
    assert relay_call.transcript.turns() == [("caller", BYE),
                                             ("assistant", "Goodbye, have a nice day.")]


def test_transfer_to_a_dialplan_location_after_the_announcement(stack):
    s = stack()
    call_id = s.call(ask_and_wait_hangup(SALES))
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert result["continued"] == {"context": "sales", "extension": "200", "priority": 1}
    assert result["redirected"] is None
    assert relay_call.end_reason == "transferred to sales"
    session = s.model.sessions[0]
    assert outputs(session)["transfer_call"][0]["ok"] is True
    assert creates(session) == 0
    [item_id] = [i["id"] for i in session.conversation.history if i.get("role") == "assistant"]
    packets = capture.packets()
    assert abs(sum(p["len"] for p in packets) / 8 - session.conversation.audio_ms[item_id]) <= 20
    assert packets[-1]["t"] < result["ended_at"]


def test_transfer_to_an_endpoint_redirects(stack):
    s = stack()
    call_id = s.call(ask_and_wait_hangup(ACCOUNTS))
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert result["redirected"] == "PJSIP/accounts"
    assert result["continued"] is None
    assert relay_call.end_reason == "transferred to accounts"


def test_send_dtmf_reaches_the_channel(stack):
    s = stack()
    call_id = s.call(ask(TONES))
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert [d["digits"] for d in result["dtmf_heard"]] == ["12#"]
    assert outputs(s.model.sessions[0])["send_dtmf"] == [{"ok": True, "sent": "12#"}]
    assert ("assistant", "Done.") in relay_call.transcript.turns()

