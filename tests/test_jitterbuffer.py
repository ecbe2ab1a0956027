"""The receive jitter buffer of relay._rtp: scripted scenarios, invariants under random input,
and the replay of the RTP stream a real Asterisk sent (reference/asterisk/rtp-from-asterisk.csv).
"""

from __future__ import annotations

import csv
import itertools
import random
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay._rtp import (
    PUSH_DUPLICATE,
    PUSH_LATE,
    PUSH_MALFORMED,
    PUSH_OK,
    PUSH_REORDERED,
    PUSH_RESTARTED,
    PUSH_TOO_LARGE,
    JitterBuffer,
    build_rtp,
)

SSRC = 0x33840CF3
ASTERISK_DIR = Path(__file__).resolve().parent / "reference" / "asterisk"   # see its README
ASTERISK_CSV = ASTERISK_DIR / "rtp-from-asterisk.csv"

COUNTERS = ("received", "popped", "lost", "late", "duplicate", "reordered", "malformed",
            "too_large", "dropped", "restarts", "ssrc_changes")


def payload_of(seq: int, size: int = 160) -> bytes:
    """A payload that says which packet it came from."""
    return (seq.to_bytes(2, "big") * (size // 2 + 1))[:size]


def rtp(seq: int, ts: int | None = None, size: int = 160, ssrc: int = SSRC,
        marker: bool = False) -> bytes:
    seq &= 0xFFFF
    ts = seq * 160 if ts is None else ts
    return build_rtp(0, marker, seq, ts & 0xFFFFFFFF, ssrc, payload_of(seq, size))


def started(first: int = 0, **kwargs) -> JitterBuffer:
    """A buffer whose stream started at `first`, already popped."""
    jb = JitterBuffer(**kwargs)
    jb.push(rtp(first))
    assert jb.pop(force=True) == payload_of(first)
    return jb


def drain(jb: JitterBuffer, force: bool = False) -> list[bytes]:
    out = []
    while (payload := jb.pop(force)) is not None:
        out.append(payload)
    return out


def seqs(payloads: list[bytes]) -> list[int]:
    return [int.from_bytes(p[:2], "big") for p in payloads]


def counters(jb: JitterBuffer) -> dict[str, int]:
    return {name: getattr(jb, name) for name in COUNTERS}


def expect(jb: JitterBuffer, **nonzero: int) -> None:
    """All counters are 0 except those given."""
    assert counters(jb) == {name: nonzero.get(name, 0) for name in COUNTERS}


# ----------------------------------------------------------------------------- basics

def test_constructor_validation():
    jb = JitterBuffer()
    assert (jb.capacity, jb.depth, jb.max_payload, jb.bytes_per_sample) == (32, 3, 1500, 1)
    assert jb.ssrc is None and jb.waiting == 0 and jb.pop() is None and jb.pop(True) is None
    for kwargs in ({"capacity": 24}, {"capacity": 1}, {"capacity": 65536},
                   {"capacity": 8, "depth": 8}, {"depth": 0}, {"max_payload": -1},
                   {"max_payload": 65536}, {"bytes_per_sample": 0}):
        with pytest.raises(ValueError):
            JitterBuffer(**kwargs)


def test_in_order_stream_passes_straight_through():
    jb = JitterBuffer(depth=3)
    # A new stream is held until `depth` packets are there (one may have overtaken another).
    assert jb.push(rtp(1000)) == PUSH_OK
    assert jb.push(rtp(1001)) == PUSH_OK
    assert jb.pop() is None
    assert jb.push(rtp(1002)) == PUSH_OK
    assert seqs(drain(jb)) == [1000, 1001, 1002]
    for seq in range(1003, 1010):
        assert jb.push(rtp(seq)) == PUSH_OK
        assert seqs(drain(jb)) == [seq]            # then each one comes out at once
        assert (jb.last_sequence, jb.last_timestamp, jb.last_marker) == (seq, seq * 160, False)
        assert (jb.last_gap_packets, jb.last_gap_samples) == (0, 0)
    assert jb.ssrc == SSRC
    expect(jb, received=10, popped=10)


def test_accepts_any_bytes_like_and_rejects_non_buffers():
    jb = JitterBuffer()
    assert jb.push(bytearray(rtp(1))) == PUSH_OK
    assert jb.push(memoryview(b"??" + rtp(2))[2:]) == PUSH_OK
    assert seqs(drain(jb, force=True)) == [1, 2]
    with pytest.raises(TypeError):
        jb.push(42)  # type: ignore[arg-type]


def test_malformed_and_too_large_are_statuses_not_exceptions():
    jb = JitterBuffer(max_payload=160)
    assert jb.push(b"") == PUSH_MALFORMED
    assert jb.push(b"\x40" + bytes(20)) == PUSH_MALFORMED            # version 1
    assert jb.push(b"\xa0" + bytes(10) + b"\x00\x00") == PUSH_MALFORMED  # padding count 0
    assert jb.push(rtp(1, size=161)) == PUSH_TOO_LARGE
    assert jb.ssrc is None                      # nothing of it reached the stream state
    assert jb.push(rtp(1, size=160)) == PUSH_OK
    assert jb.push(rtp(2, size=0)) == PUSH_OK   # an empty payload is a payload
    assert drain(jb, force=True) == [payload_of(1), b""]
    expect(jb, received=2, popped=2, malformed=3, too_large=1)


def test_payload_with_csrc_extension_and_padding():
    from relay._rtp import RtpPacket

    jb = JitterBuffer()
    data = bytes(RtpPacket(sequence=7, ssrc=SSRC, payload=b"hello", csrc=(1, 2),
                           extension_profile=0xBEDE, extension=b"abcdefgh", padding=4))
    assert jb.push(data) == PUSH_OK
    assert jb.pop(force=True) == b"hello"


# ----------------------------------------------------------------------------- reordering

def test_reorder_within_the_window():
    jb = started(0, depth=3)
    assert jb.push(rtp(2)) == PUSH_OK
    assert jb.pop() is None                     # 1 may still come
    assert jb.push(rtp(3)) == PUSH_OK
    assert jb.pop() is None
    assert jb.push(rtp(1)) == PUSH_REORDERED
    assert seqs(drain(jb)) == [1, 2, 3]
    assert jb.last_gap_packets == 0
    expect(jb, received=4, popped=4, reordered=1)


def test_packet_sent_before_the_first_one_received_is_not_late():
    jb = JitterBuffer(depth=3)
    assert jb.push(rtp(10)) == PUSH_OK
    assert jb.push(rtp(9)) == PUSH_REORDERED    # nothing popped yet: the head moves back
    assert jb.push(rtp(8)) == PUSH_REORDERED
    assert seqs(drain(jb)) == [8, 9, 10]
    assert jb.push(rtp(7)) == PUSH_LATE         # once popped, the start is fixed
    expect(jb, received=3, popped=3, reordered=2, late=1)


# ----------------------------------------------------------------------------- loss, late

def test_loss_is_given_up_after_depth_packets_and_reported_as_a_gap():
    jb = started(0, depth=3)
    jb.push(rtp(2))
    jb.push(rtp(3))
    assert drain(jb) == []
    jb.push(rtp(4))                             # third packet waiting behind the hole
    assert jb.pop() == payload_of(2)
    assert (jb.last_gap_packets, jb.last_gap_samples) == (1, 160)
    assert seqs(drain(jb)) == [3, 4]
    assert (jb.last_gap_packets, jb.last_gap_samples) == (0, 0)
    expect(jb, received=4, popped=4, lost=1)


def test_depth_one_gives_up_at_once():
    jb = JitterBuffer(depth=1)
    jb.push(rtp(0))
    assert seqs(drain(jb)) == [0]               # depth 1: no hold at the start either
    jb.push(rtp(3))
    assert seqs(drain(jb)) == [3]
    assert (jb.last_gap_packets, jb.last_gap_samples) == (2, 320)
    expect(jb, received=2, popped=2, lost=2)


def test_late_packet_after_its_place_was_passed():
    jb = started(0, depth=2)
    jb.push(rtp(2))
    jb.push(rtp(3))
    assert seqs(drain(jb)) == [2, 3]
    assert jb.push(rtp(1)) == PUSH_LATE
    assert drain(jb) == []
    jb.push(rtp(4))
    assert seqs(drain(jb)) == [4]
    expect(jb, received=4, popped=4, lost=1, late=1)


def test_burst_after_a_gap():
    jb = started(0, capacity=32, depth=3)
    for seq in range(1, 5):
        jb.push(rtp(seq))
        drain(jb)
    # 5 and 6 are lost; then the network delivers 7..26 all at once.
    statuses = [jb.push(rtp(seq)) for seq in range(7, 27)]
    assert statuses == [PUSH_OK] * 20
    assert jb.waiting == 20
    out = drain(jb)
    assert seqs(out) == list(range(7, 27))
    expect(jb, received=25, popped=25, lost=2)
    # The gap was reported on the first payload after it, not on the others.
    jb2 = started(4)
    for seq in range(7, 27):
        jb2.push(rtp(seq))
    assert seqs([jb2.pop()]) == [7]
    assert (jb2.last_gap_packets, jb2.last_gap_samples) == (2, 320)
    assert seqs([jb2.pop()]) == [8]
    assert (jb2.last_gap_packets, jb2.last_gap_samples) == (0, 0)


def test_force_pops_across_holes_without_waiting():
    jb = started(0, depth=3)
    jb.push(rtp(2))
    jb.push(rtp(5))
    assert drain(jb) == []                      # the stream went quiet here
    assert seqs(drain(jb, force=True)) == [2, 5]
    assert jb.pop(force=True) is None           # nothing waiting: no loss invented
    expect(jb, received=3, popped=3, lost=3)
    jb.push(rtp(6))
    assert seqs(drain(jb)) == [6]
    assert jb.lost == 3


# ----------------------------------------------------------------------------- duplicates

def test_duplicates_waiting_and_already_popped():
    jb = JitterBuffer()
    assert jb.push(rtp(0)) == PUSH_OK
    assert jb.push(rtp(0)) == PUSH_DUPLICATE    # still waiting
    assert seqs(drain(jb, force=True)) == [0]
    assert jb.push(rtp(0)) == PUSH_DUPLICATE    # already popped
    assert jb.push(rtp(1)) == PUSH_OK
    assert jb.push(rtp(2)) == PUSH_OK
    assert jb.push(rtp(1)) == PUSH_DUPLICATE
    assert seqs(drain(jb)) == [1, 2]
    expect(jb, received=3, popped=3, duplicate=3)


def test_old_copy_beyond_the_ring_is_late():
    jb = JitterBuffer(capacity=8, depth=3)
    for seq in range(20):
        jb.push(rtp(seq))
        drain(jb)
    assert jb.push(rtp(5)) == PUSH_LATE         # its slot was reused: can only say "late"
    assert jb.push(rtp(19)) == PUSH_DUPLICATE
    expect(jb, received=20, popped=20, late=1, duplicate=1)


# ----------------------------------------------------------------------------- wrap-around

def test_wrap_around_at_65535_with_reordering_and_loss():
    jb = JitterBuffer(depth=3)
    base_ts = 2**32 - 3 * 160                   # the timestamp wraps too
    order = [65532, 65533, 65535, 65534, 0, 2, 3, 4, 5, 6]   # 1 is lost
    out = []
    gaps = []
    for seq in order:
        jb.push(rtp(seq, ts=base_ts + ((seq - 65532) & 0xFFFF) * 160))
        while (payload := jb.pop()) is not None:
            out.append(payload)
            gaps.append((jb.last_sequence, jb.last_gap_packets, jb.last_gap_samples))
    assert seqs(out) == [65532, 65533, 65534, 65535, 0, 2, 3, 4, 5, 6]
    assert (2, 1, 160) in gaps
    assert jb.last_timestamp == (base_ts + 10 * 160) & 0xFFFFFFFF
    expect(jb, received=10, popped=10, reordered=1, lost=1)


def test_long_stream_through_several_wraps():
    jb = JitterBuffer(capacity=16, depth=2)
    rnd = random.Random(7)
    sent = list(range(3 * 65536 + 100))
    for i in range(0, len(sent) - 1, 2):       # swap some neighbours
        if rnd.random() < 0.1:
            sent[i], sent[i + 1] = sent[i + 1], sent[i]
    popped = 0
    last = None
    for seq in sent:
        jb.push(rtp(seq))
        while (payload := jb.pop()) is not None:
            s = int.from_bytes(payload[:2], "big")
            assert last is None or s == (last + 1) & 0xFFFF
            last = s
            popped += 1
    assert popped == len(sent)
    assert (jb.lost, jb.late, jb.restarts, jb.dropped) == (0, 0, 0, 0)


# ----------------------------------------------------------------------------- restarts

def test_ssrc_change_restarts_the_stream():
    jb = started(100, depth=2)
    jb.push(rtp(102))                           # waiting behind the hole at 101
    assert jb.push(rtp(5000, ssrc=0xABCDEF)) == PUSH_RESTARTED
    assert jb.ssrc == 0xABCDEF
    assert jb.waiting == 1
    assert jb.pop() is None                     # a new stream: held until depth packets
    assert jb.push(rtp(4999, ssrc=0xABCDEF)) == PUSH_REORDERED
    assert seqs(drain(jb)) == [4999, 5000]      # the new stream, no gap reported
    assert (jb.last_gap_packets, jb.last_gap_samples) == (0, 0)
    assert jb.push(rtp(5001, ssrc=0xABCDEF)) == PUSH_OK
    assert seqs(drain(jb)) == [5001]
    expect(jb, received=5, popped=4, dropped=1, reordered=1, restarts=1, ssrc_changes=1)
    assert jb.push(rtp(103)) == PUSH_RESTARTED  # the old SSRC again is another change
    assert jb.ssrc == SSRC
    assert jb.ssrc_changes == 2


def test_big_sequence_jump_is_a_restart_not_thousands_of_losses():
    jb = started(0, capacity=32, depth=1)
    for seq in range(1, 10):
        jb.push(rtp(seq))
        drain(jb)
    assert jb.push(rtp(10 + 32)) == PUSH_RESTARTED     # just beyond the window
    assert seqs(drain(jb)) == [42]
    assert jb.push(rtp(20000)) == PUSH_RESTARTED
    assert jb.push(rtp(20001)) == PUSH_OK
    assert seqs(drain(jb)) == [20000, 20001]
    assert jb.push(rtp(10)) == PUSH_RESTARTED          # far behind: the sender went back
    assert jb.push(rtp(19990)) == PUSH_RESTARTED       # and 10 was dropped, never popped
    assert jb.push(rtp(19991)) == PUSH_OK
    assert seqs(drain(jb)) == [19990, 19991]
    expect(jb, received=16, popped=15, dropped=1, restarts=4)
    # Just inside the window is a loss, and somewhat behind (< 100) is late.
    assert jb.push(rtp(19991 + 31)) == PUSH_OK
    assert seqs(drain(jb)) == [19991 + 31]
    assert jb.last_gap_packets == 30
    assert jb.push(rtp(19991 - 60)) == PUSH_LATE       # 91 behind the newest one
    assert jb.push(rtp(19991 + 31 - 100)) == PUSH_RESTARTED   # 100 behind
    assert (jb.lost, jb.late, jb.restarts) == (30, 1, 5)


# ----------------------------------------------------------------------------- timestamps

def test_timestamp_jump_with_marker_after_silence_is_not_loss():
    jb = JitterBuffer()
    for seq in range(30540, 30546):
        jb.push(rtp(seq, ts=(seq - 30192) * 160 + 160))
        drain(jb)
    # 1.4 s without packets: the sequence goes on, the timestamp follows the wall clock.
    jb.push(rtp(30546, ts=67916, marker=True))
    assert seqs(drain(jb)) == [30546]
    assert (jb.last_marker, jb.last_timestamp) == (True, 67916)
    assert (jb.last_gap_packets, jb.last_gap_samples) == (0, 0)
    jb.push(rtp(30547, ts=67916 + 160))
    assert seqs(drain(jb)) == [30547]
    assert jb.last_marker is False
    expect(jb, received=8, popped=8)


def test_lost_marker_packet_reports_one_frame_not_the_silence():
    jb = JitterBuffer(depth=1)
    jb.push(rtp(10, ts=1600))
    drain(jb)
    jb.push(rtp(12, ts=1600 + 11424 + 160))     # 11 (the marker packet) is lost
    assert seqs(drain(jb)) == [12]
    assert (jb.last_gap_packets, jb.last_gap_samples) == (1, 160)


def test_twelve_byte_payload():
    # Asterisk at the end of a prompt: seq 30262 carries 12 bytes and timestamp +12.
    stream = [(30260, 11040, 160), (30261, 11200, 160), (30262, 11212, 12),
              (30263, 11372, 160), (30264, 11532, 160)]
    jb = JitterBuffer()
    for seq, ts, size in stream:
        jb.push(rtp(seq, ts=ts, size=size))
    out = drain(jb)
    assert [len(p) for p in out] == [160, 160, 12, 160, 160]
    assert out[2] == payload_of(30262, 12)
    # Losing the short packet reports 12 samples; losing a 160 one next to it reports 160.
    for missing, samples in ((30262, 12), (30261, 160), (30263, 160)):
        jb = JitterBuffer(depth=1)
        for seq, ts, size in stream:
            if seq != missing:
                jb.push(rtp(seq, ts=ts, size=size))
                while jb.pop() is not None:
                    if jb.last_gap_packets:
                        assert (jb.last_gap_packets, jb.last_gap_samples) == (1, samples)
        assert jb.lost == 1


def test_gap_samples_for_two_byte_samples():
    jb = JitterBuffer(depth=1, bytes_per_sample=2)    # slin16: 640 bytes = 320 samples
    jb.push(rtp(0, ts=0, size=640))
    drain(jb)
    jb.push(rtp(3, ts=960, size=640))
    drain(jb)
    assert (jb.last_gap_packets, jb.last_gap_samples) == (2, 640)


# ----------------------------------------------------------------------------- memory

def test_bounded_memory_without_popping():
    jb = JitterBuffer(capacity=32, max_payload=200)
    for seq in range(100):
        jb.push(rtp(seq))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(100, 20100):
            assert jb.push(rtp(seq)) == PUSH_OK
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096
    assert jb.waiting == 32
    # The newest ones are kept, in order; the older ones were dropped, not "lost".
    assert seqs(drain(jb)) == list(range(20100 - 32, 20100))
    expect(jb, received=20100, popped=32, dropped=20100 - 32)


def test_random_garbage_never_breaks_the_buffer():
    rnd = random.Random(1)
    jb = JitterBuffer(capacity=8, depth=2, max_payload=64)
    for _ in range(5000):
        kind = rnd.random()
        if kind < 0.3:
            data = rnd.randbytes(rnd.randrange(40))
        elif kind < 0.6:
            data = bytes([0x80 | rnd.randrange(64)]) + rnd.randbytes(rnd.randrange(100))
        else:
            data = rtp(rnd.randrange(65536), size=rnd.randrange(100),
                       ssrc=rnd.choice((1, 2)))
        assert jb.push(data) in (PUSH_OK, PUSH_REORDERED, PUSH_RESTARTED, PUSH_DUPLICATE,
                                 PUSH_LATE, PUSH_MALFORMED, PUSH_TOO_LARGE)
        assert 0 <= jb.waiting <= 8
        if rnd.random() < 0.5:
            payload = jb.pop(rnd.random() < 0.3)
            assert payload is None or len(payload) <= 64
    check_invariants(jb, 5000)


# ----------------------------------------------------------------------------- invariants

def check_invariants(jb: JitterBuffer, pushes: int) -> None:
    assert jb.received + jb.duplicate + jb.late + jb.malformed + jb.too_large == pushes
    assert jb.received == jb.popped + jb.dropped + jb.waiting
    assert jb.ssrc_changes <= jb.restarts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("push"), st.integers(-40, 40)),
                          st.tuples(st.just("pop"), st.booleans())), max_size=120),
       st.sampled_from([4, 8, 32]), st.integers(1, 3))
