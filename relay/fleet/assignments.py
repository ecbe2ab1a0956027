"""Which worker the dispatcher handed each caller to: channel id -> worker app name, bounded.

Owns only that table. The dispatcher records each successful move; the master reads a dead
worker's callers from it (to hang up the ones still waiting in its app), forgets a worker once
cleaned up, and prunes the callers Asterisk no longer has (a caller's hangup is an event of the
worker's app, not of the dispatcher's, so the table cannot learn it by itself). When full, the
oldest entry goes: the table is a help for cleaning up, never the only source (relay.fleet.cleanup
also asks Asterisk what the dead app still holds). No I/O here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Iterable

log = logging.getLogger(__name__)


class Assignments:
    """channel id -> worker app, oldest first, at most `max_entries`."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._table: OrderedDict[str, tuple[str, int]] = OrderedDict()   # -> (app, serial)
        self._serial = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._table

    def get(self, channel_id: str) -> str | None:
        entry = self._table.get(channel_id)
        return entry[0] if entry else None

    def mark(self) -> int:
        """A point in time for prune(): entries recorded after it are kept."""
        return self._serial

    def record(self, channel_id: str, app: str) -> None:
        self._serial += 1
        self._table.pop(channel_id, None)
        self._table[channel_id] = (app, self._serial)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 10000 == 0:
                log.warning("fleet: the call table is full (%d); forgetting the oldest "
                            "(%d so far)", self.max_entries, self.evicted)

    def forget(self, channel_id: str) -> None:
        self._table.pop(channel_id, None)

    def of_worker(self, app: str) -> list[str]:
        return [cid for cid, (owner, _) in self._table.items() if owner == app]

    def drop_worker(self, app: str) -> int:
        gone = self.of_worker(app)
        for cid in gone:
            del self._table[cid]
        return len(gone)

    def prune(self, alive: Iterable[str], mark: int) -> int:
        """Forget the callers recorded up to `mark` (taken before Asterisk was asked) that
        Asterisk no longer has; returns how many went."""
        keep = set(alive)
        gone = [cid for cid, (_, serial) in self._table.items()
                if serial <= mark and cid not in keep]
        for cid in gone:
            del self._table[cid]
        return len(gone)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for app, _ in self._table.values():
            out[app] = out.get(app, 0) + 1
        return out
