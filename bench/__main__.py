"""`python -m bench` (make bench): run every micro-benchmark module, print a table, write JSON.

Each module bench/bench_*.py has a `run() -> list[Row]`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench

OUT_DIR = Path(__file__).resolve().parent / "out"


def _modules(selected: list[str]) -> list[str]:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    return names


def main(argv: list[str]) -> int:
    rows = []
    for name in _modules(argv):
        module = importlib.import_module(f"bench.{name}")
        rows.extend(module.run())
    header = (f"{'benchmark':34} {'ns/frame':>10} {'MB/s':>9}  {'reference':24} {'ref ns':>10} "
              f"{'speedup':>8}  target")
    print(header)
    print("-" * len(header))
    failed = 0
    for row in rows:
        ref = f"{row.reference_ns_per_frame:10.0f}" if row.reference_ns_per_frame else f"{'-':>10}"
        speed = f"{row.speedup:7.2f}x" if row.speedup else f"{'-':>8}"
        if row.min_speedup is None:
            verdict = ""
        else:
            verdict = f">= {row.min_speedup:g}x {'ok' if row.ok else 'MISSED'}"
            failed += not row.ok
        print(
            f"{row.name:34} {row.ns_per_frame:10.0f} {row.mb_per_s:9.1f}  "
            f"{row.reference:24} {ref} {speed}  {verdict}"
        )
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / "micro.json"
    out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
