"""PlayoutQueue: framing, bounds, and what a barge-in truncates."""

from relay.playout import FRAME_BYTES, PlayoutQueue


def drain(queue):
    frames = []
    while (frame := queue.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_frames_are_cut_at_160_bytes_and_the_tail_waits_for_the_item_end():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 400)
    frames = drain(queue)
    assert [len(f) for f in frames] == [160, 160]
    assert queue.queued_bytes == 80
    queue.finish("a")
    assert [len(f) for f in drain(queue)] == [80]
    assert queue.items["a"].sent == 400 and queue.items["a"].fully_played


def test_a_partial_tail_goes_when_the_next_item_is_queued():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 170)
    queue.add("b", b"\x02" * 160)
    assert [f[:1] for f in drain(queue)] == [b"\x01", b"\x01", b"\x02"]


def test_barge_in_flush_reports_what_the_caller_heard():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 8000)          # one second received
    for _ in range(10):
        assert queue.next_frame() is not None   # 200 ms sent
    cut = queue.flush()
    assert cut is not None and cut.item_id == "a"
    assert cut.heard_ms() == 200
    assert queue.next_frame() is None
    assert queue.add("a", b"\x01" * 160) == 0    # the rest of a cut item is refused


def test_flush_after_an_item_finished_playing_truncates_nothing():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 320)
    queue.finish("a")
    drain(queue)
    assert queue.flush() is None


def test_partial_frame_counts_for_what_was_sent_never_beyond_received():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 100)
    queue.finish("a")
    assert len(queue.next_frame()) == 100
    assert queue.items["a"].heard_ms() == 12    # 100 bytes = 12.5 ms, whole ms heard


def test_the_queue_is_bounded_and_counts_overflow():
    queue = PlayoutQueue(max_bytes=FRAME_BYTES * 2)
    assert queue.add("a", b"\x01" * 500) == 320
    assert queue.overflow_bytes == 180
    assert queue.items["a"].received == 320


def test_drop_item_removes_its_queued_audio_only():
    queue = PlayoutQueue()
    queue.add("a", b"\x01" * 320)
    queue.add("b", b"\x02" * 320)
    queue.drop_item("a")
    assert queue.queued_bytes == 320
    assert all(f[:1] == b"\x02" for f in drain(queue))


def test_only_the_last_max_items_are_remembered_but_the_one_playing_stays():
    queue = PlayoutQueue(max_items=2)
    assert not queue
    queue.add("a", b"\x01" * 160)
    assert queue
    assert queue.next_frame() is not None and not queue      # "a" is the item playing
    queue.add("b", b"\x02" * 160)
    queue.add("c", b"\x03" * 160)
    queue.add("d", b"\x04" * 160)
    assert set(queue.items) == {"a", "c", "d"}
    assert queue.last_item is queue.items["a"] and queue.items["a"].sent == 160
