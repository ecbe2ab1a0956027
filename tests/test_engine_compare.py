"""The media engine in C (relay/_engine.pyx) against the path it replaced, on random calls.

The reference is the way a worker drove a call's media before the engine: each datagram handed
to CallMedia.on_rtp as bytes by Python, each frame given to a send_rtp callback, and the call's
per-tick logic (speaking state, the barge-in reaction, turn latency, housekeeping) checked in
Python at every tick, as Call.tick did. The engine's way: datagrams read by RtpRouter.pump from a
real UDP socket on 127.0.0.1 straight into the call's jitter buffer, the slot ticked by
tick_streams in C, the frames put on a SendQueue, and the call's logic run only on its events.
Both are fed the same random call (loss, reordering, duplicates, malformed datagrams, model
audio of random sizes, barge-ins, turn ends) and must send the same packets, append the same
audio with the same stamps, and see the same events at the same ticks.
"""

import random
import select
import socket
import struct

import pytest

from relay._media import CallMedia, SendQueue

_engine = pytest.importorskip("relay._engine", reason="the media engine is Linux's")

HOUSEKEEPING_S = 0.25


def rtp_packet(seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 0, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, 0x5EED) + payload


class OldCall:
    """The call's per-tick logic as Call.tick ran it before the engine (every tick)."""

    def __init__(self, media: CallMedia, log: list) -> None:
        self.media, self.log = media, log
        self.speaking = "nobody"
        self.turn_end_at = None
        self.barge_in_from = None
        self.next_housekeeping = 0.0
        self.now = 0.0

    def played(self, frame: bytes) -> None:
        if self.turn_end_at is not None:
            self.log.append(("turn", round(self.now - self.turn_end_at, 6)))
            self.turn_end_at = None
        self.speaking = "assistant"

    def tick(self, now: float) -> None:
        self.now = now
        self.media.tick(now)
        if self.speaking == "assistant" and not self.media.playout.queued_bytes:
            self.speaking = "nobody"
            self.log.append(("drained", now))
        if self.barge_in_from is not None and self.media.last_frame_out_at != now:
            self.log.append(("barge-in", round(max(0.0, self.media.last_frame_out_at
                                                   - self.barge_in_from), 6)))
            self.barge_in_from = None
        if now >= self.next_housekeeping:
            self.next_housekeeping = now + HOUSEKEEPING_S
            self.log.append(("housekeeping", now))

    def barge_in(self, now: float) -> None:
        self.speaking = "caller"
        if self.media.flush_playout() is not None:
            self.barge_in_from = now

    def turn_ended(self, now: float) -> None:
        self.speaking = "nobody"
        self.turn_end_at = now


class EventCall:
    """The same logic as Call now runs it: from the media's events only."""

    def __init__(self, media: CallMedia, log: list) -> None:
        self.media, self.log = media, log
        self._speaking = "nobody"
        self.turn_end_at = None
        self.barge_in_from = None
        self.now = 0.0
        media.on_drained = self.drained
        media.on_idle_tick = self.idle_tick
        media.on_housekeeping = self.housekeeping
        media.housekeeping_s = HOUSEKEEPING_S
        self._want_play_events()

    @property
    def speaking(self) -> str:
        return self._speaking

    @speaking.setter
    def speaking(self, who: str) -> None:
        self._speaking = who
        self.media.drained_wanted = who == "assistant"
        self._want_play_events()

    def _want_play_events(self) -> None:
        self.media.play_events = self.turn_end_at is not None or self._speaking != "assistant"

    def played(self, frame: bytes) -> None:
        if self.turn_end_at is not None:
            self.log.append(("turn", round(self.now - self.turn_end_at, 6)))
            self.turn_end_at = None
        self.speaking = "assistant"

    def drained(self) -> None:
        if self._speaking == "assistant":
            self.speaking = "nobody"
            self.log.append(("drained", self.now))

    def idle_tick(self) -> None:
        if self.barge_in_from is None:
            return
        self.log.append(("barge-in", round(max(0.0, self.media.last_frame_out_at
                                               - self.barge_in_from), 6)))
        self.barge_in_from = None

    def housekeeping(self, now: float) -> None:
        self.log.append(("housekeeping", now))

    def barge_in(self, now: float) -> None:
        self.speaking = "caller"
        if self.media.flush_playout() is not None:
            self.barge_in_from = now
            self.media.idle_tick_wanted = True

    def turn_ended(self, now: float) -> None:
        self.turn_end_at = now
        self.speaking = "nobody"


def random_call(rng: random.Random, ticks: int) -> list:
    """[(tick index, kind, value)] of one call: caller datagrams, model audio, turn events."""
    events = []
    seq, ts = rng.randrange(1 << 16), rng.randrange(1 << 32)
    pending = []
    for k in range(ticks):
        if rng.random() < 0.85:         # the caller's frame of this tick (or a silence)
            payload = bytes(rng.randrange(256) for _ in range(160))
            packet = rtp_packet(seq, ts, payload, marker=rng.random() < 0.02)
            if rng.random() > 0.08:                     # lost otherwise
                pending.append(packet)
                if rng.random() < 0.05:
                    pending.append(packet)              # duplicated
            if rng.random() < 0.03:
                pending.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 14))))
        seq, ts = seq + 1, ts + 160
        if rng.random() < 0.01:                        # a stream restart
            seq, ts = rng.randrange(1 << 16), rng.randrange(1 << 32)
        if pending and rng.random() < 0.7:
            rng.shuffle(pending) if rng.random() < 0.15 else None
            for packet in pending:
                events.append((k, "rtp", packet))
            pending = []
        roll = rng.random()
        if roll < 0.25:
            events.append((k, "audio", rng.randrange(0, 1400)))
        elif roll < 0.28:
            events.append((k, "finish", None))
        elif roll < 0.30:
            events.append((k, "barge-in", None))
        elif roll < 0.33:
            events.append((k, "turn-end", None))
    return events


