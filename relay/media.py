"""The worker's media plumbing: its one UDP socket and its one pacer.

Owns: the worker's RTP socket (bound once, from the configured port range), its batched system
calls (relay/_udp.pyx), the demultiplexing of incoming datagrams to the call that owns their
source address (packets from any other address are dropped and counted), and the pacer: one
greenlet that gives each registered stream a tick every 20 ms against absolute deadlines.
Streams are spread over the 20 one-millisecond slots of a timer wheel, so sends are even rather
than bursty; the pacer wakes only for slots that have streams. No call logic here.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time
from typing import Callable, Optional, Protocol

import gevent
import gevent.event
import gevent.socket
from gevent import socket

from relay.metrics import PACER_LATENESS_BUCKETS_S, Histogram

log = logging.getLogger(__name__)

FRAME_S = 0.020
SLOTS = 20                  # 1 ms slots in a 20 ms frame
SLOT_S = FRAME_S / SLOTS
MAX_LAG_S = 0.2             # an overloaded pacer skips frame times rather than fall further behind
MAX_DATAGRAM = 2048
RECEIVE_BATCH = 32          # datagrams per recvmmsg: enough to empty the queue, short enough
                            # that the pacer is not kept waiting behind one batch
SEND_BATCH = 256            # datagrams per sendmmsg

try:
    from relay import _udp
except ImportError:         # not Linux: one system call per datagram
    _udp = None


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
        self.lateness = Histogram(PACER_LATENESS_BUCKETS_S)   # each slot with streams run:
                                                              # now - deadline
        self.tick_errors = 0
        self.skipped_slots = 0       # slots given up because the pacer was MAX_LAG_S behind

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
        slots = self._slots
        while True:
            if not self._count:
                self._wake.clear()
                self._wake.wait()
                # restart the wheel now, so no catch-up burst after an idle period
                self._epoch = clock() - self._next_slot * SLOT_S
            # A slot without streams is not woken for (nor counted as late): with few calls
            # the pacer sleeps until the next slot that has some.
            for _ in range(SLOTS - 1):
                if slots[self._next_slot % SLOTS]:
                    break
                self._next_slot += 1
            now = clock()
            due = self._epoch + self._next_slot * SLOT_S
            if due > now:
                gevent.sleep(due - now)
                continue
            if now - due > MAX_LAG_S:
                # Overloaded (or the process was stopped): sending every missed frame now
                # would only make every call's audio later and later. Give up the frame times
                # missed; each stream's next tick sends its next frame, so the caller hears a
                # gap instead of a delay that never recovers.
                missed = int((now - due) / SLOT_S)
                self._next_slot += missed
                self.skipped_slots += missed
                continue
            if now - due > SLOT_S:
                self.late_ticks += 1
            self.lateness.observe(now - due)
            streams = slots[self._next_slot % SLOTS]
            self._next_slot += 1
            for stream in tuple(streams):
                try:
                    stream.tick(now)
                except Exception:
                    self.tick_errors += 1
                    log.exception("pacer: a stream's tick failed; removing it")
                    self.remove(stream)


class MediaSocket:
    """The worker's UDP socket for RTP, with datagrams routed by source address.

    On Linux the datagrams move in batches (relay/_udp.pyx): one recvmmsg reads every datagram
    waiting, and sendto() only queues: the frames one pacer slot produces leave together in one
    sendmmsg, flushed as soon as the greenlet that queued them yields. Elsewhere each datagram
    is one recvfrom / sendto, with the same behaviour seen from outside.
    """

    def __init__(self, bind_host: str, port_min: int, port_max: int,
                 batched: Optional[bool] = None) -> None:
        self._routes: dict[tuple[str, int], Callable[[bytes, float], None]] = {}
        self._sock = self._bind(bind_host, port_min, port_max)
        self.host, self.port = self._sock.getsockname()[:2]
        self._greenlet: Optional[gevent.Greenlet] = None
        self._batched = _udp is not None if batched is None else batched and _udp is not None
        fd = self._sock.fileno()
        self._receiver = _udp.BatchReceiver(fd, RECEIVE_BATCH, MAX_DATAGRAM) if self._batched \
            else None
        self._sender = _udp.BatchSender(fd, SEND_BATCH) if self._batched else None
        self._addresses: dict[tuple[str, int], bytes] = {}    # remote -> packed sockaddr
        self._outgoing: list[tuple[bytes, bytes]] = []
        self._flush_scheduled = False
        self._closed = False
        self.received = 0
        self.from_strangers = 0
        self.sent = 0
        self.send_errors = 0
        self.send_blocked = 0

    @staticmethod
    def _bind(host: str, port_min: int, port_max: int) -> socket.socket:
        family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
        last_error: Optional[OSError] = None
        for port in range(port_min, port_max + 1):      # 0..0: any free port
            sock = socket.socket(family, stdlib_socket.SOCK_DGRAM)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4 << 20)
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4 << 20)
                sock.bind((host, port))
                return sock
            except OSError as exc:
                last_error = exc
                sock.close()
        raise OSError(f"no free UDP port for RTP in {host}:{port_min}-{port_max}: {last_error}")

    @property
    def batched(self) -> bool:
        return self._batched

    def route(self, remote: tuple[str, int], handler: Callable[[bytes, float], None]) -> None:
        """Send datagrams from remote (Asterisk's UNICASTRTP address) to handler(data, now)."""
        self._routes[remote] = handler

    def unroute(self, remote: tuple[str, int]) -> None:
        self._routes.pop(remote, None)
        self._addresses.pop(remote, None)

    @property
    def routes(self) -> int:
        return len(self._routes)

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        """Send one datagram: now, or (batched) when the calling greenlet yields."""
        if self._sender is None:
            try:
                self._sock.sendto(data, remote)
                self.sent += 1
            except OSError:
                self.send_errors += 1
            return
        address = self._addresses.get(remote)
        if address is None:
            try:
                address = self._addresses[remote] = _udp.pack_address(remote[0], remote[1])
            except (OSError, ValueError, OverflowError, TypeError):
                self.send_errors += 1
                return
        self._outgoing.append((data, address))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            gevent.get_hub().loop.run_callback(self.flush)

    def flush(self) -> None:
        """Send every queued datagram (one sendmmsg per batch)."""
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        if not outgoing or self._closed:
            return
        sent, failed = self._sender.send(outgoing)      # type: ignore[union-attr]
        self.sent += sent - failed
        self.send_errors += failed
        if sent < len(outgoing):        # the socket's buffer is full: wait, bounded, in a greenlet
            self.send_blocked += 1
            gevent.spawn(self._send_when_writable, outgoing[sent:])

    def _send_when_writable(self, outgoing: list[tuple[bytes, bytes]]) -> None:
        index = 0
        while index < len(outgoing) and not self._closed:
            try:
                gevent.socket.wait_write(self._sock.fileno(), timeout=FRAME_S)
            except (gevent.socket.timeout, OSError):
                break
            before = index
            index, failed = self._sender.send(outgoing, index)  # type: ignore[union-attr]
            self.sent += index - before - failed
            self.send_errors += failed
        self.send_errors += len(outgoing) - index    # a frame later than a frame time is useless

    def start(self) -> None:
        loop = self._receive_batches if self._receiver is not None else self._receive_loop
        self._greenlet = gevent.spawn(loop)

    def close(self) -> None:
        self._closed = True
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._outgoing = []
        self._sock.close()

    def _dispatch(self, data: bytes, remote: tuple, now: float) -> None:
        """One datagram to the call that owns its source address (host, port[, IPv6 extras])."""
        handler = self._routes.get(remote[:2])
        if handler is None:
            self.from_strangers += 1
            return
        try:
            handler(data, now)
        except Exception:
            log.exception("RTP handler failed for %s", remote)

    def _receive_batches(self) -> None:
        """recvmmsg until nothing waits, then sleep on the socket's read readiness."""
        receive = self._receiver.receive        # type: ignore[union-attr]
        hub = gevent.get_hub()
        readable = hub.loop.io(self._sock.fileno(), 1)
        dispatch = self._dispatch
        clock = time.monotonic
        try:
            while True:
                try:
                    batch = receive()
                except OSError as exc:
                    log.warning("RTP socket receive failed: %s", exc)
                    gevent.sleep(0.01)
                    continue
                if not batch:
                    hub.wait(readable)
                    continue
                if len(batch) == RECEIVE_BATCH:
                    # more may be waiting: let the pacer (and everyone else) run between
                    # batches instead of after the whole backlog
                    gevent.sleep(0)
                self.received += len(batch)
                now = clock()
                for data, remote in batch:
                    dispatch(data, remote, now)
        finally:
            readable.close()

    def _receive_loop(self) -> None:
        """One recvfrom per datagram (where recvmmsg is not available)."""
        recvfrom = self._sock.recvfrom
        clock = time.monotonic
        while True:
            try:
                data, remote = recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                log.warning("RTP socket receive failed: %s", exc)
                gevent.sleep(0.01)
                continue
            self.received += 1
            self._dispatch(data, remote, clock())
