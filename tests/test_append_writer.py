"""AppendWriter (relay/_append.pyx): the caller's audio written to the model's socket from C,
against a raw WebSocket peer on 127.0.0.1, and handed to it by the call's media."""

import socket

import gevent
from test_wsclient import OP_TEXT, Client, Peer

from relay._append import AppendWriter
from relay._rtp import build_rtp
from relay.call_media import CallMedia
from relay.realtime_events import input_audio_append_json
from relay.wsclient import JsonWebSocket


def connected(peer, **options):
    client = Client(peer.url, **options)
    assert peer.connected.wait(5)
    writer = AppendWriter()
    writer.point_at(client.ws, isinstance(client.ws, JsonWebSocket))
    return client, writer


def test_appends_are_written_from_c_whole_and_in_order_with_their_latency_observed():
    peer = Peer()
    client, writer = connected(peer)
    try:
        chunks = [bytes([n]) * 320 for n in range(20)]
        for n, audio in enumerate(chunks):
            stamp = 0.0 if n % 2 else None          # silence fill carries no stamp
            assert writer.append(audio, stamp) is True
        assert peer.frames(20) == [(OP_TEXT, input_audio_append_json(a)) for a in chunks]
        assert writer.direct_writes == 20 and client.ws.send_deferred == 0
        assert client.ws.messages_out == 20
        assert len(client.sent) == 10 and all(seconds > 0 for seconds in client.sent)
    finally:
        client.ws.close()
        peer.stop()


def test_appends_queue_behind_a_backlog_and_never_overtake_it():
    """The peer stops reading: the kernel's buffer fills, a frame is cut, and from then on the
    appends go behind the backlog (bounded), events sent from Python interleaved in order."""
    peer = Peer()
    client, writer = connected(peer, send_queue_max=8)
    try:
        audio = bytes(range(256)) * 180         # 46 KB: a few fill the socket
        sent = []
        for n in range(120):
            if n % 10 == 5 and client.ws.send({"type": "event", "n": n}):
                sent.append((OP_TEXT, b'{"type":"event","n":%d}' % n))
            if writer.append(audio, 0.0):
                sent.append((OP_TEXT, input_audio_append_json(audio)))
        assert client.ws.send_deferred > 0 and client.ws.send_dropped > 0
        assert client.ws.backlog <= 9           # 8 and a frame begun
        assert writer.direct_writes < len(sent)
        # the peer reads some: the kernel has room again, while the backlog still waits for
        # its writer (no yield in between); an append written now would cut into it
        early = peer._parse(peer.sock.recv(1 << 20))
        assert client.ws.backlog > 0
        if writer.append(b"\x55" * 320, None):
            sent.append((OP_TEXT, input_audio_append_json(b"\x55" * 320)))
        assert early + peer.frames(len(sent) - len(early), timeout=10) == sent   # in order
        assert client.ws.connected and not client.closed
        # the backlog drained: the next append is written from C again
        gevent.sleep(0.05)
        direct = writer.direct_writes
        assert writer.append(b"\x7f" * 320, None)
        assert writer.direct_writes == direct + 1
        assert peer.frames(1) == [(OP_TEXT, input_audio_append_json(b"\x7f" * 320))]
    finally:
        client.ws.close()
        peer.stop()


def test_a_write_that_fails_fails_the_socket_once_and_later_appends_are_refused():
    peer = Peer()
    client, writer = connected(peer)
    try:
        shut = socket.socket(fileno=client.ws._fd)     # the client's fd, borrowed
        try:
            shut.shutdown(socket.SHUT_WR)       # the next write(2) fails with EPIPE
        finally:
            shut.detach()
        assert writer.append(b"\x01" * 320, 0.0) is False
        assert client.done.wait(5)
        assert len(client.closed) == 1 and client.closed[0][0] == 1006
        assert "send failed" in client.closed[0][1]
        assert writer.direct_writes == 0 and client.sent == []
        assert writer.append(b"\x01" * 320, 0.0) is False      # the socket is gone
        assert client.closed == client.closed[:1]
    finally:
        client.ws.close()
        peer.stop()


class Recorder:
    """A socket that is not a JsonWebSocket (as a test's fake or a TLS one would be used)."""

    def __init__(self):
        self.frames = []

    def send_frame(self, frame, stamp=None):
        self.frames.append((frame, stamp))
        return True


def test_a_socket_not_written_directly_gets_the_frame_through_send_frame():
    writer, fake = AppendWriter(), Recorder()
    writer.point_at(fake, False)
    assert writer.append(b"\x02" * 160, 1.5)
    [(frame, stamp)] = fake.frames
    assert stamp == 1.5 and writer.direct_writes == 0
    assert frame[0] == 0x81                     # a whole masked text frame
    writer.point_at(None, True)                 # between sockets: the audio is dropped
    assert writer.append(b"\x02" * 160, None) is False and len(fake.frames) == 1
    assert writer.socket is None


def test_the_calls_media_hands_its_audio_to_the_attached_writer_until_detached():
    writer, fake, fallback = AppendWriter(), Recorder(), []
    writer.point_at(fake, False)
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda packet: None,
                      send_to_model=lambda audio, stamp: fallback.append(audio),
                      append_frames=1, jitter_depth=1)
    media.attach_model_writer(writer)
    media.start(0.0)
    media.on_rtp(build_rtp(0, False, 1, 160, 0x1234, b"\x10" * 160), 0.001)
    media.tick(0.02)
    media.tick(0.04)
    assert len(fake.frames) >= 1 and fallback == []
    assert fake.frames[0][1] == 0.001           # stamped with the packet's arrival
    media.detach()
    before = len(fake.frames)
    media.on_rtp(build_rtp(0, False, 2, 320, 0x1234, b"\x10" * 160), 0.05)
    media.tick(0.06)
    media.tick(0.08)
    assert len(fake.frames) == before and fallback == []
