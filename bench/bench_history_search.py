"""Call-history search at scale: are phrase, number and date searches answered from indexes?

Owns one question of issue #14: with a million calls stored (SQLite, and a PostgreSQL this
benchmark starts itself from tests/pg_server.py), does a search by phrase, by caller number
and by date range use the indexes (keyset page of 50, newest first), and how long does it take
beside a primary-key lookup timed in the same run? Prints each query's plan and fails (exit 1)
when a plan scans the calls table without an index (SQLite "SCAN calls"/"SCAN c" without
USING INDEX; PostgreSQL "Seq Scan on calls").

    python -m bench history                    # 1,000,000 calls, both databases
    python -m bench history --rows 20000 --only sqlite

The load is fast and honest: synthetic calls (3 spoken lines of varied words and an order
number each) are inserted in large transactions through the store's own columns (SQLite:
executemany with the FTS triggers firing; PostgreSQL: COPY, the tsvector generated), then
ANALYZE, as autovacuum / PRAGMA optimize would do on a live database.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from relay.history.query import HistoryQuery
from relay.history.store import CALL_COLUMNS, JSON_COLUMNS, TRANSCRIPT_COLUMNS, open_store

ROOT = Path(__file__).resolve().parent.parent
BASE = 1_735_689_600.0          # 2025-01-01T00:00:00Z; calls spread over a year
YEAR = 365 * 86400.0
BATCH = 20_000
SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "va", "zu", "fi", "go", "he"]
RARE_PHRASE = "purple elephant invoice"
RARE_NUMBER = "+44 20 7946 0958"
AGENTS = ["sales", "support", "billing", "returns"]


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def synthetic_calls(rows: int, seed: int = 14):
    """(call values, transcript rows) per call: values keyed by CALL_COLUMNS."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    for n in range(rows):
        started = BASE + rng.random() * YEAR
        duration = rng.uniform(5, 600)
        if n % 10_000 == 7:
            number = RARE_NUMBER
        else:
            area, exchange = rng.randint(200, 999), rng.randint(200, 999)
            line = rng.randint(0, 9999)
            number = f"+1 {area} {exchange} {line:04d}"
        values = {
            "id": f"bench-{n:08d}", "started_at": started, "answered_at": started + 1.0,
            "ended_at": started + duration, "duration_s": duration,
            "agent": AGENTS[n % len(AGENTS)], "direction": "inbound",
            "caller_number": number, "caller_name": f"Caller {n}",
            "caller_digits_rev": "".join(ch for ch in reversed(number) if ch.isdigit()),
            "end_reason": "caller hung up", "barge_ins": n % 3,
            "turn_p50_ms": 400.0, "turn_p95_ms": 900.0, "turn_max_ms": 1200.0,
            "cost_usd": 0.05, "recording_path": "", "worker": "w1", "host": "bench",
            "turn_latency": {"count": 2, "values": [400.0, 900.0]}, "quality": {}, "model": {},
            "usage": {}, "tools": [], "outbound": None,
        }
        lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 10)))
                 + f" order {rng.randint(10000, 99999)}" for _ in range(3)]
        if n % 10_000 == 3:
            lines[1] = f"there is a {RARE_PHRASE} for you"
        transcript = [(values["id"], seq, float(seq * 3), kind, text, {})
                      for seq, (kind, text) in enumerate(zip(("caller", "assistant", "caller"),
                                                             lines))]
        yield values, transcript


def load_sqlite(store, rows: int) -> None:
    columns = ", ".join(CALL_COLUMNS)
    calls_sql = f"INSERT INTO calls ({columns}) VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
    lines_sql = (f"INSERT INTO transcript ({', '.join(TRANSCRIPT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' for _ in TRANSCRIPT_COLUMNS)})")
    calls, lines = [], []

    def flush():
        with store._write() as cur:
            cur.executemany(calls_sql, calls)
            cur.executemany(lines_sql, lines)
        calls.clear()
        lines.clear()

    for values, transcript in synthetic_calls(rows):
        calls.append(tuple(store._json_in(values[c]) if c in JSON_COLUMNS else values[c]
                           for c in CALL_COLUMNS))
        lines.extend(t[:-1] + (store._json_in(t[-1]),) for t in transcript)
        if len(calls) >= BATCH:
            flush()
    if calls:
        flush()
    with store._write() as cur:
        cur.execute("ANALYZE")


