"""`relay db upgrade|version`: bring the call-history database's schema up to date, or say
its version.

The database is `--database` if given, else the DATABASE_URL environment variable, else
var/relay.db (a SQLite file, relative to the working folder).
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_SQLITE_PATH = "var/relay.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("upgrade", "version"),
                        help="upgrade: apply the shipped migrations; version: print the "
                             "schema version")
    parser.add_argument("--database", default=None,
                        help="a postgresql:// URL or a SQLite file (default: $DATABASE_URL, "
                             f"else {DEFAULT_SQLITE_PATH})")


def database_location(given: str | None) -> str:
    return given or os.environ.get("DATABASE_URL") or DEFAULT_SQLITE_PATH


def run(args: argparse.Namespace) -> int:
    from relay.history.store import StoreError, open_store

    location = database_location(args.database)
    try:
        with open_store(location) as store:
            if args.action == "upgrade":
                before = store.version()
                reached = store.upgrade()
                print(f"{store.describe()}: schema version {reached}"
                      + (f" (was {before})" if before != reached else " (up to date)"))
            else:
                version = store.version()
                note = "" if version == store.latest_version else (
                    f" (this relay's is {store.latest_version}: run `relay db upgrade`)")
                print(f"{store.describe()}: schema version {version}{note}")
    except StoreError as exc:
        print(f"relay db {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
