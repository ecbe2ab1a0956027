"""`relay sim-pbx`: run the simulated Asterisk until SIGINT/SIGTERM, then stop it cleanly.

`--timing realistic` (the default) races REST answers against their events and makes
externalMedia/snoop channels enter Stasis after their answer, as Asterisk does; `--timing instant`
is the old in-order behaviour. `--stasis-entry-ms`, `--command-ms`, `--rest-latency-ms`,
`--event-latency-ms` and `--keep-alive-ms LOW,HIGH` override one range (relay.sim.pbx.timing);
`--http-session-limit` is Asterisk's limit of HTTP connections at once (100). Faults are
added at run time over HTTP (`POST /sim/faults`, relay.sim.pbx.faults).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal

import gevent
from gevent.event import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (HTTP, RTP)")
    parser.add_argument("--port", type=int, default=8088, help="HTTP port (0: any free port)")
    parser.add_argument("--user", default="asterisk", help="ARI user")
    parser.add_argument("--password", default="asterisk", help="ARI password")
    parser.add_argument("--recordings-dir", default=None,
                        help="where the per-call WAV files go (default: a new temp dir)")
    parser.add_argument("--dialplan", action="append", default=[], metavar="CONTEXT=FILE",
                        help="a caller script (JSON file) for Local/x@CONTEXT originates")
    parser.add_argument("--seed", type=int, default=None, help="seed SSRCs and ids")
    parser.add_argument("--no-audio", action="store_true",
                        help="keep only the arrival times and headers of the RTP the relay "
                             "sends, no audio and no WAV files (load tests: memory)")
    parser.add_argument("--timing", choices=("realistic", "instant"), default="realistic",
                        help="realistic (default): REST answers and events race, externalMedia "
                             "and snoop channels enter Stasis after their answer, as in "
                             "Asterisk; instant: everything in order, at once")
    for name, what in (("stasis-entry-ms", "externalMedia/snoop channels entering the app"),
                       ("command-ms", "move, continue and the DELETE teardown"),
                       ("rest-latency-ms", "each REST answer"),
                       ("event-latency-ms", "each event on its WebSocket"),
                       ("keep-alive-ms", "an idle HTTP connection before it is closed "
                                         "(0: never)")):
        parser.add_argument(f"--{name}", type=_range, default=None, metavar="LOW,HIGH",
                            help=f"delay range in ms of {what} (overrides --timing)")
    parser.add_argument("--http-session-limit", type=int, default=100, metavar="N",
                        help="HTTP connections served at once, events WebSockets included, as "
                             "Asterisk's session_limit (default 100; 0: no limit)")


def _range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in ms, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return values[0], values[1]


def timing_from_args(args: argparse.Namespace):
    from relay.sim.pbx.timing import FIELDS, PbxTiming

    overrides = {f: getattr(args, f, None) for f in FIELDS}
    return PbxTiming.named(args.timing,
                           **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from relay.sim.pbx.server import SimPbx

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pbx = SimPbx(args.host, args.port, args.user, args.password, args.recordings_dir,
                 seed=args.seed, keep_audio=not args.no_audio, timing=timing_from_args(args),
                 http_session_limit=args.http_session_limit)
    stop = Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        pbx.start()
        for item in args.dialplan:
            context, _, path = item.partition("=")
            with open(path, encoding="utf-8") as f:
                pbx.register_dialplan(context, json.load(f))
        print(f"sim-pbx: ARI at {pbx.base_url} (user {args.user}), "
              f"events at {pbx.events_url('APP')}, control at "
              f"http://{args.host}:{pbx.port}/sim/inspect, WAVs in {pbx.recordings_dir}, "
              f"timing {args.timing} {pbx.timing.as_dict()}", flush=True)
        stop.wait()
    finally:
        for h in handlers:
            h.cancel()
        pbx.stop()
    print("sim-pbx: stopped", flush=True)
    return 0
