"""`relay serve` as a user runs it: a process configured by environment variables, against the
simulators, stopped by SIGTERM with a call still live (which it must end properly)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from stack import AGENTS_DIR, wait_for

from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx

HELLO = "Hello, is anybody there?"
ROOT = Path(__file__).resolve().parents[1]


def test_serve_carries_a_call_and_stops_cleanly_on_sigterm(tmp_path):
    pbx = SimPbx(recordings_dir=tmp_path / "pbx").start()
    model = SimModel(api_key="sk-serve", script={"phrasebook": [HELLO],
                                                 "default": "Yes, I am here."}).start()
    env = dict(os.environ,
               ARI_URL=f"http://127.0.0.1:{pbx.port}", ARI_USERNAME=pbx.user,
               ARI_PASSWORD=pbx.password, ARI_APP_NAME="served",
               OPENAI_API_KEY="sk-serve", OPENAI_REALTIME_URL=model.url,
               REALTIME_MODEL="gpt-realtime", AGENT_CONFIGS_DIR=str(AGENTS_DIR),
               RTP_PORT_MIN="0", RTP_PORT_MAX="0", TRANSCRIPTS_DIR=str(tmp_path / "t"),
               WEB_PORT="0", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--stop-timeout", "5"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(a["name"] == "served" and a["active"]
                             for a in pbx.inspect()["applications"]), 15, "relay to connect")
        first = pbx.start_call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                          {"wait_agent_done": {"silence_ms": 500}}]},
                               app="served")
        pbx.wait_calls([first], 30)
        second = pbx.start_call({"steps": [{"pause_ms": 30000}]}, app="served")

        def second_call_bridged() -> bool:
            channel_id = pbx.call(second)["channel_id"]
            return any(c["id"] == channel_id and c["bridge"]
                       for c in pbx.inspect()["channels"])
        wait_for(second_call_bridged, 10, "the second call to be bridged")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        [result] = pbx.wait_calls([second], 10)
        live = pbx.inspect()
        assert live["channels"] == [] and live["bridges"] == []
        assert result["end_reason"] != "script hangup"
    finally:
        if process.poll() is None:
            process.kill()
        model.stop()
        pbx.stop()
    log = log_path.read_text()
    assert "ARI events connected" in log
    assert "call " in log and "relay shutting down" in log
    transcripts = list((tmp_path / "t").glob("*.jsonl"))
    assert len(transcripts) == 2
    assert HELLO in "".join(p.read_text() for p in transcripts)


def test_serve_refuses_a_bad_setting_with_a_clear_message(tmp_path):
    env = dict(os.environ, RTP_PORT_MIN="many")
    done = subprocess.run([sys.executable, "-m", "relay", "serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "RTP_PORT_MIN" in done.stderr and "must be int" in done.stderr
