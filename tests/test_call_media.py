"""CallMedia: caller frames to the model (batched, silence-filled), model audio to paced RTP."""

import pytest

from relay._rtp import RtpPacket, build_rtp
from relay.call_media import CallMedia


class Wire:
    def __init__(self):
        self.rtp_out: list[RtpPacket] = []
        self.to_model: list[bytes] = []

    def media(self, **kwargs) -> CallMedia:
        media = CallMedia(model_format=kwargs.pop("model_format", "audio/pcmu"),
                          send_rtp=lambda p: self.rtp_out.append(RtpPacket.parse(p)),
                          send_to_model=lambda audio, stamp: self.to_model.append(audio),
                          **kwargs)
        media.start(0.0)
        return media


def caller_packet(seq: int, ts: int, payload: bytes = b"\x10" * 160, marker=False) -> bytes:
    return build_rtp(0, marker, seq, ts, 0x1234, payload)


def test_caller_frames_reach_the_model_in_batches_of_append_frames():
    wire = Wire()
    media = wire.media(append_frames=2)
    for i in range(6):
        media.on_rtp(caller_packet(100 + i, 160 * (i + 1), bytes([i]) * 160), 0.02 * i)
    # the jitter buffer holds a stream's start until `depth` packets wait, then runs in order
    assert all(len(a) >= 320 for a in wire.to_model)
    # frames 0-4 went in batches of at least two; frame 5 waits for its batch partner
    assert b"".join(wire.to_model) == b"".join(bytes([i]) * 160 for i in range(5))


def test_reordered_packets_reach_the_model_in_order():
    wire = Wire()
    media = wire.media(append_frames=1, jitter_depth=3)
    order = [0, 2, 1, 3, 4]
    for n, i in enumerate(order):
        media.on_rtp(caller_packet(500 + i, 160 * (i + 1), bytes([i]) * 160), 0.02 * n)
    assert b"".join(wire.to_model) == b"".join(bytes([i]) * 160 for i in range(5))


def test_a_silent_caller_gets_silence_at_the_pace_of_the_clock():
    wire = Wire()
    media = wire.media(append_frames=2, jitter_depth=3)
    now = 0.0
    for _ in range(100):          # two seconds of ticks, no RTP at all
        now += 0.02
        media.tick(now)
    sent = b"".join(wire.to_model)
    assert set(sent) == {0xFF}
    slack = (3 + 1) * 0.02
    assert abs(len(sent) - (2.0 - slack) * 8000) <= 320


def test_model_audio_goes_out_one_frame_per_tick_with_a_marker_per_talkspurt():
    wire = Wire()
    media = wire.media()
    media.add_model_audio("item1", b"\x55" * 480)
    media.playout.finish("item1")
    for n in range(1, 11):
        media.tick(n * 0.02)
    first = list(wire.rtp_out)
    assert len(first) == 3 and [p.marker for p in first] == [True, False, False]
    assert [p.timestamp - first[0].timestamp for p in first] == [0, 160, 320]
    assert [p.sequence - first[0].sequence for p in first] == [0, 1, 2]
    media.add_model_audio("item2", b"\x66" * 160)
    media.playout.finish("item2")
    media.tick(0.22)
    spurt = wire.rtp_out[3]
    assert spurt.marker and spurt.sequence == first[-1].sequence + 1
    # timestamps follow the clock across the quiet time: 11 ticks after the first packet
    assert spurt.timestamp - first[0].timestamp == 10 * 160


def test_flush_stops_the_audio_at_once():
    wire = Wire()
    media = wire.media()
    media.add_model_audio("a", b"\x55" * 1600)
    media.tick(0.02)
    cut = media.flush_playout()
    media.tick(0.04)
    assert len(wire.rtp_out) == 1
    assert cut.item_id == "a" and cut.heard_ms() == 20


def test_malformed_rtp_is_counted_not_raised():
    wire = Wire()
    media = wire.media()
    media.on_rtp(b"\x00garbage", 0.0)
    media.on_rtp(b"", 0.0)
    assert media.stats()["malformed"] == 2
    assert wire.to_model == []


def test_pcm24_mode_converts_both_ways():
    wire = Wire()
    media = wire.media(model_format="audio/pcm", append_frames=1)
    for i in range(3):
        media.on_rtp(caller_packet(1 + i, 160 * (i + 1)), 0.0)
    assert sum(map(len, wire.to_model)) == 3 * 160 * 2 * 3      # 60 ms of 24 kHz PCM16
    media.add_model_audio("a", b"\x00\x00" * 480)     # 20 ms at 24 kHz
    media.playout.finish("a")
    media.tick(0.02)
    assert len(wire.rtp_out) == 1 and len(wire.rtp_out[0].payload) == 160


def test_caller_audio_stamp_is_the_arrival_of_the_oldest_packet_in_an_append():
    stamps: list = []
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                      send_to_model=lambda audio, stamp: stamps.append(stamp),
                      jitter_depth=1, append_frames=2)
    media.start(0.0)
    for i in range(6):
        media.on_rtp(caller_packet(100 + i, 160 * (i + 1)), 1.0 + 0.02 * i)
    # each append carries two frames; its stamp is its first frame's arrival
    assert stamps == [1.0, 1.04, 1.08]


def test_model_audio_latency_runs_from_a_delta_into_idle_playout_to_its_first_frame():
    seen: list[float] = []
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                      send_to_model=lambda audio, stamp: None,
                      on_model_audio_latency=seen.append)
    media.start(0.0)
    media.tick(0.02)                                  # nothing queued: nothing observed
    media.add_model_audio("a", b"\x55" * 480, arrived=0.025)
    media.add_model_audio("a", b"\x55" * 480, arrived=0.030)   # already queued: not a start
    media.tick(0.04)
    for n in range(10):
        media.tick(0.06 + 0.02 * n)
    assert seen == [0.04 - 0.025]
    # a barge-in flush forgets a delta still waiting for its frame
    media.add_model_audio("b", b"\x55" * 160, arrived=1.0)
    media.flush_playout()
    media.tick(1.02)
    assert len(seen) == 1


def test_a_lost_packet_is_filled_with_the_line_codecs_silence():
    wire = Wire()
    media = wire.media(model_format="audio/pcma", append_frames=1, jitter_depth=1)
    for seq in (1, 2, 4):                 # 3 never comes
        media.on_rtp(caller_packet(seq, 160 * seq, bytes([seq]) * 160), 0.02 * seq)
    assert b"".join(wire.to_model) == b"\x01" * 160 + b"\x02" * 160 + b"\xd5" * 160 + b"\x04" * 160
    assert media.stats()["lost"] == 1 and media.stats()["silence_filled_ms"] == 20


def test_interarrival_jitter_follows_rfc3550_and_ignores_a_stream_restart():
    wire = Wire()
    media = wire.media()
    for i, arrival in enumerate((0.0, 0.02, 0.05, 0.06)):   # the third one 10 ms late
        media.on_rtp(caller_packet(1 + i, 160 * i), arrival)
    # transit differences 0, 80, 80 samples: J = 80/16, then J += (80 - J)/16
    assert media.jitter_samples == pytest.approx(80 / 16 + (80 - 80 / 16) / 16)
    assert media.stats()["jitter_ms"] == 1.21
    media.on_rtp(caller_packet(5, 160 * 4 + 16000), 0.08)   # a two-second timestamp jump
    assert media.stats()["jitter_ms"] == 1.21


def test_nothing_is_filled_before_the_media_starts():
    sent: list = []
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                      send_to_model=lambda audio, stamp: sent.append(audio))
    for n in range(1, 100):
        media.tick(0.02 * n)
    assert media.started_at is None and sent == []
    media.start(2.0)
    assert media.started_at == 2.0


def _silence_then_speech(**kwargs):
    """2 s of speech, 5 s of silence (ticks only), then speech again: what reaches the model."""
    wire = Wire()
    media = wire.media(append_frames=2, jitter_adaptive=True, **kwargs)
    seq, now = 0, 0.0
    for k in range(1, 351):                         # 7 s of ticks
        now = 0.02 * k
        if k <= 100 or k > 350 - 25:                # speaking in the first 2 s and last 0.5 s
            media.on_rtp(caller_packet(seq, 160 * k, b"\x10" * 160), now - 0.001)
            seq += 1
        media.tick(now)
    return wire.to_model, media


def test_a_long_silence_goes_to_the_model_in_fewer_larger_appends_on_the_same_clock():
    plain, plain_media = _silence_then_speech()
    chunked, chunked_media = _silence_then_speech(long_silence_s=1.5, long_silence_frames=10)
    silent = bytes([0xFF])
    sizes = [len(a) for a in chunked if set(a) == {silent[0]}]
    # the first 1.5 s of silence in two-frame appends (the model's end of turn is not
    # delayed), then 200 ms appends
    assert sizes[:5] == [320] * 5 and 1600 in sizes
    assert len(chunked) < len(plain) - 15
    # the same audio, silence included, reached the model in the same order: after the
    # silence, the first packet topped it up to where the two-frame fill was
    assert b"".join(chunked) == b"".join(plain)
    assert chunked_media.stats()["silence_filled_ms"] == plain_media.stats()["silence_filled_ms"]


def test_long_silence_appends_can_be_turned_off():
    plain, _ = _silence_then_speech()
    off, _ = _silence_then_speech(long_silence_s=0.0, long_silence_frames=10)
    assert off == plain
