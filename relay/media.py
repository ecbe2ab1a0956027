"""The worker's media plumbing: its one UDP socket and its one pacer.

Owns: the worker's RTP socket (bound once, from the configured port range), the demultiplexing
of incoming datagrams to the call that owns their source address (packets from any other
address are dropped and counted), and the pacer: one greenlet that gives each registered stream
a tick every 20 ms against absolute deadlines. Streams are spread over the 20 one-millisecond
slots of a timer wheel, so sends are even rather than bursty. No call logic here.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time
from typing import Callable, Optional, Protocol

import gevent
import gevent.event
from gevent import socket

from relay.metrics import PACER_LATENESS_BUCKETS_S, Histogram

log = logging.getLogger(__name__)

FRAME_S = 0.020
SLOTS = 20                  # 1 ms slots in a 20 ms frame
SLOT_S = FRAME_S / SLOTS
MAX_DATAGRAM = 2048


class PacedStream(Protocol):
    def tick(self, now: float) -> None:
        """Called once per 20 ms frame at the stream's deadline (now = monotonic seconds)."""


class Pacer:
    """One greenlet ticking every registered stream every 20 ms, at its own 1 ms phase."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: list[list[PacedStream]] = [[] for _ in range(SLOTS)]
        self._slot_of: dict[int, int] = {}
        self._greenlet: Optional[gevent.Greenlet] = None
        self._epoch = 0.0
        self._next_slot = 0          # absolute index of the next slot to run
        self._count = 0
        self._wake = gevent.event.Event()
        self.late_ticks = 0          # ticks run more than one slot after their deadline
        self.lateness = Histogram(PACER_LATENESS_BUCKETS_S)   # each slot run: now - deadline
        self.tick_errors = 0

    def __len__(self) -> int:
        return self._count

    def add(self, stream: PacedStream) -> None:
        """Register a stream in the least-loaded slot."""
        if id(stream) in self._slot_of:
            return
        slot = min(range(SLOTS), key=lambda s: len(self._slots[s]))
        self._slots[slot].append(stream)
        self._slot_of[id(stream)] = slot
        self._count += 1
        self._wake.set()

    def remove(self, stream: PacedStream) -> None:
        slot = self._slot_of.pop(id(stream), None)
        if slot is not None:
            self._slots[slot].remove(stream)
            self._count -= 1

    def start(self) -> None:
        self._epoch = self._clock()
        self._next_slot = 0
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        clock = self._clock
        while True:
            if not self._count:
                self._wake.clear()
                self._wake.wait()
                # restart the wheel now, so no catch-up burst after an idle period
                self._epoch = clock() - self._next_slot * SLOT_S
            now = clock()
            due = self._epoch + self._next_slot * SLOT_S
            if due > now:
                gevent.sleep(due - now)
                continue
            if now - due > SLOT_S:
                self.late_ticks += 1
            self.lateness.observe(now - due)
            streams = self._slots[self._next_slot % SLOTS]
            self._next_slot += 1
            for stream in tuple(streams):
                try:
                    stream.tick(now)
                except Exception:
                    self.tick_errors += 1
                    log.exception("pacer: a stream's tick failed; removing it")
                    self.remove(stream)


class MediaSocket:
    """The worker's UDP socket for RTP, with datagrams routed by source address."""

    def __init__(self, bind_host: str, port_min: int, port_max: int) -> None:
        self._routes: dict[tuple[str, int], Callable[[bytes, float], None]] = {}
        self._sock = self._bind(bind_host, port_min, port_max)
        self.host, self.port = self._sock.getsockname()[:2]
        self._greenlet: Optional[gevent.Greenlet] = None
        self.received = 0
        self.from_strangers = 0
        self.send_errors = 0

    @staticmethod
    def _bind(host: str, port_min: int, port_max: int) -> socket.socket:
        family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
        last_error: Optional[OSError] = None
        for port in range(port_min, port_max + 1):      # 0..0: any free port
            sock = socket.socket(family, stdlib_socket.SOCK_DGRAM)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4 << 20)
                sock.bind((host, port))
                return sock
            except OSError as exc:
                last_error = exc
                sock.close()
        raise OSError(f"no free UDP port for RTP in {host}:{port_min}-{port_max}: {last_error}")

    def route(self, remote: tuple[str, int], handler: Callable[[bytes, float], None]) -> None:
        """Send datagrams from remote (Asterisk's UNICASTRTP address) to handler(data, now)."""
        self._routes[remote] = handler

    def unroute(self, remote: tuple[str, int]) -> None:
        self._routes.pop(remote, None)

    @property
    def routes(self) -> int:
        return len(self._routes)

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, remote)
        except OSError:
            self.send_errors += 1

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._receive_loop)

    def close(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._sock.close()

    def _receive_loop(self) -> None:
        recvfrom = self._sock.recvfrom
        routes = self._routes
        clock = time.monotonic
        while True:
            try:
                data, remote = recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                log.warning("RTP socket receive failed: %s", exc)
                gevent.sleep(0.01)
                continue
            self.received += 1
            handler = routes.get(remote[:2])
            if handler is None:
                self.from_strangers += 1
                continue
            try:
                handler(data, clock())
            except Exception:
                log.exception("RTP handler failed for %s", remote)