def test_invariants_under_random_arrival(ops, capacity, depth):
    jb = JitterBuffer(capacity=capacity, depth=depth)
    pushes = 0
    popped = []
    base = 65500                                # near the wrap
    for op, arg in ops:
        if op == "push":
            status = jb.push(rtp(base + arg))
            pushes += 1
            assert status in (PUSH_OK, PUSH_REORDERED, PUSH_RESTARTED, PUSH_DUPLICATE,
                              PUSH_LATE)
        elif (payload := jb.pop(arg)) is not None:
            assert jb.last_sequence == int.from_bytes(payload[:2], "big")
            popped.append(((jb.last_sequence - base) & 0xFFFF, jb.restarts))
        check_invariants(jb, pushes)
        assert 0 <= jb.waiting <= capacity
    # Within one stream (between restarts) payloads come out strictly in order, never twice.
    for (a, ra), (b, rb) in itertools.pairwise(popped):
        assert ra != rb or ((b - a) & 0xFFFF) < 0x8000 and a != b


# ----------------------------------------------------------------------------- Asterisk

@dataclass
class Row:
    t: float
    marker: bool
    pt: int
    seq: int
    ts: int
    ssrc: int
    size: int
    first4: bytes

    def payload(self) -> bytes:
        return (self.first4 + b"\xff" * self.size)[:self.size]

    def packet(self) -> bytes:
        return build_rtp(self.pt, self.marker, self.seq, self.ts, self.ssrc, self.payload())


