"""The end-to-end load benchmark: N concurrent simulated calls through one relay worker.

    python -m bench load                          # N = 100, 300, 500, 1000
    python -m bench load --calls 100,300 --window 20

For each N: one run of relay (the simulated PBX, the simulated model and `relay serve`, each
its own process; see bench/load/runner.py for the timeline), then one run of the floor (the
same PBX, callers and model, bench/load/floor.py in relay's place: the bare UDP receive and
paced send of N streams, and each call's model leg: its audio appended, the model's audio
deltas read and decoded), then one of the UDP floor (the same without the model leg, to show
what the model leg costs; --no-udp-floor skips it). The targets are judged against the floor.
A run during which the machine's other users kept the measured process
from its CPU (run-queue wait over 5% of the window) is repeated once the machine is quieter
(--retries), and the least disturbed run kept. Printed: a cost table (relay's CPU, per call
and per packet, against the floor's; RSS per call; the simulators' CPU and the machine's, to
show when the load generators were the limit) and a quality table (loss both ways, pacing
error at the PBX and at relay's pacer, relay's audio latencies, barge-in reaction, the callers'
turn latency), and the issue's targets judged at the largest N. Written: bench/out/load.json
and the chart bench/out/load.png.

Exit status 1 when a run failed outright (a process died, calls did not come up, channels or
bridges left on the PBX, calls still live after the run); a missed target is reported, not
failed: on a shared machine its figure says as much about the neighbours as about relay.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from bench.load import report
from bench.load.runner import Options, run_floor, run_relay

DEFAULT_CALLS = (100, 300, 500, 1000)
BUSY_WAIT_SHARE = 0.05        # the measured process waited for its CPU longer: a busy machine
QUIET_LOAD = 0.8              # before a retry, wait for the load average to drop under this
QUIET_WAIT_S = 300.0
OUT_DIR = Path(__file__).resolve().parent / "out"


def _calls(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls takes numbers like 100,300: {text!r}"
                                         ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--calls needs at least one positive number")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=_calls, default=list(DEFAULT_CALLS),
                        help="concurrent calls, comma-separated (default 100,300,500,1000)")
    parser.add_argument("--window", type=float, default=25.0,
                        help="seconds of the steady measurement window (default 25)")
    parser.add_argument("--rate", type=float, default=25.0,
                        help="calls started per second during the ramp (default 25)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the last call up and the window (default 3)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the floor runs (both)")
    parser.add_argument("--no-udp-floor", action="store_true",
                        help="skip the UDP floor's runs (the floor without the model leg)")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure an N again (after waiting for a quieter machine) when "
                             "the machine's other users kept relay waiting for its CPU more "
                             "than 5%% of the window; the least disturbed run is kept "
                             "(default 1)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let every process use every CPU (default: relay or the floor "
                             "alone on the last CPU, the simulators on the others)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "load.json",
                        help="the JSON results (default bench/out/load.json)")
    parser.add_argument("--chart", type=Path, default=OUT_DIR / "load.png",
                        help="the PNG chart (default bench/out/load.png)")
    return parser.parse_args(argv)


def _raise_file_limit() -> None:
    """1,000 calls are 1,000 UDP sockets in the PBX and 1,000 WebSockets on both sides of the
    model: the children inherit this process's limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run(calls: list[int], opts: Options, floor: bool = True, retries: int = 0,
        udp_floor: bool = True) -> dict:
    """Every N, relay, the floor, the UDP floor; the document written as JSON (errors
    included)."""
    _raise_file_limit()
    document: dict = {
        "benchmark": "end-to-end load",
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "options": {"rate": opts.rate, "window_s": opts.window_s, "settle_s": opts.settle_s,
                    "pinned": opts.pin, "retries": retries},
        "results": [], "errors": [],
    }
    for n in calls:
        relay = _measured(document, n, "relay", run_relay, opts, retries)
        if relay is None:
            continue
        floor_result = _measured(document, n, "floor", run_floor, opts, retries) \
            if floor else None
        udp_result = _measured(document, n, "floor", run_udp_floor, opts, retries,
                               name="UDP floor") if floor and udp_floor else None
        document["results"].append(report.combine(relay, floor_result, udp_result))
    document["targets"] = report.targets(document["results"])
    return document


def run_udp_floor(calls: int, opts: Options) -> dict:
    return run_floor(calls, opts, model_leg=False)


def _measured(document: dict, n: int, target: str, fn: Callable[[int, Options], dict],
              opts: Options, retries: int, name: Optional[str] = None) -> Optional[dict]:
    """One run of `target` (the measured process; `name` in messages, default `target`) at n
    calls; again (up to `retries` times, after waiting for a quieter machine) while the
    machine's other users kept the measured process waiting for its CPU more than
    BUSY_WAIT_SHARE of the window. The least disturbed attempt is kept, with
    the waits of every attempt. None (and an error recorded) if it failed outright."""
    name = name or target
    attempts: list[dict] = []
    for attempt in range(retries + 1):
        if attempt:
            _wait_for_quiet()
        print(f"load: {n} calls through the {name}"
              f"{f' (attempt {attempt + 1})' if attempt else ''}...", flush=True)
        try:
            attempts.append(fn(n, opts))
        except Exception as exc:
            traceback.print_exc()
            document["errors"].append({"calls": n, "target": name, "error": str(exc)})
            return None
        if attempts[-1]["runqueue_wait_share"].get(target, 0.0) <= BUSY_WAIT_SHARE:
            break
    best = min(attempts, key=lambda r: r["runqueue_wait_share"].get(target, 0.0))
    best["attempts_waited"] = [r["runqueue_wait_share"].get(target) for r in attempts]
    return best


def _wait_for_quiet(limit_s: float = QUIET_WAIT_S) -> None:
    """Until the 1-minute load average is under QUIET_LOAD (bounded)."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] > QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(5)


def problems(document: dict) -> list[str]:
    """What makes the run a failure (not a missed target)."""
    out = [f"{e['target']} at {e['calls']} calls: {e['error']}" for e in document["errors"]]
    for r in document["results"]:
        for side in ("relay", "floor", "udp_floor"):
            res = r.get(side)
            if not res:
                continue
            left = res["leftovers"]
            if left["channels"] or left["bridges"]:
                out.append(f"{side} at {r['calls']} calls left {left['channels']} channels "
                           f"and {left['bridges']} bridges on the PBX")
            if res["pbx"]["calls_left"]:
                out.append(f"{side} at {r['calls']} calls: {res['pbx']['calls_left']} calls "
                           "still live after the run")
            legs = res.get("model_legs")
            if res.get("model_leg") and (legs is None or legs["failed"] or legs["write_errors"]
                                         or legs["calls"] < r["calls"]):
                out.append(f"{side} at {r['calls']} calls: the model leg failed ({legs})")
            if not res["window_complete"]:
                out.append(f"{side} at {r['calls']} calls: not every call was live for the "
                           "whole window (calls ended early or the ramp was too slow)")
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    opts = Options(rate=args.rate, window_s=args.window, settle_s=args.settle,
                   out_dir=args.out.parent / "load", pin=not args.no_pin)
    document = run(args.calls, opts, floor=not args.no_floor, retries=max(0, args.retries),
                   udp_floor=not args.no_udp_floor)
    print()
    print(report.tables(document["results"]))
    print()
    print(report.verdicts(document["targets"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nwrote {args.out}")
    if document["results"]:
        path = report.chart(document["results"], args.chart)
        if path is not None:
            print(f"wrote {path}")
    failures = problems(document)
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
