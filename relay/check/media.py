"""Media both ways between Asterisk and relay's RTP address, with what ARI really offers.

What it does, on the app's own name (only when nobody holds it) or on --media-app: connects
the app's events WebSocket, binds a UDP socket as a worker does (rtp.bind_host, the first free
port of rtp.port_min..port_max), creates a bridge and an externalMedia channel towards
rtp.advertise_host:PORT, adds it to the bridge once its StasisStart has come (a 422 is asked
again, as in relay/call.py), originates `Local/s@relay-check` into the app and bridges it too,
and plays `sound:beep` into the bridge. Then:

- Asterisk → relay: RTP must reach the socket, from the announced
  UNICASTRTP_LOCAL_ADDRESS:PORT (a packet from elsewhere is reported);
- relay → Asterisk: relay sends one second of a tone to that address. ARI gives no receipt
  for RTP (rtp_statistics answers 404 for UnicastRTP channels), so this is verified only
  when the tone comes back: the `relay-check` dialplan context runs Echo() (README). Without
  it, the report says what was sent and that it was not verified.

Everything created has an id starting with `relay-check-` and is removed through the Janitor
(retried until Asterisk confirms).
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from typing import Optional

import gevent
import gevent.event

from relay._g711 import ulaw_dbov, ulaw_encode
from relay._rtp import RtpError, build_rtp, parse_rtp_header
from relay.ari import AriClient, AriError
from relay.check import FAIL, OK, SKIP, WARN, Check
from relay.config import Settings
from relay.janitor import Janitor
from relay.media import SOCKET_BUFFER, MediaSocket
from relay.wsclient import JsonWebSocket

GROUP = "media (RTP)"
PREFIX = "relay-check-"
LOCAL_ENDPOINT = "Local/s@relay-check"
VOICED_DBOV = -40.0
ADD_TRIES, ADD_RETRY_S = 6, 0.02
SEND_FRAMES = 50            # one second of tone
ECHO_MIN_FRAMES = 10        # voiced frames back while (and just after) sending


def _tone(hz: float = 1000.0, frames: int = SEND_FRAMES) -> list[bytes]:
    amp = 32768.0 * 10 ** (-12.0 / 20.0) * math.sqrt(2.0)
    pcm = bytearray()
    for i in range(160 * frames):
        v = int(amp * math.sin(2.0 * math.pi * hz * i / 8000))
        pcm += (v & 0xFFFF).to_bytes(2, "little")
    audio = ulaw_encode(bytes(pcm))
    return [audio[k * 160:(k + 1) * 160] for k in range(frames)]


class _Receiver:
    """What arrives on the UDP socket: packets, their sources, voiced frames and when."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.packets: list[tuple[float, tuple, bool]] = []     # (time, source, voiced)
        self.arrived = gevent.event.Event()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except OSError:
                return
            try:
                pt, _m, _seq, _ts, _ssrc, offset, length = parse_rtp_header(data)
            except RtpError:
                continue
            payload = data[offset:offset + length]
            voiced = pt == 0 and ulaw_dbov(payload) > VOICED_DBOV
            self.packets.append((time.monotonic(), source[:2], voiced))
            self.arrived.set()

    def voiced_since(self, since: float) -> int:
        return sum(1 for t, _s, v in self.packets if v and t >= since)

    def stop(self) -> None:
        self._greenlet.kill(block=False)


