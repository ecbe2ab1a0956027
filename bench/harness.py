"""Timing helpers shared by the benchmarks: best-of-N timing and the result row.

A result is never judged against a fixed number of seconds; it is judged as a ratio to a
reference measured in the same run, on the same machine, moments apart.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

FRAME_MS = 20


def time_per_call_ns(fn: Callable[[], object], calls: int, repeat: int = 5) -> float:
    """Best (lowest) mean nanoseconds per call of fn over `repeat` runs of `calls` calls.

    Best-of-N removes most of the noise of a shared machine: interference only ever adds time.
    """
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter_ns() - start
            best = min(best, elapsed / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


@dataclass
class Row:
    """One benchmark line: relay's figure, the reference's, and the target as a ratio."""

    name: str
    ns_per_frame: float
    bytes_per_frame: int
    reference: str
    reference_ns_per_frame: Optional[float]
    # The target: relay must be at least `min_speedup` times faster than the reference
    # (1.0 = no slower; None = reported only).
    min_speedup: Optional[float] = None

    @property
    def mb_per_s(self) -> float:
        return self.bytes_per_frame / self.ns_per_frame * 1e3  # bytes/ns -> MB/s (1e6 B)

    @property
    def speedup(self) -> Optional[float]:
        if not self.reference_ns_per_frame:
            return None
        return self.reference_ns_per_frame / self.ns_per_frame

    @property
    def ok(self) -> Optional[bool]:
        if self.min_speedup is None or self.speedup is None:
            return None
        return self.speedup >= self.min_speedup

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(mb_per_s=self.mb_per_s, speedup=self.speedup, ok=self.ok)
        return data
