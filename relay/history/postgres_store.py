"""The call history in PostgreSQL (several hosts sharing one history; DATABASE_URL).

Owns: the connections (psycopg 3, one per OS thread that calls the store: gevent's thread
pool is the pool; a connection found closed or broken, a server restarted meanwhile, is opened
again), transactions (one per store call; upgrades under pg_advisory_xact_lock so two
processes upgrading at once apply each migration once), JSON as jsonb, the tsvector phrase
match, and turning psycopg's errors into StoreError / StoreUnavailable naming the server (never
the password).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
import psycopg.waiting
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

try:  # the real thread-local and lock, even when gevent has patched threading
    from gevent.monkey import get_original

    _thread_local, _allocate_lock = get_original("_thread", ["_local", "allocate_lock"])
except ImportError:  # pragma: no cover - gevent is a dependency of relay
    from _thread import _local as _thread_local
    from _thread import allocate_lock as _allocate_lock

from relay.history.store import (
    Migration,
    Store,
    StoreError,
    StoreUnavailable,
    apply_migrations,
    error_text,
)

# relay calls psycopg only from OS threads of gevent's thread pool, never on the hub. Under gevent's
# monkey patching psycopg waits for the server with the patched poll, which runs a gevent hub in
# the calling thread: Python code holding the GIL while the server works, taken from the hub
# thread that paces the calls' audio (bench/bench_history_writer.py: pacer p99 20 ms during a
# burst of writes). Its C wait releases the GIL while it waits.
if getattr(psycopg.waiting, "wait_c", None) is not None:
    psycopg.waiting.wait = psycopg.waiting.wait_c

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
    """The history store in the PostgreSQL database at `url`: one connection per OS thread
    that calls it (the store is only called from gevent's thread pool, whose threads are the
    pool: docs/HISTORY.md says why not psycopg_pool)."""

    dialect = "postgresql"
    placeholder = "%s"
    day_sql = "to_char(to_timestamp(c.started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    turn_values_sql = (
        "LATERAL (SELECT e::float8 AS value FROM jsonb_array_elements_text("
        "CASE WHEN jsonb_typeof(c.turn_latency -> 'values') = 'array' "
        "THEN c.turn_latency -> 'values' ELSE '[]'::jsonb END) e) v")

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.where = describe_url(url)
        self.connect_timeout_s = float(connect_timeout_s)
        self._local = _thread_local()
        self._lock = _allocate_lock()
        self._connections: list[psycopg.Connection] = []
        self._closed = False
        self._connection()      # refused, no such database, bad password: said now

    def _connection(self) -> psycopg.Connection:
        if self._closed:
            raise StoreError(f"the history store on {self.where} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            self._forget(conn)
        try:
            conn = psycopg.connect(self.url, autocommit=False,
                                   connect_timeout=max(1, round(self.connect_timeout_s)))
        except psycopg.Error as exc:
            raise self._fail(exc) from exc
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def _forget(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        try:
            conn.close()
        except psycopg.Error:
            pass

    def describe(self) -> str:
        return self.where

    def _fail(self, exc: BaseException) -> StoreError:
        transient = isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        cls = StoreUnavailable if transient else StoreError
        return cls(f"history database {self.where}: {error_text(exc).strip()}")

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor]:
        """One transaction on this thread's connection: committed when the block ends,
        rolled back when it raises (a connection that broke is opened again next time)."""
        conn = self._connection()
        try:
            with conn.transaction():
                with conn.cursor() as cursor:
                    yield cursor
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self._forget(conn)
            raise self._fail(exc) from exc

    def _read(self):
        return self._transaction()

    def _write(self):
        return self._transaction()

    def _json_in(self, value: Any) -> Any:
        return None if value is None else Jsonb(value)

    def _transcript_fields_in(self, fields: dict) -> Any:
        return json.dumps(fields, ensure_ascii=False, default=str)    # cast in SQL

    def _replace_transcripts(self, cursor: Any, call_ids: list[str], rows: list[tuple],
                             insert_line: str) -> None:
        # A batch's thousands of transcript rows as six arrays in one statement: psycopg's
        # per-row pipeline held the GIL ~1 ms per record, from the thread pool, delaying the
        # pacer on the hub (bench/bench_history_writer.py).
        cursor.execute("DELETE FROM transcript WHERE call_id = ANY(%b::text[])", (call_ids,))
        if not rows:
            return
        columns = [list(column) for column in zip(*rows)]
        cursor.execute(
            "INSERT INTO transcript (call_id, seq, t, kind, text, fields) "
            "SELECT c, s, t, k, x, f::jsonb FROM unnest(%b::text[], %b::int4[], "
            "%b::float8[], %b::text[], %b::text[], %b::text[]) AS u(c, s, t, k, x, f)",
            columns)      # %b: binary arrays, dumped without the text format's escaping

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
        """Close every thread's connection (a thread using the store later is told it is
        closed)."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except psycopg.Error:
                pass