def asterisk_rows() -> list[Row]:
    with ASTERISK_CSV.open() as f:
        lines = [line for line in f if not line.startswith("#")]
    return [Row(float(r["t_rel"]), r["marker"] == "1", int(r["pt"]), int(r["seq"]),
                int(r["ts"]), int(r["ssrc"], 16), int(r["plen"]), bytes.fromhex(r["first4hex"]))
            for r in csv.DictReader(lines)]


@dataclass
class Replay:
    jb: JitterBuffer
    payloads: list[bytes]
    popped: list[tuple[int, bool, int, int, int]]   # seq, marker, ts, gap packets, gap samples
    statuses: list[int]


QUIET_S = 0.1   # the caller drains with force after this long without packets


def replay(arrivals: list[Row], times: list[float], depth: int = 3) -> Replay:
    """Push in arrival order, pop after each push, drain with force when the stream goes
    quiet (as the relay does) and at the end."""
    jb = JitterBuffer(depth=depth)
    result = Replay(jb, [], [], [])

    def take(force: bool) -> None:
        while (payload := jb.pop(force)) is not None:
            result.payloads.append(payload)
            result.popped.append((jb.last_sequence, jb.last_marker, jb.last_timestamp,
                                  jb.last_gap_packets, jb.last_gap_samples))

    for i, row in enumerate(arrivals):
        if i and times[i] - times[i - 1] > QUIET_S:
            take(True)
        result.statuses.append(jb.push(row.packet()))
        take(False)
    take(True)
    return result


