"""The model's audio waiting to be played to one caller, and how much of it was played.

Owns: the per-call playout queue (bounded), cut into 20 ms G.711 frames in arrival order, with
per-item accounting of bytes received from the model and bytes actually sent to the caller, so
that a barge-in can flush at once and truncate the item at exactly what the caller heard.
Sans-IO: no sockets, no clocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

FRAME_BYTES = 160          # 20 ms of G.711 at 8 kHz
BYTES_PER_MS = 8


@dataclass
class ItemProgress:
    """How much audio of one assistant item came from the model and how much was sent."""

    item_id: str
    received: int = 0
    sent: int = 0
    finished: bool = False      # the model said output_audio.done for it
    dropped: bool = False       # flushed by a barge-in: further audio is ignored

    @property
    def fully_played(self) -> bool:
        return self.finished and self.sent >= self.received

    def heard_ms(self) -> int:
        """Milliseconds of this item the caller heard (a partial frame counts for what was sent),
        never beyond what was received."""
        return min(self.sent, self.received) // BYTES_PER_MS


class PlayoutQueue:
    """Frames of model audio for one caller, bounded by max_bytes."""

    def __init__(self, max_bytes: int = 120 * 8000, frame_bytes: int = FRAME_BYTES,
                 max_items: int = 64) -> None:
        self.max_bytes = max_bytes
        self.frame_bytes = frame_bytes
        self._max_items = max_items
        self._chunks: deque[tuple[ItemProgress, bytearray]] = deque()
        self.queued_bytes = 0          # read once per tick: a plain attribute, not a property
        self.items: dict[str, ItemProgress] = {}
        self._order: deque[str] = deque()
        self.overflow_bytes = 0
        self.last_item: Optional[ItemProgress] = None   # the item of the last frame sent

    def __bool__(self) -> bool:
        return self.queued_bytes > 0

    def item(self, item_id: str) -> ItemProgress:
        progress = self.items.get(item_id)
        if progress is None:
            progress = self.items[item_id] = ItemProgress(item_id)
            self._order.append(item_id)
            while len(self._order) > self._max_items:
                old = self._order.popleft()
                if old != item_id and self.items.get(old) is not self.last_item:
                    self.items.pop(old, None)
        return progress

    def add(self, item_id: str, audio: bytes) -> int:
        """Queue audio of an item; returns the bytes accepted (the rest is counted as overflow)."""
        progress = self.item(item_id)
        if progress.dropped or not audio:
            return 0
        room = self.max_bytes - self.queued_bytes
        if room <= 0:
            self.overflow_bytes += len(audio)
            return 0
        if len(audio) > room:
            self.overflow_bytes += len(audio) - room
            audio = audio[:room]
        progress.received += len(audio)
        if self._chunks and self._chunks[-1][0] is progress:
            self._chunks[-1][1].extend(audio)
        else:
            self._chunks.append((progress, bytearray(audio)))
        self.queued_bytes += len(audio)
        return len(audio)

    def finish(self, item_id: str) -> None:
        """The model sent all of this item's audio: its last partial frame may now go."""
        self.item(item_id).finished = True

    def next_frame(self) -> Optional[bytes]:
        """The next frame to send (a short one only at the end of a finished item), or None."""
        while self._chunks:
            progress, buffer = self._chunks[0]
            size = len(buffer)
            if size >= self.frame_bytes:
                frame = bytes(buffer[: self.frame_bytes])
                del buffer[: self.frame_bytes]
            elif progress.finished or len(self._chunks) > 1:
                frame = bytes(buffer)
                buffer.clear()
            else:
                return None    # wait for the rest of this item
            if not buffer:
                self._chunks.popleft()
            if not frame:
                continue
            self.queued_bytes -= len(frame)
            progress.sent += len(frame)
            self.last_item = progress
            return frame
        return None

    def flush(self) -> Optional[ItemProgress]:
        """Barge-in: drop everything queued, refuse the rest of the items concerned, and return
        the item the caller was hearing (None when nothing was being played)."""
        playing = self.last_item
        for progress, _ in self._chunks:
            progress.dropped = True
        if playing is not None and not playing.fully_played:
            playing.dropped = True
        self._chunks.clear()
        self.queued_bytes = 0
        return playing if playing is not None and not playing.fully_played else None

    def drop_item(self, item_id: str) -> None:
        """Ignore any further audio of this item (its response was cancelled)."""
        self.item(item_id).dropped = True
        kept = deque((p, b) for p, b in self._chunks if p.item_id != item_id)
        self.queued_bytes = sum(len(b) for _, b in kept)
        self._chunks = kept
