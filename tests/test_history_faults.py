"""The call history's faults seen from the calls: a database that stops while calls run and end,
a spool on a full disk. Whatever the history suffers, every call runs as it would without it;
once the database is back every record is there, once.

Real parts: the simulated PBX and model, one relay worker, a PostgreSQL server the tests start
(tests/pg_fixtures.py) and, for the full disk, a 64 KiB tmpfs mounted by the test (root only;
otherwise that test is skipped, saying why).
"""

from __future__ import annotations

import logging
import subprocess
from collections import Counter

import pytest
from stack import Stack, wait_for

from relay.history.store import open_store

HI = "Hi, just checking."
SCRIPT = {"phrasebook": [HI], "default": "Okay.", "greeting": "Hello.", "chunk_interval_ms": 2}
CALLER = {"steps": [{"after_agent": HI, "silence_ms": 300},
                    {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 30000}}]}
EXPECTED = [("assistant", "Hello."), ("caller", HI), ("assistant", "Okay.")]


def all_stored(url: str) -> dict[str, dict]:
    """Every call the store holds, by id, with the full record of each (read directly; none
    while the writer has not yet created the schema)."""
    store = open_store(url)
    try:
        if store.version() == 0:
            return {}
        rows, after = [], None
        while True:
            page = store.search(None, 200, after)
            rows.extend(page["calls"])
            after = page["next"]
            if after is None:
                break
        return {row["id"]: store.get(row["id"]) for row in rows}
    finally:
        store.close()


def run_calls(stack: Stack, count: int) -> list[dict]:
    ids = stack.pbx.start_calls(CALLER, count=count, app="relay-test", rate=100)
    results = stack.wait_calls(ids, 120)
    assert all(r["state"] == "ended" for r in results)
    return results


def assert_conversations(stack: Stack, count: int) -> None:
    summaries = list(stack.worker.finished)[-count:]
    assert [s["transcript"] for s in summaries] == [EXPECTED] * count
    assert all(s["end_reason"] == "caller hung up" for s in summaries), \
        Counter(s["end_reason"] for s in summaries)
    assert stack.worker.counters["calls_failed"] == 0
    assert stack.worker.counters["setup_failures"] == {}


@pytest.fixture
def greeter_stack(tmp_path, request):
    stacks = []

    def make(**settings) -> Stack:
        s = Stack(tmp_path, model_script=SCRIPT,
                  settings={"agent.active": "greeter", "history.retry_max_s": 0.5,
                            **settings})
        stacks.append(s)
        return s
    yield make
    for s in stacks:
        s.stop()


def test_postgresql_stopped_while_50_calls_run_and_end(greeter_stack, pg_server, pg_url):
    stack = greeter_stack(**{"history.database_url": pg_url})
    run_calls(stack, 1)
    wait_for(lambda: len(all_stored(pg_url)) == 1, 15, "the first call in PostgreSQL")

    pg_server.stop()
    run_calls(stack, 50)
    assert_conversations(stack, 50)       # the calls never noticed
    history = stack.worker.history
    wait_for(lambda: history.stats()["spooled"] == 50, 15, "the 50 records in the spool")
    assert history.stats()["written"] == 1 and history.stats()["write_failures"] >= 1

    pg_server.start()
    wait_for(lambda: history.stats()["replayed"] == 50, 30, "the spool replayed")
    stored = all_stored(pg_url)
    assert len(stored) == 51
    assert set(stored) == {c.id for c in stack.seen_calls.values()}
    for record in stored.values():       # each once: its transcript not doubled by the replay
        spoken = [(e["kind"], e["text"]) for e in record["transcript"]
                  if e["kind"] in ("caller", "assistant")]
        assert spoken == EXPECTED, spoken
    assert not history.writer.spool_path.exists()


def test_a_full_disk_for_the_spool_is_one_clear_error_and_calls_run_on(greeter_stack, tmp_path,
                                                                       caplog):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        (small / "filler").write_bytes(b"\0" * (64 * 1024))     # the disk is full now
    except OSError:
        pass
    try:
        # a database that cannot be opened (a directory where the file should be) and a spool
        # on the full disk: the records can go nowhere but memory
        database = tmp_path / "not-a-database"
        database.mkdir()
        stack = greeter_stack(**{"history.sqlite_path": str(database),
                                 "history.spool_path": str(small / "spool.jsonl")})
        with caplog.at_level(logging.ERROR, logger="relay.history.writer"):
            run_calls(stack, 10)
            assert_conversations(stack, 10)
            history = stack.worker.history
            wait_for(lambda: history.stats()["spool_errors"] >= 1, 15, "the spool to fail")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
                  and "cannot write the spool" in r.getMessage()]
        assert len(errors) == 1, errors               # one clear line for the episode
        assert str(small / "spool.jsonl") in errors[0] and "No space left" in errors[0]
        wait_for(lambda: history.stats()["backlog"] == 10, 15, "the records kept in memory")

        # room again, and the database back: nothing was lost
        (small / "filler").unlink()
        database.rmdir()
        # (through the spool, or straight from memory when the database is back first)
        # (a replay's records are counted when the thread is done with the spool: waited for)
        def settled() -> bool:
            stats = history.stats()
            return (stats["queued"] == stats["in_flight"] == 0 and not stats["replaying"]
                    and not stats["spool_pending"] and len(all_stored(str(database))) == 10)
        wait_for(settled, 30, "the records in the database")
        stats = history.stats()
        assert stats["written"] + stats["replayed"] == 10 and stats["dropped"] == 0
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
