"""The call-history routes of the dashboard (relay.web.history_api): search, export, one call,
its recording with byte ranges, the daily figures; on a worker's server and on the fleet's.

The store they read is made by ONE fixture, `history_store`: the real SQLite store in tmp_path,
upgraded, holding the records; every assertion here is about what the records say.
"""

from __future__ import annotations

import csv
import io
import math
import re
import threading
import wave
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from stack import API_KEY, Stack
from web_client import RecordingClient

from relay.config import load_settings
from relay.history.store import open_store
from relay.web import WebServer, history_api, history_csv
from relay.web.fleet import FleetWebServer
from relay.web.history_files import CHUNK, FileChunks, byte_range
from relay.web.history_params import daily_request, search_request
from relay.web.http import HttpError

TOKEN = "history-test-token-93b1"
DAY0 = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()      # a Monday, UTC
HOUR = 3600.0
MAIN_THREAD = threading.main_thread().ident


# ---------------------------------------------------------------------------- the records

def tone_wav(path: Path, seconds: float = 2.0, rate: int = 8000, hz: float = 440.0) -> Path:
    """A real WAV: a mono 16-bit tone."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        sample = int(12000 * math.sin(2 * math.pi * hz * n / rate))
        frames += sample.to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def record(call_id: str, started_at: float, duration_s: float, **fields: Any) -> dict:
    """A call record as docs/HISTORY.md describes it."""
    latencies = fields.pop("latencies", [400.0, 600.0, 800.0])
    values = sorted(latencies)
    base = {
        "id": call_id, "worker": "w1", "host": "relay-host", "agent": "default",
        "direction": "inbound", "caller_number": "+15550100", "caller_name": "",
        "started_at": started_at, "answered_at": started_at + 1.0,
        "ended_at": started_at + duration_s, "duration_s": duration_s,
        "end_reason": "caller hung up", "barge_ins": 0,
        "turn_latency_ms": {"count": len(values), "p50": values[len(values) // 2] if values
                            else None, "p95": values[-1] if values else None,
                            "max": values[-1] if values else None, "values": latencies},
        "quality": {"rtp_in": 1000, "lost": 3, "late": 1, "jitter_ms": 4.5, "rtp_out": 990,
                    "pacing": {"late_ticks": 0}},
        "model": {"name": "gpt-realtime", "errors": {}, "reconnects": 0, "sockets": 1,
                  "resumed": 0},
        "usage": {"input_text": 100, "input_audio": 2000, "input_cached_text": 0,
                  "input_cached_audio": 0, "output_text": 50, "output_audio": 3000,
                  "responses": 3},
        "cost_usd": 0.12, "recording_path": "", "transcript": [], "tools": [],
        "outbound": None,
    }
    base.update(fields)
    return base


def make_records(recordings: Path) -> list[dict]:
    recordings.mkdir(parents=True, exist_ok=True)
    alice_wav = tone_wav(recordings / "c-alice.wav")
    folder = recordings / "folder.wav"
    folder.mkdir(exist_ok=True)
    return [
        record("c-alice", DAY0 + 10 * HOUR, 65.0, agent="default",
               caller_number="+15550101", caller_name="Alice Martin", barge_ins=2,
               recording_path=str(alice_wav), cost_usd=0.31,
               transcript=[
                   {"t": DAY0 + 10 * HOUR + 1, "kind": "assistant",
                    "text": "Hello, this is Acme. How can I help you today?"},
                   {"t": DAY0 + 10 * HOUR + 4, "kind": "caller",
                    "text": "I would like to check the status of my order."},
                   {"t": DAY0 + 10 * HOUR + 6, "kind": "tool", "text": "lookup_order",
                    "status": "ok", "arguments": {"order": 427},
                    "result": '{"status": "shipped"}', "duration_ms": 42.0},
                   {"t": DAY0 + 10 * HOUR + 7, "kind": "event", "text": "barge-in",
                    "level": "info"}],
               tools=[{"t": DAY0 + 10 * HOUR + 6, "name": "lookup_order",
                       "arguments": {"order": 427}, "status": "ok",
                       "result": '{"status": "shipped"}', "duration_ms": 42.0}]),
        record("c-bob", DAY0 + 11 * HOUR, 12.0, agent="retail", caller_number="+15550102",
               caller_name='Bob, "the builder"\nStone', end_reason="agent ended the call",
               latencies=[1000.0, 3000.0],
               transcript=[{"t": DAY0 + 11 * HOUR + 2, "kind": "caller",
                            "text": "It is order number four two seven."}]),
        record("c-carol", DAY0 + 12 * HOUR, 300.0, direction="outbound",
               caller_number="+44 20 7123 4567", caller_name="=cmd|' /C calc'!A0",
               end_reason=f"model error: rate_limit_exceeded (key {API_KEY})", cost_usd=None,
               transcript=[{"t": DAY0 + 12 * HOUR + 3, "kind": "caller",
                            "text": "Where is my parcel, the blue one?"}]),
        record("c-dave", DAY0 - 2 * 86400 + 9 * HOUR, 5.0, agent="retail",
               caller_number="+15550104", recording_path=str(recordings / "gone.wav"),
               transcript=[{"t": DAY0 - 2 * 86400 + 9 * HOUR, "kind": "caller",
                            "text": "status please"}]),
        record("c-eve", DAY0 - 86400 + 8 * HOUR, 30.0, caller_number="+15550105",
               recording_path="/etc/passwd", end_reason="caller hung up early"),
        record("c-finn", DAY0 - 86400 + 7 * HOUR, 45.0, caller_number="+15550106",
               recording_path=str(folder)),     # a folder named like a recording: no
    ]


NEWEST_FIRST = ["c-carol", "c-bob", "c-alice", "c-eve", "c-finn", "c-dave"]


class Spy:
    """Wraps whatever store the fixture gives: records each call (method, args, thread)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: list[tuple[str, tuple, Optional[int]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def recorded(*args: Any) -> Any:
            self.calls.append((name, args, threading.get_ident()))
            return method(*args)
        return recorded


class BrokenStore:
    """A store whose every read fails (a database gone, a bug)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> Any:
            raise RuntimeError("database is locked (simulated)")
        return fail


class FailsAfter:
    """The fixture's store, failing its searches after the first `good` ones."""

    def __init__(self, store: Any, good: int) -> None:
        self.store = store
        self.good = good

    def search(self, *args: Any) -> dict:
        if self.good <= 0:
            raise RuntimeError("connection to the database lost (simulated)")
        self.good -= 1
        return self.store.search(*args)


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def records(tmp_path) -> list[dict]:
    return make_records(tmp_path / "recordings")


@pytest.fixture
def history_store(records, tmp_path):
    """THE store of these tests: the real SQLite store (relay.history), upgraded, holding
    `records`."""
    store = open_store(str(tmp_path / "history.db"))
    store.upgrade()
    store.write_calls(records)
    yield store
    store.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("history"),
                  settings={"web.port": 0, "web.token": TOKEN})
    yield stack
    stack.stop()


@pytest.fixture
def web(stack, history_store):
    """A worker's dashboard (token required) whose history store is a Spy over the fixture's."""
    server = WebServer(stack.worker).start()
    stack.worker.history_store = Spy(history_store)
    yield server
    server.stop()
    vars(stack.worker).pop("history_store", None)


@pytest.fixture
def client(web) -> RecordingClient:
    return RecordingClient(web.url, TOKEN)


def ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["calls"]]


