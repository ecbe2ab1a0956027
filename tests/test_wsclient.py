"""JsonWebSocket against a raw WebSocket peer the test drives byte by byte (127.0.0.1)."""

import base64
import contextlib
import hashlib
import struct

import gevent
import gevent.event
import pytest
from gevent.server import StreamServer

from relay._ws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, append_frame
from relay.realtime_events import input_audio_append_json
from relay.socket_reader import SocketReader
from relay.wsclient import JsonWebSocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload: bytes, opcode=OP_TEXT, first_byte=None, masked=False) -> bytes:
    assert len(payload) < 126
    return bytes([first_byte if first_byte is not None else 0x80 | opcode,
                  (0x80 if masked else 0) | len(payload)]) + (
        b"\0\0\0\0" if masked else b"") + payload



class Peer:
    """A one-connection WebSocket server: it answers the handshake, then the test decides."""

    def __init__(self, greeting: bytes = b""):
        self.greeting = greeting        # frames sent with the handshake's answer, in one write
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
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + self.greeting)
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


@pytest.fixture(params=["own reader", "shared reader"])
def reader(request):
    """Each test runs with the socket's own reader greenlet and with a worker's SocketReader."""
    if request.param == "own reader":
        yield None
        return
    shared = SocketReader()
    shared.start()
    yield shared
    shared.stop()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.stop()


class Client:
    def __init__(self, url, reader=None, **kwargs):
        self.messages, self.bad, self.closed, self.sent = [], [], [], []
        self.done = gevent.event.Event()
        self.ws = JsonWebSocket(url, on_message=self.messages.append,
                                on_closed=self._closed, on_sent=self.sent.append,
                                on_bad_message=lambda text, exc: self.bad.append(text),
                                connect_timeout=5, reader=reader, **kwargs)
        self.ws.connect()

    def _closed(self, code, reason):
        self.closed.append((code, reason))
        self.done.set()


def test_messages_both_ways_pings_answered_and_bad_json_skipped(peer, reader):
    client = Client(peer.url, reader)
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


def test_the_peer_closing_is_reported_once_with_its_code(peer, reader):
    client = Client(peer.url, reader)
    assert peer.connected.wait(5)
    peer.sock.sendall(server_frame(struct.pack("!H", 4000) + b"go away", OP_CLOSE))
    assert client.done.wait(5)
    client.ws.close()
    assert client.closed == [(4000, "go away")] and not client.ws.send({"x": 1})


def test_a_dead_peer_is_reported(peer, reader):
    client = Client(peer.url, reader)
    assert peer.connected.wait(5)
    peer.sock.close()
    assert client.done.wait(5)
    assert client.closed[0][0] == 1006


def test_a_protocol_violation_closes_with_1002(peer, reader):
    client = Client(peer.url, reader)
    assert peer.connected.wait(5)
    peer.sock.sendall(server_frame(b"{}", masked=True))
    assert client.done.wait(5)
    assert client.closed[0][0] == 1002 and "masked" in client.closed[0][1]
    assert peer.frames(1)[0][0] == OP_CLOSE            # told the peer why


def test_a_peer_that_stops_reading_never_blocks_send_and_the_backlog_is_bounded(peer, reader):
    client = Client(peer.url, reader, send_queue_max=8)
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


def test_tls_both_ways_and_a_peer_that_stops_reading(tmp_path, monkeypatch, reader):
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
    # the first message in the handshake answer's write: the TLS object decrypts it with the
    # answer, so a shared reader waiting for the kernel to say "readable" would never see it
    peer = Peer(greeting=server_frame(b'{"first":0}'))
    handle = peer._handle
    peer.server.stop()
    peer.server = StreamServer(("127.0.0.1", 0),
                               lambda sock, address: handle(
                                   context.wrap_socket(sock, server_side=True), address))
    peer.server.start()
    client = Client(f"wss://127.0.0.1:{peer.server.server_port}/", reader, send_queue_max=4)
    try:
        assert peer.connected.wait(5)
        assert client.ws._fd is None                       # TLS: never a raw write(2)
        _wait_for(lambda: client.messages == [{"first": 0}])     # before anything more
        assert client.ws.send({"type": "hello"})
        assert peer.frames(1) == [(OP_TEXT, b'{"type":"hello"}')]
        peer.sock.sendall(server_frame(b'{"a":1}'))
        with gevent.Timeout(5):
            while len(client.messages) < 2:
                gevent.sleep(0.01)
        assert client.messages == [{"first": 0}, {"a": 1}]
        big = {"audio": "A" * 60000}
        accepted = sum(client.ws.send(big) for _ in range(100))   # the peer reads nothing
        assert client.ws.send_dropped == 100 - accepted and client.ws.backlog <= 4
        frames = peer.frames(accepted, timeout=10)
        assert all(f == (OP_TEXT, b'{"audio":"' + b"A" * 60000 + b'"}') for f in frames)
        assert client.ws.connected and not client.closed
    finally:
        client.ws.close()
        peer.stop()


