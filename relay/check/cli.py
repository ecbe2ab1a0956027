"""`relay check [--config FILE] [--json]`: the checks in order, a table (or JSON), exit 0 / 1.

Settings come as for `relay serve` (config/default.json, --config or RELAY_CONFIG, the
environment). A failed settings load stops there; an unreachable ARI skips the media check.
"""

from __future__ import annotations

import argparse
import sys

from relay.check import SKIP, Check, exit_status, media, realtime, report, services
from relay.check import ari as ari_checks
from relay.check import settings as settings_checks
from relay.redact import Redactor, secrets_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a JSON settings file merged over config/default.json "
                        "(default: $RELAY_CONFIG), as for relay serve")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--media-app", default="", metavar="NAME",
                        help="check the media path under this ARI app name (default: the "
                        "configured one, when nobody holds it)")
    parser.add_argument("--local-endpoint", default=media.LOCAL_ENDPOINT, metavar="ENDPOINT",
                        help="the Local channel put in the test bridge; with Echo() in its "
                        "dialplan it verifies audio towards Asterisk (default: "
                        f"{media.LOCAL_ENDPOINT})")


def run_checks(config_file=None, *, media_app: str = "",
               local_endpoint: str = media.LOCAL_ENDPOINT, env=None,
               overrides=None) -> list[Check]:
    settings, checks = settings_checks.check(config_file, overrides=overrides, env=env)
    if settings is None:
        return checks
    usable, free, found = ari_checks.check(settings)
    checks += found
    if usable:
        checks += media.check(settings, settings.get("ari.app"), free, media_app,
                              local_endpoint)
    else:
        checks.append(Check(media.GROUP, "media path", SKIP, "not checked: ARI unusable"))
    checks += realtime.check(settings)
    checks += services.transcriber(settings)
    checks += services.webhooks(settings)
    redactor = Redactor(secrets_of(settings))
    for c in checks:
        c.found, c.fix = redactor.scrub(c.found), redactor.scrub(c.fix)
    return checks


def run(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, media_app=args.media_app,
                        local_endpoint=args.local_endpoint)
    print(report.as_json(checks) if args.json else report.table(checks))
    sys.stdout.flush()
    return exit_status(checks)