# ---------------------------------------------------------------------------- search

@pytest.mark.parametrize("params, expected", [
    ({}, NEWEST_FIRST),
    ({"number": "0101"}, ["c-alice"]),
    ({"number": "+1 555-0102"}, ["c-bob"]),
    ({"number": "(20) 7123 4567"}, ["c-carol"]),
    ({"text": "status"}, ["c-alice", "c-dave"]),
    ({"text": "order status"}, ["c-alice"]),
    ({"text": '"four two seven"'}, ["c-bob"]),
    ({"text": '"seven two four"'}, []),
    ({"agent": "retail"}, ["c-bob", "c-dave"]),
    ({"since": "2026-03-02"}, ["c-carol", "c-bob", "c-alice"]),
    ({"until": "2026-03-01"}, ["c-eve", "c-finn", "c-dave"]),
    ({"since": str(DAY0 + 10.5 * HOUR), "until": str(DAY0 + 11.5 * HOUR)}, ["c-bob"]),
    ({"end_reason": "caller hung up"}, ["c-alice", "c-eve", "c-finn", "c-dave"]),
    ({"end_reason": "model error"}, ["c-carol"]),
    ({"min_duration_s": "45"}, ["c-carol", "c-alice", "c-finn"]),
    ({"max_duration_s": "12"}, ["c-bob", "c-dave"]),
    ({"min_duration_s": "10", "max_duration_s": "60"}, ["c-bob", "c-eve", "c-finn"]),
    ({"direction": "outbound"}, ["c-carol"]),
    ({"agent": "default", "direction": "inbound", "min_duration_s": "40"},
     ["c-alice", "c-finn"]),
])
def test_every_filter_reaches_the_store_and_selects_its_calls(client, web, params, expected):
    assert ids(client.get("/api/history", params=params)) == expected
    name, args, thread = web.worker.history_store.calls[-1]
    assert name == "search" and thread != MAIN_THREAD       # off the hub, in the thread pool
    query, limit, after = args
    assert (limit, after) == (50, None)
    for key in params:
        assert getattr(query, key) is not None, key


