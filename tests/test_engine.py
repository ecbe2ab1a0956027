"""The media engine's route table, receive pump and slot ticks (relay/_engine.pyx), error paths
included: strangers, truncated and malformed datagrams, handlers and ticks that raise."""

import select
import socket
import struct

import pytest

from relay._media import CallMedia, SendQueue

_engine = pytest.importorskip("relay._engine", reason="the media engine is Linux's")


def rtp(seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 7) + payload


@pytest.fixture
def pair():
    """A receiving socket with its router, and a sending socket (both 127.0.0.1)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    router = _engine.RtpRouter(receiver.fileno(), 4, 256)
    yield receiver, sender, router
    receiver.close()
    sender.close()


def pump_all(receiver, router, expected: int, now: float = 1.0) -> int:
    got = 0
    for _ in range(100):
        got += router.pump(now)
        if got >= expected:
            return got
        select.select([receiver], [], [], 0.05)
    return got


def test_datagrams_go_to_their_call_and_strangers_are_counted(pair):
    receiver, sender, router = pair
    got = []
    router.route(*sender.getsockname(), lambda data, now: got.append((data, now)))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        sender.sendto(b"one", receiver.getsockname())
        stranger.sendto(b"two", receiver.getsockname())
        sender.sendto(b"three", receiver.getsockname())
        assert pump_all(receiver, router, 3, now=2.5) == 3
    finally:
        stranger.close()
    assert got == [(b"one", 2.5), (b"three", 2.5)]
    assert router.from_strangers == 1 and router.received == 3 and len(router) == 1
    router.unroute(*sender.getsockname())
    sender.sendto(b"four", receiver.getsockname())
    assert pump_all(receiver, router, 1) == 1
    assert router.from_strangers == 2 and len(router) == 0


def test_a_call_media_takes_the_datagram_from_the_receive_buffer(pair):
    receiver, sender, router = pair
    appended = []
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda p: None,
                      send_to_model=lambda audio, stamp: appended.append((audio, stamp)),
                      jitter_depth=1, append_frames=1)
    media.start(0.0)
    router.route(*sender.getsockname(), media)
    for seq in range(3):
        sender.sendto(rtp(seq, bytes([seq]) * 160), receiver.getsockname())
    sender.sendto(b"\x80short", receiver.getsockname())          # malformed: counted, dropped
    assert pump_all(receiver, router, 4, now=0.5) == 4
    assert [audio for audio, _ in appended] == [bytes([seq]) * 160 for seq in range(3)]
    assert all(stamp == 0.5 for _, stamp in appended)
    assert media.stats()["malformed"] == 1 and router.handler_errors == 0


def test_a_datagram_longer_than_the_buffer_is_counted_and_dropped(pair):
    receiver, sender, router = pair
    got = []
    router.route(*sender.getsockname(), lambda data, now: got.append(data))
    sender.sendto(b"x" * 300, receiver.getsockname())               # buffers are 256 bytes
    sender.sendto(b"ok", receiver.getsockname())
    assert pump_all(receiver, router, 2) == 2
    assert got == [b"ok"] and router.truncated == 1


def test_a_handler_that_raises_spoils_neither_the_batch_nor_the_router(pair):
    receiver, sender, router = pair
    errors, got = [], []
    router.on_error = errors.append

    def handler(data, now):
        if data == b"bad":
            raise RuntimeError("a broken call")
        got.append(data)

    router.route(*sender.getsockname(), handler)
    for data in (b"a", b"bad", b"b"):
        sender.sendto(data, receiver.getsockname())
    assert pump_all(receiver, router, 3) == 3
    assert got == [b"a", b"b"] and router.handler_errors == 1
    assert isinstance(errors[0], RuntimeError)


def test_nothing_waiting_is_an_empty_pump_and_a_closed_socket_an_error():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    router = _engine.RtpRouter(receiver.fileno())
    assert router.pump() == 0
    receiver.close()
    with pytest.raises(OSError):
        router.pump()


def test_ipv6_routes():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sender.bind(("::1", 0))
    receiver.setblocking(False)
    router = _engine.RtpRouter(receiver.fileno())
    got = []
    try:
        router.route("::1", sender.getsockname()[1], lambda data, now: got.append(data))
        sender.sendto(b"six", receiver.getsockname()[:2])
        assert pump_all(receiver, router, 1) == 1
    finally:
        receiver.close()
        sender.close()
    assert got == [b"six"]


def test_route_keys_refuse_what_is_not_an_address():
    with pytest.raises(ValueError):
        _engine.route_key("asterisk.example", 4000)
    with pytest.raises(ValueError):
        _engine.route_key("127.0.0.1", 70000)
    assert _engine.route_key("127.0.0.1", 4000) != _engine.route_key("127.0.0.1", 4001)
    assert _engine.route_key("::1", 4000) != _engine.route_key("127.0.0.1", 4000)


class Stream:
    def __init__(self, fail: bool = False) -> None:
        self.ticks, self.fail = [], fail

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.fail:
            raise ValueError("tick failed")


def test_a_slot_ticks_every_stream_and_reports_those_that_raised():
    sent = []
    queue = SendQueue(lambda: sent.append("scheduled"))
    media = CallMedia(model_format="audio/pcmu", send_rtp=None,
                      send_to_model=lambda audio, stamp: None)
    media.attach_sink(queue, b"addr")
    media.start(0.0)
    media.playout.add("a", b"\x01" * 320)
    good, bad = Stream(), Stream(fail=True)
    streams = [good, bad, media]
    failed = _engine.tick_streams(streams, 0.02)
    assert [stream for stream, _ in failed] == [bad] and isinstance(failed[0][1], ValueError)
    assert good.ticks == [0.02] and media.frames_out == 1
    assert sent == ["scheduled"]                    # the batch's send was asked for once
    assert _engine.tick_streams(streams[:1] + streams[2:], 0.04) is None
    items = queue.take()
    assert [address for _, address in items] == [b"addr", b"addr"]
    assert [packet[12:] for packet, _ in items] == [b"\x01" * 160] * 2
    assert len(queue) == 0


def test_a_stream_removed_during_its_slot_does_not_disturb_the_others():
    streams = []

    class Ending(Stream):
        def tick(self, now):
            super().tick(now)
            streams.remove(self)            # a call that ends in its own tick

    ending, other = Ending(), Stream()
    streams.extend([ending, other])
    assert _engine.tick_streams(streams, 1.0) is None
    assert ending.ticks == [1.0] and other.ticks == [1.0] and streams == [other]
