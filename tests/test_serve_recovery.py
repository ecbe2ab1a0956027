"""Crash recovery of a lone `relay serve`: SIGKILLed while it carries calls, it leaves its callers
in Stasis and its bridges and externalMedia channels on Asterisk (nothing cleans up after a
dead process); started again, it removes what the old run left and takes the waiting callers
over (they hear the agent again), or hangs them up with WAITING_CALLERS=hang_up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from stack import AGENTS_DIR, wait_for

from relay.sim.model import SimModel
from relay.sim.pbx.server import SimPbx

ROOT = Path(__file__).resolve().parents[1]
APP = "crashy"
CALLS = 5


def _serve(env: dict, log_path: Path) -> subprocess.Popen:
    with log_path.open("a") as log:
        return subprocess.Popen([sys.executable, "-m", "relay", "serve", "--stop-timeout", "5"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _bridge_of(pbx: SimPbx, channel_id: str):
    for channel in pbx.inspect()["channels"]:
        if channel["id"] == channel_id:
            return channel["bridge"] or None
    return None


@pytest.mark.parametrize("policy", ["take_over", "hang_up"])
def test_a_killed_serve_started_again_cleans_up_and_takes_its_callers_over(tmp_path, policy):
    pbx = SimPbx(recordings_dir=tmp_path / "pbx").start()
    model = SimModel(api_key="sk-crash", script={
        "greeting": "Hello, thank you for calling. How can I help you today?"}).start()
    env = dict(os.environ,
               ARI_URL=f"http://127.0.0.1:{pbx.port}", ARI_USERNAME=pbx.user,
               ARI_PASSWORD=pbx.password, ARI_APP_NAME=APP,
               OPENAI_API_KEY="sk-crash", OPENAI_REALTIME_URL=model.url,
               AGENT_CONFIGS_DIR=str(AGENTS_DIR), ACTIVE_AGENT_CONFIG_KEY="greeter",
               RTP_PORT_MIN="0", RTP_PORT_MAX="0", TRANSCRIPTS_DIR=str(tmp_path / "t"),
               WEB_PORT="0", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
               WAITING_CALLERS=policy)
    log_path = tmp_path / "serve.log"
    process = _serve(env, log_path)
    restarted = None
    try:
        wait_for(lambda: any(a["name"] == APP and a["active"]
                             for a in pbx.inspect()["applications"]), 20, "relay to connect")
        ids = pbx.start_calls({"steps": [{"pause_ms": 60000}]}, count=CALLS, app=APP)
        wait_for(lambda: all(pbx.call(i)["channel_id"] for i in ids), 10, "the callers")
        callers = [pbx.call(i)["channel_id"] for i in ids]
        wait_for(lambda: all(_bridge_of(pbx, c) for c in callers), 20, "every call bridged")
        wait_for(lambda: all(r["agent"]["voiced_packets"] > 25 for r in pbx.calls(ids)), 20,
                 "every caller to hear the greeting")
        old_bridges = {_bridge_of(pbx, c) for c in callers}
        process.kill()
        process.wait(10)
        # what a dead process leaves: callers in Stasis, its bridges and media channels
        live = pbx.inspect()
        assert {b["id"] for b in live["bridges"]} == old_bridges
        assert sum(c["name"].startswith("UnicastRTP/") for c in live["channels"]) == CALLS
        heard_before = {r["id"]: r["agent"]["voiced_packets"] for r in pbx.calls(ids)}

        restarted = _serve(env, log_path)
        wait_for(lambda: not ({b["id"] for b in pbx.inspect()["bridges"]} & old_bridges), 15,
                 "the old run's bridges to be removed")
        if policy == "take_over":
            wait_for(lambda: all(_bridge_of(pbx, c) not in (None, *old_bridges)
                                 for c in callers), 15, "every caller bridged again")
            wait_for(lambda: all(r["agent"]["voiced_packets"] > heard_before[r["id"]] + 25
                                 for r in pbx.calls(ids)), 20,
                     "every caller to hear the agent again")
            media = [c for c in pbx.inspect()["channels"] if c["name"].startswith("UnicastRTP/")]
            assert len(media) == CALLS      # the new run's, one per caller; the old ones gone
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(30) == 0
            results = pbx.wait_calls(ids, 15)
        else:
            results = pbx.wait_calls(ids, 15)
            assert all(r["end_reason"] == "hung up" for r in results)
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(30) == 0
        live = pbx.inspect()
        assert live["channels"] == [] and live["bridges"] == []
    finally:
        for p in (process, restarted):
            if p is not None and p.poll() is None:
                p.kill()
        model.stop()
        pbx.stop()
    log = log_path.read_text()
    assert log.count("left on Asterisk by no live call") == 2 * CALLS
    word = "taking it over" if policy == "take_over" else "hanging up"
    assert log.count(f"waiting in the app with no conversation; {word}") == CALLS
