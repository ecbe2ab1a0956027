"""A process's handle on the campaign tables: one CampaignStore over the history's database,
opened on first use in the calling thread (gevent's thread pool) and opened again after the
database was unreachable.

Owns: `SharedCampaigns(target)`, used by a worker's engine and API alike, and by the fleet
master's API (control is a state change in the database, so any of them may make it).
"""

from __future__ import annotations

from typing import Any, Callable

from relay.campaigns.store import CampaignStore
from relay.history.service import ReopeningStore, open_upgraded


class SharedCampaigns(ReopeningStore):
    """Every CampaignStore method, on a store opened on first use (blocks: thread pool)."""

    def __init__(self, target: str, opener: Callable[[str], Any] = open_upgraded) -> None:
        super().__init__(target, lambda where: CampaignStore(opener(where)))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(CampaignStore, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._use(name, *args, **kwargs)