def test_asterisk_capture_in_arrival_order():
    rows = asterisk_rows()
    assert len(rows) == 425
    r = replay(rows, [row.t for row in rows])
    expect(r.jb, received=425, popped=425)
    assert r.statuses == [PUSH_OK] * 425
    assert r.payloads == [row.payload() for row in rows]
    assert [p[0] for p in r.popped] == [row.seq for row in rows]
    short = [p for p in r.payloads if len(p) != 160]
    assert [len(p) for p in short] == [12]
    marked = [p for p in r.popped if p[1]]
    assert len(marked) == 1
    _seq, _, ts, gap_packets, gap_samples = marked[0]
    previous = r.popped[r.popped.index(marked[0]) - 1]
    assert ts - previous[2] > 8000              # the 1.4 s jump in timestamp...
    assert (gap_packets, gap_samples) == (0, 0)  # ...is not loss
    assert all(p[3] == 0 and p[4] == 0 for p in r.popped)


def _segments(rows: list[Row]) -> list[list[Row]]:
    """Split where the stream went quiet, so a shuffle never moves a packet across silence."""
    segments = [[rows[0]]]
    for prev, row in itertools.pairwise(rows):
        if row.t - prev.t > QUIET_S:
            segments.append([])
        segments[-1].append(row)
    return segments


