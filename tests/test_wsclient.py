"""JsonWebSocket against a raw WebSocket peer the test drives byte by byte (127.0.0.1)."""

import base64
import hashlib
import struct

import gevent
import gevent.event
import pytest
from gevent.server import StreamServer

from relay._ws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, append_frame
from relay.realtime_events import input_audio_append_json
from relay.wsclient import JsonWebSocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload: bytes, opcode=OP_TEXT, first_byte=None, masked=False) -> bytes:
    assert len(payload) < 126
    return bytes([first_byte if first_byte is not None else 0x80 | opcode,
                  (0x80 if masked else 0) | len(payload)]) + (
        b"\0\0\0\0" if masked else b"") + payload



class Peer:
    """A one-connection WebSocket server: it answers the handshake, then the test decides."""

    def __init__(self):
        self.connected = gevent.event.Event()
        self.sock = None
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.server_port}/"

    def _handle(self, sock, address):
        request = b""
        while b"\r\n\r\n" not in request:
            request += sock.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.sock = sock
        self.connected.set()
        gevent.sleep(30)            # keep the connection open; the test drives it

    def frames(self, count: int, timeout: float = 5.0) -> list:
        """The next `count` client frames as (opcode, unmasked payload)."""
        out: list = []
        with gevent.Timeout(timeout):
            while len(out) < count:
                data = self.sock.recv(65536)
                assert data, "client closed"
                out += self._parse(data)
        return out

    _rest = b""

    def _parse(self, data: bytes) -> list:
        self._rest += data
        out = []
        while len(self._rest) >= 2:
            b0, b1 = self._rest[0], self._rest[1]
            assert b1 & 0x80, "client frames are masked"
            n, at = b1 & 0x7F, 2
            if n == 126:
                n, at = struct.unpack("!H", self._rest[2:4])[0], 4
            if len(self._rest) < at + 4 + n:
                break
            key = self._rest[at:at + 4]
            body = bytes(b ^ key[i % 4] for i, b in enumerate(self._rest[at + 4:at + 4 + n]))
            out.append((b0 & 0x0F, body))
            self._rest = self._rest[at + 4 + n:]
        return out

    def stop(self):
        self.server.stop(timeout=1)


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.stop()


class Client:
    def __init__(self, url, **kwargs):
        self.messages, self.bad, self.closed, self.sent = [], [], [], []
        self.done = gevent.event.Event()
        self.ws = JsonWebSocket(url, on_message=self.messages.append,
                                on_closed=self._closed, on_sent=self.sent.append,
                                on_bad_message=lambda text, exc: self.bad.append(text),
                                connect_timeout=5, **kwargs)
        self.ws.connect()

    def _closed(self, code, reason):
        self.closed.append((code, reason))
        self.done.set()


def test_messages_both_ways_pings_answered_and_bad_json_skipped(peer):
    client = Client(peer.url)
    try:
        assert peer.connected.wait(5)
        assert client.ws.send({"type": "hello"}, stamp=0.0)
        assert client.ws.send(b'{"type":"raw"}')
        assert peer.frames(2) == [(OP_TEXT, b'{"type":"hello"}'), (OP_TEXT, b'{"type":"raw"}')]
        assert len(client.sent) == 1 and client.sent[0] > 0     # only the stamped one
        peer.sock.sendall(server_frame(b'{"a":1}') + server_frame(b"not json")
                          + server_frame(b"p1", OP_PING) + server_frame(b'{"b":2}'))
        assert peer.frames(1) == [(OP_PONG, b"p1")]
        with gevent.Timeout(5):
            while len(client.messages) < 2:
                gevent.sleep(0.01)
        assert client.messages == [{"a": 1}, {"b": 2}] and client.bad == ["not json"]
        assert client.ws.connected and not client.closed
    finally:
        client.ws.close()
    assert client.closed == [(1000, "closed by relay")]


def test_the_peer_closing_is_reported_once_with_its_code(peer):
    client = Client(peer.url)
    assert peer.connected.wait(5)
    peer.sock.sendall(server_frame(struct.pack("!H", 4000) + b"go away", OP_CLOSE))
    assert client.done.wait(5)
    client.ws.close()
    assert client.closed == [(4000, "go away")] and not client.ws.send({"x": 1})


