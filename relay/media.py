"""The worker's media plumbing: its one UDP socket and its one pacer.

Owns: the worker's RTP socket (bound once, from the configured port range), its batched system
calls, the demultiplexing of incoming datagrams to the call that owns their source address
(packets from any other address are dropped and counted), and the pacer: one greenlet that
gives each registered stream a tick every 20 ms against absolute deadlines. Streams are spread
over the 20 one-millisecond slots of a timer wheel, so sends are even rather than bursty; the
pacer wakes only for slots that have streams. No call logic here.

On Linux the per-packet and per-frame loops run in C (relay/_engine.pyx: the route table and
recvmmsg straight into each call's jitter buffer, a slot's streams ticked in one loop, their
frames sent by one sendmmsg, relay/_udp.pyx): Python here only waits (gevent) and keeps time.
Elsewhere the same happens one datagram and one stream at a time, in Python.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import sys
import time
from typing import Callable, Optional, Protocol

import gevent
import gevent.event
import gevent.socket
from gevent import socket

from relay._media import CallMedia, SendQueue
from relay.cooperate import pause
from relay.metrics import PACER_LATENESS_BUCKETS_S, Histogram

log = logging.getLogger(__name__)

FRAME_S = 0.020
SLOTS = 20                  # 1 ms slots in a 20 ms frame
SLOT_S = FRAME_S / SLOTS
MAX_LAG_S = 0.2             # an overloaded pacer skips frame times rather than fall further behind
MAX_DATAGRAM = 2048
RECEIVE_BATCH = 32          # datagrams per recvmmsg: enough to empty the queue, short enough
                            # that the pacer is not kept waiting behind one batch
RECEIVE_SLICE_S = 0.0005    # a backed-up socket is read this long before the others run
SEND_BATCH = 256            # datagrams per sendmmsg
SOCKET_BUFFER = 4 << 20     # bytes asked for each way. Linux doubles it: 8 MB hold about 10,000
                            # small datagrams (about 830 bytes each in kernel memory), 200 ms of
                            # 1,000 calls' caller audio, so a pause of the worker drops nothing
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33   # Linux: past net.core.[rw]mem_max (CAP_NET_ADMIN)
_SO_MEMINFO = 55            # Linux: the socket's memory counters, SK_MEMINFO_DROPS among them
_SK_MEMINFO_VARS, _SK_MEMINFO_DROPS = 9, 8
_LINUX = sys.platform.startswith("linux")

try:
    from relay import _engine, _udp
except ImportError:         # not Linux: one system call per datagram
    _engine = _udp = None


class PacedStream(Protocol):
    def tick(self, now: float) -> None:
        """Called once per 20 ms frame at the stream's deadline (now = monotonic seconds)."""


def _tick_streams(streams: list, now: float) -> Optional[list]:
    """One slot's ticks, one stream at a time (relay/_engine.pyx does the same in C)."""
    failed = None
    for stream in tuple(streams):
        try:
            stream.tick(now)
        except Exception as exc:
            failed = failed or []
            failed.append((stream, exc))
    return failed


tick_streams = _engine.tick_streams if _engine is not None else _tick_streams


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
            failed = tick_streams(streams, now)
            if failed:
                self._drop(failed)

    def _drop(self, failed: list) -> None:
        """Streams whose tick raised: removed, and told (their owner ends what they carried:
        a call that is no longer ticked would leave its caller in silence)."""
        for stream, exc in failed:
            self.tick_errors += 1
            log.error("pacer: a stream's tick failed; removing it", exc_info=exc)
            self.remove(stream)
            failed_hook = getattr(stream, "on_tick_failed", None)
            if failed_hook is not None:
                try:
                    failed_hook(exc)
                except Exception:
                    log.exception("pacer: a dropped stream's on_tick_failed failed")


