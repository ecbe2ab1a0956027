"""The model's audio waiting to be played to one caller, and how much of it was played.

Owns: the per-call playout queue (bounded), cut into 20 ms G.711 frames in arrival order, with
per-item accounting of bytes received from the model and bytes actually sent to the caller, so
that a barge-in can flush at once and truncate the item at exactly what the caller heard.
Sans-IO: no sockets, no clocks. The types are compiled (relay/_media.pyx), with the constants
their C code uses.
"""

from relay._media import BYTES_PER_MS, FRAME_BYTES, ItemProgress, PlayoutQueue

__all__ = ["BYTES_PER_MS", "FRAME_BYTES", "ItemProgress", "PlayoutQueue"]