def test_filters_arrive_in_the_store_s_terms(client, web):
    client.get("/api/history", params={
        "number": "+1 (555) 01-01", "text": ' "check the status" ', "agent": "default",
        "since": "2026-03-02", "until": "2026-03-02", "end_reason": "caller",
        "min_duration_s": "1.5", "max_duration_s": "600", "direction": "inbound"})
    query = web.worker.history_store.calls[-1][1][0]
    assert query.number == "15550101"
    assert query.text == '"check the status"'
    assert (query.since, query.until) == (DAY0, DAY0 + 86400)   # a date as until: its end
    assert (query.min_duration_s, query.max_duration_s) == (1.5, 600.0)
    assert (query.agent, query.end_reason, query.direction) == ("default", "caller", "inbound")


def test_pages_follow_the_cursor_newest_first_without_repeats(client):
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        body = client.get("/api/history", params=params).json()
        assert len(body["calls"]) <= 2
        seen += [row["id"] for row in body["calls"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == NEWEST_FIRST and pages == 3
    row = client.get("/api/history", params={"number": "0101"}).json()["calls"][0]
    assert set(row) >= set(history_csv.COLUMNS)
    assert row["has_recording"] is True and row["turn_p95_ms"] == 800.0


@pytest.mark.parametrize("params, message", [
    ({"numbr": "1"}, "unknown parameter(s): numbr"),
    ({"number": "12ab"}, "number must be digits"),
    ({"number": "1" * 33}, "at most 32"),
    ({"text": 'say "hello'}, "unclosed quote"),
    ({"text": "x" * 201}, "longer than 200"),
    ({"agent": "a\x01b"}, "control characters"),
    ({"since": "yesterday"}, "since must be epoch seconds or a date"),
    ({"since": "2026-02-30"}, "is not a date"),
    ({"until": "-5"}, "until must be a finite, positive"),
    ({"until": "nan"}, "until must be a finite"),
    ({"since": "2026-03-03", "until": "2026-03-01"}, "since is after until"),
    ({"min_duration_s": "ten"}, "min_duration_s must be a number"),
    ({"max_duration_s": "-1"}, "max_duration_s must be a finite number of seconds, 0 or more"),
    ({"min_duration_s": "9", "max_duration_s": "3"}, "min_duration_s is after max_duration_s"),
    ({"direction": "sideways"}, "direction must be inbound or outbound"),
    ({"limit": "0"}, "limit must be a whole number from 1 to 200"),
    ({"limit": "201"}, "limit must be a whole number from 1 to 200"),
    ({"limit": "2.5"}, "limit must be a whole number"),
    ({"after": "not-a-cursor"}, "after is not a cursor this server gave"),
    ({"after": "x" * 600}, "after is not a cursor this server gave"),
])
def test_bad_parameters_are_400_with_the_reason(client, params, message):
    response = client.get("/api/history", params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_methods_and_unknown_paths(client):
    assert client("POST", "/api/history").status_code == 405
    assert client("DELETE", "/api/history/c-alice").status_code == 405
    assert client("POST", "/api/history/c-alice/recording").headers["Allow"] == "GET, HEAD"
    assert client.get("/api/history/c-alice/transcript").status_code == 404
    assert client.get("/api/stats/weekly").status_code == 404


# ---------------------------------------------------------------------------- one call

def test_a_call_s_whole_record_and_404_for_an_unknown_one(client, records):
    body = client.get("/api/history/c-alice").json()
    assert body["id"] == "c-alice"
    assert [e["kind"] for e in body["transcript"]] == ["assistant", "caller", "tool", "event"]
    assert body["tools"][0]["arguments"] == {"order": 427}
    assert body["quality"]["jitter_ms"] == 4.5 and body["usage"]["output_audio"] == 3000
    missing = client.get("/api/history/c-nobody")
    assert missing.status_code == 404 and "no call 'c-nobody'" in missing.json()["error"]


# ---------------------------------------------------------------------------- recordings

def wav_bytes(records: list[dict]) -> bytes:
    return Path(records[0]["recording_path"]).read_bytes()


def test_the_recording_whole_and_its_headers(client, records):
    data = wav_bytes(records)
    whole = client.get("/api/history/c-alice/recording")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Content-Type"] == "audio/wav"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Length"] == str(len(data))
    head = client("HEAD", "/api/history/c-alice/recording")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    with wave.open(io.BytesIO(whole.content)) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (8000, 16000)


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-99", 0, 99),
    ("bytes=1000-1999", 1000, 1999),
    ("bytes=30000-", 30000, None),
    ("bytes=-500", -500, None),
    ("bytes=31000-999999", 31000, None),    # past the end: up to the end
    ("bytes=-999999", 0, None),              # more than the file: all of it
])
def test_byte_ranges_are_206_with_content_range(client, records, header, first, last):
    data = wav_bytes(records)
    size = len(data)
    start = first if first >= 0 else size + first
    end = size - 1 if last is None else last
    response = client.get("/api/history/c-alice/recording", headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == data[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    head = client("HEAD", "/api/history/c-alice/recording", headers={"Range": header})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["Content-Range"] == f"bytes {start}-{end}/{size}"


@pytest.mark.parametrize("header", ["bytes=32044-", "bytes=99999-100000", "bytes=-0"])
def test_a_range_outside_the_file_is_416(client, records, header):
    size = len(wav_bytes(records))
    response = client.get("/api/history/c-alice/recording", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert "not in the recording" in response.json()["error"]


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-1", "items=0-5", "bytes=a-b",
                                    "bytes=-"])
def test_ranges_this_server_ignores_get_the_whole_file(client, records, header):
    response = client.get("/api/history/c-alice/recording", headers={"Range": header})
    assert response.status_code == 200 and response.content == wav_bytes(records)


@pytest.mark.parametrize("call_id, message", [
    ("c-bob", "was not recorded"),
    ("c-dave", "is gone"),
    ("c-eve", "is not a WAV file"),
    ("c-finn", "cannot be read"),
    ("c-nobody", "no call 'c-nobody'"),
])
def test_no_recording_a_missing_file_or_not_a_wav_is_404(client, call_id, message):
    response = client.get(f"/api/history/{call_id}/recording")
    assert response.status_code == 404 and message in response.json()["error"]
    assert client("HEAD", f"/api/history/{call_id}/recording").status_code == 404


@pytest.mark.parametrize("path", [
    "/api/history/..%2F..%2F..%2Fetc%2Fpasswd/recording",
    "/api/history/%2Fetc%2Fpasswd/recording",
    "/api/history/c-alice/../../../../etc/passwd",
    "/api/history/c-alice/recording/../../../../../etc/passwd",
])
def test_no_path_from_the_request_is_ever_served(client, path):
    session = requests.Session()
    prepared = requests.Request("GET", client.base + path, headers=client.headers).prepare()
    prepared.url = client.base + path            # as written: no client-side normalisation
    response = session.send(prepared, timeout=10, allow_redirects=False)
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_a_path_in_the_query_is_ignored(client, records):
    response = client.get("/api/history/c-alice/recording", params={"path": "/etc/passwd"})
    assert response.status_code == 200 and response.content == wav_bytes(records)


def test_the_file_is_read_in_bounded_chunks_and_always_closed(tmp_path):
    data = bytes(range(256)) * 800                  # 200 KiB: several chunks
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    file = source.open("rb")
    chunks = list(FileChunks(file, 10, len(data) - 1))
    assert b"".join(chunks) == data[10:]
    assert len(chunks) == 4 and max(map(len, chunks)) == CHUNK
    assert file.closed
    never_read = source.open("rb")
    FileChunks(never_read, 0, 5).close()            # a HEAD: never iterated, still closed
    assert never_read.closed


def test_byte_range_reading():
    assert byte_range("", 100) is None
    assert byte_range("bytes=0-0", 100) == (0, 0)
    assert byte_range("bytes = 5 - 9", 100) == (5, 9)
    assert byte_range("BYTES=90-", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99)
    for header in ("bytes=100-", "bytes=-1"):
        with pytest.raises(HttpError) as error:
            byte_range(header, 100 if header == "bytes=100-" else 0)
        assert error.value.status == 416


# ---------------------------------------------------------------------------- CSV export

def test_the_csv_has_a_header_quotes_text_and_defuses_formulas(client):
    response = client.get("/api/history.csv")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="calls-\d{8}-\d{6}\.csv"',
                        response.headers["Content-Disposition"])
    assert "Content-Length" not in response.headers        # streamed
    table = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    assert table[0] == list(history_csv.COLUMNS)
    rows = [dict(zip(table[0], line)) for line in table[1:]]
    assert [row["id"] for row in rows] == NEWEST_FIRST
    by_id = {row["id"]: row for row in rows}
    assert by_id["c-bob"]["caller_name"] == 'Bob, "the builder"\nStone'
    assert by_id["c-carol"]["caller_name"] == "'=cmd|' /C calc'!A0"
    assert by_id["c-carol"]["caller_number"] == "+44 20 7123 4567"
    assert by_id["c-carol"]["cost_usd"] == ""
    assert by_id["c-alice"]["started_at"] == "2026-03-02T10:00:00Z"
    assert by_id["c-alice"]["has_recording"] == "yes"
    assert by_id["c-bob"]["has_recording"] == "no"
    assert b'"Bob, ""the builder""\nStone"' in response.content


