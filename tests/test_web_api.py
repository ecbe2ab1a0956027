"""The operations API on a live worker (simulated PBX and model): every endpoint and error,
access with and without a token, and no secret in anything it answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import websocket
from realtime_schema import validate_client_event
from stack import AGENTS_DIR, API_KEY, Stack, wait_for
from web_client import RecordingClient

from relay.config import ConfigError, load_settings
from relay.web import WebServer
from relay.web.redact import Redactor

HELLO = "Hello, I would like to check the status of my order."
SCRIPT = {
    "phrasebook": [HELLO],
    "greeting": "Hello, this is Acme. How can I help you today?",
    "rules": [{"keywords": ["status"], "say": "Sure. What is your order number?"}],
    "default": "I see.",
}
TOKEN = "dashboard-test-token-7f3a"
TOOLED = {
    "name": "Tooled", "instructions": "You are a test agent with tools.", "voice": "marin",
    "audio_format": "audio/pcmu",
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
    "input_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
    "tools": [{"name": "get_current_time"}, {"name": "end_call"}],
}
LONG_CALL = {"steps": [{"pause_ms": 600}, {"say": HELLO},
                       {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}},
                       {"pause_ms": 20000}]}


@pytest.fixture
def agents_dir(tmp_path) -> Path:
    folder = tmp_path / "agents"
    shutil.copytree(AGENTS_DIR, folder)
    (folder / "tooled.json").write_text(json.dumps(TOOLED))
    return folder


@pytest.fixture
def make(tmp_path, agents_dir):
    """make(token="", **settings) -> (stack, web): a Stack with the dashboard on port 0."""
    started = []

    def start(token: str = "", **settings):
        overrides = {"web.port": 0, "web.token": token, "agent.configs_dir": str(agents_dir)}
        overrides.update(settings)
        stack = Stack(tmp_path, model_script=SCRIPT, settings=overrides)
        web = WebServer(stack.worker).start()
        started.append((stack, web))
        return stack, web

    yield start
    for stack, web in started:
        for call in list(stack.worker.calls.values()):
            call.hangup("test over")
        web.stop()
        stack.stop()


def Client(web: WebServer, token: str = "") -> RecordingClient:
    """requests against one worker's dashboard, recording every body it receives."""
    return RecordingClient(web.url, token)


def live_call(stack: Stack, script=LONG_CALL):
    pbx_id = stack.call(script)
    call = stack.relay_call(pbx_id)
    wait_for(lambda: call.state == "active", 10, "the call to be set up")
    return pbx_id, call


# ---------------------------------------------------------------------------- access

def test_loopback_without_a_token_serves_everything(make):
    stack, web = make()
    api = Client(web)
    for path in ("/healthz", "/readyz", "/metrics", "/api/calls", "/api/agents", "/",
                 "/static/app.js", "/static/style.css"):
        assert api("GET", path).status_code == 200, path
    assert api("GET", "/login").status_code == 303       # nothing to log in to


def test_a_non_loopback_address_without_a_token_refuses_to_start():
    with pytest.raises(ConfigError, match="web.token.*WEB_TOKEN.*0.0.0.0.*not on loopback"):
        load_settings(env={"WEB_HOST": "0.0.0.0"})
    assert load_settings(env={"WEB_HOST": "0.0.0.0", "WEB_TOKEN": TOKEN}).get("web.token")
    assert load_settings(env={"DASHBOARD_TOKEN": TOKEN}).get("web.token") == TOKEN
    with pytest.raises(ConfigError, match="at least 8 characters"):
        load_settings(env={"WEB_TOKEN": "short"})
    worker = SimpleNamespace(settings=load_settings(env={}))     # no sockets needed
    with pytest.raises(ValueError, match="without an access token"):
        WebServer(worker, host="0.0.0.0")
    for host in ("127.0.0.1", "::1", "localhost"):
        WebServer(worker, host=host)      # loopback: fine without a token


def test_with_a_token_everything_but_healthz_needs_it(make):
    stack, web = make(TOKEN)
    anonymous, wrong, right = Client(web), Client(web, "wrong-token-123"), Client(web, TOKEN)
    assert anonymous("GET", "/healthz").status_code == 200
    protected = ["/readyz", "/metrics", "/api/calls", "/api/calls/nope", "/api/agents",
                 "/static/app.js", "/ws"]
    for path in protected:
        for client in (anonymous, wrong):
            response = client("GET", path)
            assert response.status_code == 401, (path, response.status_code)
            if path.startswith("/api") or path in ("/metrics", "/readyz"):
                assert "access token is required" in response.json()["error"]
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert right("GET", path).status_code in (200, 404, 426), path
    for method, path in (("POST", "/api/calls/x/config"), ("POST", "/api/calls/x/hangup")):
        assert anonymous(method, path).status_code == 401
        assert right(method, path).status_code == 404
    # the page sends a browser without the cookie to the login form
    page = anonymous("GET", "/")
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    assert anonymous("GET", "/login").status_code == 200
    assert anonymous("GET", "/static/style.css").status_code == 200
    assert right("GET", "/").status_code == 200


