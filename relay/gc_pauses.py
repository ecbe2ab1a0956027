"""The garbage collector's pauses, as a worker's metrics.

Owns: `GcPauses`, a `gc.callbacks` hook timing every collection of the process (two clock
reads each) into a histogram, and counting the full ones. A collection stops every greenlet of
the worker, the pacer's included: its audio to every caller waits meanwhile, so an operator
who hears hiccups at load looks here first (`relay_gc_pause_seconds`,
`relay_gc_full_collections_total`). Why full collections are rare in a worker:
docs/ARCHITECTURE.md, "Memory and the collector".
"""

from __future__ import annotations

import gc
import time

from relay.metrics import GC_PAUSE_BUCKETS_S, Histogram

FULL = 2        # the oldest generation: a full collection


class GcPauses:
    """Installed while the worker runs (several workers in one process, as in tests, each see
    every collection of the process). Per generation: how many, their total and longest pause
    (the load benchmark's record, bench/load/relay_serve.py, reads those)."""

    def __init__(self) -> None:
        self.histogram = Histogram(GC_PAUSE_BUCKETS_S)
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0

    @property
    def full_collections(self) -> int:
        return self.count[FULL]

    @property
    def longest_full_s(self) -> float:
        return self.longest[FULL]

    def install(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def remove(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        pause = now - self._started
        generation = min(max(int(info.get("generation", 0)), 0), FULL)
        self.count[generation] += 1
        self.seconds[generation] += pause
        if pause > self.longest[generation]:
            self.longest[generation] = pause
        self.histogram.observe(pause)
        self.observed(pause)

    def observed(self, pause_s: float) -> None:
        """A collection just ended (for a subclass that keeps more)."""
