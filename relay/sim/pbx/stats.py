"""Aggregated figures of what the relay sent to the simulated PBX, for load benchmarks.

Owns: turning the RTP captures of many externalMedia channels and the callers' turn latencies
into a few numbers over a time window, so that a benchmark of 1,000 calls gets a summary instead
of millions of timestamps: packets received, sequence gaps, the pacing error of the relay's RTP
as it arrives here, and what the callers experienced: turn latency, and how long the agent
went on after a caller started talking over it. Reads only; no I/O, no clock.

Pacing error, two views of the same arrivals (milliseconds, within talkspurts):
- inter-arrival deviation: |gap - 20 ms| between consecutive packets (sequence step 1);
- lateness against the ideal schedule: packet k of a talkspurt is due at
  t_a + 20 ms x (seq_k - seq_a), where a is the talkspurt's packet that arrived earliest
  against that schedule; lateness = arrival - due, >= 0. A constant transit delay cancels out;
  a pacer that drifts or bursts does not.
A talkspurt starts at a marker bit, an SSRC change, a sequence jump, or a gap over `pause_ms`.
The arrivals are the kernel's receive stamps (relay/_udp.pyx SocketSet, Linux), so neither
figure includes this process's own delay in reading them (a CPU shared with the simulated
model, its hub busy sending); where stamps are missing they are read times, which do. Compare
them with a reference measured the same way, not with zero.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from relay.sim.pbx.capture import RtpCapture, _percentile

FRAME_MS = 20.0
PAUSE_MS = 200.0
MAX_SEQ_GAP = 3000            # a larger forward jump is a new stream, not loss


def summary(values: list[float]) -> dict:
    """count, mean, p50, p90, p99, p99.9 and max of values (sorted here)."""
    values.sort()
    n = len(values)
    return {"count": n, "mean": sum(values) / n if n else 0.0,
            "p50": _percentile(values, 0.50), "p90": _percentile(values, 0.90),
            "p99": _percentile(values, 0.99), "p999": _percentile(values, 0.999),
            "max": values[-1] if n else 0.0}


class WindowStats:
    """Accumulates captures over [since, until) (monotonic seconds); result() summarises."""

    def __init__(self, since: float, until: float, pause_ms: float = PAUSE_MS,
                 frame_ms: float = FRAME_MS) -> None:
        self.since = since
        self.until = until
        self.pause_s = pause_ms / 1000.0
        self.frame_s = frame_ms / 1000.0
        self.packets = 0
        self.streams = 0
        self.talkspurts = 0
        self.seq_gaps = 0
        self.duplicates = 0
        self.reordered = 0
        self.deviation_ms: list[float] = []
        self.lateness_ms: list[float] = []
        self.turn_ms: list[float] = []
        self.barge_in_ms: list[float] = []

    def add_capture(self, cap: RtpCapture) -> None:
        times, hdr, tss = cap.times, cap.hdr, cap.tss
        lo = bisect_left(times, self.since)
        hi = bisect_left(times, self.until)
        if hi <= lo:
            return
        self.streams += 1
        self.packets += hi - lo
        frame_s, pause_s = self.frame_s, self.pause_s
        deviation = self.deviation_ms
        spurt: list[float] = []        # arrival - k x 20 ms of the talkspurt's packets
        prev_t = prev_seq = prev_ssrc = -1
        seq0 = 0
        t0 = 0.0
        for i in range(lo, hi):
            t = times[i]
            h = hdr[i]
            seq = h >> 48
            ssrc = tss[i] & 0xFFFFFFFF
            step = (seq - prev_seq) & 0xFFFF
            new = prev_seq < 0 or ssrc != prev_ssrc or bool(h & 2) or t - prev_t > pause_s
            if prev_seq >= 0 and ssrc == prev_ssrc:
                if step == 0:
                    self.duplicates += 1
                elif step >= 0x8000:
                    self.reordered += 1
                elif step <= MAX_SEQ_GAP:
                    self.seq_gaps += step - 1
                if step == 0 or step > MAX_SEQ_GAP:
                    new = True
            if new:
                self._close_spurt(spurt)
                spurt = []
                seq0, t0 = seq, t
                self.talkspurts += 1
            elif step == 1:
                deviation.append(abs((t - prev_t) - frame_s) * 1000.0)
            spurt.append(t - t0 - ((seq - seq0) & 0xFFFF) * frame_s)
            prev_t, prev_seq, prev_ssrc = t, seq, ssrc
        self._close_spurt(spurt)

    def _close_spurt(self, spurt: list[float]) -> None:
        if not spurt:
            return
        best = min(spurt)
        self.lateness_ms.extend((x - best) * 1000.0 for x in spurt)

    def add_turns(self, turns: Iterable[tuple[float, float]]) -> None:
        """(end of the caller's speech, latency in seconds) pairs; those ending in the window
        count."""
        self._add(turns, self.turn_ms)

    def add_barge_ins(self, barge_ins: Iterable[tuple[float, float]]) -> None:
        """(the caller began talking over the agent, seconds until the agent's last packet)
        pairs; those beginning in the window count."""
        self._add(barge_ins, self.barge_in_ms)

    def _add(self, pairs: Iterable[tuple[float, float]], into: list[float]) -> None:
        for at, seconds in pairs:
            if self.since <= at < self.until:
                into.append(seconds * 1000.0)

    def result(self) -> dict[str, Any]:
        return {
            "since": self.since, "until": self.until, "packets": self.packets,
            "streams": self.streams, "talkspurts": self.talkspurts,
            "seq_gaps": self.seq_gaps, "duplicates": self.duplicates,
            "reordered": self.reordered,
            "interarrival_deviation_ms": summary(self.deviation_ms),
            "lateness_ms": summary(self.lateness_ms),
            "turn_latency_ms": summary(self.turn_ms),
            "barge_in_heard_ms": summary(self.barge_in_ms),
        }
