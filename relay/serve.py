"""`relay serve`: run one worker against the configured Asterisk and model until signalled.

Owns: logging set-up, loading settings (errors printed plainly, exit code 2), starting the
worker's dashboard/API server with it (a busy address is a start-up error too), and the clean
stop on SIGINT/SIGTERM that ends every call properly, then stops the dashboard.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import gevent
import gevent.event

from relay.config import ConfigError, load_settings
from relay.web import WebServer
from relay.worker import Worker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a JSON settings file merged over config/default.json "
                        "(default: $RELAY_CONFIG)")
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds live calls get to end cleanly on SIGTERM")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.get("log.level"))
    if not settings.get("openai.api_key"):
        logging.getLogger("relay").warning("OPENAI_API_KEY is empty: the model will refuse calls")
    worker = Worker(settings)
    web = WebServer(worker) if settings.get("web.enabled") else None
    if web is not None:
        try:
            web.start()
        except OSError as exc:
            print(f"relay: cannot serve the dashboard on {settings.get('web.host')}:"
                  f"{settings.get('web.port')} (web.host/web.port, WEB_HOST/WEB_PORT): {exc}",
                  file=sys.stderr)
            worker.stop(0)
            return 2
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    worker.start()
    stop.wait()
    logging.getLogger("relay").info("stopping: ending %d call(s)", len(worker.calls))
    worker.stop(args.stop_timeout)
    if web is not None:
        web.stop()
    return 0
