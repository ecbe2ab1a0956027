"""A worker and Asterisk agree again after faults, through the simulated PBX's fault injection
(the failure paths a tampering ARI proxy found): a malformed event, a StasisStart lost in an
outage, an externalMedia creation that lands after relay gave up on it, cleanup DELETEs answered
with 500, a reconciliation whose listing fails; and the crash recovery a worker does at start.
Each ends with nothing of relay's left on the PBX and no caller left waiting in silence."""

from __future__ import annotations

import gevent
from stack import APP, wait_for

from relay.ari import AriClient, AriEvents
from relay.worker import Worker

HELLO = "Hello, is anybody there?"
SCRIPT = {"phrasebook": [HELLO], "default": "Yes, I am here. How can I help?",
          "greeting": "Hello, this is the test agent speaking first."}
CONVERSATION = {"steps": [{"pause_ms": 300}, {"say": HELLO},
                          {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 15000}}]}
WAITING = {"steps": [{"pause_ms": 20000}]}


def heard_the_agent(result: dict) -> bool:
    return result["agent"]["voiced_packets"] > 25


def caller_in_stasis_without_a_call(s, call_id) -> bool:
    channel_id = s.pbx.call(call_id)["channel_id"]
    channels = {c["id"]: c for c in s.pbx.inspect()["channels"]}
    return channel_id in channels and channel_id not in s.worker.calls


def test_a_malformed_event_is_counted_and_the_events_socket_is_kept(stack):
    s = stack(model_script=SCRIPT, settings={"ari.sweep_interval_s": 1.0,
                                             "ari.waiting_confirm_s": 0.2})
    s.pbx.add_fault(kind="mangle_event", event_type="StasisStart", app=APP,
                    set={"channel": "garbage"}, times=1)
    s.pbx.inject_event(APP, "this is not JSON")
    s.pbx.inject_event(APP, {"type": "ChannelDtmfReceived", "channel": ["a", "list"]})
    first = s.call(CONVERSATION)       # its StasisStart arrives mangled
    wait_for(lambda: s.worker.counters["ari_bad_events"] >= 2, 10, "the bad events counted")
    second = s.call(CONVERSATION)
    results = s.wait_calls([first, second], 60)
    # the events socket was never replaced; the mangled caller was found by the sweep
    assert s.worker.events.connections == 1
    assert s.worker.events.bad_messages >= 1
    assert all(heard_the_agent(r) for r in results)
    assert s.worker.counters["waiting_callers"]["taken_over"] == 1


def test_a_stasis_start_lost_in_an_outage_is_taken_over_after_the_reconnection(stack):
    s = stack(model_script=SCRIPT, settings={"ari.sweep_interval_s": 0,
                                             "ari.waiting_confirm_s": 0.2})
    s.pbx.add_fault(kind="drop_event", event_type="StasisStart", app=APP, times=1)
    call_id = s.call(CONVERSATION)
    wait_for(lambda: caller_in_stasis_without_a_call(s, call_id), 10, "the caller waiting")
    gevent.sleep(0.3)
    assert caller_in_stasis_without_a_call(s, call_id)       # nothing picks it up by itself
    s.pbx.drop_events_connection(APP)
    [result] = s.wait_calls([call_id], 60)
    assert heard_the_agent(result)
    assert s.worker.counters["waiting_callers"]["taken_over"] == 1


def test_waiting_callers_are_hung_up_with_that_setting(stack):
    s = stack(model_script=SCRIPT, settings={"ari.sweep_interval_s": 0,
                                             "ari.waiting_confirm_s": 0.2,
                                             "call.waiting_callers": "hang_up"})
    s.pbx.add_fault(kind="drop_event", event_type="StasisStart", app=APP, times=1)
    call_id = s.call(WAITING)
    wait_for(lambda: caller_in_stasis_without_a_call(s, call_id), 10, "the caller waiting")
    s.pbx.drop_events_connection(APP)
    [result] = s.pbx.wait_calls([call_id], 20)
    assert result["end_reason"] == "hung up"
    assert s.worker.counters["waiting_callers"] == {"taken_over": 0, "hung_up": 1}


def test_an_external_media_creation_that_lands_after_relay_gave_up_is_removed(stack):
    s = stack(model_script=SCRIPT, settings={"ari.request_timeout_s": 0.5})
    # every externalMedia request reaches Asterisk after relay's timeout: the setup fails,
    # and the channels created afterwards are removed by the janitor's rechecks
    s.pbx.add_fault(kind="late", method="POST", path="^/channels/externalMedia$",
                    delay_s=1.2, times=0)
    s.worker.janitor.recheck_s = (1.0, 2.0, 4.0)
    call_id = s.call(WAITING)
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 30)
    assert relay_call.end_reason.startswith(
        "setup failed: cannot create the externalMedia channel")
    assert result["end_reason"] == "hung up"
    wait_for(lambda: any(f["fired"] >= 2 for f in s.pbx.faults.list()), 10, "late creations")
    wait_for(lambda: not s.pbx.inspect()["channels"], 20, "the late channels to be removed")


