"""The per-packet I/O paths the load profile showed, each beside the way it was done before.

Owns the before/after figures of the optimisations recorded in bench/RESULTS.md, measured in
the same run:

- RTP receive: draining datagrams waiting on a UDP socket, one gevent `recvfrom` each (the old
  MediaSocket loop) against `_udp.BatchReceiver` (recvmmsg, 32 at a time).
- RTP send: a pacer slot's frames (50 of them: 1,000 calls over 20 slots), one gevent `sendto`
  each against one `_udp.BatchSender` call (sendmmsg).
- Realtime append: encoding one 40 ms input_audio_buffer.append for the socket: the event dict,
  ujson and websocket-client's frame (mask in Python) against the pre-encoded JSON and
  `_ws.client_frame` (mask in C).
- Realtime receive: parsing one 200 ms output_audio.delta frame out of the socket's bytes:
  websocket-client's frame reader against `_ws.FrameReader`.

Per packet (or per message) figures, best of five; no sockets leave 127.0.0.1.
"""

from __future__ import annotations

import base64
import socket as stdlib_socket
import time
from typing import Callable

import ujson
import websocket
from gevent import socket

from bench.harness import Row, time_per_call_ns
from relay import realtime_events as ev
from relay._ws import FrameReader, append_frame

try:
    from relay import _udp
except ImportError:      # not Linux: nothing to compare the one-at-a-time path with
    _udp = None

FRAME = bytes(172)                # one RTP packet: 12-byte header + 20 ms of G.711
SLOT_FRAMES = 50                  # a pacer slot's frames at 1,000 calls


def _socket_pair():
    receiver = socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    receiver.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    return receiver, sender


def _timed(prepare: Callable[[], object], work: Callable[[], object], rounds: int) -> float:
    """Best of five: mean nanoseconds of work(), each run after an untimed prepare()."""
    best = float("inf")
    for _ in range(5):
        total = 0
        for _ in range(rounds):
            prepare()
            start = time.perf_counter_ns()
            work()
            total += time.perf_counter_ns() - start
        best = min(best, total / rounds)
    return best


def _io_rows() -> list[Row]:
    receiver, sender = _socket_pair()
    target = receiver.getsockname()
    address = _udp.pack_address(*target)
    batch_in = _udp.BatchReceiver(receiver.fileno(), 32, 2048)
    batch_out = _udp.BatchSender(sender.fileno(), 256)
    waiting = [(FRAME, address)] * 256
    slot = [(FRAME, address)] * SLOT_FRAMES

    def fill() -> None:
        batch_out.send(waiting)

    def drain() -> None:
        while batch_in.receive():
            pass

    def receive_one_by_one() -> None:
        for _ in range(256):
            receiver.recvfrom(2048)

    def receive_batched() -> None:
        got = 0
        while got < 256:
            got += len(batch_in.receive())

    def send_one_by_one() -> None:
        for _ in range(SLOT_FRAMES):
            sender.sendto(FRAME, target)

    def send_batched() -> None:
        batch_out.send(slot)

    try:
        rows = [
            Row("RTP receive, per datagram", _timed(fill, receive_batched, 50) / 256, len(FRAME),
                "gevent recvfrom each", _timed(fill, receive_one_by_one, 50) / 256, 1.0),
            Row("RTP send, a slot of 50 frames", _timed(drain, send_batched, 200) / SLOT_FRAMES,
                len(FRAME), "gevent sendto each",
                _timed(drain, send_one_by_one, 200) / SLOT_FRAMES, 1.0),
        ]
    finally:
        receiver.close()
        sender.close()
    return rows


def _append_rows() -> list[Row]:
    audio = bytes(range(256)) + bytes(64)         # 40 ms of G.711
    old_frame = websocket.ABNF.create_frame

    def before() -> bytes:
        text = ujson.dumps(ev.input_audio_append(audio), ensure_ascii=False,
                           escape_forward_slashes=False)
        return old_frame(text, websocket.ABNF.OPCODE_TEXT).format()

    def after() -> bytes:   # what relay sends: tests/test_ws_frames.py checks it is the event
        return append_frame(audio)

    assert websocket.ABNF.OPCODE_TEXT == 1
    return [Row("append: event to masked frame", time_per_call_ns(after, 20000), len(audio),
                "dict+ujson+websocket-client", time_per_call_ns(before, 20000), 3.0)]


def _delta_rows() -> list[Row]:
    delta = ujson.dumps({"type": "response.output_audio.delta", "response_id": "resp_1",
                         "item_id": "item_1", "output_index": 0, "content_index": 0,
                         "delta": base64.b64encode(bytes(1600)).decode()}).encode()
    wire = websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, delta).format()

    class Feed:
        data = b""

        def recv(self, n: int) -> bytes:
            out, self.data = self.data[:n], self.data[n:]
            return out

    feed = Feed()
    old_reader = websocket._abnf.frame_buffer(feed.recv, True)
    new_reader = FrameReader()

    def before() -> bytes:
        feed.data = wire
        return old_reader.recv_frame().data

    def after() -> bytes:
        return new_reader.feed(wire)[0][1]

    assert before() == after() == delta
    return [Row("delta: socket bytes to message", time_per_call_ns(after, 20000), 1600,
                "websocket-client frame_buffer", time_per_call_ns(before, 20000), 3.0)]


def run() -> list[Row]:
    rows = _append_rows() + _delta_rows()
    if _udp is not None:
        rows = _io_rows() + rows
    return rows
