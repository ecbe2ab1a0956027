"""`python -m bench.load.relay_serve [relay serve options]`: `relay serve`, plus a record of
the garbage collector's pauses.

Owns: one hook around relay's own command line (relay.cli.main(["serve", ...]), which does
gevent's monkey patching first, exactly as `relay serve` does): a gc callback timing every
collection by generation. A pause stops every greenlet, the pacer included, so the load
benchmark reports them beside the pacing figures. On SIGUSR1, and when relay stops, it prints
one line `bench-gc {json}` with the totals so far; the benchmark asks at both ends of its
window and takes the difference. The callback costs two clock reads per collection.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import time

PAUSE_EDGES_MS = (1, 5, 10, 20, 50, 100, 200)


class GcPauses:
    """Collections, total and longest pause per generation, and pauses by length."""

    def __init__(self) -> None:
        self.started = 0.0
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.over_ms = dict.fromkeys(PAUSE_EDGES_MS, 0)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        pause = time.perf_counter() - self.started
        gen = info.get("generation", 0)
        self.count[gen] += 1
        self.seconds[gen] += pause
        if pause > self.longest[gen]:
            self.longest[gen] = pause
        ms = pause * 1000.0
        for edge in PAUSE_EDGES_MS:
            if ms > edge:
                self.over_ms[edge] += 1

    def snapshot(self) -> dict:
        return {"count": list(self.count), "seconds": list(self.seconds),
                "longest_ms": [x * 1000.0 for x in self.longest],
                "over_ms": {str(k): v for k, v in self.over_ms.items()}}

    def report(self, *_: object) -> None:
        print("bench-gc " + json.dumps(self.snapshot()), flush=True)


def main(argv: list[str]) -> int:
    pauses = GcPauses()
    gc.callbacks.append(pauses.callback)
    signal.signal(signal.SIGUSR1, pauses.report)
    from relay.cli import main as relay_main

    try:
        return relay_main(["serve", *argv])
    finally:
        pauses.report()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
