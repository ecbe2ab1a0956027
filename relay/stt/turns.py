"""The audio of each caller turn, kept until its transcription arrives.

Owns, for one call: a short ring of the most recent caller audio (the audio handed to the model,
in the line codec, silence fill included), the turn being spoken, and the turns waiting for
their transcription, each tied to the model's item_id. Positions are byte offsets in that input
stream (8 bytes = 1 ms); the model's audio_start_ms / audio_end_ms are mapped onto it from the
offset where the current model socket began (`set_origin`).

Bounded: the ring holds `preroll_s`, a turn at most `max_turn_s` (its start is kept, the rest
dropped and the turn marked truncated), at most `max_pending` turns wait (the oldest is dropped).
Sans-IO: no clock, no sockets; `feed` is the only per-packet work.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

BYTES_PER_MS = 8            # G.711 at 8 kHz
PREROLL_S = 3.0             # the model reports a turn's start this long after it, at most


@dataclass
class Turn:
    """One caller turn: its audio from audio_start_ms to audio_end_ms (or the commit)."""

    item_id: str
    start: int                      # input offset of the first byte
    audio: bytearray = field(default_factory=bytearray)
    end: Optional[int] = None       # input offset where the turn ends, once known
    closed: bool = False            # all of its audio is here
    truncated: bool = False         # longer than max_turn_s: only the start is kept
    committed: bool = False

    @property
    def duration_ms(self) -> int:
        return len(self.audio) // BYTES_PER_MS

    @property
    def unfinished(self) -> bool:
        """The caller was still speaking: neither speech_stopped nor a commit came."""
        return not self.committed and self.end is None


class TurnBuffer:
    """Caller turns of one call by item_id (see the module docstring)."""

    def __init__(self, max_turn_s: float = 30.0, max_pending: int = 4,
                 preroll_s: float = PREROLL_S) -> None:
        if max_turn_s <= 0 or max_pending < 1 or preroll_s < 0:
            raise ValueError("max_turn_s and preroll_s must be positive, max_pending >= 1")
        self.max_turn_bytes = int(max_turn_s * 1000) * BYTES_PER_MS
        self.max_pending = max_pending
        self._preroll = int(preroll_s * 1000) * BYTES_PER_MS
        self._ring = bytearray()
        self.position = 0                 # bytes of caller audio seen so far
        self.origin = 0                   # input offset of the model's audio time 0
        self._open: Optional[Turn] = None
        self.pending: OrderedDict[str, Turn] = OrderedDict()
        self.dropped = 0                  # turns evicted by max_pending

    # the input stream (hot path)
    def feed(self, audio: bytes) -> None:
        """The next caller audio, as handed to the model."""
        ring = self._ring
        ring += audio
        if len(ring) > 2 * self._preroll + 4096:
            del ring[:len(ring) - self._preroll]
        self.position += len(audio)
        turn = self._open
        if turn is not None:
            self._append(turn, audio, self.position - len(audio))

    def _append(self, turn: Turn, audio: bytes, at: int) -> None:
        """Add audio that starts at input offset `at` to an open turn, up to its end."""
        have = turn.start + len(turn.audio)
        if at + len(audio) <= have:
            return
        if at < have:
            audio = audio[have - at:]
        if turn.end is not None:
            audio = audio[:max(0, turn.end - have)]
        room = self.max_turn_bytes - len(turn.audio)
        if len(audio) > room:
            audio = audio[:max(room, 0)]
            turn.truncated = True
        turn.audio += audio
        if turn.end is not None and self.position >= turn.end:
            self._close(turn)

    def set_origin(self) -> None:
        """A new model socket begins with the next audio: its audio time 0 is here."""
        self.origin = self.position

    def offset(self, audio_ms: int) -> int:
        """The input offset of a point in the current model socket's audio time."""
        return self.origin + max(0, audio_ms) * BYTES_PER_MS

    # turns
    def started(self, item_id: str, audio_start_ms: int) -> Optional[Turn]:
        """speech_started: a turn begins at audio_start_ms (already in the ring, mostly).
        Returns a turn dropped to stay within max_pending, if any."""
        if self._open is not None:
            self._close(self._open)
        ring_start = self.position - len(self._ring)
        start = min(max(self.offset(audio_start_ms), ring_start), self.position)
        turn = Turn(item_id, start)
        self._open = turn
        self._append(turn, bytes(self._ring[start - ring_start:]), start)
        self.pending.pop(item_id, None)
        self.pending[item_id] = turn
        if len(self.pending) > self.max_pending:
            _, oldest = self.pending.popitem(last=False)
            if oldest is self._open:
                self._open = None
            self.dropped += 1
            return oldest
        return None

    def stopped(self, item_id: str, audio_end_ms: int) -> None:
        """speech_stopped: the turn ends at audio_end_ms."""
        turn = self.pending.get(item_id)
        if turn is None or turn.closed:
            return
        end = max(self.offset(audio_end_ms), turn.start)
        turn.end = end
        if end <= turn.start + len(turn.audio):
            del turn.audio[end - turn.start:]
            self._close(turn)

    def committed(self, item_id: str) -> Optional[Turn]:
        """input_audio_buffer.committed: the turn is complete (closed now if it was not ended
        by speech_stopped, e.g. a manual commit). Returns it, or None when unknown."""
        turn = self.pending.get(item_id)
        if turn is None:
            return None
        turn.committed = True
        if not turn.closed and turn.end is None:
            self._close(turn)
        return turn

    def _close(self, turn: Turn) -> None:
        turn.closed = True
        if self._open is turn:
            self._open = None

    def take(self, item_id: str) -> Optional[Turn]:
        """Remove and return a turn (closed at the current position if still open)."""
        turn = self.pending.pop(item_id, None)
        if turn is not None and not turn.closed:
            self._close(turn)
        return turn

    def take_all(self) -> list[Turn]:
        """Remove and return every waiting turn, oldest first (an open one is closed at the
        current position): the call has ended."""
        turns = list(self.pending.values())
        for turn in turns:
            self.take(turn.item_id)
        return turns

    def discard(self, item_id: str) -> bool:
        """Its transcription arrived: forget the turn's audio."""
        return self.take(item_id) is not None

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def buffered_bytes(self) -> int:
        """Memory held: the ring plus every waiting turn."""
        return len(self._ring) + sum(len(t.audio) for t in self.pending.values())
