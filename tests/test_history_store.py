"""relay.history.store on SQLite and on a real PostgreSQL: migrations, writes, search, paging,
get, daily figures, expiry, bad input and databases that cannot be used."""

from __future__ import annotations

import json
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from relay.history.query import HistoryQuery, decode_cursor, encode_cursor
from relay.history.store import StoreError, StoreUnavailable, migrations, open_store

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0
BASE = 1_767_225_600.0   # 2026-01-01T00:00:00Z
LATEST = len(migrations("sqlite"))
SPOKEN = ("caller", "assistant", "fallback")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history" / "relay.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    with open_store(store_url) as opened:
        assert opened.upgrade() == LATEST
        yield opened


def record(n: int, **changes) -> dict:
    """A whole call record, as relay.history.record makes them."""
    started = BASE + n * 600.0
    values = [100.0 + (n * 37 + k * 53) % 900 for k in range(1 + n % 5)]
    rec = {
        "id": f"call-{n:04d}", "worker": f"w{n % 2 + 1}", "host": "host-a",
        "agent": ("sales", "support", "billing")[n % 3],
        "direction": "outbound" if n % 4 == 3 else "inbound",
        "caller_number": f"+1 555 {n % 7:03d} {n:04d}", "caller_name": f"Caller {n}",
        "started_at": started, "answered_at": started + 1.5,
        "ended_at": started + 30 + n % 50, "duration_s": 30.0 + n % 50,
        "end_reason": ("caller hung up", "agent hung up", "model error: 500")[n % 3],
        "barge_ins": n % 4,
        "turn_latency_ms": {"count": len(values), "p50": sorted(values)[len(values) // 2],
                            "p95": max(values), "max": max(values), "values": values},
        "quality": {"rtp_in": 1500 + n, "lost": n % 3, "late": 0, "jitter_ms": 1.25},
        "model": {"name": "gpt-realtime", "errors": {"500": n % 2}, "reconnects": 0,
                  "sockets": 1, "resumed": False},
        "usage": {"input_text": 10 * n, "input_audio": 200, "input_cached_text": 0,
                  "input_cached_audio": 0, "output_text": 30, "output_audio": 400,
                  "responses": 3},
        "cost_usd": None if n % 5 == 4 else round(0.01 * (n % 9 + 1), 4),
        "recording_path": f"/var/rec/call-{n:04d}.wav" if n % 2 == 0 else "",
        "transcript": [
            {"t": 0.5, "kind": "caller", "text": f"hello my order {1000 + n} is late"},
            {"t": 2.0, "kind": "assistant", "text": "I am sorry, let me check the parcel",
             "response_id": f"resp_{n}"},
            {"t": 3.0, "kind": "tool", "text": "lookup_order secretword", "name": "lookup"},
            {"t": 4.0, "kind": "dtmf", "text": "5", "digit": "5"},
            {"t": 5.0, "kind": ("caller", "fallback")[n % 2],
             "text": ("refund please", "the refund was slow", "thank you")[n % 3]},
        ],
        "tools": [{"t": 3.0, "name": "lookup_order", "arguments": {"order": str(1000 + n)},
                   "status": "ok", "result": {"state": "shipped"}, "duration_ms": 12.5}],
        "outbound": ({"endpoint": "PJSIP/x", "outcome": "answered", "cause": 16, "amd": "HUMAN",
                      "campaign_id": "c1", "attempt": 1, "variables": {"k": "v"}}
                     if n % 4 == 3 else None),
    }
    rec.update(changes)
    return rec


def all_pages(store, query, limit=7):
    rows, after, seen_cursors = [], None, set()
    while True:
        page = store.search(query, limit=limit, after=after)
        assert len(page["calls"]) <= limit
        rows += page["calls"]
        if page["next"] is None:
            return rows
        assert page["next"] not in seen_cursors
        seen_cursors.add(page["next"])
        after = page["next"]


def words(text):
    return re.findall(r"\w+", text.lower())


def said(rec, phrase):
    for entry in rec["transcript"]:
        if entry["kind"] in SPOKEN:
            w = words(entry["text"])
            if any(w[i:i + len(phrase)] == phrase for i in range(len(w) - len(phrase) + 1)):
                return True
    return False


def matches(rec, q: HistoryQuery) -> bool:
    """The query's meaning, written independently of the store."""
    digits = "".join(ch for ch in rec["caller_number"] if ch.isdigit())
    if q.number is not None and not digits.endswith(q.number):
        return False
    if q.text is not None:
        parts = q.text.split('"')
        phrases = [words(p) for i, p in enumerate(parts) if i % 2]
        phrases += [[w] for i, p in enumerate(parts) if not i % 2 for w in words(p)]
        if not all(said(rec, p) for p in phrases if p):
            return False
    return ((q.agent is None or rec["agent"] == q.agent)
            and (q.since is None or rec["started_at"] >= q.since)
            and (q.until is None or rec["started_at"] < q.until)
            and (q.end_reason is None or rec["end_reason"].startswith(q.end_reason))
            and (q.min_duration_s is None or rec["duration_s"] >= q.min_duration_s)
            and (q.max_duration_s is None or rec["duration_s"] <= q.max_duration_s)
            and (q.direction is None or rec["direction"] == q.direction))


def expected_ids(records, q):
    hits = [r for r in records if matches(r, q)]
    hits.sort(key=lambda r: (r["started_at"], r["id"]), reverse=True)
    return [r["id"] for r in hits]


# --- migrations -----------------------------------------------------------------------------

def test_migrations_are_shipped_for_both_databases_in_step():
    sqlite_names = [m.name for m in migrations("sqlite")]
    pg_names = [m.name for m in migrations("postgresql")]
    assert sqlite_names == pg_names and len(sqlite_names) >= 3


def test_upgrade_from_empty_then_again_changes_nothing(store_url):
    with open_store(store_url) as s:
        assert s.version() == 0
        for query in (HistoryQuery(), HistoryQuery(text="refund")):
            with pytest.raises(StoreError, match="relay db upgrade"):
                s.search(query)
        assert s.upgrade() == LATEST
        assert s.version() == LATEST
        assert s.upgrade() == LATEST
        with s._read() as cur:
            cur.execute("SELECT version FROM schema_version ORDER BY version")
            assert [v for (v,) in cur.fetchall()] == list(range(1, LATEST + 1))
        assert s.search(HistoryQuery()) == {"calls": [], "next": None}


# columns of calls that exist at each version (the rest came later)
LATER_COLUMNS = {3: ["caller_digits_rev"], 4: ["outbound"]}


def insert_at_version(s, version: int, rec: dict) -> None:
    """Write a record with plain SQL, as the schema at `version` holds it."""
    from relay.history.store import CALL_COLUMNS, JSON_COLUMNS, call_values, transcript_values

    values = call_values(rec)
    missing = {c for v, cols in LATER_COLUMNS.items() if v > version for c in cols}
    columns = [c for c in CALL_COLUMNS if c not in missing]
    with s._write() as cur:
        cur.execute(s._sql(f"INSERT INTO calls ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' for _ in columns)})"),
                    [s._json_in(values[c]) if c in JSON_COLUMNS else values[c]
                     for c in columns])
        for row in transcript_values(rec["id"], rec["transcript"]):
            cur.execute(s._sql("INSERT INTO transcript (call_id, seq, t, kind, text, fields) "
                               "VALUES (?, ?, ?, ?, ?, ?)"), [*row[:-1], s._json_in(row[-1])])


@pytest.mark.parametrize("version", range(1, LATEST))
def test_upgrade_from_every_earlier_version_keeps_the_data(store_url, version):
    old = [record(n, outbound=None) for n in range(6)]
    with open_store(store_url) as s:
        assert s.upgrade(to_version=version) == version
        assert s.version() == version
        for rec in old:
            insert_at_version(s, version, rec)
    with open_store(store_url) as s:          # a newer relay starts on the old database
        assert s.upgrade() == LATEST
        for rec in old:
            got = s.get(rec["id"])
            assert got == normalised(rec)
        # the features of the later migrations work on the old rows
        assert ids(s.search(HistoryQuery(text='"refund was slow"'))) == expected_ids(
            old, HistoryQuery(text='"refund was slow"'))
        assert ids(s.search(HistoryQuery(number="0003"))) == ["call-0003"]
        new = record(7)
        s.write_calls([new])
        assert s.get(new["id"])["outbound"] == new["outbound"] is not None


def test_a_database_newer_than_relay_is_left_alone(store):
    with store._write() as cur:
        cur.execute(store._sql("INSERT INTO schema_version (version, name, applied_at) "
                               "VALUES (?, ?, ?)"), [LATEST + 5, "future", 0.0])
    with pytest.raises(StoreError, match="newer than this relay"):
        store.upgrade()
    with pytest.raises(ValueError):
        store.upgrade(to_version=LATEST + 1)


UPGRADE_AND_WRITE = """
import sys
from relay.history.store import open_store
url, first = sys.argv[1], int(sys.argv[2])
with open_store(url) as s:
    print(s.upgrade())
    from test_history_store import record
    for start in range(first, first + 40, 5):
        s.write_calls([record(n) for n in range(start, start + 5)])
"""


def test_processes_upgrading_and_writing_at_once(store_url):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADE_AND_WRITE, store_url,
                               str(first)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for first in (0, 40, 80)]
    outputs = [p.communicate(timeout=90) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert out.split() == [str(LATEST)]
    with open_store(store_url) as s:
        with s._read() as cur:
            cur.execute("SELECT version FROM schema_version ORDER BY version")
            assert [v for (v,) in cur.fetchall()] == list(range(1, LATEST + 1))
        assert len(all_pages(s, HistoryQuery(), limit=200)) == 120


# --- write ----------------------------------------------------------------------------------

def normalised(rec):
    """What get() answers for a record: every transcript entry has t, kind and text."""
    out = json.loads(json.dumps(rec))
    out["transcript"] = [{"t": e.get("t"), "kind": e["kind"], "text": e.get("text", ""), **e}
                         for e in out["transcript"]]
    return out


def ids(page):
    return [row["id"] for row in page["calls"]]


def transcript_count(s, call_id):
    with s._read() as cur:
        cur.execute(s._sql("SELECT count(*) FROM transcript WHERE call_id = ?"), [call_id])
        return cur.fetchone()[0]


def test_writing_a_record_twice_stores_it_once(store):
    rec = record(1)
    store.write_calls([rec])
    store.write_calls([rec, rec])            # a retried batch, and a duplicate inside one
    assert ids(store.search(HistoryQuery())) == ["call-0001"]
    assert transcript_count(store, "call-0001") == len(rec["transcript"])
    assert ids(store.search(HistoryQuery(text="parcel"))) == ["call-0001"]
    # written again with another transcript: the old words are gone, the new found, once
    changed = record(1, transcript=[{"t": 1.0, "kind": "caller", "text": "zebra crossing"}],
                     agent="renamed")
    store.write_calls([changed])
    assert store.search(HistoryQuery(text="parcel"))["calls"] == []
    assert ids(store.search(HistoryQuery(text="zebra"))) == ["call-0001"]
    assert transcript_count(store, "call-0001") == 1
    assert store.get("call-0001") == normalised(changed)
    if store.dialect == "sqlite":   # the FTS index agrees with its content table
        with store._write() as cur:
            cur.execute("INSERT INTO transcript_words (transcript_words) "
                        "VALUES ('integrity-check')")
            cur.execute("SELECT count(*) FROM transcript_words")
            assert cur.fetchone()[0] == 1


def test_get_answers_the_whole_record(store):
    recs = [record(n) for n in range(4)]
    recs[0]["transcript"].append({"kind": "event", "text": "no t here", "extra": [1, 2]})
    store.write_calls(recs)
    for rec in recs:
        assert store.get(rec["id"]) == normalised(rec)
    assert store.get("no-such-call") is None
    with pytest.raises(ValueError):
        store.get(42)


def test_a_bad_record_is_refused_before_anything_is_written(store):
    good = record(1)
    for bad, message in [({"started_at": 1.0, "ended_at": 2.0}, "without an id"),
                         (record(2, started_at=None), "started_at is missing"),
                         (record(3, ended_at="soon"), "ended_at must be a finite number"),
                         (record(4, transcript=[{"t": 1.0, "text": "x"}]), "has no kind"),
                         (record(5, tools={"a": 1}), "tools must be a list"),
                         (record(6, turn_latency_ms={"values": ["x"]}), "values"),
                         ("not a dict", "must be a dict")]:
        with pytest.raises(ValueError, match=message):
            store.write_calls([good, bad])
    assert store.search(HistoryQuery()) == {"calls": [], "next": None}
    store.write_calls([])     # nothing to do


# --- search ---------------------------------------------------------------------------------

@pytest.fixture
def filled(store):
    recs = [record(n) for n in range(40)]
    # two calls at the very same instant: the id decides their order
    recs += [record(40, started_at=recs[5]["started_at"]),
             record(41, started_at=recs[5]["started_at"], caller_number="")]
    store.write_calls(recs[:20])
    store.write_calls(recs[20:])
    return store, recs


FILTERS = [
    {"number": "0012"}, {"number": "2"}, {"number": "+1 555 003 0010"},
    {"text": "refund"}, {"text": '"refund was slow"'}, {"text": '"slow refund"'},
    {"text": "slow refund"}, {"text": "REFUND Please"}, {"text": "secretword"},
    {"text": "parcel 1011"}, {"agent": "sales"}, {"agent": "nobody"},
    {"since": BASE + 10 * 600}, {"until": BASE + 10 * 600},
    {"since": BASE + 3 * 600, "until": BASE + 9 * 600},
    {"end_reason": "model error"}, {"end_reason": "caller"},
    {"min_duration_s": 60}, {"max_duration_s": 40}, {"min_duration_s": 45, "max_duration_s": 55},
    {"direction": "outbound"}, {"direction": "inbound"},
]


# SQLite alone chooses how to match a phrase ("all common": every phrase checked call by call)
@pytest.mark.parametrize("limit", [3, 50])
@pytest.mark.parametrize("store_url, phrases", [("sqlite", "as sized"),
                                                ("sqlite", "all common"),
                                                ("postgresql", "as sized")],
                         indirect=["store_url"])
def test_every_filter_alone_and_combined(filled, limit, phrases):
    store, recs = filled
    if phrases == "all common":
        store.common_matches = 1
    for filters in FILTERS:
        q = HistoryQuery(**filters)
        assert [r["id"] for r in all_pages(store, q, limit)] == expected_ids(recs, q), filters
    rng = random.Random(14)
    for _ in range(40):
        merged = {}
        for f in rng.sample(FILTERS, rng.randint(2, 4)):
            merged.update(f)
        if merged.get("since", 0) >= merged.get("until", math.inf):
            continue
        if merged.get("min_duration_s", 0) > merged.get("max_duration_s", math.inf):
            continue
        q = HistoryQuery(**merged)
        assert [r["id"] for r in all_pages(store, q, limit)] == expected_ids(recs, q), merged


def test_rows_have_the_documented_shape(filled):
    store, recs = filled
    row = store.search(HistoryQuery(number="0004"))["calls"][0]
    rec = recs[4]
    assert row == {
        "id": rec["id"], "started_at": rec["started_at"], "ended_at": rec["ended_at"],
        "duration_s": rec["duration_s"], "agent": rec["agent"], "direction": rec["direction"],
        "caller_number": rec["caller_number"], "caller_name": rec["caller_name"],
        "end_reason": rec["end_reason"], "barge_ins": rec["barge_ins"],
        "turn_p50_ms": rec["turn_latency_ms"]["p50"],
        "turn_p95_ms": rec["turn_latency_ms"]["p95"], "cost_usd": rec["cost_usd"],
        "has_recording": True, "worker": rec["worker"], "host": rec["host"]}


def test_phrases_words_and_what_is_not_searched(filled):
    store, recs = filled
    slow = {r["id"] for r in recs if r["transcript"][-1]["text"] == "the refund was slow"}
    assert {r["id"] for r in all_pages(store, HistoryQuery(text='"refund was slow"'))} == slow
    assert all_pages(store, HistoryQuery(text='"slow refund"')) == []
    # words need not be together, nor in the same utterance
    assert {r["id"] for r in all_pages(store, HistoryQuery(text="slow hello"))} == slow
    # a phrase does not run from one utterance into the next
    assert all_pages(store, HistoryQuery(text='"is late i am sorry"')) == []
    # tool output and DTMF are not words said
    assert all_pages(store, HistoryQuery(text="secretword")) == []
    assert all_pages(store, HistoryQuery(text="lookup_order")) == []


def test_number_ends_with_digits(store):
    store.write_calls([record(1, caller_number="+1 (555) 010-2000"),
                       record(2, caller_number="5550102000"),
                       record(3, caller_number="442071232000"),
                       record(4, caller_number="anonymous"),
                       record(5, caller_number="")])
    found = lambda n: sorted(ids(store.search(HistoryQuery(number=n))))  # noqa: E731
    assert found("2000") == ["call-0001", "call-0002", "call-0003"]
    assert found("010-2000") == ["call-0001", "call-0002"]
    assert found("+1 555 010 2000") == ["call-0001"]
    assert found("9") == []
    assert found("0") == ["call-0001", "call-0002", "call-0003"]


def test_keyset_pages_have_no_duplicates_or_gaps_while_calls_arrive(filled):
    store, recs = filled
    before = expected_ids(recs, HistoryQuery())
    seen, after, n = [], None, 100
    while True:
        page = store.search(HistoryQuery(), limit=4, after=after)
        seen += ids(page)
        # calls keep ending while someone pages: newer ones (not in this paging) ...
        store.write_calls([record(n, started_at=BASE + 90 * DAY + n)])
        n += 1
        if len(seen) == 8:   # ... and one older than every page so far (in a later page)
            store.write_calls([record(99, started_at=BASE - DAY)])
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == before + ["call-0099"]
    # a new first page starts with the newest
    assert ids(store.search(HistoryQuery(), limit=1)) == [f"call-{n - 1:04d}"]


def test_cursor_points_after_a_row():
    cursor = encode_cursor(1767225600.123456, "call-é/1")
    assert decode_cursor(cursor) == (1767225600.123456, "call-é/1")


@pytest.mark.parametrize("cursor", ["", "garbage!", encode_cursor(1.0, "x")[:-3],
                                    "WyJ2MiIsMS4wLCJ4Il0", "WzEsMl0", 42,
                                    "WyJ2MSIsIk5hTiIsIngiXQ"])
def test_a_bad_cursor_is_a_value_error(store, cursor):
    with pytest.raises(ValueError, match="cursor"):
        store.search(HistoryQuery(), after=cursor)


@pytest.mark.parametrize("values", [
    {"number": "abc"}, {"number": ""}, {"number": "1" * 40}, {"number": 123},
    {"text": '"unclosed'}, {"text": "!!! ..."}, {"text": "x" * 501}, {"text": 5},
    {"text": " ".join(f"w{i}" for i in range(17))},
    {"agent": ""}, {"agent": 3}, {"end_reason": ""},
    {"since": "yesterday"}, {"since": -1}, {"until": float("nan")}, {"since": True},
    {"since": 10, "until": 10}, {"since": 20, "until": 10},
    {"min_duration_s": -1}, {"min_duration_s": 10, "max_duration_s": 5},
    {"direction": "sideways"},
])
def test_bad_query_values_are_value_errors(values):
    with pytest.raises(ValueError):
        HistoryQuery(**values)


def test_bad_arguments_are_value_errors(store):
    for limit in (0, 201, "5", 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            store.search(HistoryQuery(), limit=limit)
    with pytest.raises(ValueError, match="HistoryQuery"):
        store.search({"agent": "sales"})
    with pytest.raises(ValueError):
        store.daily_stats(since="monday")
    with pytest.raises(ValueError):
        store.expire("last week")
    with pytest.raises(ValueError):
        store.expire(None)


def test_unicode_text_names_and_ids(store):
    rec = record(1, id="call-ü-😀", caller_name="Zoë Ærøskøbing 山田",
                 transcript=[{"t": 1.0, "kind": "caller",
                              "text": "Grüße aus KÖLN, ça coûte 30 € — 山田です"},
                             {"t": 2.0, "kind": "assistant", "text": "Très bien 👍",
                              "emoji": "👍"}],
                 end_reason="raccroché ✓")
    store.write_calls([rec])
    assert store.get("call-ü-😀") == normalised(rec)
    for text in ("köln", "KÖLN", '"grüße aus köln"', "coûte", "très"):
        assert ids(store.search(HistoryQuery(text=text))) == ["call-ü-😀"], text
    assert ids(store.search(HistoryQuery(end_reason="raccroché"))) == ["call-ü-😀"]
    page = store.search(HistoryQuery(), limit=1)
    assert decode_cursor(encode_cursor(page["calls"][0]["started_at"], "call-ü-😀"))


# --- daily figures and expiry ---------------------------------------------------------------

def test_daily_stats_per_utc_day_and_agent(store):
    rng = random.Random(7)
    recs = []
    for n in range(60):
        started = BASE + rng.uniform(-2 * 3600, 3 * DAY)      # 4 UTC days
        values = [round(rng.uniform(80, 1500), 1) for _ in range(rng.randint(0, 6))]
        recs.append(record(n, started_at=started, ended_at=started + n,
                           duration_s=rng.uniform(5, 400), barge_ins=rng.randint(0, 5),
                           agent=rng.choice(["sales", "support"]),
                           cost_usd=rng.choice([None, round(rng.uniform(0, 1), 4)]),
                           turn_latency_ms={"count": len(values), "values": values}))
    store.write_calls(recs)

    def expected(since=None, until=None, agent=None):
        groups = defaultdict(list)
        for r in recs:
            if ((since is None or r["started_at"] >= since)
                    and (until is None or r["started_at"] < until)
                    and (agent is None or r["agent"] == agent)):
                day = datetime.fromtimestamp(r["started_at"], timezone.utc).strftime("%Y-%m-%d")
                groups[(day, r["agent"])].append(r)
        out = []
        for (day, ag), rs in sorted(groups.items()):
            lat = sorted(v for r in rs for v in r["turn_latency_ms"]["values"])
            costs = [r["cost_usd"] for r in rs if r["cost_usd"] is not None]
            out.append({"day": day, "agent": ag, "calls": len(rs),
                        "minutes": sum(r["duration_s"] for r in rs) / 60,
                        "turn_avg_ms": sum(lat) / len(lat) if lat else None,
                        # nearest rank: the smallest value with at least 95% at or below it
                        "turn_p95_ms": next((v for i, v in enumerate(lat, 1)
                                             if i / len(lat) >= 0.95), None),
                        "barge_ins": sum(r["barge_ins"] for r in rs),
                        "cost_usd": sum(costs) if costs else None})
        return out

    def close_to(got, want):
        assert [(g["day"], g["agent"]) for g in got] == [(w["day"], w["agent"]) for w in want]
        for g, w in zip(got, want):
            assert g == {k: (pytest.approx(v) if isinstance(v, float) else v)
                         for k, v in w.items()}

    full = store.daily_stats()
    assert len(full) >= 6
    close_to(full, expected())
    close_to(store.daily_stats(since=BASE, until=BASE + 2 * DAY),
             expected(BASE, BASE + 2 * DAY))
    close_to(store.daily_stats(agent="sales"), expected(agent="sales"))
    assert store.daily_stats(since=BASE + 50 * DAY) == []


def test_expire_removes_old_calls_and_answers_their_recordings(store):
    recs = [record(n) for n in range(10)]
    store.write_calls(recs)
    cut = recs[6]["started_at"]
    removed, paths = store.expire(cut)
    assert removed == 6
    assert sorted(paths) == sorted(r["recording_path"] for r in recs[:6] if r["recording_path"])
    assert sorted(ids(store.search(HistoryQuery()))) == [r["id"] for r in recs[6:]]
    for r in recs[:6]:
        assert store.get(r["id"]) is None
        assert transcript_count(store, r["id"]) == 0
    assert {r["id"] for r in all_pages(store, HistoryQuery(text="parcel"))} == {
        r["id"] for r in recs[6:]}
    assert store.expire(cut) == (0, [])
    assert sum(g["calls"] for g in store.daily_stats()) == 4


# --- threads, faults, databases that cannot be used -----------------------------------------

def test_calls_from_gevent_thread_pool_threads(store):
    import gevent
    from gevent.threadpool import ThreadPool

    pool = ThreadPool(4)
    try:
        writes = [pool.spawn(store.write_calls, [record(n) for n in range(k, k + 5)])
                  for k in range(0, 40, 5)]
        gevent.joinall(writes, raise_error=True)
        reads = [pool.spawn(store.search, HistoryQuery(agent="sales"), 200) for _ in range(8)]
        gevent.joinall(reads, raise_error=True)
    finally:
        pool.kill()
    want = expected_ids([record(n) for n in range(40)], HistoryQuery(agent="sales"))
    assert all(ids(r.value) == want for r in reads)


def test_postgres_url_schemes(pg_url):
    with open_store(pg_url.replace("postgresql://", "postgres://", 1)) as s:
        assert s.dialect == "postgresql" and s.upgrade() == LATEST


def test_postgres_stopped_then_back(pg_server, pg_url):
    with open_store(pg_url, connect_timeout_s=1) as s:
        s.upgrade()
        s.write_calls([record(1)])
        pg_server.stop()
        with pytest.raises(StoreUnavailable, match="PostgreSQL 127.0.0.1"):
            s.write_calls([record(2)])
        for _ in range(4):                # a while down: no reconnect backoff builds up
            with pytest.raises(StoreUnavailable):
                s.search(HistoryQuery())
        pg_server.start()
        # back within the pool's reconnect window (2 s), without restarting relay; the writer
        # retries the same way (its batch stays queued or spooled meanwhile)
        for attempt in range(10):
            try:
                s.write_calls([record(2)])
                break
            except StoreUnavailable:
                assert attempt < 9, "the store did not reconnect"
        assert sorted(ids(s.search(HistoryQuery()))) == ["call-0001", "call-0002"]


def test_databases_that_cannot_be_opened(tmp_path, pg_server):
    with pytest.raises(StoreError, match="is a folder"):
        open_store(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        open_store(junk)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="folder"):
        open_store(blocker / "sub" / "relay.db")
    from pg_server import free_port

    with pytest.raises(StoreUnavailable, match=r"PostgreSQL 127\.0\.0\.1:\d+/x.*refused"):
        open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout_s=1)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(pg_server.url("no_such_database"), connect_timeout_s=1)
    with pytest.raises(StoreError, match="closed"):
        s = open_store(tmp_path / "ok.db")
        s.close()
        s.version()


# (PostgreSQL's plans depend on its statistics: bench/bench_history_search.py checks them)
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_searches_are_answered_from_indexes(store):
    store.write_calls([record(n) for n in range(3)])
    queries = [HistoryQuery(), HistoryQuery(number="1234"), HistoryQuery(text='"late parcel"'),
               HistoryQuery(since=BASE, until=BASE + DAY),
               HistoryQuery(agent="sales", since=BASE, until=BASE + DAY)]
    for q, common in [(q, common) for q in queries for common in (None, 1)]:
        store.common_matches = common
        sql, params = store.search_sql(q, 50, encode_cursor(BASE + DAY, "x"))
        with store._read() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = [row[-1] for row in cur.fetchall()]
        for step in plan:
            assert not re.match(r"SCAN (c|calls|t|transcript)$", step), (q, plan)


def test_relay_db_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DATABASE_URL", None)
    run = lambda *args, **kw: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "relay", "db", *args], capture_output=True, text=True,
        timeout=60, **kw)
    done = run("version", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "var/relay.db: schema version 0" in done.stdout
    done = run("upgrade", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"schema version {LATEST} (was 0)" in done.stdout
    assert sqlite3.connect(tmp_path / "var" / "relay.db").execute(
        "SELECT max(version) FROM schema_version").fetchone() == (LATEST,)
    other = tmp_path / "other.db"
    done = run("upgrade", cwd=tmp_path, env=dict(env, DATABASE_URL=str(other)))
    assert done.returncode == 0 and str(other) in done.stdout
    done = run("upgrade", "--database", str(tmp_path), cwd=tmp_path, env=env)
    assert done.returncode == 1 and "is a folder" in done.stderr