def test_prebuilt_frames_to_a_peer_that_stops_reading_arrive_whole_and_in_order(peer, reader):
    """send_frame (the appends): written at once while the socket takes them, a frame cut by a
    full socket finished first, the rest in the bounded backlog; stamps observed once each."""
    client = Client(peer.url, reader, send_queue_max=8)
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


@contextlib.contextmanager
def one_reader(peer_count=0, **options):
    """A started SocketReader, and peer_count peers each with a connected client it reads; on
    the way out every client is closed, then the reader and the peers are stopped."""
    reader = SocketReader(**options)
    reader.start()
    peers = [Peer() for _ in range(peer_count)]
    clients = []
    try:
        clients.extend(Client(p.url, reader) for p in peers)
        for p in peers:
            assert p.connected.wait(5)
        yield reader, peers, clients
    finally:
        for c in clients:
            c.ws.close()
        reader.stop()
        for p in peers:
            p.stop()


def _wait_for(predicate, timeout=5.0):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.005)


def test_one_shared_reader_serves_many_sockets_each_in_order():
    with one_reader(12) as (reader, peers, clients):
        assert len(reader) == 12
        for round_ in range(20):
            for n, p in enumerate(peers):
                p.sock.sendall(server_frame(b'{"n":%d,"r":%d}' % (n, round_)))
        _wait_for(lambda: all(len(c.messages) == 20 for c in clients))
        for n, c in enumerate(clients):
            assert c.messages == [{"n": n, "r": r} for r in range(20)]
        # at load a wake-up serves many sockets (the interval lets them gather)
        assert reader.served >= 12 and reader.wakeups < reader.served
        peers[3].sock.close()                   # one peer dies: only its client ends
        _wait_for(lambda: clients[3].closed)
        assert clients[3].closed[0][0] == 1006 and len(reader) == 11
        assert not any(c.closed for i, c in enumerate(clients) if i != 3)
        peers[0].sock.sendall(server_frame(b'{"after":1}'))
        _wait_for(lambda: clients[0].messages[-1] == {"after": 1})
        for c in clients:
            c.ws.close()
        assert len(reader) == 0                 # closing a socket takes it out of the set


def test_a_handler_that_waits_holds_up_only_its_own_socket():
    """A message handler that waits on something (it must not, but a bug could): the guard
    sets its socket aside, the others are served meanwhile, and its later messages follow in
    order once it returns. Without the guard the other client would never get its message."""
    let_go = gevent.event.Event()
    with one_reader(2, held_after_s=0.02) as (reader, peers, (slow, quick)):
        waiting = slow.messages

        def on_message(message):
            waiting.append(message)
            if message == {"wait": True}:
                let_go.wait()       # waits until the quick client has its message

        slow.ws._on_message = on_message
        try:
            peers[0].sock.sendall(server_frame(b'{"wait":true}'))
            _wait_for(lambda: waiting)
            peers[0].sock.sendall(server_frame(b'{"next":1}'))
            peers[1].sock.sendall(server_frame(b'{"quick":1}'))
            _wait_for(lambda: quick.messages == [{"quick": 1}])
            assert reader.held == 1 and waiting == [{"wait": True}]     # its next one waits
            let_go.set()
            _wait_for(lambda: len(waiting) == 2)
            assert waiting == [{"wait": True}, {"next": 1}]
            peers[0].sock.sendall(server_frame(b'{"later":1}'))         # served again
            _wait_for(lambda: len(waiting) == 3)
            assert not slow.closed and not quick.closed
        finally:
            let_go.set()


def test_a_handler_that_raises_ends_its_own_socket_only():
    with one_reader(2) as (reader, peers, (bad, good)):

        def broken(message):
            raise RuntimeError("handler bug")

        bad.ws._on_message = broken
        peers[0].sock.sendall(server_frame(b'{"x":1}'))
        peers[1].sock.sendall(server_frame(b'{"y":1}'))
        _wait_for(lambda: bad.closed and good.messages)
        assert bad.closed == [(1006, "handler error: handler bug")] and not good.closed
        assert len(reader) == 1
        peers[1].sock.sendall(server_frame(b'{"y":2}'))
        _wait_for(lambda: len(good.messages) == 2)


