"""The floor of the end-to-end load benchmark: the socket work of N calls and nothing else.

A bare gevent process that does the least any relay must do for N calls, so relay's CPU can be
read as a ratio to it: one UDP socket read by one recvfrom loop (a dict lookup by source
address per datagram, no parsing), and one pacing greenlet on a wheel of 20 one-millisecond
slots with absolute deadlines, each stream in the least loaded slot, sending a prebuilt 20 ms
frame behind a fresh RTP header. No jitter buffer, no playout, no tools, no metrics.

With --model-url (the benchmark's "floor"), each call also has the model leg any voice relay
must carry (ModelLeg): a WebSocket to the model, opened with relay's own session.update for the
agent (--agent) and the greeting's response.create; the caller's audio appended as relay's
defaults do (config/default.json rtp: 40 ms per input_audio_buffer.append, the frame built in C
by relay/_ws.pyx and written with one write(2)), and while the caller is silent (the PBX sends
nothing) silence in its place, so that the model's VAD ends the caller's turns: 40 ms appends,
200 ms ones after 1.5 s of silence; the model's frames read and split, and its audio deltas
decoded (relay/_events.pyx), then dropped: the stand-in agent below still answers by timing.
Without it ("the UDP floor") the process carries the RTP alone, as it did before 2026-12-07;
relay's CPU against that one counts the model leg's system calls as relay's overhead
(bench/RESULTS.md, "2026-12-07: the floor carries the model leg").

It takes calls over ARI like relay (answer, a bridge, an externalMedia channel to its socket)
only so that the simulated PBX sends it the same caller traffic; no ARI happens while calls
are steady. So that the simulated callers' scripts run as they do against relay, each stream
stands in for the agent by packet timing alone: when its caller has been silent for
--silence-ms after speaking (and at the start: the greeting) it sends --reply-ms of audio, and
caller packets arriving during that (a barge-in) stop it.

    python -m bench.load.floor --ari-url http://127.0.0.1:8088 --user U --password P --app floor \
        [--model-url ws://127.0.0.1:PORT/v1/realtime --api-key KEY --agent agents/bench.json]

prints `floor: ready, RTP on HOST:PORT` once its events WebSocket is connected and runs until
SIGTERM/SIGINT, then ends its calls' channels and bridges.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import socket as stdlib_socket
import sys
import time

import gevent
import gevent.event
from gevent import socket

SLOTS = 20
SLOT_S = 0.001
FRAME_S = 0.020
FRAME_BYTES = 160
BARGE_IN_PACKETS = 3          # caller packets during a reply that stop it
APPEND_BYTES = 2 * FRAME_BYTES          # relay's rtp.append_frames (2)
LONG_SILENCE_S = 1.5                    # relay's rtp.long_silence_after_ms
LONG_APPEND_BYTES = 10 * FRAME_BYTES    # relay's rtp.long_silence_append_ms (200)
SILENCE_FRAME = b"\xff" * FRAME_BYTES  # G.711 mu-law silence
MEDIA_DATA = "floor-media"    # the data (Stasis args) of the floor's own externalMedia channels
GONE = ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest")

log = logging.getLogger("floor")


class ModelLeg:
    """One call's WebSocket to the model: the appends written as the caller's audio comes (in
    order: a write that does not take the whole frame leaves the rest, and every later frame,
    to one flushing greenlet), the model's frames read by a greenlet of their own."""

    __slots__ = ("appended", "audio", "audio_bytes", "deltas", "fd", "flushing", "pending",
                 "reader", "sock", "write_errors")

    def __init__(self, url: str, headers: list[str], session: dict, greeting: str | None,
                 timeout: float = 10.0) -> None:
        import websocket

        from relay._ws import client_frame

        ws = websocket.WebSocket(enable_multithread=False, skip_utf8_validation=True)
        ws.settimeout(timeout)
        ws.connect(url, header=headers, suppress_origin=True)
        ws.settimeout(None)
        self.sock = ws.sock
        self.fd = self.sock.fileno()
        self.audio = bytearray()        # the caller's audio (or silence) not appended yet
        self.pending = bytearray()      # appends a write did not take, in order
        self.flushing = False
        self.appended = self.audio_bytes = self.deltas = self.write_errors = 0
        self.sock.sendall(client_frame(json.dumps({"type": "session.update",
                                                   "session": session})))
        if greeting:
            self.sock.sendall(client_frame(json.dumps(
                {"type": "response.create", "response": {"instructions": greeting}})))
        self.reader = gevent.spawn(self._read)

    def add(self, audio: bytes, append_frame, chunk: int = APPEND_BYTES) -> None:
        """Audio (or silence) for the model: appended once `chunk` bytes are waiting."""
        self.audio += audio
        if len(self.audio) >= chunk:
            self.append(bytes(self.audio), append_frame)
            self.audio.clear()

    def append(self, audio: bytes, append_frame) -> None:
        frame = append_frame(audio)
        self.appended += 1
        if self.flushing:
            self.pending += frame
            return
        try:
            written = os.write(self.fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            self.write_errors += 1
            return
        if written < len(frame):
            self.pending += frame[written:]
            self.flushing = True
            gevent.spawn(self._flush)

    def _flush(self) -> None:
        try:
            while self.pending:
                data, self.pending = bytes(self.pending), bytearray()
                self.sock.sendall(data)
        except OSError:
            self.write_errors += 1
        finally:
            self.flushing = False

    def _read(self) -> None:
        from relay._events import audio_delta
        from relay._ws import FrameReader

        frames, recv = FrameReader(), self.sock.recv
        try:
            while True:
                data = recv(65536)
                if not data:
                    return
                for opcode, payload in frames.feed(data):
                    if opcode == 1:
                        parsed = audio_delta(payload, None)
                        if parsed is not None:
                            self.deltas += 1
                            self.audio_bytes += len(parsed[2])
        except Exception as exc:     # a reset, a protocol error: this call's leg ends
            log.debug("model leg ended: %s", exc)

    def close(self) -> None:
        self.reader.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass


class Stream:
    """One call's RTP: where to send, the send state, and the stand-in agent's turn state."""

    __slots__ = ("heard", "last_rx", "left", "leg", "marker", "remote", "rx", "rx_at_reply",
                 "seq", "ssrc", "ts")

    def __init__(self, remote: tuple[str, int], ssrc: int, now: float, silence_s: float
                 ) -> None:
        self.remote = remote
        self.ssrc = ssrc
        self.seq = ssrc & 0xFFFF
        self.ts = 0
        self.left = 0                 # frames of the current reply still to send
        self.marker = False
        self.rx = 0
        self.rx_at_reply = 0
        self.heard = True             # the greeting: answer at once
        self.last_rx = now - silence_s
        self.leg: ModelLeg | None = None


class Floor:
    def __init__(self, ari, host: str, reply_frames: int, silence_s: float,
                 model: dict | None = None) -> None:
        from relay._rtp import build_rtp
        from relay._ws import append_frame
        from relay.sim.pbx.sounds import tone_ulaw

        self.ari = ari
        self.model = model          # url, headers, session, greeting: the model leg, or None
        self.append_frame = append_frame
        self.build_rtp = build_rtp
        self.sock = socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        self.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.reply_frames = reply_frames
        self.silence_s = silence_s
        tone = tone_ulaw(440)
        self.frames = [tone[i:i + FRAME_BYTES] for i in range(0, len(tone), FRAME_BYTES)]
        self.streams: dict[tuple[str, int], Stream] = {}
        self.slots: list[list[Stream]] = [[] for _ in range(SLOTS)]
        self.calls: dict[str, dict] = {}        # caller channel id -> its resources
        self._media_in_app: dict[str, gevent.event.Event] = {}   # media channel id -> its entry
        self.ids = itertools.count(1)
        self.wake = gevent.event.Event()
        self.received = self.sent = self.strangers = self.send_errors = 0
        self.legs_failed = 0
        self.legs_ended: list[ModelLeg] = []
        self.greenlets: list[gevent.Greenlet] = []

    def start(self) -> None:
        self.greenlets = [gevent.spawn(self.receive_loop), gevent.spawn(self.pace)]

    def stop(self) -> None:
        for call_id in list(self.calls):
            self.teardown(call_id)
        gevent.killall(self.greenlets)
        self.sock.close()

    # media: the hot path
    def receive_loop(self) -> None:
        recvfrom, streams, clock = self.sock.recvfrom, self.streams, time.monotonic
        append_frame = self.append_frame
        while True:
            try:
                data, addr = recvfrom(2048)
            except OSError:
                gevent.sleep(0.01)
                continue
            self.received += 1
            stream = streams.get(addr)
            if stream is None:
                self.strangers += 1
                continue
            stream.last_rx = clock()
            stream.rx += 1
            stream.heard = True
            if stream.leg is not None:      # the simulated PBX's header: 12 bytes, no CSRC
                stream.leg.add(data[12:], append_frame)

    def pace(self) -> None:
        clock, slots, frames = time.monotonic, self.slots, self.frames
        sendto, build_rtp, append_frame = self.sock.sendto, self.build_rtp, self.append_frame
        silence_s, reply_frames = self.silence_s, self.reply_frames
        epoch, n = clock(), 0
        while True:
            if not self.streams:
                self.wake.clear()
                self.wake.wait()
                epoch, n = clock(), 0
            now = clock()
            due = epoch + n * SLOT_S
            if due > now:
                gevent.sleep(due - now)
                continue
            for s in slots[n % SLOTS]:
                if s.leg is not None and now - s.last_rx >= 2 * FRAME_S:   # the caller is silent
                    s.leg.add(SILENCE_FRAME, append_frame, LONG_APPEND_BYTES
                              if now - s.last_rx >= LONG_SILENCE_S else APPEND_BYTES)
                if s.left and s.rx - s.rx_at_reply >= BARGE_IN_PACKETS:
                    s.left = 0                    # the caller talks over the reply
                if not s.left:
                    if not (s.heard and now - s.last_rx >= silence_s):
                        continue
                    s.heard = False               # the caller's turn is over: answer
                    s.left = reply_frames
                    s.rx_at_reply = s.rx
                    s.marker = True
                s.left -= 1
                s.seq = (s.seq + 1) & 0xFFFF
                s.ts = (s.ts + FRAME_BYTES) & 0xFFFFFFFF
                try:
                    sendto(build_rtp(0, s.marker, s.seq, s.ts, s.ssrc,
                                     frames[s.left % len(frames)]), s.remote)
                    self.sent += 1
                except OSError:
                    self.send_errors += 1
                s.marker = False
            n += 1

    def add_stream(self, remote: tuple[str, int]) -> Stream:
        stream = Stream(remote, hash(remote) & 0xFFFFFFFF, time.monotonic(), self.silence_s)
        min(self.slots, key=len).append(stream)
        self.streams[remote] = stream
        self.wake.set()
        return stream

    def remove_stream(self, remote: tuple[str, int]) -> None:
        stream = self.streams.pop(remote, None)
        if stream is not None:
            for slot in self.slots:
                if stream in slot:
                    slot.remove(stream)

    # ARI: only while calls start and end
    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        channel = event.get("channel") or {}
        call_id = channel.get("id", "")
        if kind == "StasisStart":
            if (MEDIA_DATA in (event.get("args") or [])
                    or str(channel.get("name", "")).startswith("UnicastRTP/")
                    or call_id in self.calls):
                self._media_in_app.setdefault(call_id, gevent.event.Event()).set()
                return
            call = self.calls[call_id] = {"n": next(self.ids), "ended": False, "remote": None}
            call["setup"] = gevent.spawn(self.setup, call_id, call)
        elif kind in GONE and call_id in self.calls and not self.calls[call_id]["ended"]:
            self.calls[call_id]["ended"] = True
            gevent.spawn(self.teardown, call_id)

    def setup(self, call_id: str, call: dict) -> None:
        from relay.ari import AriError

        n = call["n"]
        call["bridge"], call["media"] = f"floor-br-{n}", f"floor-em-{n}"
        try:
            self.ari.answer(call_id)
            self.ari.create_bridge(call["bridge"], "mixing")
            channel = self.ari.external_media(call["media"], f"{self.host}:{self.port}",
                                              "ulaw", data=MEDIA_DATA)
            variables = channel.get("channelvars") or {}
            remote = (str(variables["UNICASTRTP_LOCAL_ADDRESS"]),
                      int(variables["UNICASTRTP_LOCAL_PORT"]))
            call["remote"] = remote
            stream = self.add_stream(remote)
            if self.model is not None:
                try:
                    stream.leg = call["leg"] = ModelLeg(**self.model)
                except Exception as exc:    # the caller still hears the stand-in agent
                    self.legs_failed += 1
                    log.warning("call %s: the model leg failed: %s", call_id, exc)
            # Asterisk answers externalMedia before the channel enters the app: bridge it once
            # its StasisStart came, asking again after a 422 (as relay does)
            self._media_in_app.setdefault(call["media"], gevent.event.Event()).wait(3.0)
            self.ari.add_channel_once_in_app(call["bridge"], [call_id, call["media"]])
        except (AriError, KeyError, ValueError) as exc:
            if not call["ended"]:
                log.warning("call %s: setup failed: %s", call_id, exc)

    def teardown(self, call_id: str) -> None:
        from relay.ari import AriError

        call = self.calls.get(call_id)
        if call is None:
            return
        setup = call.get("setup")
        if setup is not None and setup is not gevent.getcurrent():
            setup.join(timeout=10)
        self.calls.pop(call_id, None)
        self._media_in_app.pop(call.get("media", ""), None)
        if call["remote"] is not None:
            self.remove_stream(call["remote"])
        leg = call.get("leg")
        if leg is not None:
            leg.close()
            self.legs_ended.append(leg)
        for fn, arg in ((self.ari.hangup, call.get("media")),
                        (self.ari.destroy_bridge, call.get("bridge")),
                        (self.ari.hangup, call_id)):
            if arg:
                try:
                    fn(arg)
                except AriError:
                    pass            # already gone


def main(argv: list[str] | None = None) -> int:
    from gevent import monkey

    monkey.patch_all()
    from relay.ari import AriClient, AriEvents

    parser = argparse.ArgumentParser(prog="python -m bench.load.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ari-url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--app", default="floor")
    parser.add_argument("--host", default="127.0.0.1", help="where its RTP socket listens")
    parser.add_argument("--reply-ms", type=int, default=3000,
                        help="how long the stand-in agent speaks per turn")
    parser.add_argument("--silence-ms", type=int, default=500,
                        help="caller silence that ends the caller's turn")
    parser.add_argument("--model-url", help="the Realtime endpoint: carry each call's model "
                        "leg too (needs --agent)")
    parser.add_argument("--model", default="gpt-realtime")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--agent", help="the agent config file whose session relay would send")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    ari = AriClient(args.ari_url, args.user, args.password, args.app)
    floor = Floor(ari, args.host, max(1, args.reply_ms // 20), args.silence_ms / 1000.0,
                  model_leg(args) if args.model_url else None)
    ready = gevent.event.Event()
    events = AriEvents(ari.events_url(args.app, f"{args.user}:{args.password}"),
                       on_event=floor.on_event, on_connected=ready.set,
                       on_disconnected=lambda reason: None)
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        floor.start()
        events.start()
        if not ready.wait(30):
            print("floor: ARI events did not connect", file=sys.stderr, flush=True)
            return 1
        print(f"floor: ready, RTP on {floor.host}:{floor.port}", flush=True)
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        floor.stop()
        events.stop()
        ari.close()
    print(f"floor: stopped (received {floor.received}, sent {floor.sent}, strangers "
          f"{floor.strangers}, send errors {floor.send_errors})", flush=True)
    if floor.model is not None:
        legs = floor.legs_ended
        print(f"floor: model legs {len(legs)} (failed {floor.legs_failed}), appends "
              f"{sum(leg.appended for leg in legs)}, write errors "
              f"{sum(leg.write_errors for leg in legs)}, audio deltas "
              f"{sum(leg.deltas for leg in legs)} ({sum(leg.audio_bytes for leg in legs)} "
              "bytes)", flush=True)
    return 0


def model_leg(args: argparse.Namespace) -> dict:
    """What each call's ModelLeg is opened with: relay's own URL, headers and session for the
    agent, and its greeting."""
    from pathlib import Path

    from relay.config import load_agent
    from relay.realtime_endpoint import auth_headers, realtime_url
    from relay.realtime_events import session_config

    if not args.agent:
        raise SystemExit("--model-url needs --agent")
    agent = load_agent(Path(args.agent))
    return {"url": realtime_url(args.model_url, args.model),
            "headers": auth_headers("bearer", args.api_key),
            "session": session_config(agent), "greeting": agent.greeting_instructions}


if __name__ == "__main__":
    sys.exit(main())
