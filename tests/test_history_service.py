"""A worker's link to the call history (relay.history.service): the database the settings name,
the dashboard's store that opens again after an outage, retention removing old calls with their
recordings, and privacy seen in what the database holds after real calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stack import Stack, wait_for

from relay.config import load_settings
from relay.history import service
from relay.history.query import HistoryQuery
from relay.history.service import ReadStore, database_target, expire_calls, open_upgraded
from relay.history.store import StoreUnavailable, open_store
from relay.retention import Retention

HI = "Hi, just checking."
SCRIPT = {"phrasebook": [HI], "default": "Okay.", "greeting": "Hello.", "chunk_interval_ms": 2}
CALLER = {"caller": {"number": "+15550142", "name": "Grace Hopper"},
          "steps": [{"after_agent": HI, "silence_ms": 300},
                    {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 30000}}]}


def record(n: int, started_at: float, recording: str = "") -> dict:
    return {"id": f"call-{n}", "worker": "w0", "host": "h", "agent": "default",
            "direction": "inbound", "caller_number": f"+1555000{n}", "caller_name": "",
            "started_at": started_at, "answered_at": started_at, "ended_at": started_at + 5,
            "duration_s": 5.0, "end_reason": "caller hung up", "barge_ins": 0,
            "turn_latency_ms": {"count": 0, "p50": None, "p95": None, "max": None,
                                "values": []},
            "quality": {}, "model": {}, "usage": {}, "cost_usd": None,
            "recording_path": recording,
            "transcript": [{"t": started_at, "kind": "caller", "text": f"hello {n}"}],
            "tools": [], "outbound": None}


def test_the_database_is_the_url_or_the_sqlite_file_under_the_root(monkeypatch, tmp_path):
    monkeypatch.setattr(service, "PACKAGE_ROOT", tmp_path)
    tree = load_settings(env={}).tree
    assert database_target(tree) == str(tmp_path / "var" / "relay.db")
    tree = load_settings(env={"HISTORY_SQLITE_PATH": "/srv/relay/calls.db"}).tree
    assert database_target(tree) == "/srv/relay/calls.db"
    url = "postgresql://relay:pw@db.example/relay"
    assert database_target(load_settings(env={"DATABASE_URL": url}).tree) == url


def test_retention_removes_old_calls_and_their_recordings(tmp_path):
    target = str(tmp_path / "relay.db")
    store = open_upgraded(target)
    now = time.time()
    old_wav = tmp_path / "old.wav"
    old_wav.write_bytes(b"RIFF")
    new_wav = tmp_path / "new.wav"
    new_wav.write_bytes(b"RIFF")
    store.write_calls([record(1, now - 40 * 86400, str(old_wav)),
                       record(2, now - 31 * 86400, str(tmp_path / "gone-already.wav")),
                       record(3, now - 86400, str(new_wav))])
    assert expire_calls(store, 0) == (0, 0)                       # 0 days: keep for ever
    assert expire_calls(store, 30, now=now) == (2, 1)
    assert not old_wav.exists() and new_wav.exists()
    assert [r["id"] for r in store.search(HistoryQuery(), 50, None)["calls"]] == ["call-3"]
    store.close()


def test_the_retention_greenlet_expires_the_history_off_the_hub(tmp_path):
    target = str(tmp_path / "relay.db")
    store = open_upgraded(target)
    store.write_calls([record(1, time.time() - 10 * 86400)])
    reader = ReadStore(target)
    retention = Retention([tmp_path / "files"], 7, interval_s=3600,
                          expire_history=lambda: expire_calls(reader, 7))
    retention.start()
    try:
        wait_for(lambda: retention.history_removed == 1, 10, "the old call to be removed")
    finally:
        retention.stop()
        reader.close()
    assert store.search(HistoryQuery(), 50, None)["calls"] == []
    store.close()


def test_a_failing_expiry_is_logged_and_tried_at_the_next_sweep(tmp_path, caplog):
    def broken() -> tuple[int, int]:
        raise StoreUnavailable("history database x: connection refused")
    retention = Retention([tmp_path], 7, interval_s=3600, expire_history=broken)
    retention.start()
    try:
        wait_for(lambda: "cannot expire the call history" in caplog.text, 10, "the warning")
    finally:
        retention.stop()


def test_the_dashboards_store_opens_again_after_the_database_was_unreachable(tmp_path):
    target = str(tmp_path / "relay.db")
    open_upgraded(target).close()
    opened = []

    class Flaky:
        def __init__(self, real) -> None:
            self.real = real
            self.down = True

        def search(self, *args):
            if self.down:
                raise StoreUnavailable("history database: server closed the connection")
            return self.real.search(*args)

        def close(self) -> None:
            self.real.close()

    def opener(where: str):
        if not opened:
            opened.append(Flaky(open_upgraded(where)))
        else:
            opened.append(open_upgraded(where))
        return opened[-1]

    reader = ReadStore(target, opener=opener)
    with pytest.raises(StoreUnavailable):
        reader.search(HistoryQuery(), 10, None)
    assert reader.search(HistoryQuery(), 10, None) == {"calls": [], "next": None}
    assert len(opened) == 2             # the first store was forgotten, a new one opened
    reader.close()


def test_without_personal_data_the_database_holds_figures_only(tmp_path: Path):
    stack = Stack(tmp_path, model_script=SCRIPT,
                  settings={"agent.active": "greeter", "history.personal_data": False})
    try:
        ids = stack.pbx.start_calls(CALLER, count=2, app="relay-test", rate=50)
        stack.wait_calls(ids, 60)
        assert all(s["caller"] == "+15550142" for s in stack.worker.finished)   # live view
        database = str(tmp_path / "relay.db")

        def stored() -> list[dict]:
            store = open_store(database)
            try:
                if store.version() == 0:
                    return []
                rows = store.search(HistoryQuery(), 50, None)["calls"]
                return [store.get(row["id"]) for row in rows]
            finally:
                store.close()
        wait_for(lambda: len(stored()) == 2, 15, "the two calls in the history")
        for call in stored():
            assert call["caller_number"] == "" and call["caller_name"] == ""
            assert all(entry["text"] == "" for entry in call["transcript"])
            assert call["turn_latency_ms"]["count"] == 1 and call["duration_s"] > 0
            assert call["usage"]["responses"] >= 2 and call["cost_usd"] > 0
        store = open_store(database)
        try:    # nothing personal to find either
            assert store.search(HistoryQuery(number="0142"), 50, None)["calls"] == []
            assert store.search(HistoryQuery(text="checking"), 50, None)["calls"] == []
        finally:
            store.close()
    finally:
        stack.stop()