def test_a_held_socket_whose_peer_hangs_up_is_not_polled_until_its_handler_returns():
    """Set aside, the socket is out of the epoll set: its hang-up does not wake the reader
    over and over; once the handler returns, the end is read and reported."""
    let_go = gevent.event.Event()
    with one_reader(1, held_after_s=0.02) as (reader, (peer,), (client,)):
        client.ws._on_message = lambda message: let_go.wait()
        try:
            peer.sock.sendall(server_frame(b'{"wait":true}'))
            _wait_for(lambda: reader.held == 1)
            peer.sock.close()
            wakeups = reader.wakeups
            gevent.sleep(0.2)
            assert reader.wakeups - wakeups <= 1 and not client.closed
            let_go.set()
            _wait_for(lambda: client.closed)
            assert client.closed[0][0] == 1006 and len(reader) == 0
        finally:
            let_go.set()


class _Broken:
    """A member whose read raises past its own error handling (a bug in the reader's caller)."""
    name = "broken"

    def __init__(self):
        self.calls = 0
        self.closed = []

    def _read_ready(self):
        self.calls += 1
        raise RuntimeError("bug")

    def close(self, code, reason):
        self.closed.append(code)


def test_a_connection_whose_read_fails_is_closed_and_the_others_read_on():
    import socket as stdlib_socket

    left, right = stdlib_socket.socketpair()
    broken = _Broken()
    with one_reader(1) as (reader, (peer,), (client,)):
        try:
            reader.add(left.fileno(), broken)
            right.sendall(b"x")                     # ready, and its read raises
            _wait_for(lambda: broken.closed == [1011])      # closed, out of the set
            assert broken.calls == 1 and len(reader) == 1
            peer.sock.sendall(server_frame(b'{"still":"read"}'))
            _wait_for(lambda: client.messages == [{"still": "read"}])
        finally:
            reader.remove(left.fileno())
            left.close()
            right.close()


def test_the_reader_lets_others_run_between_sockets_once_its_slice_is_spent():
    """Serving many sockets in one wake-up, the reader yields once it has served for longer
    than its slice: a greenlet waiting to run (the pacer, whose frames are due every
    millisecond) runs between two sockets, not after all of them."""
    import time

    order = []
    with one_reader(4) as (reader, peers, clients):
        for n, c in enumerate(clients):
            def on_message(message, n=n):
                order.append(n)
                busy_until = time.perf_counter() + 0.002
                while time.perf_counter() < busy_until:
                    pass                    # CPU work (no yield): the hub does not run
            c.ws._on_message = on_message
        gevent.sleep(0.05)                  # the reader idle, waiting
        for p in peers:                     # all four ready at once (no yield in between)
            p.sock.sendall(server_frame(b'{"x":1}'))
        # due while the reader serves the first socket; runs only when the reader yields
        gevent.spawn_later(0.001, lambda: order.append("other"))
        _wait_for(lambda: len(order) == 5)
        served = [x for x in order if x != "other"]
        assert sorted(served) == [0, 1, 2, 3]
        assert order.index("other") not in (0, 4)      # between two sockets


def test_a_reader_never_started_starts_with_its_first_socket_and_refuses_once_stopped(peer):
    reader = SocketReader()
    try:
        client = Client(peer.url, reader)
        assert peer.connected.wait(5)
        peer.sock.sendall(server_frame(b'{"read":1}'))
        _wait_for(lambda: client.messages == [{"read": 1}])
        client.ws.close()
    finally:
        reader.stop()
    before = peer.sock
    with pytest.raises(ValueError):
        Client(peer.url, reader)            # a call connecting during shutdown: refused
    assert peer.sock is not before and peer.sock.recv(100) == b""   # and its socket closed


def test_removing_a_socket_by_a_number_now_anothers_leaves_the_other_served():
    """A connection that leaves late must not take out the newer socket the kernel gave its
    descriptor number to."""
    import socket as stdlib_socket

    old, new = object(), object()
    left, right = stdlib_socket.socketpair()
    reader = SocketReader()
    try:
        reader.add(left.fileno(), new)
        reader.remove(left.fileno(), old)       # not old's any more: nothing happens
        assert len(reader) == 1
        reader.remove(left.fileno(), new)
        assert len(reader) == 0
    finally:
        reader.stop()
        left.close()
        right.close()
