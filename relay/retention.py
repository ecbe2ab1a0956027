"""Retention of what relay writes per call: transcripts, recordings and their leftovers.

Owns: removing, from the transcripts and recordings directories, the files relay itself names
(`<YYYYmmdd-HHMMSS>_<call id>.jsonl`, `.wav`, and the `.part` files a crash may leave) whose last
change is older than the retention period; and a small greenlet that does it when the worker
starts and then periodically, together with the call history's own expiry (its rows and the
recordings they name: relay.history.service), run in gevent's thread pool. Other files in
those directories are never touched; nothing is removed when the retention is 0 days (keep
forever).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import gevent

log = logging.getLogger(__name__)

OWN_FILE = re.compile(r"^\d{8}-\d{6}_.+\.(jsonl|wav|part)$")
SWEEP_INTERVAL_S = 3600.0


def sweep(directories: Iterable[Path | str], days: float, now: Optional[float] = None) -> int:
    """Remove relay's own per-call files older than `days` from each directory (not
    recursively); the number removed. A directory that does not exist is skipped."""
    if days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - days * 86400.0
    removed = 0
    for directory in dict.fromkeys(Path(d) for d in directories):
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention: cannot list %s: %s", directory, exc)
            continue
        for entry in entries:
            if not OWN_FILE.match(entry.name):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("retention: cannot remove %s: %s", entry.path, exc)
    return removed


class Retention:
    """Runs sweep() at start and every interval_s in one greenlet; stop() ends it."""

    def __init__(self, directories: Iterable[Path | str], days: float,
                 interval_s: float = SWEEP_INTERVAL_S,
                 expire_history: Optional[Callable[[], tuple[int, int]]] = None) -> None:
        self.directories = list(directories)
        self.days = days
        self.interval_s = interval_s
        self.removed = 0
        self.history_removed = 0         # calls removed from the history store
        self._expire_history = expire_history
        self._greenlet: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        if self.days > 0 and self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            try:
                count = sweep(self.directories, self.days)
            except Exception:
                log.exception("retention: sweep failed")
                count = 0
            if count:
                self.removed += count
                log.info("retention: removed %d file(s) older than %g days", count, self.days)
            if self._expire_history is not None:
                self._history_once()
            gevent.sleep(self.interval_s)

    def _history_once(self) -> None:
        try:
            calls, files = gevent.get_hub().threadpool.apply(self._expire_history)
        except Exception as exc:        # the database down: the next sweep tries again
            log.warning("retention: cannot expire the call history: %s", exc)
            return
        if calls:
            self.history_removed += calls
            log.info("retention: removed %d call(s) older than %g days from the history "
                     "(%d recording file(s))", calls, self.days, files)
