"""`relay check` against the simulated PBX and model: the happy path, and each failure it
must name (wrong ARI password, ARI not there, app taken, no RTP back, wrong OpenAI key)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gevent.pywsgi import WSGIServer
from stack import AGENTS_DIR

from relay.ari import AriClient
from relay.check import FAIL, OK, SKIP, WARN, exit_status
from relay.check.cli import run_checks
from relay.check.services import transcriber
from relay.config import load_settings
from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx
from relay.wsclient import JsonWebSocket

KEY = "sk-check-test"
# the README's [relay-check] context: exten => s,1,Answer() same => n,Echo()
ECHO_DIALPLAN = {"steps": [{"echo": True}], "end": "wait"}
NO_ECHO_DIALPLAN = {"steps": [], "end": "wait"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sims(tmp_path):
    pbx = SimPbx(recordings_dir=tmp_path / "pbx").start()
    pbx.register_dialplan("relay-check", {"steps": [], "end": "wait"})
    model = SimModel(api_key=KEY).start()
    yield pbx, model
    model.stop()
    pbx.stop()


def overrides(pbx, model, **more):
    out = {"ari.url": f"http://127.0.0.1:{pbx.port}", "ari.username": "relay",
           "ari.password": pbx.password, "ari.app": "checked",
           "openai.realtime_url": model.url, "openai.api_key": KEY,
           "agent.configs_dir": str(AGENTS_DIR), "rtp.port_min": 0, "rtp.port_max": 0}
    out.update(more)
    return out


def by_name(checks):
    return {c.name: c for c in checks}


def assert_nothing_left(pbx):
    live = pbx.inspect()
    assert live["channels"] == [] and live["bridges"] == []


def start(tmp_path, dialplan=ECHO_DIALPLAN, **kw):
    pbx = SimPbx(user="relay", password="secret-ari", recordings_dir=tmp_path / "pbx",
                 **kw).start()
    pbx.register_dialplan("relay-check", dialplan)
    return pbx


def test_everything_passes_on_a_working_setup_and_nothing_is_left(tmp_path, sims):
    pbx = start(tmp_path)
    model = sims[1]
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, model))
        found = by_name(checks)
        assert exit_status(checks) == 0, [c for c in checks if c.status == FAIL]
        for name in ("settings", "agent files", "reachable", "credentials", "version",
                     "app name", "externalMedia", "Local channel", "Asterisk → relay",
                     "session", "cleanup"):
            assert found[name].status == OK, found[name]
        assert "Asterisk 22" in found["version"].found
        # the relay-check context runs Echo(): the tone relay sent came back
        back = found["relay → Asterisk"]
        assert back.status == OK, back
        assert re.search(r"50 packets sent to 127\.0\.0\.1:\d+; Asterisk took them: "
                         r"\d+ frames of the tone came back through Local/s@relay-check's "
                         r"Echo\(\)", back.found), back.found
        assert "session.created" in found["session"].found
        assert found["RTP buffers"].status in (OK, WARN)     # WARN: a host's capped buffers
        assert_nothing_left(pbx)
    finally:
        pbx.stop()


def test_rtp_buffers_the_kernel_capped_are_a_warning_with_the_setting_to_raise(
        tmp_path, sims, monkeypatch):
    from relay import media
    monkeypatch.setattr(media, "SOCKET_BUFFER", 1 << 30)         # past any host's limit
    monkeypatch.setattr(media, "_SO_RCVBUFFORCE", -1)            # and not allowed to force
    monkeypatch.setattr(media, "_SO_SNDBUFFORCE", -1)
    pbx = start(tmp_path)
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1]))
        buffers = by_name(checks)["RTP buffers"]
        assert exit_status(checks) == 0                          # calls work, at a risk
        assert buffers.status == WARN
        assert "receive buffer" in buffers.found and "raise net.core.rmem_max" in buffers.found
        assert "net.core.wmem_max" in buffers.found
        assert "sysctl -w net.core.rmem_max=" in buffers.fix and "CAP_NET_ADMIN" in buffers.fix
        assert by_name(checks)["Asterisk → relay"].status == OK
        assert_nothing_left(pbx)
    finally:
        pbx.stop()


def test_without_echo_in_the_dialplan_the_way_back_is_not_verified(tmp_path, sims):
    pbx = start(tmp_path, dialplan=NO_ECHO_DIALPLAN)
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1]))
        found = by_name(checks)
        assert exit_status(checks) == 0       # a warning, not a failure
        assert found["Local channel"].status == OK
        assert found["Asterisk → relay"].status == OK
        # honestly reported as not verified: the dialplan has no Echo()
        back = found["relay → Asterisk"]
        assert back.status == WARN
        assert "not verified" in back.found and "runs no Echo()" in back.found
        assert "Echo()" in back.fix
        assert_nothing_left(pbx)
    finally:
        pbx.stop()


def test_a_wrong_ari_password_names_the_settings_and_ari_conf(tmp_path, sims):
    pbx = start(tmp_path)
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1],
                                                        **{"ari.password": "wrong"}))
        found = by_name(checks)
        assert exit_status(checks) == 1
        assert found["credentials"].status == FAIL
        assert "ARI_USERNAME/ARI_PASSWORD" in found["credentials"].fix
        assert "ari.conf" in found["credentials"].fix
        assert found["media path"].status == SKIP
        assert found["session"].status == OK      # the other groups still ran
    finally:
        pbx.stop()


def test_an_http_server_without_ari_says_ari_is_not_enabled(sims):
    pbx, model = sims
    checks = run_checks(env={}, overrides=overrides(pbx, model,
                                                    **{"ari.url": model.http_url}))
    found = by_name(checks)
    assert found["reachable"].status == FAIL
    assert "404" in found["reachable"].found
    assert "http.conf enabled=yes" in found["reachable"].fix
    assert "ari.conf" in found["reachable"].fix


def test_an_app_held_by_another_connection_is_not_taken_over(tmp_path, sims):
    pbx = start(tmp_path)
    other = JsonWebSocket(AriClient(f"http://127.0.0.1:{pbx.port}", "relay", "secret-ari",
                                    "checked").events_url("checked", "relay:secret-ari"),
                          on_message=lambda m: None, on_closed=lambda c, r: None)
    other.connect()
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1]))
        found = by_name(checks)
        assert exit_status(checks) == 1
        assert found["app name"].status == FAIL
        assert "replace" in found["app name"].found
        assert found["media path"].status == SKIP
        assert other.connected            # nobody replaced it
        # on another name, the media path is checked all the same
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1]), media_app="chk-media")
        assert by_name(checks)["Asterisk → relay"].status == OK
        assert other.connected
        assert_nothing_left(pbx)
    finally:
        other.close()
        pbx.stop()


def test_no_rtp_back_when_the_advertised_address_is_not_relays(tmp_path, sims):
    pbx = start(tmp_path)
    try:
        # relay listens on 127.0.0.1 but tells Asterisk to send to 127.0.0.2: nothing arrives
        checks = run_checks(env={}, overrides=overrides(
            pbx, sims[1], **{"rtp.advertise_host": "127.0.0.2"}))
        found = by_name(checks)
        assert exit_status(checks) == 1
        assert found["Asterisk → relay"].status == FAIL
        assert "no RTP reached 127.0.0.2:" in found["Asterisk → relay"].found
        assert "RTP_ADVERTISE_HOST" in found["Asterisk → relay"].fix
        assert found["cleanup"].status == OK
        assert_nothing_left(pbx)
    finally:
        pbx.stop()


def test_a_wrong_openai_key_is_reported_with_the_services_words(tmp_path, sims):
    pbx = start(tmp_path)
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, sims[1],
                                                        **{"openai.api_key": "sk-wrong-key"}))
        found = by_name(checks)
        assert exit_status(checks) == 1
        assert found["session"].status == FAIL
        assert "invalid_api_key" in found["session"].found
        assert "Incorrect API key" in found["session"].found
        assert "sk-wrong-key" not in found["session"].found
        assert "OPENAI_API_KEY" in found["session"].fix
    finally:
        pbx.stop()


def test_the_bearer_form_against_an_api_key_endpoint_names_the_header(tmp_path):
    pbx = start(tmp_path)
    model = SimModel(api_key=KEY, auth="api-key").start()
    try:
        checks = run_checks(env={}, overrides=overrides(pbx, model))
        session = by_name(checks)["session"]
        assert session.status == FAIL and "'api-key' header" in session.found
        assert "OPENAI_AUTH" in session.fix
        checks = run_checks(env={}, overrides=overrides(
            pbx, model, **{"openai.auth": "api-key", "openai.model": "my-deployment",
                           "openai.realtime_url": model.azure_url}))
        assert by_name(checks)["session"].status == OK
    finally:
        model.stop()
        pbx.stop()


def test_a_bad_setting_stops_at_the_settings(tmp_path):
    checks = run_checks(env={"RTP_PORT_MIN": "many"})
    assert [c.status for c in checks] == [FAIL]
    assert "RTP_PORT_MIN" in checks[0].found


def test_the_command_prints_json_and_exits_1_on_a_failure(tmp_path, sims):
    pbx, model = sims
    env = dict(os.environ, ARI_URL=f"http://127.0.0.1:{pbx.port}", ARI_USERNAME=pbx.user,
               ARI_PASSWORD="not-the-password", ARI_APP_NAME="cli", OPENAI_API_KEY=KEY,
               OPENAI_REALTIME_URL=model.url, AGENT_CONFIGS_DIR=str(AGENTS_DIR),
               RTP_PORT_MIN="0", RTP_PORT_MAX="0")
    done = subprocess.run([sys.executable, "-m", "relay", "check", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["credentials"] == "fail" and statuses["session"] == "ok"
    done = subprocess.run([sys.executable, "-m", "relay", "check"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert re.search(r"✗ credentials\s+.*401", done.stdout)
    assert "fix: wrong" in done.stdout and "ARI_USERNAME/ARI_PASSWORD" in done.stdout


def test_the_transcriber_key_check_sends_the_realtime_key_as_openai_auth_says(tmp_path):
    seen = []

    def app(environ, start_response):          # Azure: only the api-key header is taken
        seen.append((environ.get("HTTP_API_KEY"), environ.get("HTTP_AUTHORIZATION")))
        ok = environ.get("HTTP_API_KEY") == KEY
        start_response("200 OK" if ok else "401 Unauthorized", [("Content-Length", "2")])
        return [b"{}"]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    try:
        settings = load_settings(env={}, overrides={
            "openai.api_key": KEY, "openai.auth": "api-key", "stt.asyncSttEnabled": True,
            "stt.asyncSttProvider": "openai",
            "stt.openai_base_url": f"http://127.0.0.1:{server.server_port}/openai"})
        [check] = transcriber(settings)
        assert check.status == OK and "key accepted" in check.found
        assert seen == [(KEY, None)]
    finally:
        server.stop(timeout=1)
