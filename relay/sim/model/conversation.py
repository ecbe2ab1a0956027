"""The conversation of one simulated session: its items in order, bounded.

Owns: the item list (insertion after `previous_item_id`, deletion, lookup), the history of
every item ever added (deleted ones included, for tests), and how much audio the model
generated per assistant item (what `conversation.item.truncate` is checked against).
No events, no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, Optional

MAX_ITEMS = 1000


class Conversation:
    """Items in conversation order, with lookup by id."""

    __slots__ = ("_order", "_items", "history", "audio_ms", "max_items")

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self.max_items = max_items
        self._order: list[str] = []
        self._items: dict[str, dict] = {}
        self.history: deque[dict] = deque(maxlen=max_items)
        self.audio_ms: dict[str, int] = {}  # assistant item id -> audio generated, ms

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[dict]:
        return (self._items[i] for i in self._order)

    def get(self, item_id: str) -> Optional[dict]:
        return self._items.get(item_id)

    @property
    def last_id(self) -> Optional[str]:
        return self._order[-1] if self._order else None

    def previous_id(self, item_id: str) -> Optional[str]:
        index = self._order.index(item_id)
        return self._order[index - 1] if index else None

    def add(self, item: dict, previous_item_id: Optional[str] = None, append: bool = True
            ) -> Optional[str]:
        """Insert `item` at the end (append) or after previous_item_id ("root": first).

        Returns the id of the item now before it. KeyError when previous_item_id is unknown.
        """
        if append:
            previous = self.last_id
            self._order.append(item["id"])
        elif previous_item_id == "root" or previous_item_id is None:
            previous = None
            self._order.insert(0, item["id"])
        else:
            index = self._order.index(previous_item_id) if previous_item_id in self._items \
                else None
            if index is None:
                raise KeyError(previous_item_id)
            previous = previous_item_id
            self._order.insert(index + 1, item["id"])
        self._items[item["id"]] = item
        self.history.append(item)
        while len(self._order) > self.max_items:
            dropped = self._order.pop(0)
            self._items.pop(dropped, None)
            self.audio_ms.pop(dropped, None)
        return previous

    def delete(self, item_id: str) -> bool:
        if item_id not in self._items:
            return False
        self._order.remove(item_id)
        del self._items[item_id]
        self.audio_ms.pop(item_id, None)
        return True

    def call_ids(self) -> set:
        """call_id of every function_call item in the conversation."""
        return {item.get("call_id") for item in self if item.get("type") == "function_call"}
