"""`python -m bench` (make bench): the micro-benchmarks, then the end-to-end load benchmark.

    python -m bench                        # everything
    python -m bench micro                  # every micro-benchmark, no load run
    python -m bench g711 rtp               # the micro-benchmarks whose module names match
    python -m bench load [--calls 100,300 --window 20 ...]    # the load run only
    python -m bench load --help                               # its options
    python -m bench history [--rows 20000]                    # history search at scale
    python -m bench history-writer [--calls 300]              # history writes under load

Each micro-benchmark module bench/bench_*.py has a `run() -> list[Row]`; their table goes to
stdout and bench/out/micro.json. The load benchmark is bench/bench_load.py (bench/load/).
"""

from __future__ import annotations

# First, before any benchmark imports anything: some need cooperative sockets, and patching
# later (bench_sim_pbx used to) walks every existing object, touched openai's lazy client proxy
# and hung in a half-patched subprocess (ctypes' ldconfig) under trio's import.
from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402
import json  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import bench  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
NOT_MICRO = {"bench_load", "bench_history_search", "bench_history_writer"}


def _modules(selected: list[str]) -> list[str]:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_") and m.name not in NOT_MICRO
    )
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    return names


def micro(selected: list[str]) -> int:
    rows = []
    for name in _modules(selected):
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["history-writer"]:     # alone: it paces live calls for a minute
        from bench import bench_history_writer

        return bench_history_writer.main(argv[1:])
    if argv[:1] == ["history"]:     # alone: it fills a million calls into two databases
        from bench import bench_history_search

        return bench_history_search.main(argv[1:])
    names = []
    while argv and not argv[0].startswith("-"):
        names.append(argv.pop(0))
    load_args = argv
    want_load = not names or "load" in names
    micro_names = [n for n in names if n not in ("load", "micro")]
    # options alone (python -m bench --calls 100, --help) are the load benchmark's
    want_micro = (not names and not load_args) or "micro" in names or bool(micro_names)
    if load_args and not want_load:
        print(f"options {' '.join(load_args)} are for the load benchmark: "
              "python -m bench load --help", file=sys.stderr)
        return 2
    status = 0
    if want_micro:
        status |= micro(micro_names)
    if want_load:
        from bench import bench_load

        if want_micro:
            print()
        status |= bench_load.main(load_args)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
