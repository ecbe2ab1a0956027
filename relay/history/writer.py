"""The history writer: call records to the store, in batches, off the hub, never lost.

Owns: the bounded queue between the calls and the store (`submit()` never blocks nor raises),
the one greenlet that writes batches through gevent's thread pool (the store blocks: it is never
called on the hub), and the spool, a JSON-lines file where records wait while the store cannot
take them (it cannot be opened, or a write raises). The spool is appended with one write and an
fsync per batch, in the thread pool. Once the store works again (tried again after a jittered
backoff, relay/backoff.py), the spool is replayed in order, batch by batch, then removed; a
replay that fails halfway rewrites the spool with what is left (a temporary file renamed over
it), so nothing is lost, and since the store upserts by id nothing is stored twice. A spool
found at start (a crash, a stop while the store was down) is replayed first.

When the queue is full, records go straight to the spool. When the spool itself cannot be
written (disk full, permissions), one ERROR line per episode names the path and the error, the
records wait in a bounded memory backlog and both are tried again with the backoff; beyond that
bound records are dropped and counted (an ERROR line per episode too). Nothing here ever makes a
call wait or fail.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

import gevent
import gevent.event

from relay.backoff import Backoff
from relay.redact import PROCESS

log = logging.getLogger(__name__)

STOP_SPOOL_S = 2.0      # stop(): at most this long for a last spooling after the deadline


class Store(Protocol):
    """What the writer needs of relay.history.store's Store (docs/HISTORY.md)."""

    def write_calls(self, records: list[dict]) -> None: ...
    def close(self) -> None: ...


def _outcome(fn: Callable, args: tuple) -> tuple[bool, Any]:
    """(False, fn(*args)) or (True, the exception it raised): run in the pool's threads."""
    try:
        return False, fn(*args)
    except Exception as exc:
        return True, exc


def _describe(exc: BaseException) -> str:
    return PROCESS.scrub(f"{type(exc).__name__}: {exc}")[:500]


