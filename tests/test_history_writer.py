"""The history writer (relay/history/writer.py) against a small in-test store whose failures the
tests control: batching, a store down then up, the spool and its replay (after a restart, and
failing halfway), an unwritable spool (a path under a file, and a real full filesystem), the
stop, and the hub never blocked by a slow store."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import threading
from pathlib import Path

import gevent
import pytest
from stack import wait_for

from relay.history.writer import HistoryWriter


class StoreDown(Exception):
    pass


class FakeStore:
    """Upserts by id like the real one; `committed` lists the ids of every write that
    succeeded, in order (an id twice there would be a record stored twice)."""

    def __init__(self) -> None:
        self.fail_open = False
        self.fail_writes = False
        self.fail_from_write = 0        # n > 0: the n-th write_calls (1-based) and later fail
        self.block = threading.Event()          # while `hold` is set, writes wait for it
        self.hold = False
        self.inside = False
        self.rows: dict[str, dict] = {}
        self.committed: list[str] = []
        self.batches: list[int] = []
        self.writes = 0
        self.opened = 0
        self.closed = 0

    def open(self) -> "FakeStore":
        if self.fail_open:
            raise StoreDown("could not connect to server: Connection refused")
        self.opened += 1
        return self

    def write_calls(self, records: list[dict]) -> None:
        self.writes += 1
        self.inside = True
        try:
            if self.hold:
                assert self.block.wait(20), "the test never released the store"
            if self.fail_writes or 0 < self.fail_from_write <= self.writes:
                raise StoreDown("server closed the connection unexpectedly")
            for record in records:
                self.rows[record["id"]] = record
            self.committed += [r["id"] for r in records]
            self.batches.append(len(records))
        finally:
            self.inside = False

    def close(self) -> None:
        self.closed += 1


def record(n: int) -> dict:
    return {"id": f"call-{n}", "agent": "default", "transcript": [{"t": n, "kind": "caller",
                                                                   "text": f"turn {n}"}]}


def ids(count: int, start: int = 0) -> list[str]:
    return [f"call-{n}" for n in range(start, start + count)]


def spool_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def writers():
    made: list[HistoryWriter] = []

    def make(store: FakeStore, spool: Path, **kwargs) -> HistoryWriter:
        kwargs.setdefault("retry_initial_s", 0.01)
        kwargs.setdefault("retry_max_s", 0.05)
        writer = HistoryWriter(store.open, spool, **kwargs)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.stop(5)


def test_records_are_written_in_batches_in_order(tmp_path, writers):
    store = FakeStore()
    writer = writers(store, tmp_path / "spool.jsonl", batch_max=3)
    for n in range(7):
        assert writer.submit(record(n)) is True
    writer.start()
    wait_for(lambda: writer.stats()["written"] == 7, 10, "the records to be written")
    assert store.committed == ids(7)
    assert store.batches == [3, 3, 1]
    assert store.opened == 1
    assert writer.stats()["queued"] == 0 and writer.stats()["spooled"] == 0
    assert not (tmp_path / "spool.jsonl").exists()
    assert store.rows["call-4"] == record(4)


@pytest.mark.parametrize("failure", ["open", "write"])
def test_a_store_down_then_up_gets_every_record_once_in_order(tmp_path, writers, caplog,
                                                              failure):
    store = FakeStore()
    setattr(store, f"fail_{failure}" if failure == "open" else "fail_writes", True)
    spool = tmp_path / "spool.jsonl"
    writer = writers(store, spool, batch_max=2)
    writer.start()
    for n in range(5):
        writer.submit(record(n))
        gevent.sleep(0)
    wait_for(lambda: spool_ids(spool) == ids(5), 10, "the records to be spooled")
    stats = writer.stats()
    assert stats["write_failures"] >= 1 and not stats["store_up"]
    assert "server" in stats["last_error"] and stats["last_error_at"] > 0
    assert store.committed == []
    warnings = [r for r in caplog.records if "the store failed" in r.getMessage()]
    assert len(warnings) == 1 and str(spool) in warnings[0].getMessage()
    # the store comes back: the spool is replayed in order, then removed; new records follow
    store.fail_open = store.fail_writes = False
    wait_for(lambda: writer.stats()["replayed"] == 5, 10, "the spool to be replayed")
    writer.submit(record(5))
    wait_for(lambda: writer.stats()["written"] == 1, 10, "the next record")
    assert store.committed == ids(6)
    assert not spool.exists()
    assert writer.stats()["store_up"] and writer.stats()["spool_pending"] is False


def test_a_spool_left_by_a_crash_is_replayed_at_start(tmp_path, writers):
    spool = tmp_path / "var" / "spool.jsonl"
    spool.parent.mkdir()
    lines = [json.dumps(record(n)) for n in range(3)]
    # the last write was cut short by the crash: half a line
    spool.write_text("\n".join(lines) + "\n" + json.dumps(record(3))[:20])
    store = FakeStore()
    writer = writers(store, spool, batch_max=2)
    writer.start()
    wait_for(lambda: writer.stats()["replayed"] == 3, 10, "the spool to be replayed")
    assert store.committed == ids(3)
    assert not spool.exists()
    assert writer.stats()["spool_rejected"] == 1
    assert (tmp_path / "var" / "spool.jsonl.rejected").read_text() == \
        json.dumps(record(3))[:20] + "\n"
    writer.submit(record(9))
    wait_for(lambda: store.committed[-1:] == ["call-9"], 10, "a new record")


def test_a_replay_failing_halfway_keeps_the_rest_and_stores_nothing_twice(tmp_path, writers):
    spool = tmp_path / "spool.jsonl"
    spool.write_text("".join(json.dumps(record(n)) + "\n" for n in range(5)))
    store = FakeStore()
    store.fail_from_write = 2           # the second batch fails, and every try after it
    writer = writers(store, spool, batch_max=2, retry_initial_s=0.05, retry_max_s=0.05)
    writer.start()
    wait_for(lambda: writer.stats()["write_failures"] >= 1, 10, "the replay to fail")
    assert store.committed == ids(2)                    # the first batch went in
    assert spool_ids(spool) == ids(3, start=2)          # the rest is kept, in order
    assert writer.stats()["replayed"] == 2
    store.fail_from_write = 0
    # the spool goes in the thread, the count on the hub once the thread is back
    wait_for(lambda: writer.stats()["replayed"] == 5, 10, "the rest to be replayed")
    assert not spool.exists()
    assert store.committed == ids(5)


def test_stop_flushes_and_a_restart_replays_what_was_spooled(tmp_path, writers):
    spool = tmp_path / "spool.jsonl"
    store = FakeStore()
    writer = writers(store, spool)
    writer.start()
    for n in range(4):
        writer.submit(record(n))
    assert writer.stop(5) is True                 # the store was up: all written
    assert store.committed == ids(4) and store.closed == 1
    assert writer.submit(record(99)) is False     # stopped: dropped and counted
    assert writer.stats()["dropped"] == 1
    # a writer stopped while its store is down spools what it has...
    down = FakeStore()
    down.fail_open = True
    second = writers(down, spool)
    second.start()
    for n in range(4, 7):
        second.submit(record(n))
    assert second.stop(5) is True
    assert spool_ids(spool) == ids(3, start=4)
    # ... and the next one (a restart) stores it, once
    third = writers(store, spool)
    third.start()
    wait_for(lambda: third.stats()["replayed"] == 3, 10, "the replay after a restart")
    assert store.committed == ids(7)


def test_a_full_queue_spools_directly(tmp_path, writers):
    store = FakeStore()
    store.hold = True
    spool = tmp_path / "spool.jsonl"
    writer = writers(store, spool, queue_max=2, backlog_max=10)
    writer.start()
    writer.submit(record(0))
    wait_for(lambda: store.inside, 10, "the first write to start")
    results = [writer.submit(record(n)) for n in range(1, 6)]
    assert results == [True] * 5                 # 2 in the queue, 3 beyond it, none refused
    assert writer.stats()["queued"] == 5 and writer.stats()["backlog"] == 3
    store.block.set()
    wait_for(lambda: sorted(store.committed) == sorted(ids(6)), 10, "every record")
    assert len(store.committed) == 6             # none twice
    assert writer.stats()["spooled"] == 3 and writer.stats()["replayed"] == 3
    assert not spool.exists()


def test_submit_never_blocks_and_drops_beyond_the_queue_and_the_backlog(tmp_path, writers):
    store = FakeStore()
    writer = writers(store, tmp_path / "spool.jsonl", queue_max=2, backlog_max=2)
    results = [writer.submit(record(n)) for n in range(6)]      # not started: nothing drains
    assert results == [True] * 4 + [False] * 2
    assert writer.stats()["dropped"] == 2 and writer.stats()["submitted"] == 6
    writer.start()
    wait_for(lambda: len(store.committed) == 4, 10, "the records kept")
    assert sorted(store.committed) == ids(4)


def unwritable_spool_error(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR
            and "cannot write the spool" in r.getMessage()]


def test_an_unwritable_spool_keeps_records_in_memory_until_the_store_is_back(tmp_path, writers,
                                                                             caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool's directory should be")
    spool = blocker / "spool.jsonl"
    store = FakeStore()
    store.fail_open = True
    writer = writers(store, spool, queue_max=10, backlog_max=3)
    writer.start()
    for n in range(5):
        assert writer.submit(record(n)) is True
        gevent.sleep(0)
    wait_for(lambda: writer.stats()["spool_errors"] >= 3, 10, "the spool to be retried")
    [error] = unwritable_spool_error(caplog)             # once per episode, however many tries
    assert str(spool) in error.getMessage()
    stats = writer.stats()
    # a batch may be in a thread's hands, trying the store again
    assert stats["backlog"] <= 3 and stats["queued"] + stats["in_flight"] == 5
    assert stats["dropped"] == 0
    store.fail_open = False
    wait_for(lambda: len(store.committed) == 5, 10, "the records once the store is back")
    assert sorted(store.committed) == ids(5)
    assert writer.stats()["queued"] == 0


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A directory on a filesystem with no space left: a 64 KiB tmpfs filled up (we run as
    root), else os.write patched to fail with ENOSPC. Yields (directory, make_room)."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                  str(mount)], capture_output=True).returncode == 0
    except OSError:     # no mount command
        mounted = False
    try:
        yield mount, (fill_up(mount) if mounted else patch_enospc(mount, monkeypatch))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_up(mount: Path):
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler.unlink


def patch_enospc(mount: Path, monkeypatch):
    real_write = os.write
    full = [True]

    def write(fd, data):
        if full[0] and os.fstat(fd).st_dev == mount.stat().st_dev:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    monkeypatch.setattr("relay.history.writer.os.write", write)
    return lambda: full.__setitem__(0, False)


def test_a_full_disk_is_one_clear_error_and_the_spool_resumes_when_there_is_room(
        full_disk, writers, caplog):
    directory, make_room = full_disk
    spool = directory / "spool.jsonl"
    store = FakeStore()
    store.fail_open = True
    writer = writers(store, spool, retry_initial_s=0.02, retry_max_s=0.05)
    writer.start()
    big = [dict(record(n), padding="y" * 3000) for n in range(3)]
    for item in big:
        assert writer.submit(item) is True
    wait_for(lambda: writer.stats()["spool_errors"] >= 2, 10, "the spool to fail")
    [error] = unwritable_spool_error(caplog)
    assert str(spool) in error.getMessage() and "No space left" in error.getMessage()
    # (between two tries the records may be in a thread's hands: wait for them to be back)
    wait_for(lambda: writer.stats()["backlog"] == 3, 10, "the records kept in memory")
    assert not spool.exists() or spool.stat().st_size == 0     # no half line left behind
    make_room()
    wait_for(lambda: spool_ids(spool) == ids(3), 10, "the backlog to reach the spool")
    assert writer.stats()["backlog"] == 0
    store.fail_open = False
    wait_for(lambda: writer.stats()["replayed"] == 3, 10, "the replay")
    assert store.committed == ids(3)


def test_a_stop_while_the_store_hangs_spools_the_batch_in_flight(tmp_path, writers):
    store = FakeStore()
    store.hold = True
    spool = tmp_path / "spool.jsonl"
    writer = writers(store, spool)
    writer.start()
    writer.submit(record(0))
    wait_for(lambda: store.inside, 10, "the write to start")
    writer.submit(record(1))
    assert writer.stop(0.2) is True           # nothing left behind: spooled
    assert spool_ids(spool) == ids(2)
    store.block.set()                         # the hung write ends after all (the store
    wait_for(lambda: not store.inside, 10, "the thread")    # upserts it: once by id)


def test_the_hub_keeps_running_while_the_store_writes(tmp_path, writers):
    store = FakeStore()
    store.hold = True
    writer = writers(store, tmp_path / "spool.jsonl")
    ticks_inside = []

    def ticker() -> None:
        while True:
            if store.inside:
                ticks_inside.append(1)
            gevent.sleep(0.005)
    running = gevent.spawn(ticker)
    try:
        writer.start()
        writer.submit(record(0))
        # the store holds the write until the hub has ticked five times during it: with a
        # blocked hub this would never happen (and the store's wait would fail the test)
        wait_for(lambda: len(ticks_inside) >= 5, 10, "greenlets to run during the write")
        store.block.set()
        wait_for(lambda: store.committed == ["call-0"], 10, "the write")
    finally:
        running.kill()


def test_writer_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError):
        HistoryWriter(FakeStore().open, tmp_path / "s", queue_max=0)
    with pytest.raises(ValueError):
        HistoryWriter(FakeStore().open, tmp_path / "s", batch_max=0)


def test_the_writers_figures_for_metrics(tmp_path, writers):
    from relay.metrics import Families, history_figures

    store = FakeStore()
    writer = writers(store, tmp_path / "spool.jsonl")
    writer.start()
    for n in range(3):
        writer.submit(record(n))
    wait_for(lambda: writer.stats()["written"] == 3, 10, "the records")
    out = Families()
    history_figures(out, writer.stats())
    text = out.text()
    assert "relay_history_written_total 3.0" in text
    assert "relay_history_queued 0.0" in text
    assert "relay_history_spool_errors_total 0.0" in text
    assert "relay_history_last_error_timestamp_seconds 0.0" in text
