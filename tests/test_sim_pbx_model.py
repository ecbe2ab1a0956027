"""The simulated PBX's sans-IO parts, without sockets or sleeps: the model (state + events),
caller scripts, audio sources and mixing, the RTP capture, its WAV layout and pacing stats."""

from __future__ import annotations

from pathlib import Path

import pytest
from ari_swagger import AriSpec

from relay._g711 import ulaw_decode, ulaw_encode
from relay.sim.pbx.caller import AgentActivity, CallerRun, parse_script
from relay.sim.pbx.capture import RtpCapture, interarrival_jitter_ms, pacing_stats
from relay.sim.pbx.model import AriError, NullMedia, Pbx
from relay.sim.pbx.sounds import (
    INBOUND_AHEAD,
    INBOUND_KEEP,
    SILENCE,
    EchoSource,
    InboundSource,
    Source,
    UnknownMedia,
    media_audio,
    mix_ulaw,
)
from relay.sim.pbx.timing import PbxTiming


@pytest.fixture(scope="module")
def spec(reference_dir: Path) -> AriSpec:
    return AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")


class Conn:
    """Stands for an events WebSocket."""


@pytest.fixture
def pbx(spec: AriSpec):
    media = NullMedia()
    # The model's event sequences step by step: everything synchronous (test_sim_pbx_timing.py
    # covers the realistic delays).
    model = Pbx(media, wall=lambda: 1795000000.25, now=100.0, timing=PbxTiming.instant())
    model.conn = Conn()
    model.register_app("voicebot", model.conn)
    yield model
    problems = [p for _, e, _ in model.outbox for p in spec.validate_event(
        dict(e, application="voicebot"))]
    assert not problems, problems[:5]


def types(model: Pbx, resource: str | None = None) -> list[str]:
    out = []
    for _, e, _ in model.outbox:
        ids = {e[k]["id"] for k in ("channel", "peer", "bridge") if k in e}
        if resource is None or resource in ids:
            out.append(e["type"])
    return out


def inbound(model: Pbx, call_id: str = "c1", **kw):
    return model.inbound_call("voicebot", call_id=call_id, caller=("Ann", "100"), **kw)


# ---------------------------------------------------------------------- model
def test_inbound_call_enters_stasis_like_answer_then_stasis(pbx: Pbx):
    ch = inbound(pbx, args=["in", "x"], exten="200")
    assert ch.state == "Up" and ch.name == "PJSIP/caller-00000000"
    assert types(pbx) == ["ChannelVarset", "StasisStart"]      # not subscribed before Stasis
    start = pbx.outbox[-1][1]
    assert start["args"] == ["in", "x"]
    assert start["channel"]["dialplan"] == {"context": "from-external", "exten": "200",
                                            "priority": 2, "app_name": "Stasis",
                                            "app_data": "voicebot,in,x"}
    assert start["channel"]["caller"] == {"name": "Ann", "number": "100"}
    assert start["timestamp"] == "2026-11-18T11:06:40.250+0000"


def test_inbound_call_to_an_inactive_app_fails(pbx: Pbx):
    seen = []
    pbx.listener = lambda kind, ch, data: seen.append((kind, data.get("cause")))
    assert pbx.inbound_call("elsewhere", call_id="c9") is None
    assert seen == [("destroyed", 16)] and pbx.channels == {} and pbx.outbox == []


def test_caller_hangup_sequence_and_cleanup_not_automatic(pbx: Pbx):
    ch = inbound(pbx)
    em = pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1")
    pbx.create_bridge("b1")
    pbx.add_channels("b1", [ch.id, "em1"])
    sources, softmix = pbx.media.plans["em1"]
    assert sources == [ch.voice] and not softmix
    pbx.outbox.clear()
    pbx.caller_hangup(ch)
    assert types(pbx) == ["ChannelHangupRequest", "ChannelVarset", "ChannelLeftBridge",
                          "StasisEnd", "ChannelVarset", "ChannelDestroyed"]
    assert pbx.outbox[0][1]["cause"] == 16 and "soft" not in pbx.outbox[0][1]
    assert pbx.outbox[-1][1]["cause_txt"] == "Normal Clearing"
    assert set(pbx.channels) == {"em1"} and pbx.bridges["b1"].channels == [em]
    assert pbx.media.plans["em1"] == ([], False)


