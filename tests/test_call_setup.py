"""Call setup in Asterisk's real order, against the simulated PBX's realistic timing and faults:
the media channel joins the bridge once it is in the app, a 422 is asked again, a setup that
cannot finish hangs the caller up with a reason, a caller who hangs up at any step of the setup
leaves nothing behind, and events may come before or after the REST answers that caused them.
Every test ends with the stack's leak checks (no channel or bridge left on the PBX)."""

from __future__ import annotations

import socket

import gevent
import pytest
from stack import wait_for

HELLO = "Hello, is anybody there?"
SCRIPT = {"phrasebook": [HELLO], "default": "Yes, I am here. How can I help?"}
CONVERSATION = {"steps": [{"pause_ms": 300}, {"say": HELLO},
                          {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}}]}
WAITING = {"steps": [{"pause_ms": 20000}]}
ADD_CHANNEL = r"^/bridges/[^/]+/addChannel$"


def heard_the_agent(result: dict) -> bool:
    return result["agent"]["voiced_packets"] > 25


def test_a_422_on_add_channel_is_asked_again_and_the_call_goes_on(stack):
    s = stack(model_script=SCRIPT)
    s.pbx.add_fault(kind="respond", method="POST", path=ADD_CHANNEL, status=422,
                    message="Channel not in Stasis application", times=2)
    call_id = s.call(CONVERSATION)
    [result] = s.wait_calls([call_id], 40)
    assert heard_the_agent(result)
    assert s.worker.counters["add_channel_retries"] >= 2
    assert s.finished(call_id)["end_reason"] == "caller hung up"


def test_the_media_channel_joins_the_bridge_only_once_it_is_in_the_app(stack):
    # Asterisk's StasisStart for the media channel comes well after the REST answer: relay
    # waits for it instead of meeting 422s
    s = stack(model_script=SCRIPT)
    s.pbx.set_timing({"stasis_entry_ms": [150, 250]})
    call_ids = [s.call(CONVERSATION) for _ in range(3)]
    results = s.wait_calls(call_ids, 40)
    assert all(heard_the_agent(r) for r in results)
    assert s.worker.counters["add_channel_retries"] == 0
    assert s.worker.counters["setup_failures"] == {}


def test_a_media_channel_slower_than_the_bounded_wait_hangs_the_caller_up(stack):
    s = stack(model_script=SCRIPT, settings={"call.media_stasis_wait_s": 0.2})
    s.pbx.set_timing({"stasis_entry_ms": [5000, 5000]})
    call_id = s.call(WAITING)
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 20)
    assert relay_call.end_reason.startswith(
        "setup failed: cannot add the caller and the media channel to the bridge")
    assert result["end_reason"] == "hung up"            # by relay, not left waiting
    assert s.worker.counters["setup_failures"] == {"add_channel": 1}
    assert s.worker.counters["calls_failed"] == 1


def test_a_setup_request_asterisk_keeps_failing_hangs_the_caller_up(stack):
    s = stack(model_script=SCRIPT)
    s.pbx.add_fault(kind="respond", method="POST", path="^/bridges$", status=500, times=0)
    call_id = s.call(WAITING)
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 20)
    assert relay_call.end_reason.startswith("setup failed: cannot create the bridge")
    assert result["end_reason"] == "hung up"
    assert s.worker.counters["setup_failures"] == {"bridge": 1}


def test_a_setup_that_fails_continues_in_the_dialplan_when_so_configured(stack):
    s = stack(model_script=SCRIPT, settings={"call.continue_in_dialplan": True})
    s.pbx.add_fault(kind="respond", method="POST", path=ADD_CHANNEL, status=400,
                    message="Channel not found", times=0)
    call_id = s.call(WAITING)
    [result] = s.wait_calls([call_id], 20)
    assert result["continued"]
    assert s.worker.counters["setup_failures"] == {"add_channel": 1}


