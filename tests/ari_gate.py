"""A TCP proxy in front of the simulated PBX that can keep one ARI application's events
WebSocket out, as an Asterisk not up yet (or restarting) would for that app, and let everything
else through untouched: the other apps' events sockets, every REST request.

Its URL is given to relay as ARI_URL. While shut, an events request for the gated app
(`GET /ari/events?app=<app>...`) is answered 503 and closed; `shut()` also cuts the one that
is open, so the PBX unregisters the app and the client sees its socket drop. Each connection is
judged by its first request: events sockets are new connections, REST requests on a kept-alive
connection are passed on as they come."""

from __future__ import annotations

import socket
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import gevent
from gevent.server import StreamServer

MAX_HEAD = 65536
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Content-Length: 39\r\nConnection: close\r\n\r\n"
           b'{"message": "the test gate is closed"}\n')


class EventsGate:
    """`EventsGate(pbx_port, app).start()`; `.url`; `.let_in()`; `.shut()`; `.stop()`."""

    def __init__(self, port: int, app: str) -> None:
        self.upstream = ("127.0.0.1", port)
        self.app = app
        self.open = False
        self.refused = 0        # events requests for the app answered 503
        self.admitted = 0       # events connections for the app passed on
        self._held: set[tuple[socket.socket, socket.socket]] = set()     # the app's, open
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()    # every one open
        self.server = StreamServer(("127.0.0.1", 0), self._serve)

    def start(self) -> "EventsGate":
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def let_in(self) -> None:
        self.open = True

    def shut(self) -> None:
        """Keep the app's events socket out, and cut the one that is open."""
        self.open = False
        for pair in list(self._held):
            _cut(pair)

    def stop(self) -> None:
        self.open = False
        self.server.stop(timeout=1)
        for pair in list(self._pairs):
            _cut(pair)

    def _gated(self, request_line: bytes) -> bool:
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) < 2:
            return False
        target = urlsplit(parts[1])
        if target.path != "/ari/events":
            return False
        apps = [a for v in parse_qs(target.query).get("app", []) for a in v.split(",")]
        return self.app in apps

    def _serve(self, client: socket.socket, address) -> None:
        head = _read_head(client)
        if head is None:
            client.close()
            return
        gated = self._gated(head.split(b"\r\n", 1)[0])
        if gated and not self.open:
            self.refused += 1
            try:
                client.sendall(REFUSAL)
            finally:
                client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
            upstream.sendall(head)
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        self._pairs.add(pair)
        if gated:
            self.admitted += 1
            self._held.add(pair)
        pipes = [gevent.spawn(_pipe, client, upstream), gevent.spawn(_pipe, upstream, client)]
        try:
            gevent.joinall(pipes, count=1)      # one side is done: the connection is over
        finally:
            _cut(pair)
            gevent.killall(pipes, block=True, timeout=2)
            self._held.discard(pair)
            self._pairs.discard(pair)
            for sock in pair:
                sock.close()


def _read_head(sock: socket.socket) -> Optional[bytes]:
    """The first request's head and whatever came with it; None if the client went first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(MAX_HEAD)
        except OSError:
            return None
        if not chunk or len(data) > MAX_HEAD:
            return None
        data += chunk
    return data


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(MAX_HEAD)
            if not data:
                return
            sink.sendall(data)
    except OSError:
        return


def _cut(pair: tuple[socket.socket, socket.socket]) -> None:
    """Both sockets shut down: the pipes' reads end, both peers see the connection close."""
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
