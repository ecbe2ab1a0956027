"""The call-history store: where ended calls are kept and searched (docs/HISTORY.md).

Owns: `open_store(url_or_path)` (a PostgreSQL URL opens a `PostgresStore`, anything else is a
SQLite file opened by `SqliteStore`), and what both share: the shipped, versioned migrations
(relay/history/migrations/<dialect>/NNNN_name.sql), a record's columns, the search, the page,
the row, `get`'s record, the daily figures and expiry, written once in SQL both databases speak.
Each subclass owns its connections, transactions, locks and the few SQL fragments that differ.

Everything here blocks: call it from a thread (gevent's thread pool), never on the hub.
Errors: ValueError for a bad argument, `StoreUnavailable` when the database cannot be reached
or locked now (retrying later may succeed), `StoreError` for any other database failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Optional

from relay.history.query import (
    HistoryQuery,
    check_limit,
    decode_cursor,
    encode_cursor,
    reversed_digits,
)

# Transcript kinds whose text is indexed for full-text search.
SPOKEN_KINDS = ("caller", "assistant", "fallback")

# The calls table's columns, as written by write_calls (the JSON ones are the record's dicts).
SCALAR_COLUMNS = (
    "id", "started_at", "answered_at", "ended_at", "duration_s", "agent", "direction",
    "caller_number", "caller_name", "caller_digits_rev", "end_reason", "barge_ins",
    "turn_p50_ms", "turn_p95_ms", "turn_max_ms", "cost_usd", "recording_path", "worker", "host",
)
JSON_COLUMNS = ("turn_latency", "quality", "model", "usage", "tools", "outbound")
CALL_COLUMNS = SCALAR_COLUMNS + JSON_COLUMNS
TRANSCRIPT_COLUMNS = ("call_id", "seq", "t", "kind", "text", "fields")

# A search result row (docs/HISTORY.md); has_recording comes from recording_path.
ROW_COLUMNS = ("id", "started_at", "ended_at", "duration_s", "agent", "direction",
               "caller_number", "caller_name", "end_reason", "barge_ins", "turn_p50_ms",
               "turn_p95_ms", "cost_usd", "recording_path", "worker", "host")

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreError(Exception):
    """The history database failed, or is not one relay can use."""


class StoreUnavailable(StoreError):
    """The history database cannot be reached or locked now; the same call may work later."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The shipped migrations of a dialect ("sqlite", "postgresql"), in order: versions 1..N,
    none missing (a gap or a stray file is a packaging mistake, said as such)."""
    folder = resources.files("relay.history") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_NAME.match(entry.name)
        if not match:
            raise StoreError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"{dialect} migrations are not numbered 1..{len(found)}: "
                         f"{[m.name for m in found]}")
    return found


def is_postgres_url(url_or_path: str) -> bool:
    return str(url_or_path).startswith(("postgresql://", "postgres://"))


def open_store(url_or_path: Any, **options: Any) -> "Store":
    """A store on `url_or_path`: postgresql:// or postgres:// -> PostgresStore (options:
    connect_timeout_s), else the path of a SQLite file -> SqliteStore (options:
    busy_timeout_s). The database is reached once here, so a bad one fails now, clearly
    (StoreError / StoreUnavailable). Call `upgrade()` before the first write or search."""
    if is_postgres_url(url_or_path):
        from relay.history.postgres_store import PostgresStore

        return PostgresStore(str(url_or_path), **options)
    from relay.history.sqlite_store import SqliteStore

    return SqliteStore(url_or_path, **options)


def _number(name: str, value: Any, default: Any = None, required: bool = False) -> Any:
    if value is None:
        if required:
            raise ValueError(f"{name} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return value


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {value!r}")
    return value


def call_values(record: dict) -> dict[str, Any]:
    """The calls-table values of a record (JSON parts still Python objects); ValueError naming
    the call and the field when the record cannot be stored."""
    if not isinstance(record, dict):
        raise ValueError(f"a call record must be a dict, not {type(record).__name__}")
    call_id = record.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"call record without an id: {str(record)[:200]}")
    try:
        started_at = _number("started_at", record.get("started_at"), required=True)
        ended_at = _number("ended_at", record.get("ended_at"), required=True)
        turns = record.get("turn_latency_ms") or {}
        if not isinstance(turns, dict):
            raise ValueError(f"turn_latency_ms must be a dict, not {turns!r}")
        values = turns.get("values") or []
        if not isinstance(values, list) or not all(
                _number("turn_latency_ms.values[]", v) is not None for v in values):
            raise ValueError("turn_latency_ms.values must be a list of numbers")
        caller_number = _text("caller_number", record.get("caller_number"))
        row = {
            "id": call_id,
            "started_at": started_at,
            "answered_at": _number("answered_at", record.get("answered_at")),
            "ended_at": ended_at,
            "duration_s": _number("duration_s", record.get("duration_s"),
                                  default=ended_at - started_at),
            "agent": _text("agent", record.get("agent")),
            "direction": _text("direction", record.get("direction")) or "inbound",
            "caller_number": caller_number,
            "caller_name": _text("caller_name", record.get("caller_name")),
            "caller_digits_rev": reversed_digits(caller_number),
            "end_reason": _text("end_reason", record.get("end_reason")),
            "barge_ins": int(_number("barge_ins", record.get("barge_ins"), default=0)),
            "turn_p50_ms": _number("turn_latency_ms.p50", turns.get("p50")),
            "turn_p95_ms": _number("turn_latency_ms.p95", turns.get("p95")),
            "turn_max_ms": _number("turn_latency_ms.max", turns.get("max")),
            "cost_usd": _number("cost_usd", record.get("cost_usd")),
            "recording_path": _text("recording_path", record.get("recording_path")),
            "worker": _text("worker", record.get("worker")),
            "host": _text("host", record.get("host")),
            "turn_latency": turns,
            "quality": record.get("quality") or {},
            "model": record.get("model") or {},
            "usage": record.get("usage") or {},
            "tools": record.get("tools") or [],
            "outbound": record.get("outbound"),
        }
        for name in ("quality", "model", "usage"):
            if not isinstance(row[name], dict):
                raise ValueError(f"{name} must be a dict")
        if not isinstance(row["tools"], list):
            raise ValueError("tools must be a list")
        if row["outbound"] is not None and not isinstance(row["outbound"], dict):
            raise ValueError("outbound must be a dict or null")
    except ValueError as exc:
        raise ValueError(f"call {call_id}: {exc}") from None
    return row


def transcript_values(call_id: str, transcript: Any) -> list[tuple[Any, ...]]:
    """The transcript-table rows of a record's transcript: (call_id, seq, t, kind, text, fields)
    with fields the entry's other keys (a Python dict)."""
    if transcript is None:
        return []
    if not isinstance(transcript, list):
        raise ValueError(f"call {call_id}: transcript must be a list")
    rows = []
    for seq, entry in enumerate(transcript):
        if not isinstance(entry, dict):
            raise ValueError(f"call {call_id}: transcript entry {seq} is not a dict")
        t = entry.get("t")
        if t is not None:
            t = _number(f"transcript[{seq}].t", t)
        kind = entry.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"call {call_id}: transcript entry {seq} has no kind")
        text = entry.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        fields = {k: v for k, v in entry.items() if k not in ("t", "kind", "text")}
        rows.append((call_id, seq, t, kind, text or "", fields))
    return rows


