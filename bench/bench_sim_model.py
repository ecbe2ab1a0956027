"""The simulated model's CPU per simulated call, receiving input_audio_buffer.append (reporting).

Two figures, per append event (one 20 ms u-law frame, i.e. 50 per second per call):
- the sans-IO session alone (`RealtimeSession.receive`: JSON, validation, VAD framing);
- the whole server with N concurrent WebSocket calls on 127.0.0.1, measured as the process's CPU
  time over the run divided by the frames sent. The clients send pre-built masked frames and
  drain the replies, so almost all of that CPU is the model's. The session figure is the
  reference: the ratio shows what the WebSocket shell costs on top.
The audio is a caller phrase followed by silence, repeated, so the VAD, commits and
transcription run as in a call (create_response is off: no model speech in this measurement).
"""

from __future__ import annotations

import base64
import os
import struct
import time

import gevent
import ujson
from gevent import socket

from bench.harness import FRAME_MS, Row, time_per_call_ns
from relay.sim import speech
from relay.sim.model import RealtimeSession, SimModel

KEY = "sk-bench"
CALLS = int(os.environ.get("BENCH_SIM_MODEL_CALLS", "100"))
SECONDS = float(os.environ.get("BENCH_SIM_MODEL_SECONDS", "4"))
SESSION = {"type": "realtime", "audio": {
    "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"},
              "turn_detection": {"type": "server_vad", "create_response": False}},
    "output": {"format": {"type": "audio/pcmu"}}}}


def _call_audio(seconds: float) -> list[bytes]:
    """20 ms u-law frames: a phrase and a second of silence, repeated."""
    turn = speech.utterance_ulaw("I would like a refund for my order") + b"\xff" * 8000
    frames = int(seconds * 1000 / FRAME_MS)
    audio = (turn * (frames * 160 // len(turn) + 1))[:frames * 160]
    return [audio[i:i + 160] for i in range(0, len(audio), 160)]


def _append_texts(frames: list[bytes]) -> list[str]:
    return [ujson.dumps({"type": "input_audio_buffer.append",
                         "audio": base64.b64encode(f).decode()},
                        escape_forward_slashes=False) for f in frames]  # as relay sends them


def _masked(text: str) -> bytes:
    """A client text frame (mask key 0: the server still unmasks it)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + b"\0\0\0\0" + data


def _bench_session(texts: list[str]) -> float:
    session = RealtimeSession()
    session.receive(ujson.dumps({"type": "session.update", "session": SESSION}), 0.0)
    feed = iter(texts * 1000)

    def one() -> None:
        session.receive(next(feed), 0.0)

    return time_per_call_ns(one, calls=len(texts), repeat=3)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {KEY}\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("no upgrade")
        reply += chunk
    if b" 101 " not in reply.split(b"\r\n", 1)[0]:
        raise ConnectionError(reply[:100])
    return sock


def _drain(sock: socket.socket, done: gevent.event.Event) -> None:
    seen = b""
    while b'"barrier"' not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            break
        seen = seen[-64:] + chunk
    done.set()


def _bench_server(frames: list[bytes], calls: int) -> float:
    payload = [_masked(t) for t in _append_texts(frames)]
    bursts = [b"".join(payload[i:i + 10]) for i in range(0, len(payload), 10)]
    setup = _masked(ujson.dumps({"type": "session.update", "session": SESSION}))
    barrier = _masked(ujson.dumps({"type": "conversation.item.retrieve", "item_id": "none",
                                   "event_id": "barrier"}))
    with SimModel(api_key=KEY, max_connections=calls + 10) as model:
        socks = [_connect(model.port) for _ in range(calls)]
        for sock in socks:
            sock.sendall(setup)
        model.wait_until(lambda: len(model.sessions) == calls, timeout=30)
        dones = [gevent.event.Event() for _ in socks]
        readers = [gevent.spawn(_drain, s, d) for s, d in zip(socks, dones)]

        def send(sock: socket.socket) -> None:
            for burst in bursts:
                sock.sendall(burst)
                gevent.sleep(0)  # interleave the calls, as real time would
            sock.sendall(barrier)

        cpu = time.process_time()
        senders = [gevent.spawn(send, s) for s in socks]
        gevent.joinall(senders, timeout=120, raise_error=True)
        for done in dones:
            done.wait(120)
        cpu = time.process_time() - cpu
        gevent.killall(readers)
        for sock in socks:
            sock.close()
    return cpu * 1e9 / (calls * len(frames))


def run() -> list[Row]:
    frames = _call_audio(SECONDS)
    texts = _append_texts(frames)
    session_ns = _bench_session(texts)
    server_ns = _bench_server(frames, CALLS)
    per_call = server_ns * (1000 / FRAME_MS) / 1e9 * 100  # % of one core per call
    return [
        Row("sim-model session.receive(append)", session_ns, 160, "-", None),
        Row(f"sim-model {CALLS} calls: {per_call:.2f}%core/call", server_ns, 160,
            "session.receive alone", session_ns),
    ]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
