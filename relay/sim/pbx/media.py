"""RTP for externalMedia channels: one UDP socket each, one pacing greenlet for all of them.

Owns: the sockets (127.0.0.1, a free port each, the address announced in UNICASTRTP_LOCAL_*),
sending what each externalMedia channel hears as paced RTP with Asterisk's quirks, and
receiving what the relay sends back into an RtpCapture.

Sending: one greenlet walks a 20-slot wheel of 1 ms ticks against absolute deadlines on the
monotonic clock; every endpoint sits in one slot (phases spread), so each gets a frame every
20 ms and the 1,000 streams of a load test do not all fire at once. Per frame the endpoint asks
its plan (set by the model): in a two-party bridge (simple_bridge) it forwards the other party's
frame only when there is one (no caller audio, no RTP; the first packet after silence has the
marker and a timestamp advanced by the wall-clock gap; a short last frame goes out short); with
three or more participants (softmix) it sends continuous mixed frames, silence included.
Timestamps start at 160 and advance by the samples sent; the sequence by one; one random SSRC
per endpoint. The bridge works in u-law; an externalMedia channel asked for `alaw` is transcoded
at its edge, as Asterisk does: it sends A-law (payload type 8) and what it receives is captured
as it came and decoded by its payload type.

Receiving: no greenlet per socket. On Linux every socket whose remote is an IP literal sits in
one SocketSet (relay/_udp.pyx: an epoll set) watched by one libev io watcher: when it is
readable a callback in the hub reads what the ready sockets hold (a recvmmsg each, each
datagram's arrival the kernel's receive stamp), parses each header (Cython) and appends to its
capture; the pacer sends all of a tick's frames in one SocketSet.send (a sendto each, from
each endpoint's own socket: one system call per datagram, but no Python per call). Elsewhere,
or for a remote given by name, a libev io watcher per socket reads one datagram per callback.
Packets from an address other than external_host are accepted and counted, as Asterisk does. When a
channel in the bridge runs Echo(), the model hands the endpoint an InboundSource
(`set_inbound`): each frame received (A-law transcoded to the bridge's u-law) is also pushed
into it, on the pacer's grid, so that it is heard in the bridge; otherwise it is only captured.
"""

from __future__ import annotations

import _socket
import logging
import random
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

try:                                    # Linux: epoll and recvmmsg (relay/_udp.pyx)
    from relay._udp import SocketSet, pack_address, unpack_address
except ImportError:                     # elsewhere: one io watcher per socket, one datagram each
    SocketSet = None
from relay.sim._sim_rtp import EndpointCore, send_slot
from relay.sim.pbx.capture import RtpCapture
from relay.sim.pbx.sounds import FRAME_TICKS, InboundSource, Source

log = logging.getLogger(__name__)

MAX_LAG_S = 0.2           # further behind than this, the pacer skips ahead instead of bursting
MAX_DRAIN = 1000          # datagrams read from a socket as it closes
PAYLOAD_TYPES = {"ulaw": 0, "alaw": 8}      # the externalMedia formats modelled (static RTP types)
TOTALS = ("tx_packets", "tx_errors", "rx_datagrams", "rx_malformed", "rx_foreign",
          "rx_not_recorded")


