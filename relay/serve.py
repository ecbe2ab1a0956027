"""`relay serve`: run relay against the configured Asterisk and model until signalled.

Owns: logging set-up (every record scrubbed of the secrets), loading settings (errors printed
plainly, exit code 2), and the choice of what this process is:

- one worker (the default, `fleet.workers` 0): the Worker and its dashboard/API server (a busy
  address is a start-up error too) under the configured app name;
- the master of N worker processes (`--workers N`, RELAY_WORKERS): relay.fleet.master;
- one of those workers (started by a master, which hands it the fleet link, relay.fleet.link):
  its own app name and an internal web server on 127.0.0.1 from the master, its start reported
  back, and a drain when the master goes away.

Signals, the same for a lone worker and a fleet worker: SIGTERM drains (no new calls; the live
ones end by themselves for up to --drain-timeout seconds, then the rest are ended cleanly within
--stop-timeout), SIGINT ends every call cleanly at once; a second signal during a drain ends the
calls at once. The exit status is 0 once every call is ended cleanly. SIGHUP is ignored (a
reload is the master's).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from typing import Optional

import gevent
import gevent.event

from relay.config import ConfigError, Settings, load_settings
from relay.fleet.link import WorkerLink
from relay.redact import install_log_redaction, register, secrets_of
from relay.web import WebServer
from relay.worker import Worker

FULL_COLLECTION_AFTER = 100     # middle-generation collections between two full ones (gc's 10)
# The GIL's switch interval (Python's default 5 ms). The history writer and the dashboard's
# store queries run Python in the hub's threadpool; while they do, the hub (the pacer with it)
# waits up to this long for the GIL whenever it wakes.
SWITCH_INTERVAL_S = 0.001

log = logging.getLogger("relay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a JSON settings file merged over config/default.json "
                        "(default: $RELAY_CONFIG)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="run a master and N worker processes behind the app "
                        "(default: fleet.workers, $RELAY_WORKERS; 0: this process is the "
                        "worker)")
    parser.add_argument("--drain-timeout", type=float, default=None, metavar="S",
                        help="on SIGTERM, seconds live calls get to end by themselves before "
                        "they are ended (default: fleet.drain_timeout_s, $DRAIN_TIMEOUT_S)")
    parser.add_argument("--stop-timeout", type=float, default=None, metavar="S",
                        help="seconds the calls being ended get to end cleanly "
                        "(default: fleet.stop_timeout_s)")


def setup_logging(level: str, name: str = "") -> None:
    """The log format and level, and the redaction of every record (relay/redact.py: the
    configured secrets and anything shaped like a key never reach the log)."""
    tag = f"[{name}] " if name else ""
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
    install_log_redaction()


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.workers is not None:
        out["fleet.workers"] = args.workers
    if args.drain_timeout is not None:
        out["fleet.drain_timeout_s"] = args.drain_timeout
    if args.stop_timeout is not None:
        out["fleet.stop_timeout_s"] = args.stop_timeout
    return out


def run(args: argparse.Namespace) -> int:
    try:
        link = WorkerLink.from_environ()
    except RuntimeError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    try:
        overrides = _overrides(args)
        if link is not None:
            overrides.update(link.overrides())
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    register(secrets_of(settings))
    if link is None and settings.get("fleet.workers") > 0:
        setup_logging(settings.get("log.level"))
        from relay.fleet.master import Master

        return Master(settings, settings.get("fleet.workers"), config_file=args.config).run()
    setup_logging(settings.get("log.level"), settings.get("ari.app") if link else "")
    if not settings.get("openai.api_key"):
        log.warning("OPENAI_API_KEY is empty: the model will refuse calls")
    return serve_worker(settings, link)


def serve_worker(settings: Settings, link: Optional[WorkerLink] = None) -> int:
    """Run one Worker (and its web server) until signalled; see the module's docstring."""
    try:
        worker = Worker(settings)
    except OSError as exc:       # e.g. no free RTP port in rtp.port_min..port_max
        print(f"relay: cannot start the worker: {exc}", file=sys.stderr)
        return 2
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
    fleet = settings.tree["fleet"]
    asked: list[str] = []
    signalled = gevent.event.Event()

    def on_signal(mode: str) -> None:
        if asked:
            worker.end_drain_now()      # a second signal: end the calls now
            return
        asked.append(mode)
        signalled.set()

    def on_hangup() -> None:
        log.warning("SIGHUP ignored: a reload needs a master (relay serve --workers N)")

    handlers = [gevent.signal_handler(signal.SIGTERM, on_signal, "drain"),
                gevent.signal_handler(signal.SIGINT, on_signal, "stop"),
                gevent.signal_handler(signal.SIGHUP, on_hangup)]
    # A greenlet's spawning stack (ten frame records) and tree are for debugging: without
    # them a spawn is cheaper and a call's objects are fewer for the collector to walk.
    gevent.config.track_greenlet_tree = False
    worker.start()
    # Everything allocated so far (modules, settings, agents) lives as long as the process:
    # out of the collector's sight, a full collection only walks what calls allocate, and
    # every greenlet (the pacer's included) waits for a shorter pause.
    gc.freeze()
    # A full collection stops every call for as long as it walks the calls' objects (about
    # 40 ms at 1,000 calls), and a finished call leaves nothing for it (Call._let_go): it
    # comes after 100 collections of the middle generation rather than 10 (docs/ARCHITECTURE.md).
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if link is not None:
        link.report_started(settings.get("ari.app"), web.url if web else "", worker.media.port)
        link.watch(lambda: on_signal("drain"))
    signalled.wait()
    if asked[0] == "drain":
        log.info("draining: %d call(s) live, up to %.0f s to end by themselves",
                 len(worker.calls), fleet["drain_timeout_s"])
        worker.drain(fleet["drain_timeout_s"], fleet["stop_timeout_s"])
    else:
        log.info("stopping: ending %d call(s)", len(worker.calls))
        worker.stop(fleet["stop_timeout_s"])
    if web is not None:
        web.stop()
    if link is not None:
        link.close()
    for handler in handlers:
        handler.cancel()
    if worker.calls:
        log.error("stopped with %d call(s) not ended cleanly", len(worker.calls))
        return 1
    return 0
