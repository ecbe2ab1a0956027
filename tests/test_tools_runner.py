"""The tool executor without a PBX or a model: response bookkeeping, built-ins with a fake call,
the per-call runner (timeouts, concurrency, errors), and the webhook client on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import gevent
import gevent.event
import pytest
from gevent.pywsgi import WSGIServer
from realtime_schema import validate_client_event

from relay.ari import AriError
from relay.config import load_agent
from relay.tools import builtins, retail
from relay.tools.context import ToolContext
from relay.tools.errors import ToolError
from relay.tools.registry import BUILTINS, Builtin
from relay.tools.runner import CallTools, as_output, parse_arguments
from relay.tools.spec import WebhookSpec
from relay.tools.turns import ToolTurns
from relay.tools.webhook import WebhookClient

# ToolTurns -------------------------------------------------------------------------------------


def test_one_create_after_the_response_is_done_and_every_output_sent():
    turns = ToolTurns()
    turns.called("r1", "a")
    turns.called("r1", "b")
    assert not turns.output_sent("r1", "a")
    assert not turns.response_done("r1")          # b still runs
    assert turns.output_sent("r1", "b")           # the last output after response.done
    assert len(turns) == 0
    assert not turns.output_sent("r1", "b")       # never twice


def test_outputs_before_response_done_wait_for_it():
    turns = ToolTurns()
    turns.called("r1", "a")
    assert not turns.output_sent("r1", "a")
    assert turns.response_done("r1", "completed")


def test_no_create_after_a_final_tool_or_a_cancelled_response_or_without_calls():
    turns = ToolTurns()
    turns.called("r1", "a")
    turns.final("r1")
    assert not turns.output_sent("r1", "a") and not turns.response_done("r1")
    turns.called("r2", "b")
    assert not turns.response_done("r2", "cancelled") and not turns.output_sent("r2", "b")
    assert not turns.response_done("r3")
    assert len(turns) == 0


def test_responses_are_tracked_separately_and_bounded():
    turns = ToolTurns(max_open=2)
    for rid in ("r1", "r2", "r3"):
        turns.called(rid, "c")
    assert len(turns) == 2 and turns.forgotten == 1 and turns.waiting("r1") == 0
    turns.forget("r2")
    assert turns.response_done("r3") is False and turns.output_sent("r3", "c") is True


# built-ins with a fake call ----------------------------------------------------------------------

class FakeAri:
    def __init__(self, fail: bool = False) -> None:
        self.requests: list[tuple] = []
        self.fail = fail

    def send_dtmf(self, channel_id, digits):
        if self.fail:
            raise AriError(409, "Channel not in a Stasis application")
        self.requests.append(("dtmf", channel_id, digits))

    def continue_in_dialplan(self, *args):
        self.requests.append(("continue", *args))

    def redirect(self, *args):
        self.requests.append(("redirect", *args))

    def hangup(self, *args):
        self.requests.append(("hangup", *args))


class FakeHost:
    def __init__(self, agent=None, ari=None) -> None:
        self.id = "chan-1"
        self.caller_number = "+1 (555) 1234"
        self.agent = agent or SimpleNamespace(key="shop", timezone="Europe/Paris")
        self.worker = SimpleNamespace(ari=ari or FakeAri())
        self.ended: list[tuple] = []

    def end_after_playout(self, reason, response_id="", handoff=None):
        self.ended.append((reason, response_id, handoff))


def context(host, tool="x", config=None, clock=None):
    return ToolContext(host, tool=tool, config=config or {}, response_id="resp_1",
                       function_call_id="call_1", **({"clock": clock} if clock else {}))


def test_get_current_time_in_the_agent_time_zone_across_summer_time():
    winter = datetime(2025, 1, 15, 12, 0, tzinfo=timezone.utc).timestamp()
    summer = datetime(2025, 7, 15, 23, 30, tzinfo=timezone.utc).timestamp()
    host = FakeHost()
    jan = builtins.get_current_time(context(host, clock=lambda: winter), {})
    jul = builtins.get_current_time(context(host, clock=lambda: summer), {})
    assert jan == {"timezone": "Europe/Paris", "iso": "2025-01-15T13:00:00+01:00",
                   "date": "2025-01-15", "time": "13:00", "weekday": "Wednesday",
                   "utc_offset": "+01:00"}
    assert jul["iso"] == "2025-07-16T01:30:00+02:00" and jul["weekday"] == "Wednesday"
    utc = FakeHost(agent=SimpleNamespace(key="a", timezone="UTC"))
    assert builtins.get_current_time(context(utc, clock=lambda: winter), {})["utc_offset"] == \
        "+00:00"


def test_end_call_ends_after_the_playout_and_follows_its_config():
    host = FakeHost()
    ctx = context(host)
    output = builtins.end_call(ctx, {"reason": "done"})
    assert output["ok"] is True and ctx.ends_conversation
    assert host.ended == [("the agent ended the call: done", "resp_1", None)]
    builtins.end_call(context(host, config={"continue_in_dialplan": True}), {})
    builtins.end_call(context(host, config={"continue_in_dialplan": False}), {})
    ari = host.worker.ari
    assert host.ended[1][2] == (ari.continue_in_dialplan, "chan-1")
    assert host.ended[2][2] == (ari.hangup, "chan-1")


def test_transfer_call_continues_or_redirects_after_the_playout():
    host = FakeHost()
    config = {"targets": {"sales": {"context": "dept", "extension": "200", "priority": 1},
                          "billing": {"endpoint": "PJSIP/billing"}}}
    ctx = context(host, config=config)
    assert builtins.transfer_call(ctx, {"department": "sales"})["ok"] is True
    builtins.transfer_call(context(host, config=config), {"department": "billing"})
    ari = host.worker.ari
    assert host.ended == [
        ("transferred to sales", "resp_1", (ari.continue_in_dialplan, "chan-1", "dept", "200", 1)),
        ("transferred to billing", "resp_1", (ari.redirect, "chan-1", "PJSIP/billing"))]
    with pytest.raises(ToolError) as error:
        builtins.transfer_call(context(host, config=config), {"department": "hr"})
    assert error.value.code == "invalid_arguments"
    assert error.value.details["choices"] == ["sales", "billing"]


def test_send_dtmf_goes_to_the_caller_channel_and_reports_asterisk_errors():
    host = FakeHost()
    assert builtins.send_dtmf(context(host), {"digits": "12#"}) == {"ok": True, "sent": "12#"}
    assert host.worker.ari.requests == [("dtmf", "chan-1", "12#")]
    with pytest.raises(ToolError, match="digits must be"):
        builtins.send_dtmf(context(host), {"digits": "12x"})
    with pytest.raises(ToolError, match="Channel not in a Stasis application") as error:
        builtins.send_dtmf(context(FakeHost(ari=FakeAri(fail=True))), {"digits": "1"})
    assert error.value.code == "pbx_error" and error.value.details == {"status": 409}


def test_the_sample_order_tools_read_the_sample_data():
    config = {"data_file": str(retail.DEFAULT_DATA)}
    host = FakeHost()
    found = retail.lookup_order(context(host, config=config), {"order_number": "# 4-2-7"})
    assert found["found"] is True and found["order"]["status"] == "shipped"
    missing = retail.lookup_order(context(host, config=config), {"order_number": "999"})
    assert missing["found"] is False and "999" in missing["message"]
    mine = retail.list_caller_orders(context(host, config=config), {})
    assert [o["order_number"] for o in mine["orders"]] == ["427", "1138"]
    assert set(mine["orders"][0]) == {"order_number", "placed", "status", "total", "currency"}


def test_outputs_and_arguments():
    assert as_output("plain text") == "plain text"
    assert as_output(None) == '{"ok": true}'
    assert json.loads(as_output({"a": [1, "é"]})) == {"a": [1, "é"]}
    assert parse_arguments("") == {} and parse_arguments(' {"a": 1} ') == {"a": 1}
    with pytest.raises(ToolError) as error:
        parse_arguments('{"a": ')
    assert error.value.code == "invalid_json"
    with pytest.raises(ToolError, match="must be a JSON object"):
        parse_arguments("[1]")
    assert json.loads(ToolError("timeout", "too slow", limit=1).output()) == {
        "error": {"code": "timeout", "message": "too slow", "limit": 1}}


# the runner with a fake call -------------------------------------------------------------------

class FakeSession:
    def __init__(self) -> None:
        self.connections = 1
        self.sent: list[dict] = []
        self.creates = 0
        self.context: list[tuple[str, bool]] = []

    def send(self, event):
        validate_client_event(event)
        self.sent.append(event)
        return True

    def request_response(self):
        self.creates += 1

    def add_context(self, text, respond=True):
        self.context.append((text, respond))


class FakeCall(FakeHost):
    def __init__(self, agent, max_concurrent=4, default_timeout_s=10.0) -> None:
        super().__init__(agent=agent)
        self.settings = SimpleNamespace(tree={"tools": {
            "max_concurrent_per_call": max_concurrent, "default_timeout_s": default_timeout_s}})
        self.state = "active"
        self.session = FakeSession()
        self.entries: list[tuple[str, str, dict]] = []
        self.transcript = SimpleNamespace(add=lambda kind, text="", **f: self.entries.append(
            (kind, text, f)))
        self.greenlets: list[gevent.Greenlet] = []
        self.worker.webhooks = None

    def spawn(self, fn, *args):
        greenlet = gevent.spawn(fn, *args)
        self.greenlets.append(greenlet)
        return greenlet

    def outputs(self) -> dict[str, dict]:
        return {e["item"]["call_id"]: json.loads(e["item"]["output"]) for e in self.session.sent}


GATES: dict[str, gevent.event.Event] = {}


@pytest.fixture
def sleepy():
    """Built-ins for these tests: one that sleeps as long as asked, one that raises, one that
    waits until the test opens its gate (GATES)."""
    def nap(ctx, args):
        gevent.sleep(args.get("s", 0))
        return {"slept": args.get("s", 0)}

    def boom(ctx, args):
        raise KeyError("missing thing")

    def hold(ctx, args):
        GATES.setdefault(args["gate"], gevent.event.Event()).wait()
        return {"held": args["gate"]}

    BUILTINS.add(Builtin("test_nap", nap, "Sleeps.", {
        "type": "object", "properties": {"s": {"type": "number"}}}))
    BUILTINS.add(Builtin("test_boom", boom, "Raises."))
    BUILTINS.add(Builtin("test_hold", hold, "Waits until the test opens its gate.", {
        "type": "object", "properties": {"gate": {"type": "string"}}}))
    yield
    BUILTINS.remove("test_nap")
    BUILTINS.remove("test_boom")
    BUILTINS.remove("test_hold")
    GATES.clear()


def tool_agent(tmp_path: Path, tools: list) -> object:
    path = tmp_path / "runner.json"
    path.write_text(json.dumps({"instructions": "x", "tools": tools}))
    return load_agent(path)


def test_the_runner_sends_every_output_then_one_create(tmp_path, sleepy):
    call = FakeCall(tool_agent(tmp_path, [{"name": "test_nap"}, {"name": "test_boom"}]))
    tools = CallTools(call)
    tools.on_function_call("r1", "c1", "test_nap", '{"s": 0.05}')
    tools.on_function_call("r1", "c2", "test_boom", "{}")
    tools.on_function_call("r1", "c3", "nope", "{}")
    tools.on_function_call("r1", "c4", "test_nap", '{"s": "long"}')
    tools.on_response_done("r1", "completed")
    assert call.session.creates == 0                      # test_nap still sleeps
    gevent.joinall(call.greenlets, timeout=5)
    outputs = call.outputs()
    assert outputs["c1"] == {"slept": 0.05}
    assert outputs["c2"]["error"]["code"] == "tool_failed"
    assert "KeyError" in outputs["c2"]["error"]["message"]
    assert outputs["c3"]["error"] == {"code": "unknown_tool", "message":
                                      "there is no tool named 'nope'",
                                      "available": ["test_boom", "test_nap"]}
    assert outputs["c4"]["error"]["message"] == "arguments.s: expected number, got string"
    assert call.session.creates == 1 and tools.completed == 1 and tools.failed == 3
    done = [f for kind, _, f in call.entries if kind == "tool" and f["status"] != "running"]
    assert len(done) == 4 and all("duration_ms" in f for f in done)


def test_the_per_call_limit_makes_tools_wait_within_their_timeout(tmp_path, sleepy):
    # One slot. c1 holds it until the test opens its gate; c3 (timeout 0.3 s) finds no slot
    # free within its timeout; then c1 ends, c2 (timeout 1.5 s) takes the slot and does not
    # finish. The order comes from the gate, not from how fast this machine is: c2 has 1.2 s to
    # spare before its own timeout could strike while it still waits.
    call = FakeCall(tool_agent(tmp_path, [{"name": "test_hold", "timeout_s": 1.5},
                                          {"name": "test_nap", "timeout_s": 0.3}]),
                    max_concurrent=1)
    tools = CallTools(call)
    tools.on_function_call("r1", "c1", "test_hold", '{"gate": "c1"}')
    tools.on_function_call("r1", "c2", "test_hold", '{"gate": "never"}')   # waits for c1's slot
    tools.on_function_call("r1", "c3", "test_nap", '{"s": 0.0}')        # no slot within 0.3 s
    gevent.sleep(0.01)
    assert tools.running == 3
    c1, c2, c3 = call.greenlets
    c3.join(timeout=5)
    assert "c1" not in call.outputs()
    GATES["c1"].set()
    gevent.joinall([c1, c2], timeout=5)
    outputs = call.outputs()
    assert outputs["c1"] == {"held": "c1"}
    assert outputs["c2"]["error"]["message"] == "the tool did not finish within 1.5 s"
    assert outputs["c3"]["error"]["code"] == "timeout"
    assert "no tool slot came free within 0.3 s" in outputs["c3"]["error"]["message"]
    assert tools.running == 0


def test_an_output_for_a_replaced_session_goes_in_as_context(tmp_path, sleepy):
    """The new socket's conversation has no such function call: the result is added as a
    system message and the model asked to go on (the caller is waiting for that answer)."""
    call = FakeCall(tool_agent(tmp_path, [{"name": "test_nap"}]))
    tools = CallTools(call)
    tools.on_function_call("r1", "c1", "test_nap", '{"s": 0.05}')
    tools.on_response_done("r1", "completed")
    call.session.connections = 2                  # the socket was replaced meanwhile
    gevent.joinall(call.greenlets, timeout=5)
    assert call.session.sent == [] and len(tools.turns) == 0
    [(text, respond)] = call.session.context
    assert "test_nap" in text and respond is True
    assert call.session.creates == 0              # add_context asks for the response itself


def test_no_tool_runs_once_the_call_is_ending(tmp_path, sleepy):
    call = FakeCall(tool_agent(tmp_path, [{"name": "test_nap"}]))
    call.state = "ending"
    CallTools(call).on_function_call("r1", "c1", "test_nap", "{}")
    assert call.greenlets == []


# the webhook client ----------------------------------------------------------------------------

@pytest.fixture
def http():
    seen: list[dict] = []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        seen.append({"path": path, "body": environ["wsgi.input"].read()})
        if path == "/text":
            start_response("200 OK", [("Content-Type", "text/plain; charset=latin-1")])
            return ["Café ouvert".encode("latin-1")]
        if path == "/empty":
            start_response("204 No Content", [])
            return []
        if path == "/big":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"x" * 100_000]
        if path == "/slow":
            gevent.sleep(2)
        if path == "/moved":
            start_response("302 Found", [("Location", "/text")])
            return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such thing here"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.stop(timeout=1)


def test_webhook_answers_and_failures(http):
    base, seen = http
    client = WebhookClient(pool_size=2, max_body=1000)
    try:
        def call(path, timeout=2.0):
            return client.call(WebhookSpec(base + path), {"a": 1}, {"call_id": "c"}, timeout)

        assert call("/text") == "Café ouvert"
        assert json.loads(seen[0]["body"]) == {"arguments": {"a": 1}, "context": {"call_id": "c"}}
        assert json.loads(call("/empty")) == {"ok": True, "status": 204}
        assert call("/big") == "x" * 1000
        for path, code, status in (("/missing", "http_error", 404), ("/moved", "http_error", 302)):
            with pytest.raises(ToolError) as error:
                call(path)
            assert error.value.code == code and error.value.details["status"] == status
        with pytest.raises(ToolError) as error:
            call("/missing")
        assert error.value.details["body"] == "no such thing here"
        with pytest.raises(ToolError) as error:
            call("/slow", timeout=0.2)
        assert error.value.code == "timeout" and "0.2 s" in error.value.message
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(ToolError) as error:
            client.call(WebhookSpec(f"http://127.0.0.1:{port}/"), {}, {}, 1.0)
        assert error.value.code == "connection_error"
        assert error.value.message == "cannot reach the webhook: Connection refused"
        assert client.requests_made == 8 and client.errors == 5
    finally:
        client.close()


def test_the_sample_data_file_is_checked(tmp_path):
    bad = tmp_path / "orders.json"
    bad.write_text('{"orders": [{"number": 1}]}')
    with pytest.raises(ValueError, match="must hold"):
        retail._data_config({"data_file": str(bad)}, tmp_path)
    assert retail._data_config({"data_file": "orders.json"}, Path(retail.DEFAULT_DATA).parent) == {
        "data_file": str(retail.DEFAULT_DATA)}
