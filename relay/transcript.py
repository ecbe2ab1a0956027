"""A call's transcript: who said what, when, plus tool calls, DTMF and notable events.

Owns: the bounded in-memory list of a call's transcript entries and writing them as JSON lines
when the call ends. Entries are plain dicts so the dashboard and the file share one shape. Every
entry is scrubbed of the secrets as it is added (relay/redact.py: a model error quoting the API
key, say), so the dashboard, the history of ended calls and the file never hold one.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from relay.redact import PROCESS

MAX_ENTRIES = 2000


class Transcript:
    """Entries of one call, oldest dropped past max_entries (the count of dropped ones kept)."""

    def __init__(self, call_id: str, max_entries: int = MAX_ENTRIES,
                 on_entry: Optional[Callable[[dict], None]] = None,
                 clock: Callable[[], float] = time.time,
                 scrub: Callable[[Any], Any] = PROCESS.scrub_value) -> None:
        self.call_id = call_id
        self._scrub = scrub
        self._entries: deque[dict] = deque(maxlen=max_entries)
        self._on_entry = on_entry
        self._clock = clock
        self.dropped = 0

    def add(self, kind: str, text: str = "", **fields: Any) -> dict:
        """kind: caller | assistant | dtmf | tool | event | fallback ..."""
        entry = {"t": round(self._clock(), 3), "call_id": self.call_id, "kind": kind,
                 "text": self._scrub(text)}
        if fields:
            entry.update(self._scrub(fields))
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(entry)
        if self._on_entry is not None:
            self._on_entry(entry)
        return entry

    def mark(self, item_id: str, **fields: Any) -> None:
        """Add fields to the entries of an item already written (e.g. an interrupted reply)."""
        fields = self._scrub(fields)
        for entry in self._entries:
            if entry.get("item_id") == item_id:
                entry.update(fields)

    def entries(self, kinds: Optional[set[str]] = None) -> list[dict]:
        return [e for e in self._entries if kinds is None or e["kind"] in kinds]

    def turns(self) -> list[tuple[str, str]]:
        """(speaker, text) of the spoken turns, in order."""
        return [(e["kind"], e["text"]) for e in self._entries
                if e["kind"] in ("caller", "assistant") and e["text"]]

    def write(self, directory: str | os.PathLike) -> Path:
        """Write the entries as JSON lines to DIRECTORY/<date>_<call id>.jsonl."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self._clock()))
        path = folder / f"{stamp}_{_safe(self.call_id)}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for entry in self._entries:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