def test_ari_hangup_is_soft_cause_32_and_reason_sets_the_cause(pbx: Pbx):
    ch = inbound(pbx)
    pbx.outbox.clear()
    with pytest.raises(AriError) as err:
        pbx.hangup(ch.id, reason="sideways")
    assert err.value.status == 400
    pbx.hangup(ch.id, reason="busy")
    request, destroyed = pbx.outbox[0][1], pbx.outbox[-1][1]
    assert (request["cause"], request["soft"]) == (32, True)
    assert (destroyed["cause"], destroyed["cause_txt"]) == (17, "User busy")
    with pytest.raises(AriError) as err:
        pbx.hangup(ch.id)
    assert err.value.status == 404


def test_local_originate_pair_and_its_hangup(pbx: Pbx):
    one = pbx.originate("Local/s@silent", app="voicebot", app_args="a,b", channel_id="L")
    assert one.state == "Down" and pbx.channels["L;2"].peer is one
    assert pbx.outbox == []                   # answered asynchronously
    pbx.advance(100.0)
    assert types(pbx) == ["Dial", "ChannelDialplan", "ChannelStateChange",
                          "ChannelStateChange", "Dial", "ChannelVarset", "StasisStart"]
    pbx.outbox.clear()
    pbx.hangup("L")
    assert [(t, r) for t, r in zip(types(pbx), [e[1]["channel"]["id"] for e in pbx.outbox])] == [
        ("ChannelHangupRequest", "L"), ("StasisEnd", "L"), ("ChannelVarset", "L"),
        ("ChannelHangupRequest", "L;2"), ("ChannelDestroyed", "L"),
        ("ChannelHangupRequest", "L;2"), ("ChannelDestroyed", "L;2")]
    assert pbx.channels == {}


def test_move_and_application_replaced(pbx: Pbx):
    other = Conn()
    pbx.register_app("worker", other)
    ch = inbound(pbx)
    pbx.outbox.clear()
    pbx.move(ch.id, "worker", "x")
    (to1, end, _), (to2, start, _) = pbx.outbox
    assert (end["type"], to1) == ("StasisEnd", ("voicebot",))
    assert (start["type"], to2, start["args"]) == ("StasisStart", ("worker",), ["x"])
    pbx.outbox.clear()
    pbx.move(ch.id, "nobody")
    assert pbx.outbox[0][1]["type"] == "ApplicationMoveFailed" and ch.stasis_app == "worker"
    pbx.outbox.clear()
    newer = Conn()
    assert pbx.register_app("worker", newer) is other
    names, event, conn = pbx.outbox[0]
    assert (event["type"], conn, names) == ("ApplicationReplaced", other, ("worker",))
    pbx.unregister_app("worker", other)          # the old socket closing changes nothing
    assert pbx.app_active("worker")
    pbx.unregister_app("worker", newer)
    assert not pbx.app_active("worker") and ch.id in pbx.channels


def test_recording_and_bridge_playback_make_softmix(pbx: Pbx):
    ch = inbound(pbx)
    pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1")
    br = pbx.create_bridge("b1")
    pbx.add_channels("b1", [ch.id, "em1"])
    pbx.record("rec", "wav", bridge_id="b1")
    pbx.advance(100.0)
    assert br.technology == "softmix" and pbx.media.plans["em1"][1] is True
    pbx.outbox.clear()
    pbx.advance(103.4)
    pbx.stop_recording("rec")
    finished = next(e for _, e, _ in pbx.outbox if e["type"] == "RecordingFinished")
    assert finished["recording"]["duration"] == 3 and pbx.stored == {"rec": "wav"}
    assert br.technology == "simple_bridge" and pbx.media.plans["em1"][1] is False
    pb = pbx.play(["sound:beep", "sound:hello-world"], bridge_id="b1", playback_id="p")
    pbx.advance(103.4)
    assert pb.state == "playing" and pbx.media.plans["em1"][1] is True
    assert len(pbx.media.plans["em1"][0]) == 2           # the caller and the announcer
    pbx.advance(103.4 + 0.3)                             # beep done -> hello-world
    pbx.advance(103.4 + 0.3 + 1.5)
    assert [t for t in types(pbx) if t.startswith("Playback")] == [
        "PlaybackStarted", "PlaybackContinuing", "PlaybackFinished"]
    assert "p" not in pbx.playbacks and br.technology == "simple_bridge"


