"""What the relay sent back to one externalMedia channel: the RTP capture, its WAV, its pacing.

Owns: recording every received packet compactly (arrival time on the monotonic clock, parsed
header, payload) in arrays, in C (CaptureCore, relay/sim/_sim_rtp.pyx), so the receive path
costs almost nothing; and, only when asked, turning that into packet dicts, pacing
statistics, and 8 kHz PCM16 mono audio laid out by RTP timestamps (gaps silence-filled) written
as a WAV file. No sockets here.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from relay.sim._sim_rtp import CaptureCore

SAMPLE_RATE = 8000
MAX_WAV_SECONDS = 3600


class RtpCapture(CaptureCore):
    """Every RTP packet received on one socket, in arrival order (bounded by max_packets).
    The recording itself (times, hdr, tss, payload, the counts, add()) is CaptureCore's, in
    C (relay/sim/_sim_rtp.pyx); here: reading it back."""

    __slots__ = ("foreign_sources",)

    def __init__(self, max_packets: int = 90_000, keep_audio: bool = True) -> None:
        super().__init__(max_packets, keep_audio)
        self.foreign_sources: set[tuple[str, int]] = set()

    # Columns, unpacked on demand (never on the hot path).
    @property
    def seq(self) -> list[int]:
        return [h >> 48 for h in self.hdr]

    @property
    def plen(self) -> list[int]:
        return [(h >> 32) & 0xFFFF for h in self.hdr]

    @property
    def pt(self) -> list[int]:
        return [(h >> 8) & 0x7F for h in self.hdr]

    @property
    def marker(self) -> list[bool]:
        return [bool(h & 2) for h in self.hdr]

    @property
    def foreign(self) -> list[bool]:
        return [bool(h & 1) for h in self.hdr]

    @property
    def ts(self) -> list[int]:
        return [x >> 32 for x in self.tss]

    @property
    def ssrc(self) -> list[int]:
        return [x & 0xFFFFFFFF for x in self.tss]

    def packets(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """The packets as dicts: t (monotonic), seq, ts, ssrc, pt, marker, len, foreign, payload."""
        out = []
        plens = self.plen
        off = sum(plens[:start])
        stop = len(self.times) if stop is None else min(stop, len(self.times))
        for i in range(start, stop):
            h, x, n = self.hdr[i], self.tss[i], plens[i]
            out.append({
                "t": self.times[i], "seq": h >> 48, "ts": x >> 32, "ssrc": x & 0xFFFFFFFF,
                "pt": (h >> 8) & 0x7F, "marker": bool(h & 2), "len": n, "foreign": bool(h & 1),
                "payload": bytes(self.payload[off:off + n]) if self.keep_audio else b"",
            })
            off += n
        return out

    def stats(self, pause_ms: float = 200.0) -> dict:
        """Counts plus pacing of arrivals (gaps over pause_ms count as pauses, not jitter)."""
        ssrcs = self.ssrc
        out = {"packets": len(self.times), "dropped": self.dropped, "malformed": self.malformed,
               "foreign": self.foreign_count, "ssrcs": len(set(ssrcs)),
               "octets": sum(self.plen)}
        out["pacing"] = pacing_stats(self.times, pause_ms=pause_ms)
        out["jitter_ms"] = interarrival_jitter_ms(self.times, self.ts, ssrcs)
        return out

    def pcm(self) -> bytes:
        """The received audio (u-law or A-law by payload type) as PCM16 at 8 kHz, placed by RTP
        timestamp, gaps filled with silence. A new SSRC starts a new segment placed by its
        arrival time."""
        from relay._g711 import alaw_decode, ulaw_decode

        n = len(self.times)
        if n == 0 or not self.keep_audio:
            return b""
        limit = MAX_WAV_SECONDS * SAMPLE_RATE
        t0 = self.times[0]
        placed: list[tuple[int, int, int, int]] = []  # (sample position, offset, length, type)
        seg_ssrc = None
        base_pos = base_ts = 0
        off = 0
        end = 0
        plens, tss, pts = self.plen, self.tss, self.pt
        for i in range(n):
            plen = plens[i]
            ts, ssrc = tss[i] >> 32, tss[i] & 0xFFFFFFFF
            arrival_pos = round((self.times[i] - t0) * SAMPLE_RATE)
            if ssrc != seg_ssrc:
                seg_ssrc, base_ts = ssrc, ts
                base_pos = max(arrival_pos, 0)
            delta = (ts - base_ts) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            pos = base_pos + delta
            if pos < 0 or abs(pos - arrival_pos) > 60 * SAMPLE_RATE:
                pos = arrival_pos       # a wild timestamp: trust the clock instead
            if 0 <= pos and pos + plen <= limit and pts[i] in (0, 8):
                placed.append((pos, off, plen, pts[i]))
                end = max(end, pos + plen)
            off += plen
        out = bytearray(2 * end)
        payload = self.payload
        for pos, poff, plen, pt in placed:
            decode = alaw_decode if pt == 8 else ulaw_decode
            out[2 * pos:2 * (pos + plen)] = decode(payload[poff:poff + plen])
        return bytes(out)

    def write_wav(self, path: Path | str) -> Path:
        """Write pcm() as an 8 kHz mono 16-bit WAV file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(self.pcm())
        return path


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def pacing_stats(times: Sequence[float], pause_ms: float = 200.0, frame_ms: float = 20.0) -> dict:
    """Inter-packet gap statistics of arrival times (seconds).

    Gaps longer than pause_ms are pauses between talkspurts: counted, not part of the figures.
    `late` counts gaps over 1.5 frames; `early` gaps under half a frame (bursts).
    """
    gaps = [(b - a) * 1000.0 for a, b in pairwise(times)]
    paced = sorted(g for g in gaps if g <= pause_ms)
    n = len(paced)
    mean = sum(paced) / n if n else 0.0
    var = sum((g - mean) ** 2 for g in paced) / n if n else 0.0
    return {
        "packets": len(times),
        "span_s": (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "intervals": n,
        "pauses": len(gaps) - n,
        "mean_ms": mean,
        "stdev_ms": math.sqrt(var),
        "min_ms": paced[0] if n else 0.0,
        "max_ms": paced[-1] if n else 0.0,
        "p50_ms": _percentile(paced, 0.50),
        "p95_ms": _percentile(paced, 0.95),
        "p99_ms": _percentile(paced, 0.99),
        "late": sum(1 for g in paced if g > 1.5 * frame_ms),
        "early": sum(1 for g in paced if g < 0.5 * frame_ms),
    }


def interarrival_jitter_ms(times: Sequence[float], timestamps: Sequence[int],
                           ssrcs: Sequence[int], rate: int = SAMPLE_RATE) -> float:
    """RFC 3550 section 6.4.1 interarrival jitter at the last packet, in milliseconds."""
    jitter = 0.0
    prev = None
    for t, ts, ssrc in zip(times, timestamps, ssrcs):
        if prev is not None and prev[2] == ssrc:
            dts = (ts - prev[1]) & 0xFFFFFFFF
            if dts >= 0x80000000:
                dts -= 0x100000000
            d = (t - prev[0]) * rate - dts
            jitter += (abs(d) - jitter) / 16.0
        prev = (t, ts, ssrc)
    return jitter * 1000.0 / rate