class RtpEndpoint(EndpointCore):
    """One externalMedia channel's socket, send state, plan and capture. The per-packet work
    (a datagram's handling, the next packet to send, the counts) is EndpointCore's, in C
    (relay/sim/_sim_rtp.pyx)."""

    __slots__ = (
        "buf",
        "call_id",
        "channel_id",
        "closed",
        "local",
        "mv",
        "remote",
        "slot",
        "sock",
        "watcher",
    )

    def __init__(self, channel_id: str, sock, remote: tuple[str, int], slot: int,
                 capture: RtpCapture, rng: random.Random, payload_type: int = 0) -> None:
        self.channel_id = channel_id
        self.payload_type = payload_type
        self.sock = sock
        self.local = sock.getsockname()
        self.remote = remote
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)          # the sequence number of the last packet sent
        self.ts = 0                             # timestamp of the last packet (first is 160)
        self.slot = slot
        self.watcher = None
        self.capture = capture
        self.call_id: str | None = None
        self.send_errors = 0
        self.buf = bytearray(2048)
        self.mv = memoryview(self.buf)
        self.closed = False
        self.fd = sock.fileno()

    def send_frame(self, tick: int, now: float) -> None:
        """Send this endpoint's 20 ms frame at `tick`, if it has one, from its own socket."""
        packet = self.next_packet(tick)
        if packet is None:
            return
        try:
            self.sock.sendto(packet, self.remote)
        except OSError:
            self.send_errors += 1
            return
        self.sent(len(packet) - 12, now)

    def source_of(self, name: bytes) -> tuple:
        return unpack_address(name)

    def on_readable(self) -> None:
        """Read one datagram (runs in the hub: never blocks, never raises). One per call: the
        watcher is level-triggered, so it fires again while more wait, and no read ends in a
        costly EAGAIN."""
        try:
            n, addr = self.sock.recvfrom_into(self.buf)
        except OSError:             # EAGAIN (another reader was first), or closed
            return
        self.take(time.monotonic(), self.mv[:n], addr != self.remote, addr)

    def counts(self) -> dict:
        """The running totals of this endpoint (TOTALS keys)."""
        cap = self.capture
        return {"tx_packets": self.packets_sent, "tx_errors": self.send_errors,
                "rx_datagrams": self.received, "rx_malformed": cap.malformed,
                "rx_foreign": cap.foreign_count, "rx_not_recorded": cap.dropped}

    def stats(self) -> dict:
        return {
            "channel_id": self.channel_id, "call_id": self.call_id,
            "local": f"{self.local[0]}:{self.local[1]}",
            "remote": f"{self.remote[0]}:{self.remote[1]}", "ssrc": self.ssrc,
            "softmix": self.softmix, "tx_packets": self.packets_sent,
            "tx_octets": self.octets_sent, "tx_markers": self.markers_sent,
            "tx_short": self.short_sent, "tx_errors": self.send_errors,
            "rx_datagrams": self.received, "rx_packets": len(self.capture),
            "rx_foreign": self.capture.foreign_count, "rx_malformed": self.capture.malformed,
        }