def load_postgres(store, rows: int) -> None:
    with store._write() as cur:
        with cur.copy(f"COPY calls ({', '.join(CALL_COLUMNS)}) FROM STDIN") as copy_calls:
            for values, _ in synthetic_calls(rows):
                copy_calls.write_row([store._json_in(values[c]) if c in JSON_COLUMNS
                                      else values[c] for c in CALL_COLUMNS])
        with cur.copy(f"COPY transcript ({', '.join(TRANSCRIPT_COLUMNS)}) FROM STDIN") as copy:
            for _, transcript in synthetic_calls(rows):
                for line in transcript:
                    copy.write_row(line[:-1] + (store._json_in(line[-1]),))
    with store._write() as cur:
        cur.execute("ANALYZE")


def best_of(fn: Callable[[], Any], repeat: int = 7) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def plan_of(store, sql: str, params: list) -> list[str]:
    with store._read() as cur:
        if store.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [row[-1] for row in cur.fetchall()]
        cur.execute("EXPLAIN " + sql, params)
        return [row[0] for row in cur.fetchall()]


def full_scans(dialect: str, plan: list[str]) -> list[str]:
    if dialect == "sqlite":
        return [s for s in plan if re.match(r"\s*SCAN (c|calls)\b", s) and "USING" not in s]
    return [s for s in plan if "Seq Scan on calls" in s]


def measure(store, rows: int) -> bool:
    queries = {
        f'phrase "{RARE_PHRASE}"': HistoryQuery(text=f'"{RARE_PHRASE}"'),
        "number ends with 79460958": HistoryQuery(number="79460958"),
        "common word \"order\" (said in every call)": HistoryQuery(text="order"),
        "common word + one day": HistoryQuery(text="order", since=BASE + 100 * 86400,
                                              until=BASE + 101 * 86400),
        "date range (one day)": HistoryQuery(since=BASE + 100 * 86400, until=BASE + 101 * 86400),
        "agent + date range (one day)": HistoryQuery(agent="billing", since=BASE + 200 * 86400,
                                                     until=BASE + 201 * 86400),
    }
    pk_sql = store._sql("SELECT id, started_at, caller_number FROM calls WHERE id = ?")
    ids = [f"bench-{random.Random(n).randrange(rows):08d}" for n in range(7)]

    def pk_lookup():
        with store._read() as cur:
            for call_id in ids:
                cur.execute(pk_sql, [call_id])
                assert cur.fetchone() is not None
    ok = True
    print(f"\n{store.dialect}: {rows:,} calls")
    for name, query in queries.items():
        sql, params = store.search_sql(query, 50, None)
        plan = plan_of(store, sql, params)
        scans = full_scans(store.dialect, plan)
        seconds, page = best_of(lambda q=query: store.search(q, 50))
        pk_seconds, _ = best_of(pk_lookup)
        pk_seconds /= len(ids)
        ok &= not scans and bool(page["calls"])
        print(f"  {name}: {len(page['calls'])} rows, {seconds * 1e3:.2f} ms; primary-key "
              f"lookup {pk_seconds * 1e3:.3f} ms (x{seconds / pk_seconds:.0f})"
              f"{'  FULL SCAN: ' + '; '.join(scans) if scans else ''}")
        for step in plan:
            print(f"      {step}")
    return ok


def run_sqlite(rows: int, folder: Path) -> bool:
    with open_store(folder / "history.db") as store:
        store.upgrade()
        start = time.perf_counter()
        load_sqlite(store, rows)
        print(f"sqlite: loaded {rows:,} calls in {time.perf_counter() - start:.0f} s")
        return measure(store, rows)


def run_postgres(rows: int) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_server import PgServer, find_bin_dir

    bin_dir, reason = find_bin_dir()
    if bin_dir is None:
        print(f"postgresql: skipped, {reason}")
        return True
    server = PgServer(bin_dir)
    try:
        server.start()
        with open_store(server.create_database("bench_history")) as store:
            store.upgrade()
            start = time.perf_counter()
            load_postgres(store, rows)
            print(f"postgresql: loaded {rows:,} calls in {time.perf_counter() - start:.0f} s")
            return measure(store, rows)
    finally:
        server.destroy()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="calls to store")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="relay-bench-history-") as folder:
        if args.only in (None, "sqlite"):
            ok &= run_sqlite(args.rows, Path(folder))
        if args.only in (None, "postgresql"):
            ok &= run_postgres(args.rows)
    print("\nevery plan uses indexes" if ok else "\nA SEARCH SCANS THE CALLS TABLE (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