def test_a_late_external_media_answer_is_retried_and_the_call_goes_on(stack):
    s = stack(model_script=SCRIPT, settings={"ari.request_timeout_s": 0.5})
    s.pbx.add_fault(kind="late", method="POST", path="^/channels/externalMedia$",
                    delay_s=1.0, times=1)
    call_id = s.call(CONVERSATION)
    [result] = s.wait_calls([call_id], 40)
    assert heard_the_agent(result)
    gevent.sleep(1.0)          # the first creation lands now, refused: the id exists
    assert [c for c in s.pbx.inspect()["channels"]] == []


def test_cleanup_deletes_answered_with_500_are_retried_until_nothing_is_left(stack):
    s = stack(model_script=SCRIPT)
    s.worker.janitor.retry_initial_s = 0.05
    s.pbx.add_fault(kind="respond", method="DELETE", path="^/bridges/", status=500, times=2)
    s.pbx.add_fault(kind="respond", method="DELETE", path="^/channels/relay-test-em-",
                    status=503, times=1)
    call_id = s.call(CONVERSATION)
    [result] = s.wait_calls([call_id], 40)
    assert heard_the_agent(result)
    wait_for(lambda: not s.pbx.inspect()["bridges"], 10, "the bridge to be removed")
    assert s.worker.janitor.counters["retries"]["bridge"] == 2
    assert s.worker.janitor.counters["retries"]["channel"] == 1


def test_a_caller_gone_in_an_outage_ends_even_when_the_first_listing_fails(stack):
    s = stack(model_script=SCRIPT, settings={"ari.sweep_interval_s": 0})
    call_id = s.call(WAITING)
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 15, "the call to be set up")
    caller = relay_call.id
    # the caller's hangup events are lost, and the first listing after the reconnection fails
    s.pbx.add_fault(kind="drop_event", app=APP, channel=f"^{caller}$", times=0)
    s.pbx.add_fault(kind="respond", method="GET", path="^/channels$", status=500, times=1)
    s.pbx.hangup_call(call_id)
    s.pbx.wait_calls([call_id], 10)
    gevent.sleep(0.2)
    assert relay_call.state == "active"          # nothing told relay
    s.pbx.drop_events_connection(APP)
    wait_for(lambda: relay_call.state == "ended", 15, "the call to end")
    assert relay_call.end_reason == "caller hung up"
    assert s.worker.counters["reconcile_failures"] >= 1
    s.pbx.faults.clear()


def test_a_worker_starting_removes_what_a_crashed_run_left_and_takes_its_callers_over(stack):
    s = stack(model_script=SCRIPT, settings={"ari.waiting_confirm_s": 0.2})
    s.worker.stop(2)
    s.worker.calls.clear()
    # a run that holds the app and then dies leaving a bridge and a media channel with its
    # prefix, and a caller in the app that no conversation has
    crashed = AriEvents(s.pbx.events_url(APP), on_event=lambda e: None,
                        on_connected=lambda: None, on_disconnected=lambda r: None)
    crashed.start()
    wait_for(lambda: crashed.connected, 5, "the crashed run's events connection")
    ari = AriClient(s.pbx.base_url, s.pbx.user, s.pbx.password, APP)
    try:
        ari.create_bridge("relay-test-br-dead", "mixing")
        ari.request("POST", "/channels/externalMedia", {
            "app": APP, "channelId": "relay-test-em-dead", "external_host": "127.0.0.1:9",
            "format": "ulaw", "data": "relay-media"})
        call_id = s.call({"steps": [{"wait_agent_done": {"silence_ms": 500,
                                                         "timeout_ms": 15000}}],
                          "args": ["agent=greeter"]})
        wait_for(lambda: s.pbx.call(call_id)["state"] not in ("scheduled", "ringing"), 10,
                 "the caller to enter the app")
    finally:
        ari.close()
        crashed.stop()
    fresh = Worker(s.settings)
    fresh.calls = type(s.worker.calls)(s.seen_calls)
    s.worker = fresh
    fresh.start()
    [result] = s.wait_calls([call_id], 40)
    assert heard_the_agent(result)
    assert fresh.counters["leftovers_removed"] == {"bridge": 1, "channel": 1}
    assert fresh.counters["waiting_callers"]["taken_over"] == 1
