"""Placing an outbound call through the operations API (POST /api/calls, GET /api/dials) and the
`relay call` command talking to a running relay."""

from __future__ import annotations

import argparse
import io
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from stack import Stack, wait_for
from web_client import RecordingClient

from relay.outbound import cli
from relay.web import WebServer

TOKEN = "operator-token-1"
AGENT = {
    "name": "Caller", "instructions": "You call {customer_name}.",
    "greeting": {"instructions": "Greet {customer_name}."}, "audio_format": "audio/pcmu",
}
SCRIPT = {"greeting": "Hello from the shop.", "default": "I see."}
HANGS_UP = {"steps": [{"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}},
                      {"hangup": True}]}


@pytest.fixture
def relay(tmp_path: Path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "caller.json").write_text(json.dumps(AGENT))
    s = Stack(tmp_path, model_script=SCRIPT, settings={
        "agent.configs_dir": str(agents), "agent.active": "caller", "web.port": 0,
        "web.token": TOKEN})
    web = WebServer(s.worker).start()
    s.pbx.register_endpoint("busy", {"answer": "busy"})
    s.pbx.register_endpoint("alice", {"answer": "answer", "script": HANGS_UP})
    s.web = web
    s.config_file = tmp_path / "cli.json"
    s.config_file.write_text(json.dumps({
        "web": {"port": urlparse(web.url).port, "token": TOKEN},
        "agent": {"configs_dir": str(agents), "active": "caller"}}))
    try:
        yield s
    finally:
        web.stop()
        s.stop()


def final(client: RecordingClient, channel_id: str) -> dict:
    def find():
        recent = client.get("/api/dials").json()["recent"]
        return next((d for d in recent if d["channel_id"] == channel_id), None)
    return wait_for(find, 30, f"the outcome of {channel_id}")


def test_post_places_the_call_and_the_outcome_is_listed(relay):
    client = RecordingClient(relay.web.url, TOKEN)
    answer = client.post_json("/api/calls", {"endpoint": "PJSIP/busy",
                                             "variables": {"customer_name": "Al"}})
    assert answer.status_code == 201
    dial = answer.json()["dial"]
    assert dial["endpoint"] == "PJSIP/busy" and dial["agent"] == "caller"
    assert dial["state"] in ("ringing", "ended")
    done = final(client, dial["channel_id"])
    assert (done["outcome"], done["cause"], done["cause_txt"]) == ("busy", 17, "User busy")
    assert client.get("/api/dials").json()["pending"] == []

    answered = client.post_json("/api/calls", {"endpoint": "PJSIP/alice", "agent": "caller",
                                               "variables": {"customer_name": "Alice"},
                                               "campaign_id": "spring", "attempt": 2})
    channel_id = answered.json()["dial"]["channel_id"]
    done = final(client, channel_id)
    assert done["outcome"] == "answered" and done["reason"] == "caller hung up"
    assert (done["campaign_id"], done["attempt"]) == ("spring", 2)
    assert relay.model.sessions[0].config["instructions"] == "You call Alice."


@pytest.mark.parametrize("body, status, message", [
    ({"endpoint": "PJSIP/alice"}, 400, "{customer_name}"),
    ({"endpoint": "PJSIP/alice", "variables": {"customer_name": "A"}, "colour": 1}, 400,
     "unknown field(s): colour"),
    ({"variables": {"customer_name": "A"}}, 400, "endpoint is required"),
    ({"endpoint": "PJSIP/alice", "agent": "nobody", "variables": {"customer_name": "A"}},
     400, "nobody"),
    ({"endpoint": "PJSIP/alice", "ring_timeout_s": 0.5, "variables": {"customer_name": "A"}},
     400, "ring_timeout_s"),
    ({"endpoint": "Foo/bar", "variables": {"customer_name": "A"}}, 502, "Allocation failed"),
])
def test_refused_requests_say_why(relay, body, status, message):
    client = RecordingClient(relay.web.url, TOKEN)
    answer = client.post_json("/api/calls", body)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    if status == 502:
        assert answer.json()["dial"]["outcome"] == "failed"
    assert RecordingClient(relay.web.url).post_json("/api/calls", body).status_code == 401


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_relay_call_places_a_call_and_waits_for_its_outcome(relay):
    code, out, err = run_cli("PJSIP/alice", "--agent", "caller", "--var", "customer_name=Bo",
                             "--wait", "--config", str(relay.config_file))
    assert code == 0, err
    assert '"outcome": "answered"' in out and '"customer_name": "Bo"' in out
    code, out, err = run_cli("PJSIP/busy", "--var", "customer_name=Bo", "--wait",
                             "--config", str(relay.config_file))
    assert code == 1 and '"outcome": "busy"' in out


def test_relay_call_errors_are_clear(relay, tmp_path):
    code, _, err = run_cli("PJSIP/alice", "--config", str(relay.config_file))
    assert code == 2 and "{customer_name}" in err
    code, _, err = run_cli("PJSIP/alice", "--var", "oops", "--config", str(relay.config_file))
    assert code == 2 and "NAME=VALUE" in err
    with socket.socket() as sock:       # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"web": {"port": port}}))
    code, _, err = run_cli("PJSIP/alice", "--var", "customer_name=A", "--config", str(nobody))
    assert code == 2 and "no relay answers" in err and "relay serve" in err
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"web": {"port": urlparse(relay.web.url).port,
                                         "token": "wrong-token"}}))
    code, _, err = run_cli("PJSIP/alice", "--var", "customer_name=A", "--config", str(wrong))
    assert code == 2 and "token" in err
