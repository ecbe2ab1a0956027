"""Yielding in a long batch so that the pacer runs first: gevent.sleep(0) is not enough.

Owns: `pause()`, for code that works through a long batch in the hub's thread (the reader of the
model sockets, the RTP receive loop, the dashboard's stats, a recording's writes). gevent.sleep(0)
queues a callback, and the hub runs its callbacks before it looks at the timers: a greenlet
sleeping until a moment now past (the pacer, whose frames are due every millisecond) would still
wait for the whole batch. A timer of PAUSE_S is due after the expired ones, so they run first.
"""

from __future__ import annotations

import gevent

PAUSE_S = 0.00001


def pause() -> None:
    """Let every greenlet whose timer has expired (and every ready socket's) run, then go on."""
    gevent.sleep(PAUSE_S)
