"""The per-call media path as extension types (Cython: relay/_media.pyx), re-exported by
relay/playout.py."""

from typing import Optional

FRAME_BYTES: int        # 160: 20 ms of G.711 at 8 kHz
BYTES_PER_MS: int       # 8

class ItemProgress:
    """How much audio of one assistant item came from the model and how much was sent."""

    item_id: str
    received: int
    sent: int
    finished: bool      # the model said output_audio.done for it
    dropped: bool       # flushed by a barge-in: further audio is ignored

    def __init__(self, item_id: str, received: int = 0, sent: int = 0, finished: bool = False,
                 dropped: bool = False) -> None: ...
    @property
    def fully_played(self) -> bool: ...
    def heard_ms(self) -> int:
        """Milliseconds of this item the caller heard (a partial frame counts for what was sent),
        never beyond what was received."""

class PlayoutQueue:
    """Frames of model audio for one caller, bounded by max_bytes."""

    max_bytes: int
    frame_bytes: int
    queued_bytes: int                     # read-only, like the three below
    items: dict[str, ItemProgress]        # the last max_items items
    overflow_bytes: int
    last_item: Optional[ItemProgress]     # the item of the last frame sent

    def __init__(self, max_bytes: int = 120 * 8000, frame_bytes: int = FRAME_BYTES,
                 max_items: int = 64) -> None: ...
    def __bool__(self) -> bool: ...
    def item(self, item_id: str) -> ItemProgress: ...
    def add(self, item_id: str, audio: bytes) -> int:
        """Queue audio of an item; returns the bytes accepted (the rest is counted as overflow)."""
    def finish(self, item_id: str) -> None:
        """The model sent all of this item's audio: its last partial frame may now go."""
    def next_frame(self) -> Optional[bytes]:
        """The next frame to send (a short one only at the end of a finished item), or None."""
    def flush(self) -> Optional[ItemProgress]:
        """Barge-in: drop everything queued, refuse the rest of the items concerned, and return
        the item the caller was hearing (None when nothing was being played)."""
    def drop_item(self, item_id: str) -> None:
        """Ignore any further audio of this item (its response was cancelled)."""
