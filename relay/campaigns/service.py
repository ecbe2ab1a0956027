"""A process's handle on the campaign tables: one CampaignStore over the history's database,
opened on first use in the calling thread (gevent's thread pool) and opened again after the
database was unreachable.

Owns: `SharedCampaigns(target)`, used by a worker's engine and API alike, and by the fleet
master's API (control is a state change in the database, so any of them may make it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from relay.campaigns.store import CampaignStore
from relay.history.service import open_upgraded
from relay.history.store import StoreUnavailable

log = logging.getLogger(__name__)


class SharedCampaigns:
    """Every CampaignStore method, on a store opened on first use (blocks: thread pool)."""

    def __init__(self, target: str, opener: Callable[[str], Any] = open_upgraded) -> None:
        self.target = target
        self._opener = opener
        self._store: Any = None
        self._lock = threading.Lock()

    def _current(self) -> CampaignStore:
        with self._lock:
            if self._store is None:
                self._store = CampaignStore(self._opener(self.target))
            return self._store

    def _forget(self, store: CampaignStore) -> None:
        with self._lock:
            if self._store is store:
                self._store = None
        try:
            store.db.close()
        except Exception:
            log.debug("campaigns: closing the store failed", exc_info=True)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(CampaignStore, name, None)):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            store = self._current()
            try:
                return getattr(store, name)(*args, **kwargs)
            except StoreUnavailable:
                self._forget(store)
                raise
        return call

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.db.close()
