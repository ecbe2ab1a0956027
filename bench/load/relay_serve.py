"""`python -m bench.load.relay_serve [relay serve options]`: `relay serve`, plus a record of
the garbage collector's pauses.

Owns: one hook around relay's own command line (relay.cli.main(["serve", ...]), which does
gevent's monkey patching first, exactly as `relay serve` does): a gc callback timing every
collection by generation (relay.gc_pauses.GcPauses, the worker's own, plus pauses by
length). A pause stops every greenlet, the pacer included, so the load
benchmark reports them beside the pacing figures. On SIGUSR1, and when relay stops, it prints
one line `bench-gc {json}` with the totals so far; the benchmark asks at both ends of its
window and takes the difference. The callback costs two clock reads per collection.
"""

from __future__ import annotations

import json
import signal
import sys

from gevent import monkey

monkey.patch_all()      # before relay's modules, as `relay serve` does (relay.cli.main)

import relay.gc_pauses  # noqa: E402  (after the patching)

PAUSE_EDGES_MS = (1, 5, 10, 20, 50, 100, 200)


class GcPauses(relay.gc_pauses.GcPauses):
    """relay's own hook (per generation: count, total, longest), plus pauses by length."""

    def __init__(self) -> None:
        super().__init__()
        self.over_ms = dict.fromkeys(PAUSE_EDGES_MS, 0)

    def observed(self, pause_s: float) -> None:
        ms = pause_s * 1000.0
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
    pauses.install()
    signal.signal(signal.SIGUSR1, pauses.report)
    from relay.cli import main as relay_main

    try:
        return relay_main(["serve", *argv])
    finally:
        pauses.report()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
