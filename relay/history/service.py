"""A process's link to the call history: which database, the writer, the reader, the expiry.

Owns: choosing the database from the settings (`history.database_url` / DATABASE_URL, else the
SQLite file `history.sqlite_path`, relative paths under the project's root like the other
files relay writes), opening it and applying the migrations (in gevent's thread pool: never on
the hub), the worker's `HistoryWriter` (the spool beside it), the dashboard's `ReadStore` (a
store opened on its first use and opened again after the database was unreachable), and the
removal of calls older than `call.retention_days` with their recordings.

A worker has all of it; the fleet master only reads. Nothing here is on a call's path: a call
hands its record to `HistoryWriter.submit`, which never blocks nor raises.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from relay.history.store import StoreError, StoreUnavailable, open_store
from relay.history.writer import HistoryWriter

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
# The longest a thread writing the history may keep the GIL from the hub when the hub wants it
# (Python's default is 5 ms: the pacer's p99 lateness went from 1.1 to 9-11 ms while 1,000 calls
# were written; with 0.5 ms, 1.7 ms. bench/bench_history_writer.py). Costs nothing while only
# one thread runs.
SWITCH_INTERVAL_S = 0.0005


def _under_root(path: str) -> Path:
    resolved = Path(path)
    return resolved if resolved.is_absolute() else PACKAGE_ROOT / resolved


def database_target(tree: dict) -> str:
    """The database the settings name: a PostgreSQL URL, or the SQLite file's absolute path."""
    history = tree["history"]
    if history["database_url"]:
        return history["database_url"]
    return str(_under_root(history["sqlite_path"]))


def open_upgraded(target: str) -> Any:
    """A store over `target` with every shipped migration applied (blocks: call it in a
    thread). Several processes may do this at once: the store takes a lock for the upgrade."""
    store = open_store(target)
    try:
        store.upgrade()
    except BaseException:
        store.close()
        raise
    return store


class ReopeningStore:
    """A store opened on first use (in the thread that calls it: gevent's thread pool), and
    opened again after a call said the database could not be reached. `open_store(target)`
    makes it; the store's own `close()` ends it. The dashboard's history and the campaigns'
    tables (relay.campaigns.service) each hold one."""

    def __init__(self, target: str, open_store: Callable[[str], Any]) -> None:
        self.target = target
        self._open_store = open_store
        self._store: Any = None
        self._lock = threading.Lock()

    def _current(self) -> Any:
        with self._lock:
            if self._store is None:
                self._store = self._open_store(self.target)
            return self._store

    def _forget(self, store: Any) -> None:
        with self._lock:
            if self._store is store:
                self._store = None
        try:
            store.close()
        except Exception:       # closing a store whose database went away
            log.debug("history: closing a store %s failed", self.target, exc_info=True)

    def _use(self, method: str, *args: Any, **kwargs: Any) -> Any:
        store = self._current()
        try:
            return getattr(store, method)(*args, **kwargs)
        except StoreUnavailable:
            self._forget(store)
            raise

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()


class ReadStore(ReopeningStore):
    """The dashboard's store: search, get, daily_stats (and the retention's expire). The
    writer has its own store."""

    def __init__(self, target: str, opener: Callable[[str], Any] = open_upgraded) -> None:
        super().__init__(target, opener)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._use("search", *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._use("get", *args, **kwargs)

    def daily_stats(self, *args: Any, **kwargs: Any) -> Any:
        return self._use("daily_stats", *args, **kwargs)

    def expire(self, before_epoch: float) -> tuple[int, list[str]]:
        return self._use("expire", before_epoch)


def expire_calls(store: Any, days: float, now: Optional[float] = None) -> tuple[int, int]:
    """Remove the calls that started more than `days` ago, then their recordings (blocks).
    Returns (calls removed, recording files removed). days <= 0: keep for ever."""
    if days <= 0:
        return 0, 0
    cutoff = (time.time() if now is None else now) - days * 86400.0
    removed, paths = store.expire(cutoff)
    files = 0
    for path in paths:
        if not path:
            continue
        try:
            os.unlink(path)
            files += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("history: cannot remove the recording %s: %s", path, exc)
    return removed, files


class History:
    """The worker's history: start() opens nothing on the hub (the writer opens its store in
    its own thread), submit(record) never blocks, stop(timeout) flushes or spools."""

    def __init__(self, tree: dict) -> None:
        history = tree["history"]
        self.target = database_target(tree)
        self.retention_days = float(tree["call"]["retention_days"])
        self.writer = HistoryWriter(lambda: open_upgraded(self.target),
                                    _under_root(history["spool_path"]),
                                    queue_max=history["queue_max"],
                                    batch_max=history["batch_max"],
                                    retry_initial_s=min(0.5, history["retry_max_s"]),
                                    retry_max_s=history["retry_max_s"])
        self.reader = ReadStore(self.target)

    def describe(self) -> str:
        if "://" in self.target:
            from relay.history.postgres_store import describe_url
            return describe_url(self.target)
        return self.target

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.writer.start()
        log.info("history: calls are written to %s", self.describe())

    def submit(self, record: dict) -> bool:
        return self.writer.submit(record)

    def stats(self) -> dict:
        """The writer's figures (relay/metrics.py shows them)."""
        return self.writer.stats()

    def stop(self, timeout: float = 10.0) -> bool:
        flushed = self.writer.stop(timeout)
        try:
            self.reader.close()
        except (StoreError, OSError) as exc:
            log.debug("history: closing the dashboard's store: %s", exc)
        return flushed

    def expire(self) -> tuple[int, int]:
        """Retention (blocks: run it in a thread)."""
        return expire_calls(self.reader, self.retention_days)