def run_old(events, ticks, model_format, adaptive, rng_seed):
    log, sent, appended, calls = [], [], [], []
    media = CallMedia(model_format=model_format, send_rtp=sent.append,
                      send_to_model=lambda audio, stamp: appended.append((audio, stamp)),
                      jitter_depth=3, jitter_adaptive=adaptive, append_frames=2,
                      long_silence_s=1.5 if adaptive else 0.0,
                      on_played=lambda f: calls[0].played(f))
    calls.append(OldCall(media, log))
    _drive(media, calls[0], events, ticks, rng_seed,
           deliver=lambda packet, now: media.on_rtp(packet, now), tick=calls[0].tick)
    return log, sent, appended, media.stats()


def run_engine(events, ticks, model_format, adaptive, rng_seed):
    log, appended, calls = [], [], []
    media = CallMedia(model_format=model_format, send_rtp=None,
                      send_to_model=lambda audio, stamp: appended.append((audio, stamp)),
                      jitter_depth=3, jitter_adaptive=adaptive, append_frames=2,
                      long_silence_s=1.5 if adaptive else 0.0,
                      on_played=lambda f: calls[0].played(f))
    queue = SendQueue(lambda: None)
    media.attach_sink(queue, b"caller")
    call = EventCall(media, log)
    calls.append(call)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender.bind(("127.0.0.1", 0))
    router = _engine.RtpRouter(receiver.fileno(), 8, 2048)
    router.route(*sender.getsockname(), media)
    target = receiver.getsockname()

    def deliver(packet, now):
        sender.sendto(packet, target)
        for _ in range(100):        # loopback: there at once, or after a short wait
            if router.pump(now):
                return
            select.select([receiver], [], [], 0.05)
        raise AssertionError("a loopback datagram did not arrive")

    sent = []

    def tick(now):
        call.now = now
        assert _engine.tick_streams([media], now) is None
        sent.extend(packet for packet, address in queue.take())

    try:
        _drive(media, call, events, ticks, rng_seed, deliver=deliver, tick=tick)
    finally:
        receiver.close()
        sender.close()
    return log, sent, appended, media.stats()


def _drive(media, call, events, ticks, rng_seed, deliver, tick):
    """Feed a call's events, then tick, frame by frame (the same for both ways)."""
    rng = random.Random(rng_seed)
    item = 0
    media.start(0.0)
    by_tick = {}
    for k, kind, value in events:
        by_tick.setdefault(k, []).append((kind, value))
    for k in range(ticks):
        now = 0.02 * (k + 1)
        call.now = now
        for kind, value in by_tick.get(k, ()):
            if kind == "rtp":
                deliver(value, now - 0.005)
            elif kind == "audio":
                size = value * 2 if media.model_format == "audio/pcm" else value
                media.add_model_audio(f"item{item}", bytes(rng.randrange(256)
                                                           for _ in range(size)), now - 0.003)
            elif kind == "finish":
                media.playout.finish(f"item{item}")
                item += 1
            elif kind == "barge-in":
                call.barge_in(now - 0.001)
            elif kind == "turn-end":
                call.turn_ended(now - 0.001)
        tick(now)


def normalized(packets):
    """(marker, sequence and timestamp from the first, payload): SSRC and origins are random."""
    if not packets:
        return []
    seq0, ts0 = struct.unpack_from("!HI", packets[0], 2)
    out = []
    for p in packets:
        seq, ts = struct.unpack_from("!HI", p, 2)
        out.append((p[1] >> 7, (seq - seq0) & 0xFFFF, (ts - ts0) & 0xFFFFFFFF, p[12:]))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_the_engine_behaves_as_the_python_path_on_a_random_call(seed):
    rng = random.Random(seed)
    model_format = rng.choice(["audio/pcmu", "audio/pcma", "audio/pcm"])
    adaptive = seed % 2 == 0          # the jitter buffer as relay runs it, and fixed depth
    ticks = 400
    events = random_call(rng, ticks)
    audio_seed = rng.randrange(1 << 30)

    old = run_old(events, ticks, model_format, adaptive, audio_seed)
    new = run_engine(events, ticks, model_format, adaptive, audio_seed)

    old_log, old_sent, old_appended, old_stats = old
    new_log, new_sent, new_appended, new_stats = new
    assert len(old_sent) > 20 and len(old_appended) > 20      # the call did carry audio
    kinds = {kind for kind, _ in old_log}
    assert "housekeeping" in kinds and kinds & {"drained", "barge-in"}
    assert normalized(new_sent) == normalized(old_sent)
    assert new_appended == old_appended
    assert new_log == old_log
    assert new_stats == old_stats