def test_channel_playback_mutes_the_callers_voice_and_queues(pbx: Pbx):
    ch = inbound(pbx)
    pbx.play(["sound:beep"], channel_id=ch.id, playback_id="p1")
    pbx.play(["sound:beep"], channel_id=ch.id, playback_id="p2")
    pbx.advance(100.0)
    assert ch.voice.muted and pbx.playbacks["p2"].state == "queued"
    pbx.advance(100.3)
    pbx.advance(100.3)
    assert pbx.playbacks["p2"].state == "playing"
    pbx.advance(100.7)
    assert not ch.voice.muted and pbx.playbacks == {}


def test_snoop_ends_with_its_target_without_channel_destroyed(pbx: Pbx):
    ch = inbound(pbx)
    sn = pbx.snoop(ch.id, app="voicebot", spy="in", app_args="s", snoop_id="sn")
    assert sn.name == f"Snoop/{ch.id}-00000000"
    pbx.outbox.clear()
    pbx.caller_hangup(ch)
    assert [(t, e[1]["channel"]["id"]) for t, e in zip(types(pbx), pbx.outbox)
            if e[1]["channel"]["id"] == "sn"] == [("StasisEnd", "sn")]
    assert "sn" not in pbx.channels


def test_echo_says_into_the_bridge_what_the_relay_sent_one_frame_later(pbx: Pbx):
    ch = inbound(pbx)
    pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1")
    pbx.create_bridge("b1")
    pbx.add_channels("b1", [ch.id, "em1"])
    own = ch.voice
    assert "em1" not in pbx.media.inbound          # nobody hears the relay: not fed
    pbx.channel_echo(ch, True)
    [echo], softmix = pbx.media.plans["em1"]
    assert echo is ch.voice and isinstance(echo, EchoSource) and not softmix
    fed = pbx.media.inbound["em1"]
    frame = bytes(range(160))
    fed.push(1005, frame)                          # arrived in the slot of ticks 1000..1019
    assert echo.frame(1019) is None                # not back within the frame it came in
    assert echo.frame(1020) == echo.frame(1039) == frame
    assert echo.frame(1040) is None                # nothing more sent, nothing echoed
    # A bridge playback is heard too: the echo is the mix of both.
    pbx.play(["sound:beep"], bridge_id="b1", playback_id="pb1")
    pbx.advance(pbx.now)
    pb = pbx.playbacks["pb1"].source
    assert pb in echo.heard and fed in echo.heard
    fed.push(pb.start_tick + 5, frame)
    t = pb.start_tick + 20
    assert echo.frame(t) == mix_ulaw([frame, pb.frame(t - 20)])
    pbx.stop_playback("pb1")
    # Muted (addChannel?mute / POST mute) the relay's audio does not reach the echo.
    fed.muted = True
    fed.push(3005, frame)
    assert echo.frame(3020) is None
    fed.muted = False
    # Echo() ends: the channel's own voice is back, the relay's RTP no longer fed.
    pbx.channel_echo(ch, False)
    assert ch.voice is own and pbx.media.plans["em1"] == ([own], False)
    assert "em1" not in pbx.media.inbound


def test_echo_leaving_the_bridge_hears_nothing_and_two_echoes_do_not_loop(pbx: Pbx):
    a, b = inbound(pbx, "c1"), inbound(pbx, "c2")
    pbx.create_bridge("b1")
    pbx.add_channels("b1", [a.id, b.id])
    pbx.channel_echo(a, True)
    pbx.channel_echo(b, True)
    assert a.voice.heard == (b.voice,) and b.voice.heard == (a.voice,)
    assert a.voice.frame(5000) is None and b.voice.frame(5000) is None   # no recursion
    pbx.remove_channels("b1", [a.id])
    assert a.voice.heard == () and b.voice.heard == ()


