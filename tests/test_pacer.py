"""The pacer: every stream ticked once per 20 ms frame; an overloaded pacer skips, never lags."""

import time

import gevent

from relay.media import MAX_LAG_S, SLOTS, Pacer


class Stream:
    def __init__(self, block_first_s: float = 0.0):
        self.ticks: list[float] = []
        self.block_first_s = block_first_s

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if len(self.ticks) == 1 and self.block_first_s:
            time.sleep(self.block_first_s)        # blocks the whole hub, like an overload


def _run_until(streams, done) -> Pacer:
    """A pacer ticking these streams until done() (checked every 10 ms), then stopped."""
    pacer = Pacer()
    for stream in streams:
        pacer.add(stream)
    pacer.start()
    try:
        while not done():
            gevent.sleep(0.01)
    finally:
        pacer.stop()
    return pacer


def test_streams_are_spread_over_the_slots_and_ticked_every_frame():
    pacer = Pacer()
    streams = [Stream() for _ in range(SLOTS * 2)]
    for s in streams:
        pacer.add(s)
    pacer.start()
    try:
        gevent.sleep(0.25)
    finally:
        pacer.stop()
    counts = [len(s.ticks) for s in streams]
    assert min(counts) >= 3 and max(counts) - min(counts) <= 1     # one tick per frame each
    assert pacer.skipped_slots == 0 and len(pacer) == SLOTS * 2


def test_slots_without_streams_are_neither_woken_for_nor_counted():
    pacer = Pacer()
    stream = Stream()
    pacer.add(stream)
    pacer.start()
    try:
        gevent.sleep(0.25)
    finally:
        pacer.stop()
    # one slot of twenty has a stream: the pacer ran (and judged the lateness of) that one only
    assert len(stream.ticks) >= 10
    assert pacer.lateness.snapshot()["count"] == len(stream.ticks)
    assert pacer.late_ticks <= len(stream.ticks)


def test_a_pacer_far_behind_skips_the_missed_frames_instead_of_sending_them_late():
    blocker, other = Stream(block_first_s=MAX_LAG_S + 0.15), Stream()
    pacer = _run_until([blocker, other], lambda: len(blocker.ticks) >= 4)
    # the frame times missed while blocked were given up, not sent in a burst afterwards
    assert pacer.skipped_slots >= MAX_LAG_S / 0.001
    pacer.remove(blocker)
    pacer.remove(other)
    assert len(pacer) == 0


def test_a_stream_whose_tick_raises_is_dropped_and_told_and_the_others_go_on():
    told = []

    class Failing(Stream):
        def tick(self, now: float) -> None:
            super().tick(now)
            raise RuntimeError("a broken stream")

        def on_tick_failed(self, exc: BaseException) -> None:
            told.append(exc)

    bad, good = Failing(), Stream()
    pacer = _run_until([bad, good], lambda: len(good.ticks) >= 5)
    assert len(bad.ticks) == 1 and len(told) == 1 and isinstance(told[0], RuntimeError)
    assert pacer.tick_errors == 1 and len(pacer) == 1
