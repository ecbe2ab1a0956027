"""The per-call code of the media path, beside the kernel's cost of one loopback datagram.

Owns one question from the load profile: how much of relay's cost per packet is the per-call
code of `CallMedia` (relay/_media.pyx, Cython; the inclusive figures of a py-spy profile also
count the system calls made beneath each function). Measured in the same run:

- `CallMedia.on_rtp`, per caller packet: jitter buffer push and pop, interarrival jitter,
  the append batch (the send to the model is a no-op here);
- `CallMedia.tick`, per 20 ms frame, while the model's audio plays (a frame cut from the
  playout queue and built into RTP; the send is a no-op) and while nothing plays;
- the reference: one datagram of the same size sent and received on 127.0.0.1 (a blocking
  `sendto` then `recv`: the kernel's part of one RTP packet each way, no gevent).

Reported, not judged. Each figure includes the benchmark's own Python per call (a closure,
next(), for the tick the write of `_last_rtp_at`: about 0.1 µs). With one call hot in the CPU's
caches this is the floor of that code; in a worker with hundreds of calls taking turns it costs
several times more (bench/RESULTS.md).
"""

from __future__ import annotations

import _socket  # the C socket module: `make bench` monkey-patches `socket` with gevent's

from bench.harness import Row, time_per_call_ns
from relay._rtp import build_rtp
from relay.call_media import CallMedia

PACKETS = 50_000
FRAME_BYTES = 160
PACKET = build_rtp(0, False, 1, 160, 1234, bytes(FRAME_BYTES))


def _media() -> CallMedia:
    media = CallMedia(model_format="audio/pcmu", send_rtp=lambda packet: None,
                      send_to_model=lambda audio, stamp: None,
                      jitter_adaptive=True)      # as relay runs it (rtp.jitter_adaptive)
    media.start(0.0)
    return media


def _datagram_round_ns() -> float:
    receiver = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    sender = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        target = receiver.getsockname()
        sendto, recv = sender.sendto, receiver.recv

        def one() -> None:
            sendto(PACKET, target)
            recv(2048)

        return time_per_call_ns(one, 20_000)
    finally:
        receiver.close()
        sender.close()


def run() -> list[Row]:
    reference = _datagram_round_ns()
    label = "loopback datagram sendto+recv"

    media = _media()
    packets = iter([build_rtp(0, False, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 1234,
                              bytes(FRAME_BYTES)) for i in range(6 * PACKETS)])
    clock = iter(range(1, 6 * PACKETS + 1))

    def receive() -> None:
        media.on_rtp(next(packets), next(clock) * 0.02)

    playing = _media()
    playing.add_model_audio("item", bytes(FRAME_BYTES * 6 * PACKETS))
    return [
        Row("CallMedia.on_rtp, per packet", time_per_call_ns(receive, PACKETS), len(PACKET),
            label, reference),
        Row("CallMedia.tick playing, per frame", time_per_call_ns(_ticker(playing), PACKETS),
            len(PACKET), label, reference),
        Row("CallMedia.tick idle, per frame", time_per_call_ns(_ticker(_media()), PACKETS),
            len(PACKET), label, reference),
    ]


def _ticker(media: CallMedia):
    """One pacer tick of `media` per call, 20 ms apart, the caller talking (no silence fill)."""
    ticks = iter(range(1, 6 * PACKETS + 1))

    def tick() -> None:
        now = next(ticks) * 0.02
        media._last_rtp_at = now
        media.tick(now)

    return tick