def test_inbound_source_queues_a_burst_and_drops_beyond_the_jitter_room():
    src = InboundSource()
    frames = [bytes([i]) * 160 for i in range(INBOUND_AHEAD + 2)]
    for f in frames:                               # all in the same 20 ms
        src.push(100, f)
    assert [src.frame(100 + 20 * k) for k in range(INBOUND_AHEAD + 1)] == \
        frames[:INBOUND_AHEAD + 1]
    assert src.dropped == 1
    src.push(100 + 20 * INBOUND_KEEP, frames[1])  # a ring: later frames take old slots
    assert src.frame(100) is None and src.frame(100 + 20 * INBOUND_KEEP) == frames[1]


def test_inbound_source_bridges_a_frame_handled_after_its_slot_was_read_in_the_next_slot():
    """A packet that arrived at the end of its slot but was handled after Echo() read that
    slot is not lost (the CI flake of a 9-of-10 echo): it is heard one slot later."""
    src = InboundSource()
    late, next_ = b"\x01" * 160, b"\x02" * 160
    assert src.frame(119) is None                 # slot 5 read while its packet is in flight
    src.push(119, late)                           # it arrived at 119 ms: slot 5, already read
    assert src.frame(119) is None and src.frame(120) == late
    src.push(121, next_)                          # the next arrival queues behind it
    assert src.frame(140) == next_
    src.stop()
    src.push(119, late)                           # a stopped source starts over
    assert src.frame(100) == late


def test_script_echo_step_starts_and_ends_echo():
    run = run_script({"steps": [{"tone": 440}, {"echo": {"ms": 500}}, {"echo": True}]})
    actions = run.start(0.0)
    assert verbs(actions) == ["say", "silence", "echo"]     # the background tone stops
    assert ("echo", True) in actions and ("dialplan", "Echo", "") in actions
    assert run.next_deadline() == pytest.approx(0.5)
    assert verbs(run.poll(0.49)) == []
    assert [a for a in run.poll(0.5) if a[0] == "echo"] == [("echo", False), ("echo", True)]
    assert run.step.kind == "echo" and run.next_deadline() == pytest.approx(600.0)
    assert verbs(run.poll(599.0)) == []                     # until the call ends
    assert parse_script([{"echo": 250}]).steps[0].ms == 250
    assert parse_script([{"echo": {}}]).steps[0].ms == 0


# ---------------------------------------------------------------------- caller scripts
def fake_audio(step):
    return b"\x01" * (800 if step.kind == "say" else 160), step.kind == "tone"


def run_script(script, agent=None) -> CallerRun:
    return CallerRun(parse_script(script), fake_audio, agent)


def verbs(actions) -> list:
    return [a[0] if a[0] != "dtmf" else ("dtmf", a[1]) for a in actions
            if a[0] not in ("dialplan", "varset")]


def test_script_say_pause_dtmf_hangup_timeline():
    run = run_script({"steps": [{"say": "hi"}, {"pause_ms": 500}, {"dtmf": "12", "interval_ms":
                                                                      350}, {"hangup": True}]})
    assert verbs(run.start(0.0)) == ["say"]
    assert run.next_deadline() == pytest.approx(0.12)     # 5 frames + 1
    assert run.poll(0.1) == []
    assert verbs(run.poll(0.12)) == []                    # now pausing
    assert run.next_deadline() == pytest.approx(0.62)
    assert verbs(run.poll(0.62)) == [("dtmf", "1")]
    assert run.next_deadline() == pytest.approx(0.97)
    assert verbs(run.poll(0.97)) == [("dtmf", "2")]
    assert verbs(run.poll(1.32)) == ["silence", "hangup"]
    assert run.done and run.end_reason == "script hangup"
    assert [e["kind"] for e in run.log] == ["say", "pause", "dtmf", "hangup"]