class MediaSocket:
    """The worker's UDP socket for RTP, with datagrams routed by source address.

    A route's handler is a call's CallMedia (its on_rtp), or any handler(data, now). On Linux
    the datagrams move in batches: one recvmmsg reads every datagram waiting and hands each to
    its CallMedia in C (relay/_engine.pyx RtpRouter), and frames are queued (a CallMedia puts
    its own on the queue in C, see sink_for): the frames one pacer slot produces leave
    together in one sendmmsg, flushed as soon as the greenlet that queued them yields.
    Elsewhere each datagram is one recvfrom / sendto, with the same behaviour seen from outside.
    """

    def __init__(self, bind_host: str, port_min: int, port_max: int,
                 batched: Optional[bool] = None) -> None:
        self._routes: dict[tuple[str, int], Callable[[bytes, float], None]] = {}
        self._sock = self._bind(bind_host, port_min, port_max)
        for shortfall in self.size_buffers(self._sock):
            log.warning("RTP socket: %s; a worker that pauses will drop caller audio "
                        "(relay_rtp_socket_overflows_total)", shortfall)
        self.host, self.port = self._sock.getsockname()[:2]
        self._greenlet: Optional[gevent.Greenlet] = None
        self._batched = _udp is not None if batched is None else batched and _udp is not None
        fd = self._sock.fileno()
        self._router = _engine.RtpRouter(fd, RECEIVE_BATCH, MAX_DATAGRAM) if self._batched \
            else None
        if self._router is not None:
            self._router.on_error = self._handler_failed
        self._sender = _udp.BatchSender(fd, SEND_BATCH) if self._batched else None
        self._addresses: dict[tuple[str, int], bytes] = {}    # remote -> packed sockaddr
        self._queue = SendQueue(self._schedule_flush)
        self._closed = False
        self._received = 0
        self._from_strangers = 0
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
                sock.bind((host, port))
                return sock
            except OSError as exc:
                last_error = exc
                sock.close()
        raise OSError(f"no free UDP port for RTP in {host}:{port_min}-{port_max}: {last_error}")

    @staticmethod
    def size_buffers(sock: socket.socket) -> list[str]:
        """Ask for SOCKET_BUFFER each way; what fell short, with the setting to raise. The
        kernel caps the ask at net.core.rmem_max (and wmem_max; 208 KB by default: about 10 ms
        of 1,000 calls) unless the process may force it (CAP_NET_ADMIN)."""
        wanted = 2 * SOCKET_BUFFER if _LINUX else SOCKET_BUFFER   # Linux reports twice the ask
        short = []
        for option, force, way, limit in (
                (stdlib_socket.SO_RCVBUF, _SO_RCVBUFFORCE, "receive", "net.core.rmem_max"),
                (stdlib_socket.SO_SNDBUF, _SO_SNDBUFFORCE, "send", "net.core.wmem_max")):
            sock.setsockopt(stdlib_socket.SOL_SOCKET, option, SOCKET_BUFFER)
            size = sock.getsockopt(stdlib_socket.SOL_SOCKET, option)
            if size < wanted and _LINUX:
                try:
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, force, SOCKET_BUFFER)
                    size = sock.getsockopt(stdlib_socket.SOL_SOCKET, option)
                except OSError:         # not privileged: keep what the limit allowed
                    pass
            if size < wanted:
                short.append(f"{way} buffer {size} bytes of the {wanted} asked: raise {limit} "
                             f"to {SOCKET_BUFFER}")
        return short

    @property
    def overflows(self) -> Optional[int]:
        """Datagrams the kernel dropped because the receive buffer was full (the worker did not
        read them in time), since the socket was opened; None where the kernel does not say."""
        if not _LINUX or self._closed:
            return None
        try:
            counters = self._sock.getsockopt(stdlib_socket.SOL_SOCKET, _SO_MEMINFO,
                                             4 * _SK_MEMINFO_VARS)
        except OSError:
            return None
        if len(counters) < 4 * (_SK_MEMINFO_DROPS + 1):
            return None
        return int.from_bytes(counters[4 * _SK_MEMINFO_DROPS:4 * _SK_MEMINFO_DROPS + 4],
                              sys.byteorder)

    @property
    def batched(self) -> bool:
        return self._batched

    @property
    def received(self) -> int:
        """Datagrams read from the socket."""
        return self._received + (self._router.received if self._router is not None else 0)

    @property
    def from_strangers(self) -> int:
        """Datagrams dropped because no call owns their source address."""
        return self._from_strangers + (
            self._router.from_strangers if self._router is not None else 0)

    def route(self, remote: tuple[str, int], handler) -> None:
        """Send datagrams from remote (Asterisk's UNICASTRTP address) to handler: a CallMedia,
        or handler(data, now)."""
        self._routes[remote] = handler
        if self._router is not None:
            try:
                self._router.route(remote[0], remote[1], handler)
            except ValueError as exc:      # not an IP literal: nothing can come from it
                log.warning("RTP route to %s: %s", remote, exc)

    def unroute(self, remote: tuple[str, int]) -> None:
        self._routes.pop(remote, None)
        self._addresses.pop(remote, None)
        if self._router is not None:
            self._router.unroute(remote[0], remote[1])

    @property
    def routes(self) -> int:
        return len(self._routes)

    def sink_for(self, remote: tuple[str, int]) -> Optional[tuple[SendQueue, bytes]]:
        """(the send queue, remote's packed sockaddr) for CallMedia.attach_sink: its frames then
        go onto the batch in C. None where frames are sent one by one (use sendto)."""
        if self._sender is None:
            return None
        address = self._packed(remote)
        return None if address is None else (self._queue, address)

    def _packed(self, remote: tuple[str, int]) -> Optional[bytes]:
        address = self._addresses.get(remote)
        if address is None:
            try:
                address = self._addresses[remote] = _udp.pack_address(remote[0], remote[1])
            except (OSError, ValueError, OverflowError, TypeError):
                return None
        return address

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        """Send one datagram: now, or (batched) when the calling greenlet yields."""
        if self._sender is None:
            try:
                self._sock.sendto(data, remote)
                self.sent += 1
            except OSError:
                self.send_errors += 1
            return
        address = self._packed(remote)
        if address is None:
            self.send_errors += 1
            return
        self._queue.put(data, address)

    def _schedule_flush(self) -> None:
        gevent.get_hub().loop.run_callback(self.flush)

    def flush(self) -> None:
        """Send every queued datagram (one sendmmsg per batch)."""
        outgoing = self._queue.take()
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
        loop = self._receive_batches if self._router is not None else self._receive_loop
        self._greenlet = gevent.spawn(loop)

    def close(self) -> None:
        self._closed = True
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._queue.take()
        self._sock.close()

    @staticmethod
    def _handler_failed(exc: BaseException) -> None:
        log.error("RTP handler failed", exc_info=exc)

    def _dispatch(self, data: bytes, remote: tuple, now: float) -> None:
        """One datagram to the call that owns its source address (host, port[, IPv6 extras])."""
        handler = self._routes.get(remote[:2])
        if handler is None:
            self._from_strangers += 1
            return
        try:
            if type(handler) is CallMedia:
                handler.on_rtp(data, now)
            else:
                handler(data, now)
        except Exception:
            log.exception("RTP handler failed for %s", remote)

    def _receive_batches(self) -> None:
        """recvmmsg until nothing waits (each datagram to its call, in C), then sleep on the
        socket's read readiness. A backed-up socket is read in slices of RECEIVE_SLICE_S, with
        the pacer (and everyone else) let run between them: one batch per turn of the hub
        was too little when the hub's turns grew long (hundreds of calls ending at once), and
        the kernel dropped callers' packets for the full buffer."""
        pump = self._router.pump                # type: ignore[union-attr]
        hub = gevent.get_hub()
        clock = time.monotonic
        readable = hub.loop.io(self._sock.fileno(), 1)
        slice_end = 0.0
        try:
            while True:
                try:
                    count = pump()
                except OSError as exc:
                    log.warning("RTP socket receive failed: %s", exc)
                    gevent.sleep(0.01)
                    continue
                if not count:
                    hub.wait(readable)
                    slice_end = 0.0
                elif count == RECEIVE_BATCH:
                    now = clock()
                    if not slice_end:
                        slice_end = now + RECEIVE_SLICE_S
                    elif now >= slice_end:
                        pause()
                        slice_end = 0.0
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
            self._received += 1
            self._dispatch(data, remote, clock())
