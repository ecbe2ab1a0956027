"""Call recordings: the stereo WAV's layout (unit), retention, and a simulated call whose
recording matches, channel by channel, what the simulated PBX sent and what it received."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import pytest
from stack import AGENTS_DIR, wait_for

from relay._g711 import alaw_decode, ulaw_decode
from relay.call import Call
from relay.config import ConfigError, load_agent, load_settings
from relay.recording import CHUNK_BYTES, CallRecorder, recording_stem
from relay.retention import Retention, sweep
from relay.sim.speech import utterance_ulaw


def read_stereo(path: Path) -> tuple[bytes, bytes]:
    """(left, right) PCM16 of a stereo 8 kHz 16-bit WAV."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        frames = w.readframes(w.getnframes())
    left = bytearray(len(frames) // 2)
    right = bytearray(len(frames) // 2)
    left[0::2], left[1::2] = frames[0::4], frames[1::4]
    right[0::2], right[1::2] = frames[2::4], frames[3::4]
    return bytes(left), bytes(right)


# --- the recorder -----------------------------------------------------------------------------


def test_channels_are_placed_on_the_media_clock(tmp_path):
    recorder = CallRecorder(tmp_path, "call/1.5", "ulaw", started_at=0.0, pause=lambda: None)
    caller = bytes(range(0, 250)) * 4                # 1000 distinct-ish samples
    recorder.caller(caller[:320])
    recorder.caller(caller[320:])
    recorder.assistant(2, b"\x10" * 160)              # tick 2 -> samples 320..480
    recorder.assistant(3, b"\x20" * 100)              # a short last frame
    recorder.assistant(10, b"\x30" * 160)             # after silence: samples 1600..1760
    path = recorder.close()
    assert path == tmp_path / "19700101-000000_call_1.5.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # temporaries gone
    left, right = read_stereo(path)
    assert len(left) == len(right) == 2 * 1760
    assert left == ulaw_decode(caller) + bytes(2 * 760)
    expected = (b"\xff" * 320 + b"\x10" * 160 + b"\x20" * 100 + b"\xff" * 1020
                + b"\x30" * 160)
    assert right == ulaw_decode(expected)
    assert recorder.close() == path                   # idempotent


def test_a_law_calls_and_long_silences_stay_bounded_in_memory(tmp_path):
    recorder = CallRecorder(tmp_path, "c2", "alaw", started_at=0.0, pause=lambda: None)
    recorder.caller(b"\x55" * 160)
    recorder.assistant(50 * 60 * 5, b"\x2a" * 160)   # a frame five minutes in
    assert len(recorder.right.buffer) < 2 * CHUNK_BYTES
    assert len(recorder.left.buffer) < 2 * CHUNK_BYTES
    left, right = read_stereo(recorder.close())
    samples = 8000 * 300 + 160
    assert len(right) == 2 * samples
    assert right[-320:] == alaw_decode(b"\x2a" * 160)
    assert left[:320] == alaw_decode(b"\x55" * 160)
    assert set(left[320:]) == set(alaw_decode(b"\xd5"))     # A-law silence


def test_the_wav_has_the_canonical_44_byte_pcm_header(tmp_path):
    recorder = CallRecorder(tmp_path, "c", "ulaw", started_at=0.0, pause=lambda: None)
    recorder.caller(b"\x00" * 480)
    data = recorder.close().read_bytes()
    samples = 480
    assert data[:44] == struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + 4 * samples, b"WAVE",
                                    b"fmt ", 16, 1, 2, 8000, 32000, 4, 16, b"data", 4 * samples)
    assert len(data) == 44 + 4 * samples


def paused_then(fail: BaseException, after: int = 1):
    """A pause that raises `fail` at its after-th call (the close interrupted mid-way)."""
    calls = []

    def pause() -> None:
        calls.append(1)
        if len(calls) == after:
            raise fail
    return pause


@pytest.mark.parametrize("fail", [OSError(28, "No space left on device"),
                                  RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_close_cut_short_leaves_no_wav_and_no_temporaries(tmp_path, fail):
    recorder = CallRecorder(tmp_path, "c5", started_at=0.0, pause=paused_then(fail))
    recorder.caller(b"\x00" * (3 * 64_000))           # three blocks to interleave
    if isinstance(fail, OSError):
        assert recorder.close() is None and "No space left" in recorder.error
    else:
        with pytest.raises(type(fail)):
            recorder.close()
    assert list(tmp_path.iterdir()) == []               # never half a WAV under any name


def test_a_recording_finished_on_the_calls_error_path_is_a_valid_wav(tmp_path):
    """Call.end closes the recorder on every path, a call that failed included: whatever was
    recorded until then is a whole WAV."""
    recorder = CallRecorder(tmp_path, "c6", started_at=0.0, pause=lambda: None)
    recorder.caller(b"\x00" * 1000)
    recorder.assistant(1, b"\x10" * 77)                  # a frame cut short by the failure
    left, right = read_stereo(recorder.close())
    assert len(left) == len(right) == 2 * 1000


def test_nothing_recorded_writes_nothing(tmp_path):
    recorder = CallRecorder(tmp_path / "rec", "c3", pause=lambda: None)
    assert recorder.close() is None
    assert not (tmp_path / "rec").exists()


def test_a_write_error_stops_the_recording_not_the_call(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recorder = CallRecorder(blocker, "c4", pause=lambda: None)
    for _ in range(2 * CHUNK_BYTES // 320):
        recorder.caller(b"\x00" * 320)               # no exception reaches the caller
    assert not recorder.enabled and "cannot write" in recorder.error
    assert recorder.close() is None
    assert len([r for r in caplog.records if "recording stopped" in r.getMessage()]) == 1


def test_recording_stem_is_date_and_call_id():
    assert recording_stem("1700000000.42", 1_700_000_000.0) == "20231114-221320_1700000000.42"


def test_call_media_hands_the_recorder_exactly_what_the_model_gets_silence_included():
    from relay._rtp import build_rtp
    from relay.call_media import CallMedia

    to_model: list[bytes] = []
    tapped: list[bytes] = []
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                      send_to_model=lambda audio, stamp: to_model.append(audio),
                      jitter_depth=3, append_frames=2)
    media.on_input = tapped.append
    media.start(0.0)
    now = 0.0
    for n in range(50):                                # 1 s of caller speech
        media.on_rtp(build_rtp(0, n == 0, 100 + n, 160 * (n + 1), 0x1234, bytes([n]) * 160),
                     now)
        now += 0.02
        media.tick(now)
    for _ in range(50):                                # then 1 s of nothing: silence fill
        now += 0.02
        media.tick(now)
    assert tapped == to_model and b"\xff" * 320 in b"".join(tapped)
    assert media.ticks == 100


# --- retention ----------------------------------------------------------------------------------


def test_retention_removes_only_relays_old_files(tmp_path):
    transcripts, recordings = tmp_path / "t", tmp_path / "r"
    transcripts.mkdir()
    recordings.mkdir()
    old = time.time() - 10 * 86400
    names = {transcripts: ["20200101-000000_a.jsonl", "20200101-000000_b.jsonl", "notes.txt"],
             recordings: ["20200101-000000_a.wav", "20200101-000000_a.caller.part", "x.wav"]}
    for folder, files in names.items():
        for name in files:
            (folder / name).write_bytes(b"x")
            os.utime(folder / name, (old, old))
    fresh = recordings / "20990101-000000_new.wav"
    fresh.write_bytes(b"x")
    assert sweep([transcripts, recordings, tmp_path / "missing"], days=0) == 0
    assert sweep([transcripts, recordings, tmp_path / "missing"], days=7) == 4
    left = sorted(p.name for p in transcripts.iterdir()) + sorted(
        p.name for p in recordings.iterdir())
    assert left == ["notes.txt", "20990101-000000_new.wav", "x.wav"]


def test_retention_runs_at_start_and_stops(tmp_path):
    old = time.time() - 3 * 86400
    path = tmp_path / "20200101-000000_a.jsonl"
    path.write_bytes(b"x")
    os.utime(path, (old, old))
    retention = Retention([tmp_path], days=1, interval_s=60)
    retention.start()
    try:
        wait_for(lambda: not path.exists(), 5, "the first sweep")
    finally:
        retention.stop()
    assert retention.removed == 1 and retention._greenlet is None


# --- a simulated call -----------------------------------------------------------------------------

LONG_REPLY = ("Our opening hours are eight to six on weekdays and nine to one on Saturdays, "
              "and we are closed on Sundays and public holidays, except in December.")
STOP = "Sorry, stop please. Goodbye."
SCRIPT = {"phrasebook": [STOP], "greeting": LONG_REPLY,
          "rules": [{"keywords": ["goodbye"], "say": "You are welcome. Goodbye!"}]}


def test_the_recording_is_what_the_caller_said_and_heard_including_a_barge_in(stack, tmp_path):
    recordings = tmp_path / "recordings"
    s = stack(model_script=SCRIPT, settings={"agent.active": "greeter", "call.record": True,
                                             "call.recordings_dir": str(recordings)})
    call_id = s.call({"steps": [{"barge_in": STOP, "after_ms": 1500},
                                {"wait_agent_done": {"silence_ms": 800, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active", 10, "the call to be set up")
    capture = s.pbx.capture(call_id)
    s.wait_calls([call_id], 40)
    assert relay_call.barge_ins == 1
    path = Path(relay_call.recording_path)
    assert path.parent == recordings and path.name.endswith(f"_{relay_call.id}.wav")
    assert [p.name for p in recordings.iterdir()] == [path.name]       # no temporaries left
    left, right = read_stereo(path)

    # left: the caller's utterance, bit-exact, where relay handed it to the model
    said = ulaw_decode(utterance_ulaw(STOP))
    at = left.find(said)
    assert at >= 0 and at % 2 == 0
    # right: every packet the PBX received, at its RTP timestamp, silence elsewhere
    first_ts = relay_call.media._first_timestamp
    expected = bytearray(len(right))
    packets = capture.packets()
    for packet in packets:
        offset = 2 * ((packet["ts"] - first_ts) & 0xFFFFFFFF)
        pcm = ulaw_decode(packet["payload"])
        assert offset + len(pcm) <= len(right)
        expected[offset:offset + len(pcm)] = pcm
    assert right == bytes(expected)
    # ... which is the greeting cut by the barge-in, then the reply
    sent = b"".join(p["payload"] for p in packets)
    [(item_id, heard_ms)] = relay_call.truncations
    assert 1000 < heard_ms < 9000
    greeting_spurt = packets[:next(i for i, p in enumerate(packets) if i and p["marker"])]
    assert abs(sum(p["len"] for p in greeting_spurt) / 8 - heard_ms) <= 20
    assert len(sent) > 8 * heard_ms + 8000          # the reply after it is there too
    # both channels span the call
    assert abs(len(left) - len(right)) <= 2 * 8000
    entries = [e for e in relay_call.transcript.entries({"event"})
               if e["text"] == "recording saved"]
    assert entries and entries[0]["recording"] == path.name


def test_an_agent_that_says_record_false_is_not_recorded(stack, tmp_path):
    agents = tmp_path / "agents"
    agents.mkdir()
    base = json.loads((AGENTS_DIR / "default.json").read_text())
    (agents / "default.json").write_text(json.dumps(dict(base, record=False)))
    s = stack(model_script=SCRIPT, settings={"call.record": True,
                                             "agent.configs_dir": str(agents)})
    call_id = s.call({"steps": [{"pause_ms": 500}, {"hangup": True}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 20)
    assert relay_call.recorder is None and relay_call.recording_path == ""
    assert relay_call.media.on_input is None        # nothing extra on the packet path
    assert not list((tmp_path / "transcripts").glob("*.wav"))


@pytest.mark.parametrize("agent_record, setting, recorded", [
    (None, False, False), (None, True, True), (True, False, True), (False, True, False)])
def test_the_agent_decides_else_the_setting(tmp_path, agent_record, setting, recorded):
    settings = load_settings(env={}, overrides={"call.record": setting,
                                                "agent.configs_dir": str(AGENTS_DIR)})
    agent = dataclasses.replace(settings.agent(), record=agent_record)
    call = SimpleNamespace(agent=agent, settings=settings, id="c1", created_at=0.0,
                           media=SimpleNamespace(line_format="ulaw"),
                           worker=SimpleNamespace(recordings_dir=tmp_path,
                                                  transcripts_dir=tmp_path / "t"))
    recorder = Call._make_recorder(call)
    assert (recorder is not None) == recorded
    if recorder is not None:
        assert recorder.directory == tmp_path


def test_an_agents_record_must_be_a_boolean(tmp_path):
    base = json.loads((AGENTS_DIR / "default.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps(dict(base, record="yes")))
    with pytest.raises(ConfigError, match="'record' must be true or false"):
        load_agent(tmp_path / "bad.json")
    (tmp_path / "good.json").write_text(json.dumps(dict(base, record=True)))
    assert load_agent(tmp_path / "good.json").record is True