class HistoryWriter:
    """start(); submit(record) from anywhere on the hub; stop(timeout) once. See the module."""

    def __init__(self, open_store: Callable[[], Store], spool_path: str | os.PathLike,
                 queue_max: int = 10_000, batch_max: int = 50,
                 backlog_max: Optional[int] = None, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, threadpool: Any = None,
                 rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if queue_max < 1 or batch_max < 1:
            raise ValueError("HistoryWriter needs queue_max >= 1 and batch_max >= 1")
        self._open_store = open_store
        self.spool_path = Path(spool_path)
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.backlog_max = queue_max if backlog_max is None else backlog_max
        self._backoff = Backoff(retry_initial_s, retry_max_s, rand=rand)
        self._pool = threadpool
        self._clock = clock
        self._queue: deque[dict] = deque()      # submitted, for the store
        self._backlog: deque[dict] = deque()    # for the spool (a full queue, a store down)
        self._inflight: list[dict] = []         # the batch a thread is writing to the store
        self._busy = ""                         # what a thread does now: store, spool, replay
        self._store: Optional[Store] = None     # opened and used in the pool's threads only
        self._spool_pending = False             # the spool holds records to replay
        self._store_failures = 0
        self._store_retry_at = 0.0
        self._spool_failures = 0
        self._spool_retry_at = 0.0
        self._dropping = False                  # an episode of dropped records is on
        self._wake = gevent.event.Event()
        self._greenlet: Optional[gevent.Greenlet] = None
        self._stopping = False
        self._closed = False
        self.counters = {"submitted": 0, "written": 0, "spooled": 0, "replayed": 0,
                         "write_failures": 0, "spool_errors": 0, "dropped": 0,
                         "spool_rejected": 0}
        self.last_error = ""
        self.last_error_at = 0.0      # epoch seconds

    # the calls' side
    def submit(self, record: dict) -> bool:
        """Hand a record over (never blocks, never raises): False when it had to be dropped
        (the writer is stopped, or the queue, the spool and the backlog are all full)."""
        try:
            if self._closed:
                self._drop(1, "the history writer is stopped")
                return False
            self.counters["submitted"] += 1
            if len(self._queue) < self.queue_max:
                self._queue.append(record)
            elif len(self._backlog) < self.backlog_max:
                self._backlog.append(record)        # a full queue: to the spool directly
            else:
                self._drop(1, f"the queue ({self.queue_max}) and the backlog "
                           f"({self.backlog_max}) are full")
                return False
            self._wake.set()
            return True
        except Exception:       # never the caller's problem
            log.exception("history: cannot take a record")
            return False

    def stats(self) -> dict:
        """The writer's figures (the dashboard, /metrics)."""
        return {**self.counters, "queued": len(self._queue) + len(self._backlog),
                "backlog": len(self._backlog),
                "in_flight": len(self._inflight),   # the batch a thread is writing now
                "replaying": self._busy == "replay",  # the spool going to the store (counted after)
                "spool_pending": self._spool_pending,
                "store_up": self._store_failures == 0, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "spool_path": str(self.spool_path)}

    # life cycle
    def start(self) -> None:
        if self._greenlet is not None:
            return
        if self._pool is None:
            self._pool = gevent.get_hub().threadpool
        self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what the store takes within timeout, spool the rest; True when nothing was
        left behind. Records submitted afterwards are dropped (and counted)."""
        self._closed = True
        greenlet = self._greenlet
        if greenlet is None:
            return self._left_behind() == 0
        self._stopping = True
        self._spool_retry_at = 0.0          # one last try of the spool whatever its backoff
        self._wake.set()
        greenlet.join(timeout)
        if not greenlet.dead:
            busy = self._busy
            greenlet.kill(block=False)
            log.error("history: stopping took longer than %.1f s (%s in progress); the rest "
                      "goes to the spool", timeout, busy or "nothing")
            if busy == "store":     # the thread may still commit it: the store upserts by id
                self._queue.extendleft(reversed(self._inflight))
            if busy not in ("spool", "replay"):
                self._last_spooling()
        elif self._store is not None:
            try:
                self._pool.spawn(_outcome, self._close_store, ()).get(timeout=STOP_SPOOL_S)
            except BaseException as exc:    # gevent.Timeout included
                log.warning("history: cannot close the store: %s", _describe(exc))
        left = self._left_behind()
        if left:
            self._drop(left, "the store and the spool could not take them before the stop")
            self._queue.clear()
            self._backlog.clear()
        return left == 0

    def _left_behind(self) -> int:
        return len(self._queue) + len(self._backlog)

    def _last_spooling(self) -> None:
        records = list(self._backlog) + list(self._queue)
        if not records:
            return
        try:
            failed, error = self._pool.spawn(_outcome, self._append_spool, (records,)).get(
                timeout=STOP_SPOOL_S)
            if failed:
                raise error
        except BaseException as exc:    # gevent.Timeout included
            self._spool_failed(exc)
            return
        self._backlog.clear()
        self._queue.clear()
        self.counters["spooled"] += len(records)

    # the writer's greenlet
    def _run(self) -> None:
        first = True
        while True:
            self._wake.clear()
            try:
                if first:
                    first = False
                    self._spool_pending = self._in_thread("replay", self._spool_has_records)
                more = self._step()
            except Exception as exc:      # a bug here: logged, never the end of the writer
                log.exception("history: the writer's loop failed")
                self._error(exc)
                more = False
                gevent.sleep(self._backoff.delay(1))
            if self._stopping and not more:
                return
            if not more:
                self._wake.wait(self._wait_s())

    def _step(self) -> bool:
        """One round; True when there may be more to do at once."""
        now = self._clock()
        store_due = now >= self._store_retry_at
        if not store_due or self._stopping and self._store_failures:
            # the store is down: what waits goes to the spool (at stop: no more tries), through
            # the backlog, within its bound
            while self._queue and len(self._backlog) < self.backlog_max:
                self._backlog.append(self._queue.popleft())
        spooled = bool(self._backlog) and now >= self._spool_retry_at and self._spool_backlog()
        if not store_due or self._stopping and self._store_failures:
            return spooled and bool(self._queue)    # more for the spool
        if self._spool_pending and not self._replay():
            return bool(self._queue)    # the store is down now: the queue goes to the spool
        return self._write_batch()

    def _wait_s(self) -> Optional[float]:
        """How long to sleep when there is nothing to do at once (None: until a submit)."""
        now = self._clock()
        due = []
        if self._store_failures and (self._spool_pending or self._queue or self._backlog):
            due.append(self._store_retry_at)
        if self._backlog:
            due.append(self._spool_retry_at)
        return max(0.0, min(due) - now) if due else None

    def _write_batch(self) -> bool:
        from_backlog: list[dict] = []
        if self._spool_failures:        # the spool is broken: the backlog goes to the store
            while self._backlog and len(from_backlog) < self.batch_max:
                from_backlog.append(self._backlog.popleft())
        from_queue: list[dict] = []
        while self._queue and len(from_backlog) + len(from_queue) < self.batch_max:
            from_queue.append(self._queue.popleft())
        batch = from_backlog + from_queue
        if not batch:
            return False
        self._inflight = batch
        try:
            self._in_thread("store", self._write, batch)
        except Exception as exc:
            self._store_failed(exc)
            # back where they were, in order (the bounds hold): now to the spool
            self._backlog.extendleft(reversed(from_backlog))
            self._queue.extendleft(reversed(from_queue))
            return True
        finally:
            self._inflight = []
        self.counters["written"] += len(batch)
        self._store_works()
        return bool(self._queue or self._backlog and self._spool_failures)

    def _replay(self) -> bool:
        """Replay the spool into the store; False when the store failed (what is left of the
        spool stays in it)."""
        progress = [0, 0]       # records replayed, lines rejected (updated by the thread)
        try:
            self._in_thread("replay", self._replay_spool, progress)
        except Exception as exc:
            self._count_replay(progress)
            self._store_failed(exc)
            return False
        self._count_replay(progress)
        self._spool_pending = False
        if progress[0]:
            log.info("history: %d record(s) replayed from the spool %s", progress[0],
                     self.spool_path)
        self._store_works()
        return True

    def _count_replay(self, progress: list[int]) -> None:
        self.counters["replayed"] += progress[0]
        self.counters["spool_rejected"] += progress[1]
        if progress[1]:
            log.warning("history: %d unreadable line(s) of the spool %s moved to %s",
                        progress[1], self.spool_path, self._rejected_path())

    def _spool_backlog(self) -> bool:
        records = list(self._backlog)
        try:
            self._in_thread("spool", self._append_spool, records)
        except Exception as exc:
            self._spool_failed(exc)
            return False
        for _ in records:
            self._backlog.popleft()
        self.counters["spooled"] += len(records)
        self._spool_pending = True
        if self._spool_failures:
            log.warning("history: the spool %s can be written again (%d record(s) kept in "
                        "memory meanwhile are in it now)", self.spool_path, len(records))
        self._spool_failures = 0
        self._spool_retry_at = 0.0
        self._dropping = False
        return True

    # failures
    def _store_failed(self, exc: BaseException) -> None:
        self.counters["write_failures"] += 1
        self._error(exc)
        self._store_failures += 1
        delay = self._backoff.delay(self._store_failures)
        self._store_retry_at = self._clock() + delay
        if self._store_failures == 1:
            log.warning("history: the store failed (%s); records go to the spool %s until it "
                        "works again (next try in %.1f s)", self.last_error, self.spool_path,
                        delay)
        else:
            log.info("history: the store still fails (%s); next try in %.1f s",
                     self.last_error, delay)

    def _store_works(self) -> None:
        if self._store_failures:
            log.warning("history: the store works again after %d failed attempt(s)",
                        self._store_failures)
        self._store_failures = 0
        self._store_retry_at = 0.0

    def _spool_failed(self, exc: BaseException) -> None:
        self.counters["spool_errors"] += 1
        self._error(exc)
        self._spool_failures += 1
        self._spool_retry_at = self._clock() + self._backoff.delay(self._spool_failures)
        if self._spool_failures == 1:
            log.error("history: cannot write the spool %s: %s; %d record(s) kept in memory "
                      "(at most %d) and tried again", self.spool_path, self.last_error,
                      len(self._backlog), self.backlog_max)
        excess = len(self._backlog) - self.backlog_max
        if excess > 0:
            for _ in range(excess):
                self._backlog.pop()
            self._drop(excess, f"the spool cannot be written and the backlog "
                       f"({self.backlog_max}) is full")

    def _drop(self, count: int, why: str) -> None:
        self.counters["dropped"] += count
        if not self._dropping:
            self._dropping = True
            log.error("history: %d call record(s) dropped: %s", count, why)

    def _error(self, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        self.last_error_at = time.time()

    # blocking work, in the pool's threads
    def _in_thread(self, what: str, fn: Callable, *args: Any) -> Any:
        """fn(*args) in a thread of the pool, this greenlet waiting (the hub runs on); its
        exception raised here (not reported by the pool as an error of its own)."""
        self._busy = what
        try:
            failed, value = self._pool.apply(_outcome, (fn, args))
        finally:
            self._busy = ""
        if failed:
            raise value
        return value

    def _write(self, records: list[dict]) -> None:
        if self._store is None:
            self._store = self._open_store()
        try:
            self._store.write_calls(records)
        except BaseException:
            self._close_store()     # opened again for the next try (a broken connection...)
            raise

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                pass

    def _spool_has_records(self) -> bool:
        try:
            return self.spool_path.stat().st_size > 0
        except FileNotFoundError:
            return False
        except OSError as exc:      # written later if it can be (see _spool_failed)
            log.warning("history: cannot read the spool %s: %s", self.spool_path,
                        _describe(exc))
            return False

    def _append_spool(self, records: list[dict]) -> None:
        """Append the records as JSON lines, one write and an fsync; on a failure the file is
        cut back to its size before, so no half line is left in it."""
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                       for r in records).encode("utf-8")
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.spool_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def _replay_spool(self, progress: list[int]) -> None:
        """Write the spool's records to the store, batch_max at a time, in order; remove the
        spool after the last. A failing batch: the spool is rewritten with that batch and
        everything after it, then the error is raised."""
        try:
            handle = open(self.spool_path, "rb")
        except FileNotFoundError:
            return
        with handle:
            while True:
                lines, records, end = self._read_batch(handle, progress)
                if records:
                    try:
                        self._write(records)
                    except BaseException:
                        self._keep_rest(lines, handle)
                        raise
                    progress[0] += len(records)
                if end:
                    break
        os.unlink(self.spool_path)

    def _read_batch(self, handle, progress: list[int]) -> tuple[list[bytes], list[dict], bool]:
        """Up to batch_max records (their lines, the records, and True at the end of the
        file); lines that are no record are set aside (_reject)."""
        lines: list[bytes] = []
        records: list[dict] = []
        while len(records) < self.batch_max:
            line = handle.readline()
            if not line:
                return lines, records, True
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not record.get("id"):
                    raise ValueError("not a call record")
            except ValueError:
                progress[1] += 1
                self._reject(line)
                continue
            lines.append(line)
            records.append(record)
        return lines, records, False

    def _rejected_path(self) -> Path:
        return self.spool_path.with_name(self.spool_path.name + ".rejected")

    def _reject(self, line: bytes) -> None:
        """A line of the spool that is no record (a write cut short by a crash): kept aside."""
        try:
            with open(self._rejected_path(), "ab") as out:
                out.write(line if line.endswith(b"\n") else line + b"\n")
        except OSError:
            pass

    def _keep_rest(self, lines: Iterable[bytes], handle) -> None:
        """The spool becomes `lines` and the rest of `handle` (a new file renamed over it:
        if that fails, the spool is left whole, and what was replayed is replayed again)."""
        temporary = self.spool_path.with_name(self.spool_path.name + ".tmp")
        try:
            with open(temporary, "wb") as out:
                for line in lines:
                    out.write(line)
                shutil.copyfileobj(handle, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.spool_path)
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass
