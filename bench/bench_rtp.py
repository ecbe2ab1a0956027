"""RTP parse/build and jitter-buffer micro-benchmarks (relay._rtp) against plain-Python
references measured in the same run.

One frame = one 20 ms G.711 packet: 12-byte header + 160-byte payload = 172 bytes.
"""

from __future__ import annotations

import heapq
import struct
from functools import partial
from itertools import cycle

from bench.harness import Row, time_per_call_ns
from relay._rtp import JitterBuffer, RtpSender, build_rtp, build_rtp_into, parse_rtp_header

PAYLOAD = bytes(range(160))
PACKET_BYTES = 12 + len(PAYLOAD)
CALLS = 20_000

_HEADER = struct.Struct("!BBHII")


class PyRtpError(ValueError):
    pass


def py_parse_rtp_header(data: bytes) -> tuple:
    """The reference: struct-based parse doing the same checks as parse_rtp_header()."""
    n = len(data)
    if n < 12:
        raise PyRtpError("RTP packet too short")
    b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise PyRtpError("RTP version must be 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if offset > n:
        raise PyRtpError("RTP packet too short for its CSRCs")
    if b0 & 0x10:
        if offset + 4 > n:
            raise PyRtpError("RTP packet too short for its extension header")
        offset += 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
        if offset > n:
            raise PyRtpError("RTP header extension runs past the end")
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad > n - offset:
            raise PyRtpError("bad RTP padding")
        end -= pad
    return (b1 & 0x7F, bool(b1 & 0x80), sequence, timestamp, ssrc, offset, end - offset)


def py_build_rtp(payload_type, marker, sequence, timestamp, ssrc, payload) -> bytes:
    return _HEADER.pack(0x80, payload_type | (0x80 if marker else 0), sequence, timestamp,
                        ssrc) + payload


class PyRtpSender:
    """The reference send-side state: the same wrap and marker rules in plain Python."""

    def __init__(self, ssrc: int, sequence: int, timestamp: int) -> None:
        self.ssrc, self.sequence, self.timestamp = ssrc, sequence, timestamp
        self.marker = True

    def build(self, payload: bytes) -> bytes:
        out = _HEADER.pack(0x80, 0x80 if self.marker else 0, self.sequence, self.timestamp,
                           self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        self.marker = False
        return out


class PyReorderBuffer:
    """The reference jitter buffer: dict of waiting payloads + heap of their sequence numbers,
    same rules (extended sequence, duplicates, late, give up on a hole after `depth`)."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.waiting: dict[int, bytes] = {}
        self.heap: list[int] = []
        self.next: int | None = None
        self.highest = 0
        self.lost = self.late = self.duplicate = 0

    def push(self, data: bytes) -> int:
        try:
            _, _, seq, _, _, offset, length = py_parse_rtp_header(data)
        except PyRtpError:
            return 5
        if self.next is None:
            self.next = self.highest = 0x10000 + seq
        ext = self.highest + ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        if ext < self.next:
            self.late += 1
            return 4
        if ext in self.waiting:
            self.duplicate += 1
            return 3
        self.highest = max(self.highest, ext)
        self.waiting[ext] = data[offset:offset + length]
        heapq.heappush(self.heap, ext)
        return 0

    def pop(self) -> bytes | None:
        if not self.heap:
            return None
        first = self.heap[0]
        if first != self.next and len(self.heap) < self.depth:
            return None
        heapq.heappop(self.heap)
        self.lost += first - self.next
        self.next = first + 1
        return self.waiting.pop(first)


def _stream(reorder: bool) -> list[bytes]:
    """One full sequence cycle (65536 packets, so cycling wraps seamlessly at 65535);
    with reorder, every 8th pair swapped."""
    packets = [build_rtp(0, False, seq, (seq * 160) & 0xFFFFFFFF, 0x33840CF3, PAYLOAD)
               for seq in range(65536)]
    if reorder:
        for i in range(4, 65536, 8):
            packets[i], packets[i + 1] = packets[i + 1], packets[i]
    return packets


def _push_pop(buffer, packets: list[bytes]):
    next_packet = cycle(packets).__next__
    push, pop = buffer.push, buffer.pop

    def step():
        push(next_packet())
        while pop() is not None:
            pass
    return step


def _push_pop_timed(buffer, packets: list[bytes]):
    """_push_pop() passing each packet's arrival (one every 20 ms, on time), as CallMedia does
    for an adaptive buffer."""
    next_packet = cycle(packets).__next__
    push, pop = buffer.push, buffer.pop
    now = [0.0]

    def step():
        now[0] += 0.02
        push(next_packet(), now[0])
        while pop() is not None:
            pass
    return step


def run() -> list[Row]:
    rows = []
    packet = build_rtp(0, False, 30192, 160, 0x33840CF3, PAYLOAD)
    assert parse_rtp_header(packet) == py_parse_rtp_header(packet)

    ns = time_per_call_ns(partial(parse_rtp_header, packet), CALLS)
    ref = time_per_call_ns(partial(py_parse_rtp_header, packet), CALLS)
    rows.append(Row("rtp parse_rtp_header", ns, PACKET_BYTES, "struct.unpack_from parser",
                    ref, min_speedup=2.0))

    args = (0, False, 30192, 160, 0x33840CF3, PAYLOAD)
    assert build_rtp(*args) == py_build_rtp(*args)
    ref_build = time_per_call_ns(partial(py_build_rtp, *args), CALLS)
    ns = time_per_call_ns(partial(build_rtp, *args), CALLS)
    rows.append(Row("rtp build_rtp", ns, PACKET_BYTES, "struct.pack + concat", ref_build,
                    min_speedup=1.0))
    out = bytearray(1500)
    ns = time_per_call_ns(partial(build_rtp_into, out, *args), CALLS)
    rows.append(Row("rtp build_rtp_into", ns, PACKET_BYTES, "struct.pack + concat", ref_build,
                    min_speedup=1.0))

    sender, py_sender = RtpSender(0x1234, 0, 0, 0), PyRtpSender(0x1234, 0, 0)
    assert sender.build(PAYLOAD) == py_sender.build(PAYLOAD)
    ref_sender = time_per_call_ns(partial(py_sender.build, PAYLOAD), CALLS)
    ns = time_per_call_ns(partial(sender.build, PAYLOAD), CALLS)
    rows.append(Row("rtp RtpSender.build", ns, PACKET_BYTES, "python sender (struct)",
                    ref_sender, min_speedup=1.0))
    ns = time_per_call_ns(partial(sender.build_into, out, PAYLOAD), CALLS)
    rows.append(Row("rtp RtpSender.build_into", ns, PACKET_BYTES, "python sender (struct)",
                    ref_sender, min_speedup=1.0))

    for reorder, label in ((False, "in order"), (True, "1/8 swapped")):
        packets = _stream(reorder)
        jb, py_jb = JitterBuffer(), PyReorderBuffer()
        ns = time_per_call_ns(_push_pop(jb, packets), CALLS)
        ref = time_per_call_ns(_push_pop(py_jb, packets), CALLS)
        assert jb.lost == jb.late == jb.duplicate == 0 and jb.restarts == 0
        assert py_jb.lost == py_jb.late == py_jb.duplicate == 0
        rows.append(Row(f"rtp jitter push+pop ({label})", ns, PACKET_BYTES,
                        "python dict+heapq buffer", ref, min_speedup=3.0))
        jb = JitterBuffer(depth=1, adaptive=True)
        ns = time_per_call_ns(_push_pop_timed(jb, packets), CALLS)
        assert jb.late <= 1 and jb.duplicate == 0 and jb.restarts == 0   # 1: before it grew
        rows.append(Row(f"rtp jitter push+pop adaptive ({label})", ns, PACKET_BYTES,
                        "python dict+heapq buffer", ref, min_speedup=3.0))
    return rows
