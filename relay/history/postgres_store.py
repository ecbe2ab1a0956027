"""The call history in PostgreSQL (several hosts sharing one history; DATABASE_URL).

Owns: the connection pool (psycopg 3 + psycopg_pool; a connection is checked before it is
lent, so a server restarted meanwhile costs a reconnect, not an error; connections are made on
demand (min_size 0) and a failed connect is retried for `reconnect_timeout_s` only, so after
an outage calls reconnect within a few seconds instead of the pool's backoff growing to
minutes; meanwhile they raise StoreUnavailable), transactions (one per
store call; upgrades under pg_advisory_xact_lock so two processes upgrading at once apply each
migration once), JSON as jsonb, the tsvector phrase match, and turning psycopg's errors into
StoreError / StoreUnavailable naming the server (never the password).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from relay.history.store import (
    Migration,
    Store,
    StoreError,
    StoreUnavailable,
    apply_migrations,
    error_text,
)

# pg_advisory_xact_lock key of schema upgrades (any constant; "relay-history" in ASCII digits)
UPGRADE_LOCK_KEY = 72_101_108_097_121


def describe_url(url: str) -> str:
    """host:port/dbname of a PostgreSQL URL, without user or password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (unparsable URL)"
    return (f"PostgreSQL {parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/"
            f"{parts.get('dbname') or ''}")


class PostgresStore(Store):
    """The history store in the PostgreSQL database at `url`, through a pool of at most
    `pool_size` connections (one per thread calling at once is plenty)."""

    dialect = "postgresql"
    placeholder = "%s"
    day_sql = "to_char(to_timestamp(c.started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    turn_values_sql = (
        "LATERAL (SELECT e::float8 AS value FROM jsonb_array_elements_text("
        "CASE WHEN jsonb_typeof(c.turn_latency -> 'values') = 'array' "
        "THEN c.turn_latency -> 'values' ELSE '[]'::jsonb END) e) v")

    def __init__(self, url: str, pool_size: int = 4, connect_timeout_s: float = 5.0,
                 reconnect_timeout_s: float = 2.0) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an integer >= 1, not {pool_size!r}")
        self.url = url
        self.where = describe_url(url)
        self.connect_timeout_s = float(connect_timeout_s)
        connect_timeout = max(1, round(self.connect_timeout_s))
        # One connection first, alone: its error (refused, no such database, bad password)
        # is the clear one to give; the pool would only say it timed out.
        try:
            psycopg.connect(url, connect_timeout=connect_timeout).close()
        except psycopg.Error as exc:
            raise self._fail(exc) from exc
        self._pool = ConnectionPool(
            url, min_size=0, max_size=pool_size, open=False, name="relay-history",
            timeout=self.connect_timeout_s, check=ConnectionPool.check_connection,
            reconnect_timeout=float(reconnect_timeout_s),
            kwargs={"connect_timeout": connect_timeout})
        try:
            self._pool.open(wait=True, timeout=self.connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(f"history database {self.where}: no connection within "
                                   f"{self.connect_timeout_s:g} s") from exc

    def describe(self) -> str:
        return self.where

    def _fail(self, exc: BaseException) -> StoreError:
        transient = isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError,
                                     PoolTimeout))
        cls = StoreUnavailable if transient else StoreError
        return cls(f"history database {self.where}: {error_text(exc).strip()}")

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor]:
        try:
            with self._pool.connection() as conn:
                with conn.cursor() as cursor:
                    yield cursor
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._fail(exc) from exc

    def _read(self):
        return self._transaction()

    def _write(self):
        return self._transaction()

    def _json_in(self, value: Any) -> Any:
        return None if value is None else Jsonb(value)

    def _json_out(self, value: Any) -> Any:
        return value

    def _phrase_filter(self, phrase: list[str]) -> tuple[str, list[Any]]:
        # the planner weighs the GIN index's matches against walking calls by date itself
        return ("c.id IN (SELECT t.call_id FROM transcript t "
                "WHERE t.words @@ phraseto_tsquery('simple', ?))", [" ".join(phrase)])

    def _current_version(self, cursor: psycopg.Cursor) -> int:
        cursor.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        return int(cursor.fetchone()[0])

    def _upgrade_locked(self, cursor: psycopg.Cursor, target: int) -> int:
        # Released at the end of the transaction; a second process upgrading waits here.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK_KEY,))
        cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                       " name text NOT NULL, applied_at double precision NOT NULL)")
        current = self._current_version(cursor)

        def run_script(cur: psycopg.Cursor, sql: str) -> None:
            cur.execute(sql)   # no parameters: several statements in one go

        def record_version(cur: psycopg.Cursor, migration: Migration) -> None:
            cur.execute("INSERT INTO schema_version (version, name, applied_at) "
                        "VALUES (%s, %s, %s)", (migration.version, migration.name, time.time()))

        return apply_migrations(cursor, self.dialect, current, target, run_script,
                                record_version)

    def close(self) -> None:
        """Close the pool and its connections."""
        self._pool.close()
