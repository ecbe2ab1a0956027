"""The call path end to end: relay between the simulated PBX and the simulated model, over
real sockets on 127.0.0.1 (ARI REST + events WebSocket, RTP/UDP, the Realtime WebSocket)."""

from __future__ import annotations

import pytest
from stack import wait_for

from relay.sim.model.audio import speech_audio

HELLO = "Hello, I would like to check the status of my order."
NUMBER = "It is order number four two seven."
BYE = "Thank you, that is all. Goodbye."

SCRIPT = {
    "phrasebook": [HELLO, NUMBER, BYE],
    "greeting": "Hello, this is Acme. How can I help you today?",
    "rules": [
        {"keywords": ["status"], "say": "Sure. What is your order number?"},
        {"keywords": ["number"], "say": "Thanks. Order four two seven shipped yesterday."},
        {"keywords": ["goodbye"], "say": "You are welcome. Goodbye!"},
    ],
}


def test_a_conversation_of_several_turns(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [
        {"pause_ms": 300}, {"say": HELLO},
        {"after_agent": NUMBER, "silence_ms": 600},
        {"after_agent": BYE, "silence_ms": 600},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}},
    ]})
    [result] = s.wait_calls([call_id], 60)
    summary = s.finished(call_id)
    turns = summary["transcript"]
    assert turns == [
        ("caller", HELLO), ("assistant", "Sure. What is your order number?"),
        ("caller", NUMBER), ("assistant", "Thanks. Order four two seven shipped yesterday."),
        ("caller", BYE), ("assistant", "You are welcome. Goodbye!"),
    ]
    assert len(summary["turn_latency_ms"]) == 3
    # the caller heard the agent: RTP came back on the externalMedia channel
    [external] = result["externals"].values()
    assert result["agent"]["voiced_packets"] > 50
    assert summary["audio"]["lost"] == 0 and summary["audio"]["malformed"] == 0


LONG_REPLY = ("Our opening hours are eight to six on weekdays and nine to one on Saturdays, "
              "and we are closed on Sundays and public holidays, except in December.")
STOP = "Sorry, stop please. Goodbye."


def talkspurts(capture) -> list[list[dict]]:
    spurts: list[list[dict]] = []
    for packet in capture.packets():
        if packet["marker"] or not spurts:
            spurts.append([])
        spurts[-1].append(packet)
    return spurts


