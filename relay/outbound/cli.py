"""`relay call ENDPOINT --agent A --var k=v ...`: place one outbound call through a running relay.

Owns: the command's arguments and one request to the running relay's operations API
(POST /api/calls at web.host:web.port, with web.token as a Bearer token), then, with --wait,
polling GET /api/dials until the dial's outcome is final. It never dials Asterisk itself: the
relay that takes the call is the one that carries it. Exit status: 0 placed (or, with --wait,
answered), 1 the dial failed or ended without a conversation, 2 bad arguments or no relay.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional

import requests

from relay.config import ConfigError, load_settings

CONNECT_TIMEOUT_S = 3.0
POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", help="the Asterisk endpoint to dial, e.g. "
                        "PJSIP/+15550101@trunk")
    parser.add_argument("--agent", default="", help="the agent (default: agent.active)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a call variable for the agent's {placeholders} and its tools "
                        "(repeatable)")
    parser.add_argument("--caller-id", default="", help='e.g. \'"Shop" <5550100>\' '
                        "(default: outbound.caller_id)")
    parser.add_argument("--ring-timeout", type=int, default=None, metavar="S",
                        help="seconds to ring (default: outbound.ring_timeout_s)")
    amd = parser.add_mutually_exclusive_group()
    amd.add_argument("--amd", dest="amd", action="store_true", default=None,
                     help="answering-machine detection on (default: the agent's setting)")
    amd.add_argument("--no-amd", dest="amd", action="store_false",
                     help="answering-machine detection off")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the outcome (the end of the conversation if answered)")
    parser.add_argument("--wait-timeout", type=float, default=3600.0, metavar="S",
                        help="give up waiting after S seconds (default 3600)")
    parser.add_argument("--config", help="a JSON settings file merged over config/default.json "
                        "(default: $RELAY_CONFIG): where the running relay listens")


def parse_vars(pairs: list[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--var {pair!r}: expected NAME=VALUE")
        variables[name] = value
    return variables


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = load_settings(args.config)
        variables = parse_vars(args.var)
    except (ConfigError, ValueError) as exc:
        print(f"relay call: {exc}", file=err)
        return 2
    web = settings.tree["web"]
    host = "127.0.0.1" if web["host"] in ("0.0.0.0", "::", "") else web["host"]
    base = f"http://{host}:{web['port']}"
    headers = {"Authorization": f"Bearer {web['token']}"} if web["token"] else {}
    body: dict[str, Any] = {"endpoint": args.endpoint, "agent": args.agent,
                            "caller_id": args.caller_id, "variables": variables,
                            "amd": args.amd}
    if args.ring_timeout is not None:
        body["ring_timeout_s"] = args.ring_timeout
    timeout = (CONNECT_TIMEOUT_S, settings.tree["ari"]["request_timeout_s"] + 5.0)
    with requests.Session() as session:
        session.headers.update(headers)
        try:
            response = session.post(f"{base}/api/calls", json=body, timeout=timeout)
        except requests.RequestException as exc:
            print(f"relay call: no relay answers at {base} ({type(exc).__name__}); start one "
                  "with `relay serve` (web.enabled, web.host, web.port)", file=err)
            return 2
        answer = _json(response)
        if response.status_code == 401:
            print(f"relay call: {base} refused the token (web.token)", file=err)
            return 2
        if response.status_code not in (201, 502):
            print(f"relay call: {response.status_code}: {answer.get('error') or answer}",
                  file=err)
            return 2
        dial = answer.get("dial") or {}
        print(json.dumps(dial, indent=2), file=out)
        if response.status_code == 502:
            return 1
        if not args.wait:
            return 0
        final = _wait(session, base, str(dial.get("channel_id", "")), args.wait_timeout, err)
        if final is None:
            return 1
        print(json.dumps(final, indent=2), file=out)
        return 0 if final.get("outcome") == "answered" else 1


def _wait(session: requests.Session, base: str, channel_id: str, timeout_s: float,
          err) -> Optional[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = session.get(f"{base}/api/dials", timeout=(CONNECT_TIMEOUT_S, 10.0))
        except requests.RequestException as exc:
            print(f"relay call: lost the relay while waiting: {exc}", file=err)
            return None
        for dial in _json(response).get("recent") or []:
            if dial.get("channel_id") == channel_id:
                return dial
        time.sleep(POLL_S)
    print(f"relay call: no outcome within {timeout_s:g} s", file=err)
    return None


def _json(response: requests.Response) -> dict:
    try:
        value = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return value if isinstance(value, dict) else {"error": str(value)[:200]}