def _shuffled(rows: list[Row], window: int, seed: int) -> list[Row]:
    rnd = random.Random(seed)
    out = []
    for segment in _segments(rows):
        for i in range(0, len(segment), window):
            chunk = segment[i:i + window]
            rnd.shuffle(chunk)
            out.extend(chunk)
    return out


def _expected_reordered(arrivals: list[Row]) -> int:
    highest, count = -1, 0
    for row in arrivals:
        count += row.seq < highest
        highest = max(highest, row.seq)
    return count


@pytest.mark.parametrize(("window", "depth", "seed"), [(3, 3, 1), (3, 3, 2), (5, 5, 3)])
def test_asterisk_capture_shuffled_within_small_windows(window, depth, seed):
    rows = asterisk_rows()
    arrivals = _shuffled(rows, window, seed)
    assert arrivals != rows
    r = replay(arrivals, [row.t for row in rows], depth=depth)
    reordered = _expected_reordered(arrivals)
    assert reordered > 50
    expect(r.jb, received=425, popped=425, reordered=reordered)
    assert r.payloads == [row.payload() for row in rows]
    assert [len(p) for p in r.payloads].count(12) == 1
    assert all(p[3] == 0 for p in r.popped)


REMOVED = {
    30200,                   # one packet in the middle of talk
    30230, 30231, 30232,     # a run of three
    30261,                   # the 160-byte packet before the 12-byte one
    30262,                   # the 12-byte one itself (in another run)
    30544,                   # the packet two before the 1.4 s silence: 30545 waits alone
    30546,                   # the marker packet after the silence
    30600,
}


@pytest.mark.parametrize("removed", [REMOVED - {30262}, REMOVED - {30261}])
@pytest.mark.parametrize("shuffle", [False, True])
def test_asterisk_capture_with_rows_removed(removed, shuffle):
    rows = asterisk_rows()
    kept = [row for row in rows if row.seq not in removed]
    arrivals = _shuffled(kept, 3, 11) if shuffle else kept
    r = replay(arrivals, [row.t for row in kept])
    expect(r.jb, received=len(kept), popped=len(kept), lost=len(removed),
           reordered=_expected_reordered(arrivals))
    assert r.payloads == [row.payload() for row in kept]
    # Each gap is reported once, right before the first payload after it, with the number of
    # missing packets and exactly the samples they carried.
    by_seq = {row.seq: row for row in rows}
    for seq, _, _, gap_packets, gap_samples in r.popped:
        missing = [s for s in range(seq - gap_packets, seq)]
        assert all(s in removed for s in missing)
        assert gap_samples == sum(by_seq[s].size for s in missing)
        if seq - 1 in removed:
            assert gap_packets > 0
    assert sum(p[3] for p in r.popped) == len(removed)
