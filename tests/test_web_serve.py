"""`relay serve` with its dashboard: started with the worker (here on a free port, with a
token), answering while calls run, stopped by SIGTERM; and refused without a token when it
would listen beyond loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests
from stack import AGENTS_DIR, wait_for

from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "serve-test-token-0d9e"
API_KEY = "sk-serve-dashboard-4411"


def test_serve_runs_the_dashboard_and_stops_it_on_sigterm(tmp_path):
    pbx = SimPbx(recordings_dir=tmp_path / "pbx").start()
    model = SimModel(api_key=API_KEY, script={"default": "Yes?"}).start()
    env = dict(os.environ,
               ARI_URL=f"http://127.0.0.1:{pbx.port}", ARI_USERNAME=pbx.user,
               ARI_PASSWORD=pbx.password, ARI_APP_NAME="served-web",
               OPENAI_API_KEY=API_KEY, OPENAI_REALTIME_URL=model.url,
               AGENT_CONFIGS_DIR=str(AGENTS_DIR), RTP_PORT_MIN="0", RTP_PORT_MAX="0",
               TRANSCRIPTS_DIR=str(tmp_path / "t"), LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1",
               WEB_HOST="127.0.0.1", WEB_PORT="0", WEB_TOKEN=TOKEN)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--stop-timeout", "5"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        found = wait_for(lambda: re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)",
                                           log_path.read_text()), 15, "the dashboard to start")
        base = found.group(1)
        assert requests.get(base + "healthz", timeout=5).status_code == 200
        assert requests.get(base + "api/calls", timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        wait_for(lambda: requests.get(base + "readyz", headers=auth, timeout=5).ok, 15,
                 "relay to be ready")
        call = pbx.start_call({"steps": [{"pause_ms": 30000}]}, app="served-web")
        calls = wait_for(lambda: requests.get(base + "api/calls", headers=auth,
                                              timeout=5).json()["calls"], 10, "the call")
        assert calls[0]["state"] in ("setup", "active")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        pbx.wait_calls([call], 10)
        try:
            requests.get(base + "healthz", timeout=2)
            raise AssertionError("the dashboard still answers after the stop")
        except requests.ConnectionError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
        model.stop()
        pbx.stop()
    log = log_path.read_text()
    assert "access token required" in log and "relay shutting down" in log
    for secret in (TOKEN, API_KEY):
        assert secret not in log


def test_serve_refuses_to_expose_the_dashboard_without_a_token():
    env = dict(os.environ, WEB_HOST="0.0.0.0", WEB_PORT="0")
    env.pop("WEB_TOKEN", None)
    env.pop("DASHBOARD_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "relay", "serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert "WEB_TOKEN" in done.stderr and "not on loopback" in done.stderr