def test_the_login_form_and_the_token_link_set_a_cookie_without_the_token(make):
    stack, web = make(TOKEN)
    client = Client(web)
    refused = client("POST", "/login", data={"token": "not-the-token"})
    assert refused.status_code == 401 and "not right" in refused.text
    login = client("POST", "/login", data={"token": TOKEN})
    assert login.status_code == 303 and login.headers["Location"] == "/"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    name, value = cookie.split(";")[0].split("=", 1)
    with_cookie = {"Cookie": f"{name}={value}"}
    assert client("GET", "/api/calls", headers=with_cookie).status_code == 200
    assert client("GET", "/", headers=with_cookie).status_code == 200
    assert client("GET", "/api/calls", headers={"Cookie": f"{name}=forged"}).status_code == 401
    # /?token= logs in once and sends the browser to a URL without it
    link = client("GET", f"/?token={TOKEN}")
    assert link.status_code == 303 and link.headers["Location"] == "/"
    assert link.headers["Set-Cookie"] == cookie
    assert client("GET", "/?token=nope").status_code == 401
    # a change from another site's page is refused even with the cookie
    other = dict(with_cookie, Origin="http://evil.example")
    assert client("POST", "/api/calls/x/hangup", headers=other).status_code == 403
    same = dict(with_cookie, Origin=web.url.rstrip("/"))
    assert client("POST", "/api/calls/x/hangup", headers=same).status_code == 404
    # the event socket: with the bearer token or the cookie, never cross-site
    url = web.url.replace("http://", "ws://") + "ws"
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {TOKEN}"], timeout=5)
    assert json.loads(ws.recv())["type"] == "snapshot"
    ws.close()
    ws = websocket.create_connection(url, cookie=f"{name}={value}", timeout=5)
    assert json.loads(ws.recv())["type"] == "snapshot"
    ws.close()
    for kwargs in ({}, {"header": ["Authorization: Bearer wrong-token-123"]},
                   {"cookie": f"{name}={value}", "origin": "http://evil.example"}):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused_ws:
            websocket.create_connection(url, timeout=5, **kwargs)
        assert refused_ws.value.status_code in (401, 403)


# ---------------------------------------------------------------------------- endpoints

