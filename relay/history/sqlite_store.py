"""The call history in a SQLite file (the default: one host, no server to run).

Owns: the connections (one per thread, opened on first use: the store is called from gevent's
thread pool; closed together by `close()`), their settings (WAL so readers never wait for the
writer, a busy timeout so several worker processes writing the same file wait their turn,
foreign keys on), transactions (BEGIN IMMEDIATE for every write and for upgrades, so two
processes upgrading at once apply each migration once), the FTS5 phrase match, and turning
sqlite3's errors into StoreError / StoreUnavailable naming the file.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from relay.history.query import reversed_digits
from relay.history.store import (
    Migration,
    Store,
    StoreError,
    StoreUnavailable,
    apply_migrations,
    error_text,
)

try:  # the real thread-local and lock, even when gevent has patched threading
    from gevent.monkey import get_original

    _thread_local, _allocate_lock = get_original("_thread", ["_local", "allocate_lock"])
except ImportError:  # pragma: no cover - gevent is a dependency of relay
    from _thread import _local as _thread_local
    from _thread import allocate_lock as _allocate_lock

# sqlite3 error texts that mean "not now" rather than "broken"
TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only")


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, whole (a trigger's body keeps its semicolons)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
            not ln.strip() or ln.strip().startswith("--") for ln in pending.splitlines()):
        raise StoreError(f"unterminated SQL statement: {pending.strip()[:200]}")
    return statements


class SqliteStore(Store):
    """The history store in the SQLite file at `path` (its folder is created if missing)."""

    dialect = "sqlite"
    placeholder = "?"
    day_sql = "date(c.started_at, 'unixepoch')"
    turn_values_sql = "json_each(c.turn_latency, '$.values') v"
    # None: common_threshold() decides from the table's size (tests set it to try both ways)
    common_matches: Optional[int] = None

    def __init__(self, path: Any, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = _thread_local()
        self._lock = _allocate_lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if self.path.is_dir():
            raise StoreError(f"the history database {self.path} is a folder, not a SQLite file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of the history database "
                             f"{self.path}: {exc}") from exc
        self._connection()   # open now: a file that is not a database fails here, clearly

    def describe(self) -> str:
        return str(self.path)

    def _fail(self, exc: sqlite3.Error) -> StoreError:
        text = error_text(exc)
        cls = StoreUnavailable if any(word in text.lower() for word in TRANSIENT) else StoreError
        if "not a database" in text:
            text += " (the file is not a SQLite database)"
        return cls(f"history database {self.path}: {text}")

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the history store on {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("relay_reversed_digits", 1, reversed_digits,
                                 deterministic=True)
        except sqlite3.Error as exc:
            conn.close()
            raise self._fail(exc) from exc
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Cursor]:
        conn = self._connection()
        try:
            conn.execute(begin)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        cursor = conn.cursor()
        try:
            yield cursor
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise self._fail(exc) from exc
            raise
        finally:
            cursor.close()

    def _read(self):
        return self._transaction("BEGIN")

    def _write(self):
        return self._transaction("BEGIN IMMEDIATE")

    def _json_in(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, ensure_ascii=False, default=str)

    def _json_out(self, value: Any) -> Any:
        return None if value is None else json.loads(value)

    def _phrase_filter(self, phrase: list[str]) -> tuple[str, list[Any]]:
        """SQLite's planner cannot weigh an FTS match against the date index, so choose here.
        A rare phrase: its matches (few) lead, then the calls they belong to, sorted. A common
        one: walk the calls newest first (or by another filter's index) and check each call's
        lines, stopping at the page's end; materialising a million matches would take seconds.
        "Common" is more matches than a probe of `common_threshold()` rows finds the end of."""
        # words are letters/digits only (query.text_phrases): a quoted FTS5 string is a phrase
        match = '"' + " ".join(phrase) + '"'
        conn = self._connection()
        try:
            threshold = self.common_threshold(conn)
            found = conn.execute("SELECT count(*) FROM (SELECT rowid FROM transcript_words "
                                 "WHERE transcript_words MATCH ? LIMIT ?)",
                                 (match, threshold)).fetchone()[0]
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        if found >= threshold:
            return ("EXISTS (SELECT 1 FROM transcript t WHERE t.call_id = c.id AND EXISTS "
                    "(SELECT 1 FROM transcript_words w WHERE w.rowid = t.rowid "
                    "AND w.transcript_words MATCH ?))", [match])
        return ("c.id IN (SELECT t.call_id FROM transcript t WHERE t.rowid IN "
                "(SELECT rowid FROM transcript_words WHERE transcript_words MATCH ?))", [match])

    def common_threshold(self, conn: sqlite3.Connection) -> int:
        """Matches beyond which checking calls one by one beats collecting the matches.
        Measured (bench/bench_history_search.py): collecting costs ~0.7 us a match; checking
        finds a page of 50 in ~1.8 ms / (matches / transcript lines): they cost the same at
        sqrt(2600 x lines)."""
        if self.common_matches is not None:
            return self.common_matches
        lines = conn.execute("SELECT coalesce(max(rowid), 0) FROM transcript").fetchone()[0]
        return max(1000, int(math.sqrt(2600 * lines)))

    def _current_version(self, cursor: sqlite3.Cursor) -> int:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                       "AND name = 'schema_version'")
        if cursor.fetchone() is None:
            return 0
        cursor.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        return int(cursor.fetchone()[0])

    def _upgrade_locked(self, cursor: sqlite3.Cursor, target: int) -> int:
        # BEGIN IMMEDIATE holds the write lock: another process upgrading waits here, then
        # finds the migrations applied.
        cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                       " name TEXT NOT NULL, applied_at REAL NOT NULL)")
        current = self._current_version(cursor)

        def run_script(cur: sqlite3.Cursor, sql: str) -> None:
            for statement in split_statements(sql):
                cur.execute(statement)

        def record_version(cur: sqlite3.Cursor, migration: Migration) -> None:
            cur.execute("INSERT INTO schema_version (version, name, applied_at) "
                        "VALUES (?, ?, ?)", (migration.version, migration.name, time.time()))

        return apply_migrations(cursor, self.dialect, current, target, run_script,
                                record_version)

    def close(self) -> None:
        """Close every connection of every thread (after a last PRAGMA optimize)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._closed = True
        for conn in connections:
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            conn.close()
