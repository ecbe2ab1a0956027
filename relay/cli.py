"""The `relay` command line: one subcommand per job, each in the module that owns it.

A command module has `add_arguments(parser)` and `run(args) -> int`. gevent's monkey patching
happens here, first, before anything else imports a socket.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("relay.demo", "run relay on the simulated PBX and model with scripted callers"),
    "call": ("relay.outbound.cli", "place one outbound call through a running relay (its API)"),
    "check": ("relay.check.cli", "check the settings, Asterisk (ARI, media both ways) and the "
              "model before the first call"),
    "serve": ("relay.serve", "run a relay worker against the configured Asterisk and model"),
    "sim-pbx": ("relay.sim.pbx.cli", "run the simulated Asterisk (ARI + RTP + scripted callers)"),
    "sim-model": ("relay.sim.model.cli", "run the simulated OpenAI Realtime model"),
    "db": ("relay.history.db_cli", "upgrade the call-history database's schema, or print "
           "its version"),
}


def main(argv: list[str] | None = None) -> int:
    from gevent import monkey

    monkey.patch_all()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="relay", description="AI voice agent media relay")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {name: sub.add_parser(name, help=help_text, description=help_text)
               for name, (_, help_text) in COMMANDS.items()}
    # Import only the chosen command's module: a command starts fast and alone.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    if chosen in COMMANDS:
        module = importlib.import_module(COMMANDS[chosen][0])
        module.add_arguments(parsers[chosen])
    args = parser.parse_args(argv)
    assert module is not None
    return int(module.run(args) or 0)