def test_calls_list_detail_health_and_agents(make):
    stack, web = make()
    api = Client(web)
    assert api("GET", "/api/calls").json()["calls"] == []
    pbx_id, call = live_call(stack)
    listed = api("GET", "/api/calls").json()
    assert [c["id"] for c in listed["calls"]] == [call.id]
    assert listed["worker"]["ari_connected"] is True
    wait_for(lambda: call.transcript.turns()[:2] == [
        ("caller", HELLO), ("assistant", "Sure. What is your order number?")], 15, "a turn")
    detail = api("GET", f"/api/calls/{call.id}").json()
    assert detail["live"] is True and detail["state"] == "active"
    kinds = [(e["kind"], e["text"]) for e in detail["transcript"]]
    assert ("caller", HELLO) in kinds
    assert ("assistant", "Sure. What is your order number?") in kinds
    assert detail["config"]["instructions"] == "You are a test agent."
    assert detail["config"]["voice"] == "marin" and "cedar" in detail["config"]["voices"]
    assert detail["audio"]["rtp_in"] > 0 and "jitter_ms" in detail["audio"]
    # the call's jitter buffer is the adaptive one (rtp.jitter_adaptive): its depth in frames
    audio = detail["audio"]
    assert 1 <= audio["jitter_depth"] <= audio["jitter_depth_max"] <= 8
    assert audio["jitter_depth_ms"] == 20 * audio["jitter_depth"]
    unknown = api("GET", "/api/calls/no-such-call")
    assert unknown.status_code == 404 and "no call" in unknown.json()["error"]
    agents = api("GET", "/api/agents").json()
    assert agents["active"] == "default"
    by_key = {a["key"]: a for a in agents["agents"]}
    assert set(by_key) == {"default", "greeter", "alaw", "tooled"} and by_key["default"]["active"]
    assert [t["name"] for t in by_key["tooled"]["tools"]] == ["get_current_time", "end_call"]
    assert api("GET", "/healthz").json() == {"ok": True}
    assert api("GET", "/readyz").json()["ready"] is True
    assert api("HEAD", "/readyz").status_code == 200
    stack.worker.accepting = False
    not_ready = api("GET", "/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["accepting"] is False
    stack.worker.accepting = True
    # an ended call still answers GET (from the worker's summaries), not the changes
    assert api("POST", f"/api/calls/{call.id}/hangup").status_code == 202
    wait_for(lambda: call.state == "ended", 10, "the call to end")
    ended = api("GET", f"/api/calls/{call.id}").json()
    assert ended["live"] is False and ended["end_reason"] == "hung up by the operator"
    assert ("caller", HELLO) in [(e["kind"], e["text"]) for e in ended["transcript"]]
    gone = api("POST", f"/api/calls/{call.id}/hangup")
    assert gone.status_code == 404 and "has ended" in gone.json()["error"]
    assert api("GET", "/api/calls").json()["finished"][0]["id"] == call.id
    stack.wait_calls([pbx_id], 15)


def test_config_changes_reach_the_model_and_bad_ones_say_why(make):
    stack, web = make(**{"agent.active": "tooled"})
    api = Client(web)
    pbx_id, call = live_call(stack)
    session = stack.model.sessions[0]
    url = f"/api/calls/{call.id}/config"
    done = api.post_json(url, {"instructions": "Answer in one word.", "voice": "cedar"})
    assert done.status_code == 200, done.text
    assert done.json()["sent"] == {"instructions": "Answer in one word.",
                                   "audio": {"output": {"voice": "cedar"}}}
    wait_for(lambda: session.config.get("instructions") == "Answer in one word.", 5,
             "the session.update")
    assert session.config["audio"]["output"]["voice"] == "cedar"
    turn_detection = {"type": "semantic_vad", "eagerness": "high", "interrupt_response": True}
    assert api.post_json(url, {"turn_detection": turn_detection,
                               "tools": ["get_current_time"]}).status_code == 200
    wait_for(lambda: [t["name"] for t in session.config.get("tools", [])]
             == ["get_current_time"], 5, "the tools update")
    assert session.config["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    updates = [e for e in session.client_events if e.get("type") == "session.update"]
    for event in updates:
        validate_client_event(event)
    assert not session.errors_sent
    # what is refused, and why
    cases = [
        ({"temperature": 0.3}, 400, "unknown field"),
        ({"voice": "robot"}, 400, "voice must be one of"),
        ({"tools": ["no_such_tool"]}, 400, "tools must be a list of this agent's tools"),
        ({"turn_detection": {"type": "push"}}, 400, "server_vad or semantic_vad"),
        # the agent would go deaf: nobody would commit the caller's audio or ask for answers
        ({"turn_detection": None}, 400, "turn_detection cannot be turned off"),
        ({"turn_detection": {"type": "server_vad", "create_response": False}}, 400,
         "create_response cannot be false"),
        ({"instructions": 7}, 400, "instructions must be a string"),
        ({}, 400, "nothing to change"),
    ]
    for body, status, reason in cases:
        response = api.post_json(url, body)
        assert response.status_code == status and reason in response.json()["error"], body
    assert api("POST", url, data="{not json", headers={
        "Content-Type": "application/json"}).status_code == 400
    assert api("POST", url, data="[1, 2]", headers={
        "Content-Type": "application/json"}).status_code == 400
    assert api("POST", url, data="", headers={
        "Content-Type": "application/json"}).status_code == 400
    form = api("POST", url, data="instructions=x")
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    huge = api.post_json(url, {"instructions": "x" * 70000})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert api.post_json("/api/calls/nope/config", {"voice": "cedar"}).status_code == 404
    # once the model has spoken the voice is refused, with the reason
    wait_for(lambda: call.session.model_has_spoken, 15, "the model to speak")
    refused = api.post_json(url, {"voice": "alloy"})
    assert refused.status_code == 400
    assert "cannot change once the model has spoken" in refused.json()["error"]
    assert api("GET", f"/api/calls/{call.id}").json()["config"]["voice_locked"] is True
    assert api.post_json(url, {"voice": "cedar"}).status_code == 200   # unchanged: fine
    assert not session.errors_sent
    call.hangup("test over")
    stack.wait_calls([pbx_id], 15)


def test_hangup_and_method_and_path_errors(make):
    stack, web = make(**{"web.ws_max_clients": 1})
    api = Client(web)
    url = web.url.replace("http://", "ws://") + "ws"
    first = websocket.create_connection(url, timeout=5)
    with pytest.raises(websocket.WebSocketBadStatusException) as full:
        websocket.create_connection(url, timeout=5)
    assert full.value.status_code == 503
    first.close()
    wait_for(lambda: not web.hub.clients, 5, "the first client to go")
    pbx_id, call = live_call(stack)
    bad = api.post_json(f"/api/calls/{call.id}/hangup", {"why": 1})
    assert bad.status_code == 400 and "unknown field" in bad.json()["error"]
    assert call.state == "active"
    for method, path, allowed in (
            ("GET", f"/api/calls/{call.id}/hangup", "POST"),
            ("GET", f"/api/calls/{call.id}/config", "POST"),
            ("DELETE", f"/api/calls/{call.id}", "GET"),
            ("PUT", "/api/calls", "GET, POST"), ("PUT", "/api/agents", "GET"),
            ("POST", "/metrics", "GET, HEAD"), ("DELETE", "/healthz", "GET, HEAD"),
            ("POST", "/", "GET, HEAD")):
        response = api(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allowed
        assert "not allowed" in response.json()["error"]
    for path in ("/api/nope", "/nope", "/static/nope.js", "/static/../server.py",
                 f"/api/calls/{call.id}/nope"):
        assert api("GET", path).status_code == 404, path
    assert api("GET", "/ws").status_code == 426
    hung = api.post_json(f"/api/calls/{call.id}/hangup", {"reason": "test"})
    assert hung.status_code == 202 and hung.json()["call"]["state"] in ("ending", "ended")
    [result] = stack.wait_calls([pbx_id], 15)
    assert call.end_reason == "hung up by the operator: test"
    assert result["end_reason"] != "script hangup"          # relay hung up the caller


def test_metrics_are_prometheus_text_with_what_calls_produce(make):
    stack, web = make(**{"agent.active": "greeter"})
    api = Client(web)
    script = {"steps": [{"after_agent": HELLO, "silence_ms": 400},
                        {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}}]}
    pbx_id = stack.call(script)
    stack.wait_calls([pbx_id], 30)
    stack.worker.counters["fallback_transcriptions"]["openai"] = {"ok": 2, "failed": 1}
    stack.worker.count_model_error("rate_limit_exceeded")
    response = api("GET", "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.text
    families: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped, f"{name}: TYPE without HELP"
            families[name] = kind
        else:
            name_labels, value = line.rsplit(" ", 1)
            base = name_labels.split("{")[0]
            family = next((f for f in families if base == f or (
                families[f] == "histogram" and base in (f + "_bucket", f + "_sum",
                                                        f + "_count"))), None)
            assert family, f"sample {line!r} before its # TYPE"
            samples[name_labels] = float(value)
    assert families["relay_calls_total"] == "counter"
    assert families["relay_calls_active"] == "gauge"
    assert families["relay_turn_latency_seconds"] == "histogram"
    assert samples["relay_calls_total"] == 1 and samples["relay_calls_active"] == 0
    assert samples["relay_calls_failed_total"] == 0
    assert samples["relay_turn_latency_seconds_count"] >= 1
    assert samples['relay_turn_latency_seconds_bucket{le="+Inf"}'] == \
        samples["relay_turn_latency_seconds_count"]
    assert samples["relay_rtp_sent_packets_total"] > 50
    assert samples["relay_rtp_received_packets_total"] > 10
    assert samples["relay_rtp_lost_packets_total"] == 0
    assert samples["relay_pacer_lateness_seconds_count"] > 100
    assert samples['relay_fallback_transcriptions_total{provider="openai",result="ok"}'] == 2
    assert samples['relay_model_errors_total{code="rate_limit_exceeded"}'] == 1
    assert "relay_barge_in_reaction_seconds_count" in samples
    # the model's health: nothing went wrong in this call
    assert families["relay_watchdog_total"] == "counter"
    for action in ("retry", "hold", "giveup"):
        assert samples[f'relay_watchdog_total{{action="{action}"}}'] == 0
    assert samples["relay_model_bad_events_total"] == 0
    assert families["relay_model_breaker_open"] == "gauge"
    assert samples["relay_model_breaker_open"] == 0
    assert samples["relay_model_breaker_opened_total"] == 0
    assert samples["relay_model_connect_failures_total"] == 0
    # the caller's audio reached the model and the model's reached the caller, each timed
    assert samples["relay_caller_audio_latency_seconds_count"] > 10
    assert samples["relay_model_audio_latency_seconds_count"] >= 1
    for family in ("relay_caller_audio_latency_seconds", "relay_model_audio_latency_seconds"):
        assert 0 < samples[family + "_sum"] / samples[family + "_count"] < 1.0


def test_barge_in_reaction_is_observed(make):
    stack, web = make(**{"agent.active": "greeter"})
    long_reply = ("Our opening hours are eight to six on weekdays and nine to one on "
                  "Saturdays, and we are closed on Sundays and public holidays.")
    stop = "Sorry, stop please."
    stack.model.script = dict(SCRIPT, greeting=long_reply, phrasebook=[stop])
    pbx_id = stack.call({"steps": [{"barge_in": stop, "after_ms": 1200},
                                   {"wait_agent_done": {"silence_ms": 600,
                                                        "timeout_ms": 15000}}]})
    call = stack.relay_call(pbx_id)
    stack.wait_calls([pbx_id], 30)
    assert call.barge_ins == 1 and len(call.barge_in_reactions_ms) == 1
    assert 0.0 <= call.barge_in_reactions_ms[0] <= 40.0      # at most one frame after it
    histogram = stack.worker.histograms["barge_in_reaction_seconds"]
    assert histogram.count == 1
    assert Client(web)("GET", "/metrics").text.count("relay_barge_in_reaction_seconds_count 1")


# ---------------------------------------------------------------------------- secrets

def test_no_secret_in_any_response_page_message_or_log(make, caplog):
    caplog.set_level("DEBUG")
    stack, web = make(TOKEN, **{"agent.active": "tooled"})
    web.redactor = Redactor([])         # the views alone must not leak (no safety net)
    web.hub.scrub = web.redactor.scrub
    secrets = [API_KEY, stack.pbx.password, TOKEN]
    assert all(secrets)
    api = Client(web, TOKEN)
    url = web.url.replace("http://", "ws://") + "ws"
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {TOKEN}"], timeout=5)
    pbx_id, call = live_call(stack)
    wait_for(lambda: ("caller", HELLO) in call.transcript.turns(), 15, "the caller's turn")
    api.post_json(f"/api/calls/{call.id}/config", {"instructions": "Be brief."})
    api.post_json(f"/api/calls/{call.id}/config", {"voice": "robot"})
    for method, path in (("GET", "/"), ("GET", "/index.html"), ("GET", "/static/app.js"),
                         ("GET", "/static/style.css"), ("GET", "/static/favicon.svg"),
                         ("GET", "/login"), ("GET", "/healthz"), ("GET", "/readyz"),
                         ("GET", "/metrics"), ("GET", "/api/calls"),
                         ("GET", f"/api/calls/{call.id}"), ("GET", "/api/agents"),
                         ("GET", "/api/nope"), ("POST", "/api/calls"), ("GET", "/ws")):
        api(method, path)
    anonymous = Client(web)
    anonymous("GET", "/api/calls")
    anonymous("POST", "/login", data={"token": TOKEN})
    anonymous("GET", f"/?token={TOKEN}")
    anonymous("GET", "/?token=wrong-one-123")
    call.hangup("test over")
    stack.wait_calls([pbx_id], 15)
    api("GET", f"/api/calls/{call.id}")
    messages = [ws.recv()]
    ended = f'"id":"{call.id}"'
    while not (ended in messages[-1] and '"state":"ended"' in messages[-1]
               and messages[-1].startswith('{"type":"call"')):
        messages.append(ws.recv())       # bounded by the socket's 5 s timeout
    ws.close()
    assert any('"type":"transcript"' in m for m in messages)
    everything = b"\n".join(api.bodies + anonymous.bodies).decode("utf-8", "replace")
    everything += "\n".join(messages)
    assert len(api.bodies) > 30
    for secret in secrets:
        assert secret not in everything, f"a secret ({secret[:3]}...) reached a client"
    web_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(
        ("relay.web", "relay.serve", "relay.metrics", "geventwebsocket")))
    assert TOKEN not in web_logs and API_KEY not in web_logs


def test_the_redactor_scrubs_a_secret_the_model_quotes(make):
    stack, web = make()
    api = Client(web)
    ws = websocket.create_connection(web.url.replace("http://", "ws://") + "ws", timeout=5)
    pbx_id, call = live_call(stack)
    stack.model.inject(kind="error", error={"type": "invalid_request_error",
                                            "code": "leaky", "message": f"key {API_KEY}!"})
    wait_for(lambda: any("leaky" in e["text"] for e in call.transcript.entries()), 10,
             "the model's error in the transcript")
    body = api("GET", f"/api/calls/{call.id}").text
    assert "model error leaky: key ***!" in body and API_KEY not in body
    ws.settimeout(2)
    seen = ""
    while "leaky" not in seen:
        seen = ws.recv()
    assert "key ***!" in seen and API_KEY not in seen
    ws.close()
    call.hangup("test over")
    stack.wait_calls([pbx_id], 15)
