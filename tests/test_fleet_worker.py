"""The worker's side of the fleet: drain, args that a dispatcher's move joined with commas, and
resource ids that carry the worker's app name (relay/worker.py, relay/call.py)."""

from __future__ import annotations

import gevent
from stack import APP, wait_for

HELLO = "Hello, is anybody there?"
MODEL = {"phrasebook": [HELLO], "default": "Yes, I am here."}
CONVERSATION = {"steps": [{"pause_ms": 300}, {"say": HELLO},
                          {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 20000}}]}
CONGESTION = 34


def bridged(stack, pbx_call_id: str) -> bool:
    channel_id = stack.pbx.call(pbx_call_id)["channel_id"]
    return any(c["id"] == channel_id and c["bridge"] for c in stack.pbx.inspect()["channels"])


def test_drain_lets_live_calls_finish_and_refuses_new_ones(stack):
    s = stack(model_script=MODEL)
    live = s.call(CONVERSATION)
    wait_for(lambda: bridged(s, live), 10, "the live call to be bridged")
    drain = gevent.spawn(s.worker.drain, 60, 5)
    wait_for(lambda: not s.worker.accepting, 5, "the drain to begin")
    assert not s.worker.ready
    late = s.call({"steps": [{"pause_ms": 20000}]})
    [refused] = s.pbx.wait_calls([late], 10)
    assert refused["cause"] == CONGESTION
    assert refused["externals"] == {}
    [result] = s.pbx.wait_calls([live], 30)
    assert result["end_reason"] == "script ended"
    assert not any(e.get("timed_out") for e in result["script"]["log"])
    assert drain.get(timeout=15) == 0           # nothing was left to end at the deadline
    assert s.finished(live)["end_reason"] == "caller hung up"


def test_drain_ends_the_calls_still_live_at_its_deadline(stack):
    s = stack(model_script=MODEL)
    ids = [s.call({"steps": [{"pause_ms": 60000}]}) for _ in range(3)]
    for call_id in ids:
        wait_for(lambda call_id=call_id: bridged(s, call_id), 10, "the calls to be bridged")
    assert s.worker.drain(0.2, 5) == 3
    results = s.pbx.wait_calls(ids, 10)
    assert all(r["state"] == "ended" and r["end_reason"] == "hung up" for r in results)
    assert all(s.finished(i)["end_reason"] == "relay shutting down" for i in ids)
    live = s.pbx.inspect()
    assert live["channels"] == [] and live["bridges"] == []


def test_end_drain_now_cuts_the_wait_short(stack):
    s = stack(model_script=MODEL)
    call_id = s.call({"steps": [{"pause_ms": 60000}]})
    wait_for(lambda: bridged(s, call_id), 10, "the call to be bridged")
    drain = gevent.spawn(s.worker.drain, 3600, 5)
    wait_for(lambda: not s.worker.accepting, 5, "the drain to begin")
    s.worker.end_drain_now()
    assert drain.get(timeout=10) == 1
    [result] = s.pbx.wait_calls([call_id], 10)
    assert result["state"] == "ended"


def test_comma_joined_args_select_the_agent(stack):
    # A dispatcher moves a call with its Stasis args joined in one appArgs; Asterisk hands
    # them over as one arg.
    s = stack(model_script=MODEL)
    call_id = s.call({"args": ["extra,agent=greeter"], "steps": [{"pause_ms": 200}]})
    assert s.relay_call(call_id).agent.key == "greeter"
    s.wait_calls([call_id], 10)


def test_resources_carry_the_app_name(stack):
    s = stack(model_script=MODEL)
    call_id = s.call({"steps": [{"pause_ms": 300}]})
    call = s.relay_call(call_id)
    assert call.bridge_id.startswith(f"{APP}-br-")
    assert call.media_channel_id.startswith(f"{APP}-em-")
    [result] = s.wait_calls([call_id], 10)
    assert list(result["externals"]) == [call.media_channel_id]
