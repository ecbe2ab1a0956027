"""`relay sim-model`: run the simulated OpenAI Realtime model until SIGINT/SIGTERM.

Owns: the command's options and its process life (start, print where it listens, stop cleanly
on a signal). gevent's monkey patching is already done by relay.cli.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys

import gevent
from gevent.event import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--api-key", default=os.environ.get("SIM_MODEL_API_KEY", "sk-sim-test"),
                        help="the API key clients must send (env SIM_MODEL_API_KEY)")
    parser.add_argument("--auth", choices=("bearer", "api-key"),
                        default=os.environ.get("SIM_MODEL_AUTH", "bearer"),
                        help="how clients must send the key: 'Authorization: Bearer KEY' "
                        "(bearer, OpenAI) or 'api-key: KEY' (api-key, Azure OpenAI; the server "
                        "also answers on /openai/v1/realtime) (env SIM_MODEL_AUTH)")
    parser.add_argument("--script", metavar="FILE",
                        help="script JSON file (format: relay.sim.model.script)")
    parser.add_argument("--session-limit", type=float, default=3600.0, metavar="SECONDS",
                        help="session length limit before session_expired (default 3600)")


def run(args: argparse.Namespace) -> int:
    from relay.sim.model.script import Script
    from relay.sim.model.server import SimModel

    script = None
    if args.script:
        try:
            with open(args.script, encoding="utf-8") as f:
                script = Script.from_dict(json.load(f))
        except (OSError, ValueError) as exc:
            print(f"sim-model: bad script {args.script}: {exc}", file=sys.stderr)
            return 2
    model = SimModel(host=args.host, port=args.port, api_key=args.api_key, script=script,
                     session_limit_s=args.session_limit, auth=args.auth)
    stop = Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        model.start()
        # what lives as long as the process (modules, the script) leaves the collector's sight:
        # full collections only walk what the sessions allocate
        gc.freeze()
        print(f"sim-model listening on {model.url} (control: {model.http_url}/sim/health)",
              flush=True)
        stop.wait()
    except OSError as exc:
        print(f"sim-model: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for handler in handlers:
            handler.cancel()
        model.stop()
    print("sim-model stopped", flush=True)
    return 0