def test_the_assistant_speaks_first(stack):
    s = stack(model_script=SCRIPT, settings={"agent.active": "greeter"})
    call_id = s.call({"steps": [{"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    [result] = s.wait_calls([call_id], 30)
    summary = s.finished(call_id)
    greeting = "Hello, this is Acme. How can I help you today?"
    assert summary["transcript"] == [("assistant", greeting)]
    capture_packets = result["externals"]
    assert result["agent"]["voiced_packets"] > 50 and capture_packets


def test_barge_in_stops_the_audio_and_truncates_what_was_heard(stack):
    script = dict(SCRIPT, greeting=LONG_REPLY, phrasebook=[STOP])
    s = stack(model_script=script, settings={"agent.active": "greeter"})
    call_id = s.call({"steps": [{"barge_in": STOP, "after_ms": 1500},
                                {"wait_agent_done": {"silence_ms": 800, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    s.wait_calls([call_id], 40)
    assert relay_call.barge_ins == 1
    [(item_id, heard_ms)] = relay_call.truncations
    # the simulated model accepted the truncate (it checks it against the audio it generated)
    session = s.model.sessions[0]
    assert list(session.truncations) == [(item_id, heard_ms)]
    assert not [e for e in session.errors_sent if "truncate" in str(e)]
    # what the caller's side recorded of that item, up to the cut, matches within one frame
    first = talkspurts(capture)[0]
    recorded_ms = sum(p["len"] for p in first) / 8
    assert abs(recorded_ms - heard_ms) <= 20
    assert 1000 < heard_ms < 9000
    # audio stopped within one frame of relay hearing speech_started
    cut_at = relay_call.barge_in_at[0]
    assert sum(1 for p in first if p["t"] > cut_at) <= 1
    # the assistant's transcript says it was interrupted
    entries = [e for e in relay_call.transcript.entries() if e["kind"] == "assistant"]
    assert entries[0]["interrupted"] is True and entries[0]["heard_ms"] == heard_ms


def test_dtmf_reaches_the_model_and_the_channel(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 300}, {"dtmf": "42#"},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    session = s.model.sessions[0]
    texts = [c["text"] for item in session.conversation.history if item.get("role") == "user"
             for c in item.get("content", []) if c.get("type") == "input_text"]
    assert "The caller pressed the keys: 42" in texts
    kinds = [(e["kind"], e["text"]) for e in relay_call.transcript.entries()]
    assert ("dtmf_result", "42") in kinds


def test_caller_hangs_up_mid_response(stack):
    s = stack(model_script=dict(SCRIPT, greeting=LONG_REPLY), settings={"agent.active": "greeter"})
    call_id = s.call({"steps": [{"wait_agent_start": {"after_ms": 700}}, {"hangup": True}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert relay_call.end_reason == "caller hung up"
    wait_for(lambda: not s.model.open_sessions(), 5, "the model session to close")


def test_ari_socket_drop_mid_call_keeps_the_audio(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"after_agent": BYE, "silence_ms": 600},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    s.worker.events.drop()
    wait_for(lambda: s.worker.events.connections >= 2 and s.worker.ready, 10, "ARI reconnect")
    s.wait_calls([call_id], 40)
    summary = s.finished(call_id)
    assert [t[0] for t in summary["transcript"]] == ["caller", "assistant"] * 2
    assert s.worker.counters["ari_reconnects"] >= 1


def test_realtime_socket_drop_mid_call_is_replaced(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"after_agent": NUMBER, "silence_ms": 600},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.transcript.turns()[:2] and len(relay_call.transcript.turns()) >= 2,
             20, "the first exchange")
    s.model.inject(kind="drop", target="current")
    s.wait_calls([call_id], 40)
    summary = s.finished(call_id)
    assert summary["model_reconnects"] == 1
    assert [t[0] for t in summary["transcript"]] == ["caller", "assistant"] * 2
    second = s.model.sessions[1]
    # the new socket got the same session and the conversation so far, as text
    history = [c.get("text") for item in second.conversation.history
               for c in item.get("content", []) if c.get("type") in ("input_text", "output_text")]
    assert HELLO in history and "Sure. What is your order number?" in history


def test_session_expiry_is_replaced_without_the_caller_noticing(stack):
    hello = "Hello there."
    s = stack(model_script=dict(SCRIPT, phrasebook=[hello]), session_limit_s=3.0)
    call_id = s.call({"steps": [{"pause_ms": 3300}, {"say": hello},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert relay_call.model_errors.get("session_expired", 0) >= 1
    assert relay_call.session.reconnects >= 1
    turns = relay_call.transcript.turns()
    assert turns[:2] == [("caller", hello), ("assistant", "I see. Please go on.")]


def test_a_silent_caller_still_feeds_the_model_continuously(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 3000}, {"hangup": True}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 20)
    session = s.model.sessions[0]
    # about 3 s of audio minus the jitter-buffer slack: in appends of 40 ms for the first
    # 1.5 s (rtp.long_silence_after_ms), then of 200 ms; all of it reached the model
    audio_ms = relay_call.media.silence_filled_bytes / 8
    assert audio_ms > 2000
    assert session.buffer.received_ms >= audio_ms - 40
    assert 30 <= session.appends < 30 + (audio_ms - 1500) / 40


def test_rtp_from_a_stranger_and_garbage_are_dropped(stack):
    import socket as stdlib_socket

    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    stranger = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    try:
        for payload in (b"\x80\x00\x00\x01" + b"\x00" * 168, b"garbage", b""):
            stranger.sendto(payload, ("127.0.0.1", s.worker.media.port))
    finally:
        stranger.close()
    wait_for(lambda: s.worker.media.from_strangers >= 3, 5, "the stranger's packets")
    s.wait_calls([call_id], 30)
    summary = s.finished(call_id)
    assert ("caller", HELLO) in summary["transcript"]


def test_an_operator_changes_instructions_and_voice_on_a_live_call(stack):
    s = stack(model_script=SCRIPT)
    call_id = s.call({"steps": [{"pause_ms": 1500}, {"say": HELLO},
                                {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    sent = relay_call.apply_config({"instructions": "Be very brief.", "voice": "cedar"})
    assert sent == {"instructions": "Be very brief.", "audio": {"output": {"voice": "cedar"}}}
    session = s.model.sessions[0]
    wait_for(lambda: session.config.get("instructions") == "Be very brief.", 5, "the update")
    assert session.config["audio"]["output"]["voice"] == "cedar"
    assert not session.errors_sent
    with pytest.raises(ValueError, match="unknown field"):
        relay_call.apply_config({"temperature": 0.2})
    with pytest.raises(ValueError, match="voice must be one of"):
        relay_call.apply_config({"voice": "robot"})
    wait_for(lambda: relay_call.session.model_has_spoken, 15, "the model to speak")
    with pytest.raises(ValueError, match="cannot change once the model has spoken"):
        relay_call.apply_config({"voice": "alloy"})
    s.wait_calls([call_id], 30)
    assert "model session replaced" not in [e["text"] for e in relay_call.transcript.entries()]


def test_a_wrong_api_key_ends_the_call_cleanly_and_says_why(stack):
    s = stack(model_script=SCRIPT, settings={"openai.api_key": "sk-wrong"})
    call_id = s.call({"steps": [{"pause_ms": 5000}]})
    relay_call = s.relay_call(call_id)
    [result] = s.wait_calls([call_id], 20)
    assert "invalid API key" in relay_call.end_reason or "invalid_api_key" in relay_call.end_reason
    assert result["end_reason"] != "script hangup"     # relay hung up, the caller did not
    assert s.worker.counters["calls_failed"] == 1


def test_the_maximum_call_duration_ends_the_call(stack):
    s = stack(model_script=SCRIPT, settings={"call.max_duration_s": 1.5})
    call_id = s.call({"steps": [{"pause_ms": 10000}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 20)
    assert relay_call.end_reason == "maximum call duration reached"


def test_a_call_whose_audio_tick_fails_is_ended_not_left_in_silence(stack):
    """A bug in a call's per-tick code: the pacer drops its media, and the call ends (the caller
    hung up, its bridge and channel deleted: the stack checks for leftovers) instead of
    staying up with no audio; the other calls are not touched."""
    s = stack(model_script=SCRIPT)
    broken, other = s.call({"steps": [{"pause_ms": 10000}]}), s.call({"steps": [
        {"pause_ms": 300}, {"say": HELLO},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(broken)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")

    def boom(now: float) -> None:
        raise RuntimeError("a bug in housekeeping")

    relay_call.media.on_housekeeping = boom
    [result] = s.pbx.wait_calls([broken], 10)
    assert result["end_reason"] == "hung up"
    assert relay_call.end_reason.startswith("internal error in the call's audio: RuntimeError")
    assert s.worker.pacer.tick_errors == 1
    s.wait_calls([other], 30)
    assert ("caller", HELLO) in s.finished(other)["transcript"]


def test_continue_in_dialplan_instead_of_hanging_up(stack):
    s = stack(model_script=SCRIPT, settings={"call.max_duration_s": 1.0,
                                             "call.continue_in_dialplan": True})
    call_id = s.call({"steps": [{"pause_ms": 3000}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "ended", 10, "relay to end its part")
    wait_for(lambda: s.pbx.call(call_id)["continued"], 5, "the caller to continue")
    s.pbx.hangup_call(call_id)
    s.wait_calls([call_id], 10)


def test_an_a_law_line_carries_the_conversation_both_ways(stack):
    """An audio/pcma agent: Asterisk is asked for an alaw externalMedia channel, the caller's
    A-law reaches the model (which recognises each phrase) and the model's A-law reaches the
    caller as RTP payload type 8, byte for byte: no transcoding in relay."""
    greeting = SCRIPT["greeting"]
    s = stack(model_script=SCRIPT, settings={"agent.active": "alaw"})
    call_id = s.call({"steps": [
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}, {"say": HELLO},
        {"after_agent": BYE, "silence_ms": 600},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}},
    ]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    [result] = s.wait_calls([call_id], 60)
    summary = s.finished(call_id)
    assert summary["transcript"] == [
        ("assistant", greeting), ("caller", HELLO),
        ("assistant", "Sure. What is your order number?"), ("caller", BYE),
        ("assistant", "You are welcome. Goodbye!")]
    assert summary["audio"]["lost"] == 0 and summary["audio"]["malformed"] == 0
    assert result["agent"]["voiced_packets"] > 50            # the caller heard the agent
    # the model was configured for A-law both ways (and recognised the caller's A-law above)
    [session] = s.model.sessions
    assert session.config["audio"]["input"]["format"]["type"] == "audio/pcma"
    assert session.config["audio"]["output"]["format"]["type"] == "audio/pcma"
    # what the caller's side received: payload type 8 only, the greeting's A-law byte for byte
    packets = capture.packets()
    assert packets and {p["pt"] for p in packets} == {8}
    first = talkspurts(capture)[0]
    heard = b"".join(p["payload"] for p in first)
    assert heard == speech_audio(greeting, "audio/pcma")[:len(heard)] and len(heard) > 8000
    assert capture.pcm()                                     # the WAV decodes A-law