def nearest_rank_index(count: int, fraction: float = 0.95) -> int:
    """The 1-based rank of the `fraction` percentile of `count` sorted values (nearest rank)."""
    return max(1, math.ceil(fraction * count))


class Store:
    """What both stores share. Subclasses provide `_read` / `_write` (a context manager
    yielding a DB-API cursor inside one transaction, errors turned into StoreError),
    the placeholder style, JSON in and out, `_upgrade_locked`, and a few SQL fragments."""

    dialect = ""
    placeholder = "?"
    # SQL of a call's UTC day ("YYYY-MM-DD") from c.started_at
    day_sql = ""
    # FROM-clause item giving each turn latency value of c as column `value`
    turn_values_sql = ""
    _ready = False

    # --- what a subclass provides ----------------------------------------------------
    def _read(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _upgrade_locked(self, cursor, target: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _json_in(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _json_out(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _phrase_filter(self, phrase: list[str]) -> tuple[str, list[Any]]:  # pragma: no cover
        """A condition on calls `c`: the phrase is said in the call."""
        raise NotImplementedError

    def _current_version(self, cursor) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- schema ----------------------------------------------------------------------
    @property
    def latest_version(self) -> int:
        return len(migrations(self.dialect))

    def version(self) -> int:
        """The schema version of the database (0: empty, no relay tables yet)."""
        with self._read() as cursor:
            return self._current_version(cursor)

    def upgrade(self, to_version: Optional[int] = None) -> int:
        """Apply the shipped migrations not yet applied, up to `to_version` (default: all), in
        one transaction under a lock, so that two processes starting at once apply each one
        once; the version reached. A database newer than this relay is left alone (StoreError)."""
        latest = self.latest_version
        target = latest if to_version is None else to_version
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= latest:
            raise ValueError(f"to_version must be an integer from 0 to {latest}, not {target!r}")
        with self._write() as cursor:
            reached = self._upgrade_locked(cursor, target)
        self._ready = reached == latest
        return reached

    def _check_ready(self) -> None:
        if self._ready:
            return
        version = self.version()
        if version != self.latest_version:
            raise StoreError(f"the history database {self.describe()} is at schema version "
                             f"{version}, this relay needs {self.latest_version}: "
                             f"run `relay db upgrade`")
        self._ready = True

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    # --- write -----------------------------------------------------------------------
    def write_calls(self, records: Iterable[dict]) -> None:
        """Store the records in one transaction; a call already stored is replaced (its
        transcript rows too), so writing a record twice stores it once. A record that cannot
        be stored raises ValueError naming it, before anything is written."""
        latest: dict[str, tuple[dict, dict]] = {}
        for record in records:          # the same call twice in a batch: the last one wins
            values = call_values(record)
            latest.pop(values["id"], None)
            latest[values["id"]] = (values, record)
        calls, transcripts = [], []
        for values, record in latest.values():
            calls.append(tuple(self._json_in(values[c]) if c in JSON_COLUMNS else values[c]
                               for c in CALL_COLUMNS))
            for row in transcript_values(values["id"], record.get("transcript")):
                transcripts.append(row[:-1] + (self._transcript_fields_in(row[-1]),))
        if not calls:
            return
        self._check_ready()
        columns = ", ".join(CALL_COLUMNS)
        marks = ", ".join("?" for _ in CALL_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CALL_COLUMNS if c != "id")
        upsert = self._sql(f"INSERT INTO calls ({columns}) VALUES ({marks}) "
                           f"ON CONFLICT (id) DO UPDATE SET {updates}")
        insert_line = self._sql(f"INSERT INTO transcript ({', '.join(TRANSCRIPT_COLUMNS)}) "
                                f"VALUES ({', '.join('?' for _ in TRANSCRIPT_COLUMNS)})")
        with self._write() as cursor:
            cursor.executemany(upsert, calls)
            self._replace_transcripts(cursor, [call[0] for call in calls], transcripts,
                                      insert_line)

    def _transcript_fields_in(self, fields: dict) -> Any:
        """A transcript row's `fields` as the database takes them."""
        return self._json_in(fields)

    def _replace_transcripts(self, cursor: Any, call_ids: list[str], rows: list[tuple],
                             insert_line: str) -> None:
        """The transcript rows of these calls replaced by `rows` (one statement per row: a
        dialect may do it in one)."""
        cursor.executemany(self._sql("DELETE FROM transcript WHERE call_id = ?"),
                           [(call_id,) for call_id in call_ids])
        if rows:
            cursor.executemany(insert_line, rows)

    # --- read ------------------------------------------------------------------------
    def search_sql(self, query: HistoryQuery, limit: int,
                   after: Optional[str]) -> tuple[str, list[Any]]:
        """The SQL and parameters of one page (limit + 1 rows: the extra one says there is a
        next page). Exposed for the benchmark's query plans."""
        if not isinstance(query, HistoryQuery):
            raise ValueError(f"query must be a HistoryQuery, not {type(query).__name__}")
        check_limit(limit)
        where, params = [], []
        if after is not None:
            started_at, call_id = decode_cursor(after)
            where.append("c.started_at <= ? AND (c.started_at < ? OR c.id < ?)")
            params += [started_at, started_at, call_id]
        if query.number is not None:
            low = query.number[::-1]
            high = low[:-1] + chr(ord(low[-1]) + 1)
            where.append("c.caller_digits_rev >= ? AND c.caller_digits_rev < ?")
            params += [low, high]
        for phrase in query.phrases:
            condition, phrase_params = self._phrase_filter(phrase)
            where.append(condition)
            params += phrase_params
        if query.agent is not None:
            where.append("c.agent = ?")
            params.append(query.agent)
        if query.since is not None:
            where.append("c.started_at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("c.started_at < ?")
            params.append(query.until)
        if query.end_reason is not None:
            where.append("substr(c.end_reason, 1, ?) = ?")
            params += [len(query.end_reason), query.end_reason]
        if query.min_duration_s is not None:
            where.append("c.duration_s >= ?")
            params.append(query.min_duration_s)
        if query.max_duration_s is not None:
            where.append("c.duration_s <= ?")
            params.append(query.max_duration_s)
        if query.direction is not None:
            where.append("c.direction = ?")
            params.append(query.direction)
        sql = (f"SELECT {', '.join('c.' + c for c in ROW_COLUMNS)} FROM calls c"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.started_at DESC, c.id DESC LIMIT ?")
        params.append(limit + 1)
        return self._sql(sql), params

    def search(self, query: Optional[HistoryQuery] = None, limit: int = 50,
               after: Optional[str] = None) -> dict:
        """One page of calls matching `query`, newest first: {"calls": [row...], "next":
        cursor or None}. `after` is the previous page's "next" (keyset paging: a row stored
        meanwhile never shifts a page; a newer row appears only on a new first page)."""
        self._check_ready()
        sql, params = self.search_sql(query if query is not None else HistoryQuery(),
                                      limit, after)
        with self._read() as cursor:
            cursor.execute(sql, params)
            fetched = cursor.fetchall()
        rows = []
        for values in fetched[:limit]:
            row = dict(zip(ROW_COLUMNS, values))
            row["has_recording"] = bool(row.pop("recording_path"))
            rows.append(row)
        following = None
        if len(fetched) > limit:
            last = rows[-1]
            following = encode_cursor(last["started_at"], last["id"])
        return {"calls": rows, "next": following}

    def get(self, call_id: str) -> Optional[dict]:
        """The whole record of a call (docs/HISTORY.md), its transcript in order (each entry
        with t, kind, text and its other fields) and its tools; None when not stored."""
        if not isinstance(call_id, str):
            raise ValueError(f"call_id must be a string, not {call_id!r}")
        self._check_ready()
        with self._read() as cursor:
            cursor.execute(self._sql(f"SELECT {', '.join(CALL_COLUMNS)} FROM calls "
                                     f"WHERE id = ?"), [call_id])
            found = cursor.fetchone()
            if found is None:
                return None
            cursor.execute(self._sql("SELECT t, kind, text, fields FROM transcript "
                                     "WHERE call_id = ? ORDER BY seq"), [call_id])
            lines = cursor.fetchall()
        values = dict(zip(CALL_COLUMNS, found))
        for name in JSON_COLUMNS:
            values[name] = self._json_out(values[name])
        record = {k: values[k] for k in (
            "id", "worker", "host", "agent", "direction", "caller_number", "caller_name",
            "started_at", "answered_at", "ended_at", "duration_s", "end_reason", "barge_ins",
            "quality", "model", "usage", "cost_usd", "recording_path", "tools", "outbound")}
        record["turn_latency_ms"] = values["turn_latency"]
        record["transcript"] = [{"t": t, "kind": kind, "text": text, **self._json_out(fields)}
                                for t, kind, text, fields in lines]
        return record

    def daily_stats(self, since: Optional[float] = None, until: Optional[float] = None,
                    agent: Optional[str] = None) -> list[dict]:
        """Per UTC day (of started_at) and agent, oldest day first: calls, minutes (of
        duration), turn_avg_ms and turn_p95_ms over every turn's latency of those calls
        (nearest-rank p95; None without turns), barge_ins, cost_usd (None when no call of the
        group has a cost). since inclusive, until exclusive, epoch seconds."""
        # HistoryQuery checks the same bounds the same way
        bounds = HistoryQuery(since=since, until=until, agent=agent)
        where, params = [], []
        if bounds.since is not None:
            where.append("c.started_at >= ?")
            params.append(bounds.since)
        if bounds.until is not None:
            where.append("c.started_at < ?")
            params.append(bounds.until)
        if bounds.agent is not None:
            where.append("c.agent = ?")
            params.append(bounds.agent)
        where_sql = (" WHERE " + " AND ".join(where)) if where else ""
        calls_sql = self._sql(
            f"SELECT {self.day_sql} AS day, c.agent, count(*), sum(c.duration_s), "
            f"sum(c.barge_ins), sum(c.cost_usd) FROM calls c{where_sql} "
            f"GROUP BY 1, 2 ORDER BY 1, 2")
        # avg and the nearest-rank p95 of every turn value, per day and agent, in SQL
        turns_sql = self._sql(
            f"SELECT day, agent, avg(value), "
            f"max(CASE WHEN rank = (95 * n + 99) / 100 THEN value END) FROM ("
            f" SELECT {self.day_sql} AS day, c.agent AS agent, v.value AS value,"
            f" row_number() OVER (PARTITION BY {self.day_sql}, c.agent ORDER BY v.value) AS rank,"
            f" count(*) OVER (PARTITION BY {self.day_sql}, c.agent) AS n"
            f" FROM calls c, {self.turn_values_sql}{where_sql}) per_turn GROUP BY day, agent")
        self._check_ready()
        with self._read() as cursor:
            cursor.execute(calls_sql, params)
            groups = cursor.fetchall()
            cursor.execute(turns_sql, params)
            turns = {(day, agent): (avg, p95) for day, agent, avg, p95 in cursor.fetchall()}
        out = []
        for day, group_agent, calls, seconds, barge_ins, cost in groups:
            avg, p95 = turns.get((day, group_agent), (None, None))
            out.append({"day": day, "agent": group_agent, "calls": int(calls),
                        "minutes": float(seconds or 0) / 60.0,
                        "turn_avg_ms": None if avg is None else float(avg),
                        "turn_p95_ms": None if p95 is None else float(p95),
                        "barge_ins": int(barge_ins or 0),
                        "cost_usd": None if cost is None else float(cost)})
        return out

    def expire(self, before_epoch: float) -> tuple[int, list[str]]:
        """Remove every call that started before `before_epoch` (with its transcript and its
        full-text rows) in one transaction; how many were removed, and the recording paths of
        those that had one, for the caller to delete."""
        before = _number("before_epoch", before_epoch, required=True)
        self._check_ready()
        with self._write() as cursor:
            cursor.execute(self._sql("SELECT recording_path FROM calls WHERE started_at < ?"),
                           [before])
            found = [path for (path,) in cursor.fetchall()]
            paths = [path for path in found if path]
            cursor.execute(self._sql("DELETE FROM transcript WHERE call_id IN "
                                     "(SELECT id FROM calls WHERE started_at < ?)"), [before])
            cursor.execute(self._sql("DELETE FROM calls WHERE started_at < ?"), [before])
        return len(found), paths

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def apply_migrations(cursor, dialect: str, current: int, target: int,
                     run_script, record_version) -> int:
    """Apply migrations current+1..target with `run_script(cursor, sql)` and
    `record_version(cursor, migration)`; the version reached. Shared by both stores."""
    shipped = migrations(dialect)
    if current > len(shipped):
        raise StoreError(f"the history database is at schema version {current}, newer than "
                         f"this relay knows ({len(shipped)}): upgrade relay, not the database")
    for migration in shipped[current:target]:
        try:
            run_script(cursor, migration.sql)
        except Exception as exc:
            exc.add_note(f"in migration {dialect}/{migration.name}")
            raise
        record_version(cursor, migration)
    return max(current, target)



def error_text(exc: BaseException) -> str:
    """An exception's message with its notes (e.g. which migration failed)."""
    return "; ".join([str(exc) or type(exc).__name__, *getattr(exc, "__notes__", [])])