def test_script_waits_for_the_agent_to_finish():
    agent = AgentActivity()
    run = run_script({"steps": [{"after_agent": "ok", "silence_ms": 400, "timeout_ms": 5000}],
                      "end": "wait"}, agent)
    assert verbs(run.start(0.0)) == []
    assert run.next_deadline() == pytest.approx(5.0)
    for t in (1.0, 1.02, 1.04):
        agent.update(t, True)
    agent.update(1.06, False)
    assert agent.speaking_since == 1.0 and agent.speaking(1.2)
    assert run.next_deadline() == pytest.approx(1.44)
    assert run.poll(1.3) == []
    assert verbs(run.poll(1.44)) == ["say"]
    assert "timed_out" not in run.log[0]


def test_script_waits_for_a_talkspurt_already_under_way_when_the_step_begins():
    agent = AgentActivity()
    run = run_script({"steps": [{"pause_ms": 500},
                                {"after_agent": "ok", "silence_ms": 400, "timeout_ms": 5000}],
                      "end": "wait"}, agent)
    run.start(0.0)
    agent.update(0.40, True)               # the agent starts talking during the pause
    run.poll(0.5)                          # the wait begins while it talks
    # The caller is woken by onsets only, so it must poll the talkspurt under way itself.
    assert run.next_deadline() == pytest.approx(0.80)     # not the 5 s timeout
    for t in (0.52, 0.54, 0.80):           # ... it goes on talking (no new onset)
        agent.update(t, True)
    assert verbs(run.poll(0.80)) == []
    assert run.next_deadline() == pytest.approx(1.20)
    assert verbs(run.poll(run.next_deadline())) == ["say"]
    assert "timed_out" not in run.log[1]


def test_script_wait_times_out_and_goes_on():
    run = run_script({"steps": [{"wait_agent_done": {"timeout_ms": 1000}}, {"say": "hello?"}]})
    run.start(0.0)
    assert verbs(run.poll(1.0)) == ["say"]
    assert run.log[0]["timed_out"] is True


def test_script_barge_in_after_the_agent_starts():
    onsets = []
    agent = AgentActivity(on_onset=lambda: onsets.append(1))
    run = run_script({"steps": [{"barge_in": "stop", "after_ms": 300}], "end": "wait"}, agent)
    run.start(0.0)
    agent.update(2.0, True)
    assert onsets == [1] and run.next_deadline() == pytest.approx(2.3)
    agent.update(2.02, True)
    assert onsets == [1]                      # same talkspurt
    assert verbs(run.poll(2.29)) == []
    assert verbs(run.poll(2.3)) == ["say"]


def test_script_max_duration_and_background_tone():
    run = run_script({"steps": [{"tone": 440}, {"pause_ms": 60000}], "max_duration_ms": 2000})
    assert verbs(run.start(0.0)) == ["say"]             # the tone goes on behind the pause
    assert run.step.kind == "pause"
    assert verbs(run.poll(2.0)) == ["silence", "hangup"]
    assert run.end_reason == "max_duration"


@pytest.mark.parametrize("script, message", [
    ({"steps": [{"sing": "la"}]}, "unknown step"),
    ({"steps": [{"dtmf": "12x"}]}, "dtmf"),
    ({"steps": [{"say": ""}]}, "non-empty"),
    ({"steps": [{"pause_ms": -1}]}, "pause_ms"),
    ({"steps": [{"say": "a", "loud": True}]}, "unexpected"),
    ({"steps": [], "end": "maybe"}, "end"),
    ({"steps": [], "caller": "bob"}, "caller"),
    ({"stepz": []}, "unexpected"),
    ({"steps": [{"echo": False}]}, "echo takes"),
    ({"steps": [{"echo": "yes"}]}, "echo takes"),
    ({"steps": [{"echo": {"ms": 0}}]}, "ms must be"),
    ({"steps": [{"echo": {"seconds": 5}}]}, "unexpected"),
    ({"steps": [{"echo": True, "ms": 5}]}, "unexpected"),
    ("hello", "script"),
])
def test_script_errors_say_what_is_wrong(script, message):
    with pytest.raises(ValueError, match=message):
        parse_script(script)


