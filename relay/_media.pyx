# cython: language_level=3
"""The per-call media path as extension types: the playout queue (PlayoutQueue and ItemProgress,
re-exported by relay/playout.py, which says what it owns). The constants live here, beside the
C code that uses them.

Attributes are typed C fields and the per-tick methods call each other in C: no dictionary
lookup or interpreter dispatch of their own (bench/bench_call_media.py measures them).
"""

from collections import deque

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef enum:
    _FRAME_BYTES = 160         # 20 ms of G.711 at 8 kHz
    _BYTES_PER_MS = 8

FRAME_BYTES = _FRAME_BYTES
BYTES_PER_MS = _BYTES_PER_MS


# --------------------------------------------------------------------------- playout

cdef class ItemProgress:
    """How much audio of one assistant item came from the model and how much was sent."""

    cdef public object item_id
    cdef public long long received
    cdef public long long sent
    cdef public bint finished      # the model said output_audio.done for it
    cdef public bint dropped       # flushed by a barge-in: further audio is ignored

    def __init__(self, item_id, long long received=0, long long sent=0, bint finished=False,
                 bint dropped=False):
        self.item_id = item_id
        self.received = received
        self.sent = sent
        self.finished = finished
        self.dropped = dropped

    @property
    def fully_played(self):
        return self.finished and self.sent >= self.received

    def heard_ms(self):
        """Milliseconds of this item the caller heard (a partial frame counts for what was sent),
        never beyond what was received."""
        return min(self.sent, self.received) // _BYTES_PER_MS

    def __repr__(self):
        return (f"ItemProgress(item_id={self.item_id!r}, received={self.received}, "
                f"sent={self.sent}, finished={self.finished}, dropped={self.dropped})")


cdef class PlayoutQueue:
    """Frames of model audio for one caller, bounded by max_bytes."""

    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t frame_bytes
    cdef Py_ssize_t _max_items
    cdef object _chunks                  # deque of (ItemProgress, bytearray), in arrival order
    cdef readonly Py_ssize_t queued_bytes
    cdef readonly dict items             # item id -> ItemProgress, the last max_items
    cdef object _order                   # deque of their ids, oldest first
    cdef readonly long long overflow_bytes
    cdef readonly ItemProgress last_item     # the item of the last frame sent

    def __init__(self, Py_ssize_t max_bytes=120 * 8000,
                 Py_ssize_t frame_bytes=_FRAME_BYTES, Py_ssize_t max_items=64):
        self.max_bytes = max_bytes
        self.frame_bytes = frame_bytes
        self._max_items = max_items
        self._chunks = deque()
        self.queued_bytes = 0
        self.items = {}
        self._order = deque()
        self.overflow_bytes = 0
        self.last_item = None

    def __bool__(self):
        return self.queued_bytes > 0

    cpdef ItemProgress item(self, item_id):
        cdef ItemProgress progress = self.items.get(item_id)
        if progress is None:
            progress = self.items[item_id] = ItemProgress(item_id)
            self._order.append(item_id)
            while len(self._order) > self._max_items:
                old = self._order.popleft()
                if old != item_id and self.items.get(old) is not self.last_item:
                    self.items.pop(old, None)
        return progress

    @cython.wraparound(True)     # _chunks[-1]: the extensions are built without wraparound
    cpdef Py_ssize_t add(self, item_id, audio) except -1:
        """Queue audio of an item; returns the bytes accepted (the rest is counted as overflow)."""
        cdef ItemProgress progress = self.item(item_id)
        cdef Py_ssize_t size, room
        if progress.dropped or not audio:
            return 0
        size = len(audio)
        room = self.max_bytes - self.queued_bytes
        if room <= 0:
            self.overflow_bytes += size
            return 0
        if size > room:
            self.overflow_bytes += size - room
            audio = audio[:room]
            size = room
        progress.received += size
        if self._chunks and (<tuple>self._chunks[-1])[0] is progress:
            (<bytearray>(<tuple>self._chunks[-1])[1]).extend(audio)
        else:
            self._chunks.append((progress, bytearray(audio)))
        self.queued_bytes += size
        return size

    def finish(self, item_id):
        """The model sent all of this item's audio: its last partial frame may now go."""
        self.item(item_id).finished = True

    cpdef bytes next_frame(self):
        """The next frame to send (a short one only at the end of a finished item), or None."""
        cdef tuple chunk
        cdef ItemProgress progress
        cdef bytearray buffer
        cdef bytes frame
        cdef Py_ssize_t size
        while self._chunks:
            chunk = self._chunks[0]
            progress, buffer = chunk
            size = PyByteArray_GET_SIZE(buffer)
            if size >= self.frame_bytes:
                frame = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buffer), self.frame_bytes)
                del buffer[:self.frame_bytes]
            elif progress.finished or len(self._chunks) > 1:
                frame = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buffer), size)
                PyByteArray_Resize(buffer, 0)
            else:
                return None    # wait for the rest of this item
            if not PyByteArray_GET_SIZE(buffer):
                self._chunks.popleft()
            size = PyBytes_GET_SIZE(frame)
            if not size:
                continue
            self.queued_bytes -= size
            progress.sent += size
            self.last_item = progress
            return frame
        return None

    def flush(self):
        """Barge-in: drop everything queued, refuse the rest of the items concerned, and return
        the item the caller was hearing (None when nothing was being played)."""
        cdef ItemProgress playing = self.last_item
        cdef ItemProgress progress
        for progress, _ in self._chunks:
            progress.dropped = True
        if playing is not None and not playing.fully_played:
            playing.dropped = True
        self._chunks.clear()
        self.queued_bytes = 0
        return playing if playing is not None and not playing.fully_played else None

    def drop_item(self, item_id):
        """Ignore any further audio of this item (its response was cancelled)."""
        self.item(item_id).dropped = True
        kept = deque((p, b) for p, b in self._chunks if p.item_id != item_id)
        self.queued_bytes = sum(len(b) for _, b in kept)
        self._chunks = kept