def test_a_404_for_another_channel_is_not_taken_for_the_caller_leaving(stack):
    # addChannel's 400 "Channel not found" while the caller is still there: a failure,
    # hung up, not "the caller left"
    s = stack(model_script=SCRIPT)
    s.pbx.add_fault(kind="respond", method="POST", path=ADD_CHANNEL, status=400,
                    message="Channel not found", times=0)
    call_id = s.call(WAITING)
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 20)
    assert relay_call.end_reason.startswith("setup failed")
    assert result["end_reason"] == "hung up"


def _hang_up_when(s, call_id, predicate, what):
    wait_for(predicate, 15, what)
    s.pbx.hangup_call(call_id)


def _media_channel_exists(s):
    return any(c["name"].startswith("UnicastRTP/") for c in s.pbx.inspect()["channels"])


def _caller_bridged(s, call_id):
    channel_id = s.pbx.call(call_id)["channel_id"]
    return any(c["id"] == channel_id and c["bridge"] for c in s.pbx.inspect()["channels"])


@pytest.mark.parametrize("step", ["before externalMedia", "after externalMedia",
                                  "after addChannel"])
def test_the_caller_hanging_up_at_each_step_of_setup_leaves_nothing_behind(stack, step):
    s = stack(model_script=SCRIPT)
    if step == "before externalMedia":
        # the bridge's creation is slow: the caller hangs up while it is on its way
        s.pbx.add_fault(kind="late", method="POST", path="^/bridges$", delay_s=0.6)
        call_id = s.call(WAITING)
        relay_call = s.relay_call(call_id)
        _hang_up_when(s, call_id, lambda: relay_call.state == "setup", "setup to begin")
    elif step == "after externalMedia":
        s.pbx.set_timing({"stasis_entry_ms": [800, 800]})
        call_id = s.call(WAITING)
        relay_call = s.relay_call(call_id)
        _hang_up_when(s, call_id, lambda: _media_channel_exists(s), "the media channel")
    else:
        call_id = s.call(WAITING)
        relay_call = s.relay_call(call_id)
        _hang_up_when(s, call_id, lambda: _caller_bridged(s, call_id), "the bridge")
    s.wait_calls([call_id], 20)
    assert relay_call.end_reason in ("caller hung up", "caller hung up during setup")
    assert s.worker.counters["setup_failures"] == {}


def test_the_caller_hanging_up_while_the_model_connects_leaves_nothing_behind(stack):
    # a model endpoint that accepts TCP and never answers the WebSocket handshake
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"ws://127.0.0.1:{silent.getsockname()[1]}/v1/realtime"
    try:
        s = stack(model_script=SCRIPT, settings={"openai.realtime_url": url,
                                                 "openai.connect_timeout_s": 5.0})
        call_id = s.call(WAITING)
        relay_call = s.relay_call(call_id)
        _hang_up_when(s, call_id, lambda: _caller_bridged(s, call_id), "the bridge")
        s.wait_calls([call_id], 20)
        assert relay_call.state == "ended"
        assert relay_call.end_reason in ("caller hung up", "caller hung up during setup")
    finally:
        silent.close()


@pytest.mark.parametrize("first", ["events", "answers"])
def test_calls_work_whether_events_or_rest_answers_come_first(stack, first):
    s = stack(model_script=SCRIPT)
    slow, fast = [25, 40], [0, 0]
    s.pbx.set_timing({"rest_latency_ms": slow if first == "events" else fast,
                      "event_latency_ms": fast if first == "events" else slow})
    call_ids = [s.call(CONVERSATION) for _ in range(3)]
    results = s.wait_calls(call_ids, 40)
    assert all(heard_the_agent(r) for r in results)
    assert s.worker.counters["setup_failures"] == {}


def test_an_answer_that_comes_after_the_caller_left_ends_nothing_twice(stack):
    # the answer to the call's first request is slow and the caller is gone by then
    s = stack(model_script=SCRIPT)
    s.pbx.add_fault(kind="late", method="POST", path="/answer$", delay_s=0.5)
    call_id = s.call({"steps": [{"pause_ms": 100}, {"hangup": True}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 20)
    gevent.sleep(0.2)
    assert relay_call.end_reason in ("caller hung up", "caller hung up during setup")
    assert s.worker.counters["calls_ended"] == 1