class MediaCheck:
    def __init__(self, settings: Settings, app: str, local_endpoint: str = LOCAL_ENDPOINT,
                 wait_s: float = 3.0) -> None:
        self.settings = settings
        self.app = app
        self.local_endpoint = local_endpoint
        self.wait_s = wait_s
        ari = settings.tree["ari"]
        self.ari = AriClient(ari["url"], ari["username"], ari["password"], app,
                             timeout=ari["request_timeout_s"], pool_size=4)
        self.janitor = Janitor(self.ari, PREFIX, attempts=5, retry_initial_s=0.1,
                               retry_max_s=1.0, recheck_s=())
        run = uuid.uuid4().hex[:8]
        self.bridge_id = f"{PREFIX}{run}"
        self.media_id = f"{PREFIX}{run}-media"
        self.local_id = f"{PREFIX}{run}-local"
        self.created: list[tuple[str, str]] = []
        self.events: list[dict] = []
        self.event_came = gevent.event.Event()
        self.out: list[Check] = []

    # events
    def _on_event(self, event) -> None:
        if isinstance(event, dict):
            self.events.append(event)
            self.event_came.set()

    def _wait_event(self, match, timeout: float) -> Optional[dict]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if match(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.event_came.clear()
            self.event_came.wait(min(left, 0.05))

    def _stasis_start(self, channel_id: str):
        return lambda e: (e.get("type") == "StasisStart" and
                          (e.get("channel") or {}).get("id") == channel_id)

    def _add(self, channel_id: str) -> None:
        self.ari.add_channel_once_in_app(self.bridge_id, [channel_id], tries=ADD_TRIES,
                                         first_pause_s=ADD_RETRY_S)

    def run(self) -> list[Check]:
        rtp = self.settings.tree["rtp"]
        try:
            sock = MediaSocket._bind(rtp["bind_host"], rtp["port_min"], rtp["port_max"])
        except OSError as exc:
            return [Check(GROUP, "RTP socket", FAIL, str(exc),
                          "free a port in rtp.port_min..port_max (RTP_PORT_MIN/MAX) or fix "
                          "RTP_HOST (rtp.bind_host: an address of this machine, or 0.0.0.0)")]
        port = sock.getsockname()[1]
        advertised = f"{rtp['advertise_host']}:{port}"
        self.out.append(Check(GROUP, "RTP socket", OK, f"bound {rtp['bind_host']}:{port}, "
                              f"announced to Asterisk as {advertised}"))
        short = MediaSocket.size_buffers(sock)
        self.out.append(
            Check(GROUP, "RTP buffers", WARN, "; ".join(short),
                  "a worker that pauses (a garbage collection, a busy host) will drop caller "
                  "audio: sysctl -w net.core.rmem_max=4194304 net.core.wmem_max=4194304 (and "
                  "in /etc/sysctl.d/), or run relay with CAP_NET_ADMIN") if short else
            Check(GROUP, "RTP buffers", OK, f"{SOCKET_BUFFER >> 20} MB asked each way, granted"))
        ari = self.settings.tree["ari"]
        events = JsonWebSocket(self.ari.events_url(self.app,
                                                   f"{ari['username']}:{ari['password']}"),
                               on_message=self._on_event, on_closed=lambda c, r: None,
                               connect_timeout=ari["request_timeout_s"], name="check-events")
        receiver = None
        try:
            try:
                events.connect()
            except Exception as exc:
                self.out.append(Check(GROUP, "events WebSocket", FAIL,
                                      f"cannot connect: {exc}",
                                      "the REST checks passed: check that a proxy between "
                                      "relay and Asterisk lets WebSocket upgrades through"))
                return self.out
            self.out.append(Check(GROUP, "events WebSocket", OK,
                                  f"connected as app {self.app!r}"))
            receiver = _Receiver(sock)
            self._media_path(sock, receiver, advertised)
        except AriError as exc:
            self.out.append(Check(GROUP, "setup", FAIL, str(exc),
                                  "see Asterisk's log; relay needs externalMedia (chan_rtp), "
                                  "mixing bridges and Local channels"))
        finally:
            self._cleanup()
            events.close()
            if receiver is not None:
                receiver.stop()
            sock.close()
            self.ari.close()
        return self.out

    def _media_path(self, sock: socket.socket, receiver: _Receiver, advertised: str) -> None:
        self.ari.create_bridge(self.bridge_id, name="relay check")
        self.created.append(("bridge", self.bridge_id))
        self.created.append(("channel", self.media_id))     # before: a timeout may land
        channel = self.ari.external_media(self.media_id, advertised, "ulaw", data="relay-check")
        variables = (channel or {}).get("channelvars") or {}
        address = variables.get("UNICASTRTP_LOCAL_ADDRESS", "")
        try:
            rtp_port = int(variables.get("UNICASTRTP_LOCAL_PORT", ""))
        except ValueError:
            rtp_port = 0
        if not address or not rtp_port:
            self.out.append(Check(GROUP, "externalMedia", FAIL, "created, but without "
                                  "UNICASTRTP_LOCAL_ADDRESS/PORT", "upgrade Asterisk (20+)"))
            return
        if not self._wait_event(self._stasis_start(self.media_id), self.wait_s):
            self.out.append(Check(GROUP, "externalMedia", WARN, "no StasisStart for the "
                                  f"media channel within {self.wait_s:g} s; adding it anyway"))
        self._add(self.media_id)
        self.out.append(Check(GROUP, "externalMedia", OK, f"channel in the bridge; Asterisk "
                              f"sends from and listens on {address}:{rtp_port}"))
        local = self._local_channel()
        self.ari.request("POST", f"/bridges/{self.bridge_id}/play",
                         {"media": "sound:beep", "playbackId": f"{self.bridge_id}-beep"})
        receiver.arrived.wait(self.wait_s)
        gevent.sleep(0.3)       # a few more packets
        self._check_incoming(receiver, address, rtp_port, advertised)
        self._check_outgoing(sock, receiver, address, rtp_port, local)

    def _local_channel(self) -> bool:
        self.created.append(("channel", self.local_id))
        try:
            self.ari.request("POST", "/channels", {
                "endpoint": self.local_endpoint, "app": self.app, "appArgs": "relay-check",
                "channelId": self.local_id, "otherChannelId": self.local_id + "-2"})
        except AriError as exc:
            self.out.append(Check(GROUP, "Local channel", WARN, f"{self.local_endpoint}: "
                                  f"{exc.status} {exc.message}", _DIALPLAN_FIX))
            return False
        if not self._wait_event(self._stasis_start(self.local_id), self.wait_s):
            self.out.append(Check(GROUP, "Local channel", WARN, f"{self.local_endpoint} did "
                                  f"not enter the app within {self.wait_s:g} s",
                                  _DIALPLAN_FIX))
            return False
        self._add(self.local_id)
        self.out.append(Check(GROUP, "Local channel", OK, f"{self.local_endpoint} in the "
                              "bridge"))
        return True

    def _check_incoming(self, receiver: _Receiver, address: str, rtp_port: int,
                        advertised: str) -> None:
        packets = list(receiver.packets)
        if not packets:
            self.out.append(Check(
                GROUP, "Asterisk → relay", FAIL,
                f"no RTP reached {advertised} within {self.wait_s:g} s of playing a beep into "
                "the bridge",
                "RTP_ADVERTISE_HOST (rtp.advertise_host) must be an address of this machine "
                "that Asterisk can reach, and UDP rtp.port_min..port_max open from Asterisk "
                "to relay (firewall, NAT)"))
            return
        sources = {s for _t, s, _v in packets}
        announced = {(address, rtp_port)}
        if not sources & announced:
            self.out.append(Check(GROUP, "Asterisk → relay", WARN,
                                  f"{len(packets)} RTP packets, but from "
                                  f"{sorted(sources)} rather than {address}:{rtp_port}",
                                  "a NAT between Asterisk and relay rewrites addresses: relay "
                                  "answers to the announced address, which must be reachable"))
            return
        self.out.append(Check(GROUP, "Asterisk → relay", OK,
                              f"{len(packets)} RTP packets from {address}:{rtp_port} "
                              f"({sum(v for _t, _s, v in packets)} with sound)"))

    def _check_outgoing(self, sock: socket.socket, receiver: _Receiver, address: str,
                        rtp_port: int, local: bool) -> None:
        gevent.sleep(0.6)       # let the beep end, so that what comes back is the echo
        start = time.monotonic()
        sent, error = 0, ""
        ssrc = int.from_bytes(uuid.uuid4().bytes[:4], "big")
        for k, frame in enumerate(_tone()):
            try:
                sock.sendto(build_rtp(0, k == 0, k, 160 * (k + 1), ssrc, frame),
                            (address, rtp_port))
                sent += 1
            except OSError as exc:
                error = str(exc)
                break
            gevent.sleep(max(0.0, start + 0.02 * (k + 1) - time.monotonic()))
        gevent.sleep(0.5)
        echoed = receiver.voiced_since(start)
        if error:
            self.out.append(Check(GROUP, "relay → Asterisk", FAIL,
                                  f"sending to {address}:{rtp_port} failed after {sent} "
                                  f"packets: {error}",
                                  "Asterisk's UNICASTRTP_LOCAL_ADDRESS must be reachable "
                                  "from relay over UDP (firewall, routes)"))
        elif echoed >= ECHO_MIN_FRAMES:
            self.out.append(Check(GROUP, "relay → Asterisk", OK,
                                  f"{sent} packets sent to {address}:{rtp_port}; Asterisk "
                                  f"took them: {echoed} frames of the tone came back through "
                                  f"{self.local_endpoint}'s Echo()"))
        else:
            why = ("the Local channel runs no Echo()" if local else
                   "no Local channel with Echo() in the bridge")
            self.out.append(Check(GROUP, "relay → Asterisk", WARN,
                                  f"{sent} packets sent to {address}:{rtp_port}; not "
                                  f"verified: ARI gives no receipt for RTP and nothing came "
                                  f"back ({why})", _DIALPLAN_FIX))

    def _cleanup(self) -> None:
        gone = []
        for kind, resource_id in reversed(self.created):
            gone.append(self.janitor.remove(kind, resource_id))
        deadline = time.monotonic() + 10
        while self.janitor.pending and time.monotonic() < deadline:
            gevent.sleep(0.05)
        left = self.janitor.pending
        self.janitor.stop()
        if left:
            self.out.append(Check(GROUP, "cleanup", WARN, "could not remove: " +
                                  ", ".join(f"{k} {i}" for k, i in sorted(left)),
                                  "remove them through ARI: DELETE /ari/bridges/ID, DELETE "
                                  "/ari/channels/ID (relay serve leaves relay-check-* alone)"))
        else:
            self.out.append(Check(GROUP, "cleanup", OK, "everything relay-check-* removed"))


_DIALPLAN_FIX = ("to verify audio towards Asterisk too, add to extensions.conf: "
                 "[relay-check] exten => s,1,Answer() same => n,Echo() (README, "
                 "'Before the first call'); --local-endpoint names another")


def check(settings: Settings, app: str, app_free: bool, media_app: str = "",
          local_endpoint: str = LOCAL_ENDPOINT) -> list[Check]:
    use = media_app or (app if app_free else "")
    if not use:
        return [Check(GROUP, "media path", SKIP, f"not checked: the app {app!r} is in use "
                      "(see above)", "")]
    return MediaCheck(settings, use, local_endpoint).run()