# ---------------------------------------------------------------------- audio
def test_source_frames_follow_the_millisecond_grid():
    src = Source()
    audio = bytes(range(200)) * 2              # 400 bytes: 2 frames + 80
    src.play(audio, start_tick=1000)
    assert src.frame(999) is None
    assert src.frame(1000) == audio[:160] and src.frame(1019) == audio[:160]
    assert src.frame(1020) == audio[160:320]
    assert src.frame(1045) == audio[320:]      # short last frame
    assert src.frame(1060) is None
    src.play(audio, start_tick=0, loop=True)
    assert src.frame(60) == audio[80:240]      # wrapped: offset 480 % 400


def test_mix_ulaw():
    a = ulaw_encode(b"\x00\x10" * 160)
    assert mix_ulaw([]) == SILENCE
    assert mix_ulaw([a]) == a
    assert mix_ulaw([a[:12]]) == a[:12] + SILENCE[12:]
    mixed = ulaw_decode(mix_ulaw([a, a]))
    assert abs(int.from_bytes(mixed[:2], "little", signed=True) - 2 * 0x1000) < 200


def test_media_uris():
    audio, loop = media_audio("sound:hello-world")
    assert len(audio) == 11212 and not loop and len(audio) % 160 == 12
    assert media_audio("tone:440")[1] is True
    assert len(media_audio("digits:42")[0]) > 0
    for bad in ("sound:", "video:cat", "tone:nonsense", "nothing"):
        with pytest.raises(UnknownMedia):
            media_audio(bad)


# ---------------------------------------------------------------------- capture
def test_capture_places_audio_by_timestamp_across_gaps_ssrc_and_wrap(tmp_path: Path):
    cap = RtpCapture()
    frame = ulaw_encode(b"\x00\x20" * 160)
    ts0 = 0xFFFFFF00                             # wraps after the first packet
    cap.add(10.0, 0, True, 1, ts0, 7, memoryview(frame), False)
    cap.add(10.02, 0, False, 2, (ts0 + 160) & 0xFFFFFFFF, 7, memoryview(frame), False)
    cap.add(10.1, 0, True, 3, (ts0 + 800) & 0xFFFFFFFF, 7, memoryview(frame), True)
    cap.add(11.0, 0, True, 9, 5, 8, memoryview(frame[:80]), False)     # a new SSRC
    pcm = cap.pcm()
    decoded = ulaw_decode(frame)
    assert pcm[:640] == decoded * 2
    assert pcm[640:1600] == b"\x00" * 960                 # silence-filled gap
    assert pcm[1600:1920] == decoded
    assert pcm[16000:16160] == decoded[:160]              # placed at its arrival (+1 s)
    assert len(pcm) == 16160
    assert cap.stats()["ssrcs"] == 2 and cap.foreign_count == 0
    path = cap.write_wav(tmp_path / "x.wav")
    assert path.stat().st_size == 44 + len(pcm)


def test_pacing_stats_and_jitter():
    times = [1.0 + 0.02 * i for i in range(50)] + [3.0 + 0.02 * i for i in range(10)]
    st = pacing_stats(times)
    assert st["packets"] == 60 and st["pauses"] == 1 and st["intervals"] == 58
    assert st["mean_ms"] == pytest.approx(20.0) and st["stdev_ms"] == pytest.approx(0, abs=1e-6)
    assert st["late"] == 0 and st["early"] == 0
    burst = pacing_stats([0.0, 0.001, 0.002, 0.04])
    assert burst["early"] == 2 and burst["late"] == 1
    ts = [160 * i for i in range(50)]
    assert interarrival_jitter_ms(times[:50], ts, [1] * 50) == pytest.approx(0, abs=1e-6)
    jittery = [t + (0.005 if i % 2 else 0) for i, t in enumerate(times[:50])]
    assert interarrival_jitter_ms(jittery, ts, [1] * 50) > 2