def test_a_dead_peer_is_reported(peer):
    client = Client(peer.url)
    assert peer.connected.wait(5)
    peer.sock.close()
    assert client.done.wait(5)
    assert client.closed[0][0] == 1006


def test_a_protocol_violation_closes_with_1002(peer):
    client = Client(peer.url)
    assert peer.connected.wait(5)
    peer.sock.sendall(server_frame(b"{}", masked=True))
    assert client.done.wait(5)
    assert client.closed[0][0] == 1002 and "masked" in client.closed[0][1]
    assert peer.frames(1)[0][0] == OP_CLOSE            # told the peer why


def test_a_peer_that_stops_reading_never_blocks_send_and_the_backlog_is_bounded(peer):
    client = Client(peer.url, send_queue_max=8)
    try:
        assert peer.connected.wait(5)
        big = {"audio": "A" * 60000}
        results = [client.ws.send(big) for _ in range(200)]     # returns at once, every time
        assert client.ws.backlog <= 8 and client.ws.send_dropped > 0
        assert results.count(True) + client.ws.send_dropped == 200
        assert client.ws.connected and not client.closed
        # the peer reads again: everything accepted arrives, whole and in order
        frames = peer.frames(results.count(True), timeout=10)
        assert all(f == (OP_TEXT, b'{"audio":"' + b"A" * 60000 + b'"}') for f in frames)
        assert client.ws.backlog == 0
    finally:
        client.ws.close()


def test_tls_both_ways_and_a_peer_that_stops_reading(tmp_path, monkeypatch):
    """wss:// (the real OpenAI's): writes that never wait go through the TLS object too."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    peer = Peer()
    handle = peer._handle
    peer.server.stop()
    peer.server = StreamServer(("127.0.0.1", 0),
                               lambda sock, address: handle(
                                   context.wrap_socket(sock, server_side=True), address))
    peer.server.start()
    client = Client(f"wss://127.0.0.1:{peer.server.server_port}/", send_queue_max=4)
    try:
        assert peer.connected.wait(5)
        assert client.ws._fd is None                       # TLS: never a raw write(2)
        assert client.ws.send({"type": "hello"})
        assert peer.frames(1) == [(OP_TEXT, b'{"type":"hello"}')]
        peer.sock.sendall(server_frame(b'{"a":1}'))
        with gevent.Timeout(5):
            while not client.messages:
                gevent.sleep(0.01)
        assert client.messages == [{"a": 1}]
        big = {"audio": "A" * 60000}
        accepted = sum(client.ws.send(big) for _ in range(100))   # the peer reads nothing
        assert client.ws.send_dropped == 100 - accepted and client.ws.backlog <= 4
        frames = peer.frames(accepted, timeout=10)
        assert all(f == (OP_TEXT, b'{"audio":"' + b"A" * 60000 + b'"}') for f in frames)
        assert client.ws.connected and not client.closed
    finally:
        client.ws.close()
        peer.stop()


def test_prebuilt_frames_to_a_peer_that_stops_reading_arrive_whole_and_in_order(peer):
    """send_frame (the appends): written at once while the socket takes them, a frame cut by a
    full socket finished first, the rest in the bounded backlog; stamps observed once each."""
    client = Client(peer.url, send_queue_max=8)
    try:
        assert peer.connected.wait(5)
        audio = bytes(range(256)) * 180        # 46 KB of audio: a few fill the socket
        results = [client.ws.send_frame(append_frame(audio), stamp=0.0) for _ in range(200)]
        assert client.ws.send_dropped > 0 and client.ws.backlog <= 9   # 8 + a frame begun
        accepted = results.count(True)
        assert accepted + client.ws.send_dropped == 200
        frames = peer.frames(accepted, timeout=10)
        assert all(f == (OP_TEXT, input_audio_append_json(audio)) for f in frames)
        with gevent.Timeout(5):
            while len(client.sent) < accepted:
                gevent.sleep(0.01)
        assert len(client.sent) == accepted and client.ws.messages_out == accepted
    finally:
        client.ws.close()
    assert not client.ws.send_frame(append_frame(b"late"))      # closed: refused