def test_the_csv_walks_every_page_with_the_same_filters(client, web, monkeypatch):
    monkeypatch.setattr(history_api, "EXPORT_PAGE", 2)
    response = client.get("/api/history.csv")
    lines = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))[1:]
    assert [line[0] for line in lines] == NEWEST_FIRST
    searches = [args for name, args, _ in web.worker.history_store.calls if name == "search"]
    assert len(searches) == 3 and searches[0][2] is None
    assert all(args[2] for args in searches[1:])            # each next page by its cursor
    assert all(args[1] == 2 for args in searches)
    filtered = client.get("/api/history.csv", params={"agent": "default", "min_duration_s": 40})
    lines = list(csv.reader(io.StringIO(filtered.content.decode("utf-8"))))
    assert [line[0] for line in lines[1:]] == ["c-carol", "c-alice", "c-finn"]
    empty = client.get("/api/history.csv", params={"number": "999999"})
    assert empty.content.decode("utf-8") == ",".join(history_csv.COLUMNS) + "\r\n"
    bad = client.get("/api/history.csv", params={"limit": "5"})     # every match: no paging
    assert bad.status_code == 400 and "unknown parameter(s): limit" in bad.json()["error"]


def test_a_store_failing_during_the_export_cuts_the_answer_visibly(
        client, web, stack, history_store, monkeypatch, caplog):
    monkeypatch.setattr(history_api, "EXPORT_PAGE", 2)
    stack.worker.history_store = FailsAfter(history_store, good=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get("/api/history.csv")
    assert "the CSV export stopped after 4 calls" in caplog.text
    stack.worker.history_store = FailsAfter(history_store, good=0)   # at once: a clean 503
    response = client.get("/api/history.csv")
    assert response.status_code == 503
    assert "could not be searched (RuntimeError" in response.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_no_secret_leaves_in_a_page_a_record_or_the_csv(client, monkeypatch):
    monkeypatch.setattr(history_api, "EXPORT_PAGE", 2)      # scrubbed chunk by chunk
    bodies = [client.get("/api/history").content, client.get("/api/history/c-carol").content,
              client.get("/api/history.csv").content]
    for body in bodies:
        assert b"rate_limit_exceeded (key " in body
        assert API_KEY.encode() not in body


# ---------------------------------------------------------------------------- daily figures

def test_daily_figures_per_day_and_agent(client, web):
    body = client.get("/api/stats/daily", params={"since": "2026-02-27",
                                                   "until": "2026-03-02"}).json()
    assert (body["since"], body["until"]) == (DAY0 - 3 * 86400, DAY0 + 86400)
    days = [(row["day"], row["agent"], row["calls"]) for row in body["days"]]
    assert days == [("2026-02-28", "retail", 1), ("2026-03-01", "default", 2),
                    ("2026-03-02", "default", 2), ("2026-03-02", "retail", 1)]
    monday = body["days"][2]
    assert monday["minutes"] == pytest.approx((65 + 300) / 60) and monday["barge_ins"] == 2
    name, args, thread = web.worker.history_store.calls[-1]
    assert name == "daily_stats" and thread != MAIN_THREAD
    retail = client.get("/api/stats/daily", params={"agent": "retail", "since": "2026-01-01",
                                                     "until": "2026-12-31"}).json()
    assert {row["agent"] for row in retail["days"]} == {"retail"} and len(retail["days"]) == 2


def test_daily_figures_default_to_the_last_30_days_and_check_their_parameters(client, web):
    body = client.get("/api/stats/daily").json()
    assert body["until"] - body["since"] == 30 * 86400
    for params, message in [({"since": "soon"}, "since must be epoch seconds"),
                            ({"until": "2026-13-01"}, "is not a date"),
                            ({"since": "2026-03-05", "until": "2026-03-01"}, "since is after"),
                            ({"limit": "3"}, "unknown parameter(s): limit")]:
        response = client.get("/api/stats/daily", params=params)
        assert response.status_code == 400 and message in response.json()["error"]
    since, until, agent = daily_request({"since": "100", "until": "200"})
    assert (since, until, agent) == (100.0, 200.0, None)


# ---------------------------------------------------------------------------- access, no store

ROUTES = ["/api/history", "/api/history.csv", "/api/history/c-alice",
          "/api/history/c-alice/recording", "/api/stats/daily"]


def test_every_route_needs_the_token(web, history_store):
    for token in ("", "wrong-token-1234"):
        anonymous = RecordingClient(web.url, token)
        for path in ROUTES:
            response = anonymous.get(path, headers={"Range": "bytes=0-9"})
            assert response.status_code == 401, path
            assert b"RIFF" not in response.content and b"c-alice" not in response.content
    assert web.worker.history_store.calls == []              # never reached the store


def test_without_a_store_every_route_is_503_saying_so(client, stack):
    stack.worker.history_store = None
    for path in ROUTES:
        response = client.get(path)
        assert response.status_code == 503, path
        assert "no history store is configured" in response.json()["error"]
    del stack.worker.history_store                           # absent: the same
    assert client.get("/api/history").status_code == 503


def test_a_failing_store_is_503_with_a_message_and_the_server_goes_on(client, stack, caplog):
    stack.worker.history_store = BrokenStore()
    for path in ROUTES:
        response = client.get(path)
        assert response.status_code == 503, path
        assert "RuntimeError; see relay's log" in response.json()["error"]
        assert "database is locked" not in response.text         # the details: in the log
    assert "database is locked (simulated)" in caplog.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/calls").status_code == 200


def test_search_request_units():
    asked = search_request({"limit": "7", "after": "abc", "text": "hello"})
    assert (asked.limit, asked.after, asked.filters.fields()) == (7, "abc", {"text": "hello"})
    assert search_request({}).filters.fields() == {}


# ---------------------------------------------------------------------------- the fleet

@pytest.fixture
def fleet(history_store):
    settings = load_settings(env={}, overrides={"web.port": 0, "web.token": TOKEN})
    current = {"store": Spy(history_store)}
    server = FleetWebServer(settings, lambda: [], "internal-token-for-tests",
                            history_store=lambda: current["store"]).start()
    yield server, current
    server.stop()


def test_the_fleet_dashboard_reads_the_same_store(fleet, records):
    server, current = fleet
    api = RecordingClient(server.url, TOKEN)
    assert ids(api.get("/api/history", params={"agent": "retail"})) == ["c-bob", "c-dave"]
    assert api.get("/api/history/c-alice").json()["id"] == "c-alice"
    ranged = api.get("/api/history/c-alice/recording", headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"RIFF"
    assert api.get("/api/history.csv").content.count(b"\r\n") == len(records) + 1
    assert api.get("/api/stats/daily").status_code == 200
    assert RecordingClient(server.url).get("/api/history").status_code == 401
    current["store"] = None
    response = api.get("/api/history")
    assert response.status_code == 503 and "no history store" in response.json()["error"]


# ---------------------------------------------------------------------------- in a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PLAY_AND_WAIT = """
const done = arguments[arguments.length - 1];
const audio = document.getElementById("hc-audio");
const report = (how) => done({how, ready: audio.readyState, time: audio.currentTime,
                              duration: audio.duration, error: audio.error && audio.error.code});
audio.addEventListener("timeupdate", () => { if (audio.currentTime > 0) report("playing"); });
audio.addEventListener("error", () => report("error"));
audio.play().catch((e) => done({how: "refused", reason: String(e)}));
"""


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                    "chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1440,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_history_view_finds_a_call_shows_it_and_plays_its_recording(browser, web,
                                                                        tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    wait = WebDriverWait(browser, 20, poll_frequency=0.05)

    from selenium.common.exceptions import StaleElementReferenceException

    def rows(driver) -> list[str]:
        try:
            return [r.get_attribute("data-id") for r in
                    driver.find_elements(By.CSS_SELECTOR, "#history-rows tr")]
        except StaleElementReferenceException:      # redrawn while read: read again
            return []

    browser.get(f"{web.url}?token={TOKEN}")
    assert browser.current_url == web.url
    browser.find_element(By.ID, "tab-history").click()
    wait.until(lambda d: rows(d) == NEWEST_FIRST)
    assert not browser.find_element(By.ID, "live-view").is_displayed()

    # a phrase said in one call: only that call is listed, and the export link is that search
    browser.find_element(By.ID, "h-text").send_keys('"check the status"')
    browser.execute_script("document.getElementById('h-since').value = '2026-02-27';"
                           "document.getElementById('h-until').value = '2026-03-02';")
    browser.find_element(By.ID, "h-search").click()
    wait.until(lambda d: rows(d) == ["c-alice"])
    export = browser.find_element(By.ID, "history-csv").get_attribute("href")
    assert "text=%22check+the+status%22" in export and "since=2026-02-27" in export
    # the totals of the period: per agent, per day, and a bar per day in the chart
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#totals-days tr")) == 4)
    bars = browser.find_elements(By.CSS_SELECTOR, "#totals-chart rect.chart-bar")
    assert [b.get_attribute("data-day") for b in bars] == ["2026-02-28", "2026-03-01",
                                                           "2026-03-02"]
    agents = browser.find_element(By.ID, "totals-agents").text
    assert "default" in agents and "retail" in agents

    browser.save_screenshot(str(tmp_path / "history-list.png"))
    # the call's page: header, transcript with its tool, figures, and the recording
    browser.find_element(By.CSS_SELECTOR, '#history-rows tr[data-id="c-alice"]').click()
    wait.until(lambda d: "Alice Martin" in d.find_element(By.ID, "hc-title").text)
    assert "#history/call/c-alice" in browser.current_url
    meta = browser.find_element(By.ID, "hc-meta").text
    assert "agent default" in meta and "1:05" in meta and "caller hung up" in meta
    transcript = browser.find_element(By.ID, "hc-transcript").text
    assert "check the status of my order" in transcript and "How can I help" in transcript
    assert browser.find_elements(By.CSS_SELECTOR, "#hc-transcript .msg.caller")
    assert browser.find_elements(By.CSS_SELECTOR, "#hc-transcript .msg.assistant")
    tool = browser.find_element(By.CSS_SELECTOR, "#hc-transcript .tool.ok").text
    assert "lookup_order" in tool and '{"order":427}' in tool and "shipped" in tool
    assert "barge-in" in browser.find_element(By.ID, "hc-events").text
    quality = browser.find_element(By.ID, "hc-quality").text
    assert "jitter" in quality and "4.5 ms" in quality and "turn p95" in quality
    assert "3000" in browser.find_element(By.ID, "hc-usage").text
    audio = browser.find_element(By.ID, "hc-audio")
    assert audio.get_attribute("preload") == "metadata"
    assert audio.get_attribute("src").endswith("/api/history/c-alice/recording")
    played = browser.execute_async_script(PLAY_AND_WAIT)
    assert played["how"] == "playing", played
    assert played["ready"] >= 2 and played["time"] > 0
    assert abs(played["duration"] - 2.0) < 0.05

    browser.save_screenshot(str(tmp_path / "history-call.png"))
    print(f"\nhistory screenshots: {tmp_path}")
    # back to the results, and the browser saw no error
    browser.find_element(By.ID, "hc-back").click()
    wait.until(lambda d: d.find_element(By.ID, "history-list").is_displayed())
    severe = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []
