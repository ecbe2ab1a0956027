"""The adaptive depth of relay._rtp.JitterBuffer, and CallMedia with it: a fake clock (arrival
times are passed in), links with scripted or seeded-random delays."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay._rtp import (
    PUSH_DUPLICATE,
    PUSH_LATE,
    PUSH_MALFORMED,
    PUSH_OK,
    PUSH_RESTARTED,
    JitterBuffer,
    build_rtp,
)
from relay.call_media import CallMedia

SSRC = 0x0BADCAFE
FRAME = 0.020


def payload_of(seq: int) -> bytes:
    """160 bytes that say which packet they came from (never the u-law silence byte)."""
    return bytes([seq >> 8 & 0xFF, seq & 0xFF]) + bytes([seq % 200 + 1]) * 158


def rtp(seq: int, ts: int | None = None, ssrc: int = SSRC, marker: bool = False) -> bytes:
    seq &= 0xFFFF
    ts = seq * 160 if ts is None else ts
    return build_rtp(0, marker, seq, ts & 0xFFFFFFFF, ssrc, payload_of(seq))


def seq_of(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big")


def adaptive(**kwargs) -> JitterBuffer:
    kwargs.setdefault("depth", 1)
    return JitterBuffer(adaptive=True, **kwargs)


def link(first: int, count: int, start: float, delay) -> list[tuple[float, int]]:
    """(arrival, sequence) of packets first.. sent every 20 ms from `start`, each delayed by
    delay(i) seconds, in arrival order."""
    return sorted((start + i * FRAME + delay(i), first + i) for i in range(count))


class Receiver:
    """Pushes arrivals and pops after each one, as CallMedia does; records what came out and
    the depth after each packet."""

    def __init__(self, jb: JitterBuffer) -> None:
        self.jb = jb
        self.out: list[int] = []
        self.depths: list[tuple[float, int]] = []
        self.statuses: list[int] = []

    def feed(self, arrivals: list[tuple[float, int]], ts_offset: int = 0,
             ssrc: int = SSRC) -> None:
        for now, seq in arrivals:
            self.statuses.append(self.jb.push(rtp(seq, ts=seq * 160 + ts_offset, ssrc=ssrc),
                                              now))
            while (payload := self.jb.pop()) is not None:
                self.out.append(seq_of(payload))
            self.depths.append((now, self.jb.depth))

    def depth_at(self, t: float) -> int:
        """The depth after the last packet that arrived by t."""
        return [d for now, d in self.depths if now <= t][-1]


def uniform(seed: int, low: float, high: float):
    rnd = random.Random(seed)
    return lambda i: rnd.uniform(low, high)


# ----------------------------------------------------------------------------- the depth

def test_constructor_validation_and_defaults():
    jb = adaptive()
    assert (jb.adaptive, jb.depth, jb.min_depth, jb.max_depth, jb.max_depth_reached) == (
        True, 1, 1, 8, 1)
    fixed = JitterBuffer(depth=3, max_depth=8)
    assert (fixed.adaptive, fixed.min_depth, fixed.max_depth) == (False, 3, 3)
    for kwargs in ({"depth": 3, "max_depth": 2}, {"max_depth": 32}, {"capacity": 8,
                   "max_depth": 8}, {"shrink_after_s": 0.0}, {"shrink_after_s": float("nan")},
                   {"clock_rate": 0}, {"frame_samples": 0}):
        with pytest.raises(ValueError):
            adaptive(**kwargs)
    JitterBuffer(depth=3, max_depth=2)      # max_depth is not looked at when not adaptive


def test_clean_link_stays_at_one_frame():
    r = Receiver(adaptive())
    r.feed(link(1000, 1500, 10.0, uniform(1, 0.0, 0.004)))     # 30 s, up to 4 ms of jitter
    assert {d for _, d in r.depths} == {1}
    assert r.out == list(range(1000, 2500))
    jb = r.jb
    assert (jb.max_depth_reached, jb.depth_increases, jb.lost, jb.late) == (1, 0, 0, 0)
    assert 0.0 <= jb.last_lateness_s <= 0.004


def test_60_ms_of_jitter_grows_the_depth_to_cover_it_and_nothing_is_late_afterwards():
    r = Receiver(adaptive())
    r.feed(link(0, 1000, 5.0, uniform(2, 0.0, 0.060)))        # 20 s of 0-60 ms delays
    jb = r.jb
    # a packet 40-60 ms late is passed by two later ones: it needs three frames
    assert jb.depth == jb.max_depth_reached == 3
    grown_at = next(now for now, d in r.depths if d == 3)
    assert grown_at < 6.0                                       # within the first second
    # only packets sent before it grew were given up (each came later: lost, then late)
    late = {seq for (_, seq), status in zip(link(0, 1000, 5.0, uniform(2, 0.0, 0.060)),
                                            r.statuses) if status == PUSH_LATE}
    assert late and all(5.0 + seq * FRAME < grown_at for seq in late)
    assert jb.late == len(late) and jb.lost <= jb.late   # (packets before the first: not lost)
    assert r.out == [seq for seq in range(1000) if seq not in late]


def test_calm_link_shrinks_one_frame_per_period_and_loses_nothing_meanwhile():
    r = Receiver(adaptive(shrink_after_s=2.0))
    r.feed(link(0, 500, 0.0, uniform(3, 0.0, 0.060)))        # 10 s jittery
    assert r.jb.depth == 3
    lost, late = r.jb.lost, r.jb.late
    calm_from = 10.0
    r.feed(link(500, 500, calm_from, uniform(4, 0.0, 0.002)))  # then 10 s clean
    assert r.depth_at(calm_from + 1.99) == 3          # not before a calm period went by
    assert r.depth_at(calm_from + 4.0) <= 2           # one frame per period (two at most)
    assert r.depth_at(calm_from + 3.99) >= 2          # never two frames in one period
    assert r.depth_at(calm_from + 5.99) >= 1
    assert r.jb.depth == 1 and r.jb.depth_decreases == 2
    assert (r.jb.lost, r.jb.late, r.jb.dropped) == (lost, late, 0)
    assert r.out[-500:] == list(range(500, 1000))


def test_growth_is_capped_at_max_depth():
    r = Receiver(adaptive(max_depth=4))
    r.feed(link(0, 300, 0.0, uniform(5, 0.0, 0.200)))
    assert r.jb.depth == r.jb.max_depth_reached == 4


def test_one_swapped_pair_grows_the_depth_after_costing_one_packet():
    jb = adaptive()
    r = Receiver(jb)
    # packet 50 is 25 ms late: 51 passes it, and at depth 1 the buffer gives 50 up at once
    r.feed(link(0, 100, 0.0, lambda i: 0.025 if i == 50 else 0.0))
    assert (jb.lost, jb.late, jb.depth) == (1, 1, 2)
    r.feed(link(100, 100, 2.0, lambda i: 0.025 if i == 50 else 0.0))
    assert (jb.lost, jb.late) == (1, 1)               # the same swap again: nothing lost
    assert r.out[-100:] == list(range(100, 200))


def test_a_burst_in_reverse_order_grows_the_depth_past_it():
    r = Receiver(adaptive())
    r.feed([(seq * FRAME, seq) for seq in range(10)])
    # 10..13 arrive together when 13 is due, newest first: 10 came behind three others
    r.feed([(13 * FRAME, seq) for seq in (13, 12, 11, 10)])
    assert r.jb.depth == 4 and r.jb.late == 3          # 10, 11, 12 were given up at depth 1
    r.feed([(14 * FRAME, 14)])
    r.feed([(19 * FRAME, seq) for seq in (18, 17, 16, 15)])
    assert r.jb.late == 3 and r.out[-5:] == [14, 15, 16, 17, 18]


def test_loss_alone_does_not_grow_the_depth():
    r = Receiver(adaptive())
    arrivals = [a for a in link(0, 500, 0.0, uniform(6, 0.0, 0.003)) if a[1] % 37 != 5]
    r.feed(arrivals)
    assert r.jb.depth == 1 and r.jb.late == 0
    assert r.jb.lost == sum(1 for s in range(500) if s % 37 == 5)


def test_timestamp_following_the_clock_after_silence_is_not_lateness():
    r = Receiver(adaptive())
    r.feed(link(0, 50, 0.0, lambda i: 0.001))
    # 1.4 s without packets; the sequence goes on, the timestamp follows the wall clock
    r.feed(link(50, 50, 1.0 + 1.4, lambda i: 0.001), ts_offset=int(1.4 * 8000))
    assert r.jb.depth == 1 and r.jb.last_lateness_s < 0.001


@pytest.mark.parametrize("jump_s", [-30.0, -2.0, 2.0, 3600.0])
def test_a_timestamp_jump_without_a_restart_is_a_new_base_not_delay(jump_s):
    r = Receiver(adaptive())
    r.feed(link(0, 100, 0.0, lambda i: 0.002))
    r.feed(link(100, 100, 2.0, lambda i: 0.002), ts_offset=int(jump_s * 8000))
    assert r.jb.restarts == 0 and r.jb.depth == 1 and r.jb.max_depth_reached == 1
    assert r.out == list(range(200))


def test_a_restarted_stream_is_measured_from_afresh():
    r = Receiver(adaptive())
    r.feed(link(0, 100, 0.0, lambda i: 0.0))
    # a new SSRC with another timestamp base, arriving "early" and "late" against the old one
    r.feed(link(30000, 100, 2.0, uniform(7, 0.0, 0.003)), ts_offset=123_456_789, ssrc=0x77)
    assert r.statuses[100] == PUSH_RESTARTED
    assert r.jb.depth == 1 and r.jb.max_depth_reached == 1


def test_sequence_wrap_with_jitter():
    r = Receiver(adaptive())
    r.feed(link(65536 - 300, 600, 0.0, uniform(8, 0.0, 0.050)))
    assert r.jb.restarts == 0 and r.jb.depth == 3
    late = sum(1 for s in r.statuses if s == PUSH_LATE)
    assert len(r.out) == 600 - late and late <= 5
    assert r.out == sorted(r.out, key=lambda s: (s - 65236) & 0xFFFF)


def test_duplicates_malformed_and_pushes_without_a_time_measure_nothing():
    jb = adaptive()
    for seq in range(20):
        jb.push(rtp(seq), seq * FRAME)
        assert jb.pop() is not None
    assert jb.push(rtp(19), 19 * FRAME + 0.1) == PUSH_DUPLICATE    # 100 ms after its time
    assert jb.push(b"\x80\x00", 1.0) == PUSH_MALFORMED
    assert jb.push(rtp(20)) == PUSH_OK                            # no time: not measured
    assert (jb.depth, jb.depth_increases) == (1, 0)
    assert jb.push(rtp(21), 21 * FRAME + 0.05) == PUSH_OK        # 50 ms late, with its time
    assert (jb.depth, jb.depth_increases) == (3, 1)


# ----------------------------------------------------------------------------- fixed depth

OPS = st.lists(st.one_of(st.tuples(st.just("push"), st.integers(-40, 40),
                                   st.floats(0.0, 0.3)),
                         st.tuples(st.just("pop"), st.booleans(), st.just(0.0))),
               max_size=150)


@settings(max_examples=150, deadline=None)
@given(OPS, st.integers(1, 4))
def test_without_room_to_move_it_is_the_fixed_buffer(ops, depth):
    """adaptive with max_depth == depth, and a fixed buffer given arrival times, behave exactly
    as the fixed buffer without them: same statuses, payloads, gaps and counters."""
    buffers = [JitterBuffer(depth=depth), JitterBuffer(depth=depth),
               JitterBuffer(depth=depth, adaptive=True, max_depth=depth)]
    t = 0.0
    for op, arg, delay in ops:
        t += 0.02
        if op == "push":
            data = rtp(65500 + arg)
            results = [buffers[0].push(data)] + [b.push(data, t + delay) for b in buffers[1:]]
        else:
            results = [(b.pop(arg), b.last_gap_packets, b.last_gap_samples) for b in buffers]
        assert results[0] == results[1] == results[2]
    counters = [(b.received, b.popped, b.lost, b.late, b.duplicate, b.reordered, b.dropped,
                 b.restarts, b.depth) for b in buffers]
    assert counters[0] == counters[1] == counters[2]


# ----------------------------------------------------------------------------- CallMedia

class Call:
    """A CallMedia fed by a fake clock: packets at their arrival times and pacer ticks every
    20 ms (at `phase` into each frame), in time order."""

    def __init__(self, phase: float = 0.007, **kwargs) -> None:
        self.appends: list[tuple[bytes, float | None, float]] = []   # audio, stamp, sent at
        self.late_seqs: list[int] = []       # packets the jitter buffer took as late
        self.now = 0.0
        self.phase = phase
        self.media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                               send_to_model=self._sent, **kwargs)
        self.media.start(0.0)
        self.next_tick = phase

    def _sent(self, audio: bytes, stamp: float | None) -> None:
        self.appends.append((audio, stamp, self.now))

    def run(self, arrivals: list[tuple[float, int]], until: float, ts_offset: int = 0) -> None:
        pending = list(arrivals)
        while True:
            at = pending[0][0] if pending else None
            if self.next_tick > until and at is None:
                return
            if at is not None and at < self.next_tick:
                self.now = at
                late = self.media.jitter.late
                seq = pending.pop(0)[1]
                self.media.on_rtp(rtp(seq, ts=seq * 160 + ts_offset), at)
                if self.media.jitter.late > late:
                    self.late_seqs.append(seq)
            else:
                self.now = self.next_tick
                self.media.tick(self.now)
                self.next_tick += FRAME

    def audio(self) -> bytes:
        return b"".join(a for a, _, _ in self.appends)


def speech(seqs) -> bytes:
    return b"".join(payload_of(s) for s in seqs)


def test_call_media_reports_the_depth_and_defaults_to_the_fixed_buffer():
    assert CallMedia(model_format="audio/pcmu", send_rtp=print, send_to_model=print,
                     jitter_depth=3).jitter.adaptive is False
    call = Call(jitter_adaptive=True, jitter_max_depth=6)
    call.run(link(0, 100, 0.5, uniform(9, 0.0, 0.002)), until=3.0)
    stats = call.media.stats()
    assert (stats["jitter_depth"], stats["jitter_depth_ms"]) == (1, 20)
    assert (stats["jitter_depth_max"], stats["jitter_depth_max_ms"]) == (1, 20)
    assert call.media.jitter.max_depth == 6
    call.run(link(100, 200, 2.5, uniform(10, 0.0, 0.060)), until=7.0)
    stats = call.media.stats()
    assert (stats["jitter_depth"], stats["jitter_depth_ms"]) == (3, 60)
    assert stats["jitter_depth_max_ms"] == 60


def test_no_silence_is_inserted_into_speech_held_by_a_deeper_buffer():
    """60 ms of jitter: once the depth covers it, the talkspurt reaches the model whole and in
    order (the silence fill waits a frame more than the current depth)."""
    call = Call(jitter_adaptive=True)
    call.run(link(0, 300, 0.5, uniform(11, 0.0, 0.060)), until=8.0)
    jitter = call.media.jitter
    assert jitter.depth == 3
    # the first packets given up (before the depth grew) were late once, at the start
    assert jitter.late == jitter.lost == len(call.late_seqs) <= 5
    adapted = max(call.late_seqs, default=-1) + 1
    assert adapted < 50
    audio = call.audio()
    start = audio.index(payload_of(adapted))
    assert audio[start:].startswith(speech(range(adapted, 300)))


def test_the_same_jitter_on_a_shallow_fixed_buffer_does_insert_silence():
    """The comparison that makes the previous test mean something: a fixed one-frame depth
    gives up late packets and fills silence into the speech."""
    call = Call(jitter_depth=1)
    call.run(link(0, 300, 0.5, uniform(12, 0.0, 0.060)), until=8.0)
    assert call.media.jitter.late > 10
    assert call.audio().count(b"\xff" * 160) > 0


def test_the_silence_fill_follows_the_current_depth():
    call = Call(jitter_adaptive=True)
    call.run(link(0, 100, 0.0, uniform(13, 0.0, 0.060)), until=2.0)
    depth = call.media.jitter.depth
    assert depth == 3
    call.run([], until=3.0)                        # the caller goes quiet: silence follows
    input_s = len(call.audio()) / 8000
    lag = call.now - input_s
    slack = (depth + 1) * FRAME
    assert slack - 0.005 <= lag <= slack + 2 * FRAME      # an append's worth of quantisation


@pytest.mark.parametrize("phase", [0.001, 0.007, 0.013, 0.019])
def test_a_talkspurts_last_frame_is_sent_soon_when_adaptive(phase):
    """Three frames with two-frame appends: the third waits for a partner that never comes.
    Adaptive: it goes once the next packet is a quarter frame overdue (the next tick after
    25 ms); fixed depth 3: after the silence fill's (3 + 1) frames and a full append."""
    tails = {}
    for name, kwargs in (("adaptive", {"jitter_adaptive": True}), ("fixed", {"jitter_depth": 3})):
        call = Call(phase=phase, append_frames=2, **kwargs)
        call.run(link(0, 4, 0.2, lambda i: 0.0), until=0.9)      # the stream has started
        first = len(call.appends)
        # the next talkspurt: the sequence goes on, the timestamp follows the clock
        call.run(link(4, 3, 1.0, lambda i: 0.0), until=2.0, ts_offset=int((1.0 - 0.28) * 8000))
        stamped = [(stamp, sent) for _, stamp, sent in call.appends[first:]
                   if stamp is not None]
        assert [round(stamp, 3) for stamp, _ in stamped] == [1.0, 1.04]
        tails[name] = stamped[-1][1] - stamped[-1][0]
        assert speech([4, 5]) in call.audio() and speech([6]) in call.audio()
    assert 0.025 <= tails["adaptive"] < 0.045
    assert tails["fixed"] >= 0.08


def test_the_stream_a_real_asterisk_sent_keeps_the_depth_shallow():
    """tests/reference/asterisk/rtp-from-asterisk.csv at its capture times (a prompt, a 1.4 s
    silence, a 12-byte frame): at most one frame more for a moment, nothing lost or late."""
    from test_jitterbuffer import asterisk_rows

    jb = adaptive()
    rows = asterisk_rows()
    out = []
    for row in rows:
        jb.push(row.packet(), row.t)
        while (payload := jb.pop()) is not None:
            out.append(payload)
    assert out == [row.payload() for row in rows]
    assert (jb.lost, jb.late) == (0, 0)
    assert jb.max_depth_reached <= 2 and jb.depth == 1