class MediaEngine:
    """All externalMedia endpoints and the pacer. Implements relay.sim.pbx.model.MediaHooks."""

    def __init__(self, host: str = "127.0.0.1", *, keep_audio: bool = True,
                 max_record_packets: int = 90_000, rng: random.Random | None = None,
                 on_closed: Callable[[RtpEndpoint], None] | None = None) -> None:
        self.host = host
        self.keep_audio = keep_audio
        self.max_record_packets = max_record_packets
        self.rng = rng or random.Random()
        self.on_closed = on_closed
        self.t0 = time.monotonic()
        self.endpoints: dict[str, RtpEndpoint] = {}
        self._wheel: list[list[RtpEndpoint]] = [[] for _ in range(FRAME_TICKS)]
        self._next_slot = 0
        self._greenlet: gevent.Greenlet | None = None
        self._has_work = Event()
        self._running = False
        # Batched I/O (Linux): every socket in one epoll set watched by one io watcher, and the
        # frames of a pacer tick sent in one call. None: a watcher per socket, one sendto each.
        self._sockets = SocketSet() if SocketSet is not None else None
        self._by_fd: dict[int, RtpEndpoint] = {}
        self._set_watcher = None
        self.rx_failures = 0                    # datagrams whose handling raised (a bug)
        self._failed_channels: set[str] = set()
        self.ticks_skipped = 0
        self.frames_run = 0
        # what the endpoints already closed sent and received (totals() adds the live ones)
        self.closed_totals = dict.fromkeys(TOTALS, 0)

    # ------------------------------------------------------------------ MediaHooks
    def tick(self, now: float) -> int:
        """The first pacer tick at or after `now`."""
        t = (now - self.t0) * 1000.0
        i = int(t)
        return i if i == t else i + 1

    def open_external(self, channel_id: str, host: str, port: int,
                      fmt: str = "ulaw") -> tuple[str, int]:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 18)
            sock.bind((self.host, 0))
        except OSError:
            sock.close()
            raise
        slot = self._next_slot
        self._next_slot = (slot + 7) % FRAME_TICKS       # spread phases over the 20 ms
        ep = RtpEndpoint(channel_id, sock, (host, port), slot,
                         RtpCapture(self.max_record_packets, self.keep_audio), self.rng,
                         PAYLOAD_TYPES[fmt])
        ep.t0 = self.t0
        packed = self._packed(host, port)
        if packed is not None and self._sockets is not None:
            ep.packed_remote = packed
            self._sockets.add(ep.fd)
            self._by_fd[ep.fd] = ep
            if self._set_watcher is None:
                self._set_watcher = gevent.get_hub().loop.io(self._sockets.fileno(), 1)
                self._set_watcher.start(self._on_readable)
        else:                   # a host name (resolved per send, as before), or not Linux
            watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
            watcher.start(ep.on_readable)
            ep.watcher = watcher
        self.endpoints[channel_id] = ep
        self._wheel[slot].append(ep)
        self._has_work.set()
        return ep.local[0], ep.local[1]

    @staticmethod
    def _packed(host: str, port: int) -> bytes | None:
        """The sockaddr of an IP literal `host` (batched sending); None for a name."""
        try:
            return pack_address(host, port) if SocketSet is not None else None
        except (OSError, ValueError, OverflowError, TypeError):
            return None

    def _on_readable(self) -> None:
        """The SocketSet's watcher (runs in the hub): hand each datagram read to its endpoint.
        A failure in one endpoint's handling (a simulator bug) is logged once per endpoint and
        counted; the other endpoints' datagrams of the batch are still handled."""
        by_fd = self._by_fd
        for fd, data, name, now in self._sockets.receive():
            ep = by_fd.get(fd)
            if ep is not None:
                try:
                    ep.on_datagram(data, name, now)
                except Exception:
                    self.rx_failures += 1
                    if ep.channel_id not in self._failed_channels:
                        self._failed_channels.add(ep.channel_id)
                        log.exception("sim-pbx: handling RTP for %s failed", ep.channel_id)

    def close_external(self, channel_id: str) -> None:
        ep = self.endpoints.pop(channel_id, None)
        if ep is None or ep.closed:
            return
        if ep.packed_remote is not None:        # from now on read here, not by the set
            self._sockets.remove(ep.fd)
            self._by_fd.pop(ep.fd, None)
        # Datagrams already queued on the socket arrived before the hangup: read them first
        # (the hangup may be handled before the io watcher's turn in the same loop iteration).
        for _ in range(MAX_DRAIN):
            before = ep.received
            ep.on_readable()
            if ep.received == before:
                break
        ep.closed = True
        for key, value in ep.counts().items():
            self.closed_totals[key] += value
        self._wheel[ep.slot].remove(ep)
        if ep.watcher is not None:
            ep.watcher.stop()
            ep.watcher.close()
            ep.watcher = None
        ep.sock.close()
        if self.on_closed is not None:
            self.on_closed(ep)

    def set_plan(self, channel_id: str, sources: list[Source], softmix: bool) -> None:
        ep = self.endpoints.get(channel_id)
        if ep is None:
            return
        ep.sources = tuple(sources)
        ep.softmix = softmix
        ep.single = sources[0] if sources and not softmix else None

    def set_override(self, channel_id: str, source: Source | None) -> None:
        ep = self.endpoints.get(channel_id)
        if ep is not None:
            ep.override = source

    def set_inbound(self, channel_id: str, source: InboundSource | None) -> None:
        ep = self.endpoints.get(channel_id)
        if ep is not None:
            ep.inbound = source

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._greenlet is None:
            self._running = True
            self._greenlet = gevent.spawn(self._pace)

    def stop(self) -> None:
        self._running = False
        if self._greenlet is not None:
            self._has_work.set()
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        for cid in list(self.endpoints):
            self.close_external(cid)
        if self._set_watcher is not None:
            self._set_watcher.stop()
            self._set_watcher.close()
            self._set_watcher = None

    def _pace(self) -> None:
        """The pacing loop: every endpoint whose slot is due sends its frame."""
        wheel = self._wheel
        clock = time.monotonic
        sleep = gevent.sleep
        t0 = self.t0
        tick = self.tick(clock())
        while self._running:
            if not self.endpoints:
                self._has_work.clear()
                self._has_work.wait(1.0)
                tick = self.tick(clock())
                continue
            # The next tick whose slot has endpoints.
            for _ in range(FRAME_TICKS):
                if wheel[tick % FRAME_TICKS]:
                    break
                tick += 1
            due = t0 + tick / 1000.0
            now = clock()
            if now < due:
                sleep(due - now)
                continue
            if now - due > MAX_LAG_S:
                skip = int((now - due) * 1000.0)
                self.ticks_skipped += skip
                tick += skip
                continue
            self._send_slot(wheel[tick % FRAME_TICKS], tick, now)
            self.frames_run += 1
            tick += 1

    def _send_slot(self, endpoints: list[RtpEndpoint], tick: int, now: float) -> None:
        """Every frame of one pacer tick: those of batched endpoints in one SocketSet.send
        (relay.sim._sim_rtp.send_slot), the others one sendto each."""
        if self._sockets is not None:
            endpoints = send_slot(self._sockets, endpoints, tick, now)
        for ep in endpoints:
            ep.send_frame(tick, now)

    def snapshot(self) -> list[dict]:
        return [ep.stats() for ep in self.endpoints.values()]

    def totals(self) -> dict:
        """Packets sent and datagrams received on every externalMedia channel since start,
        closed ones included (TOTALS keys)."""
        out = dict(self.closed_totals)
        for ep in self.endpoints.values():
            for key, value in ep.counts().items():
                out[key] += value
        return out
