"""One reader for every model WebSocket of a worker: one greenlet and one epoll descriptor.

Owns: the epoll set (level triggered) of the client WebSockets registered with it (the calls'
Realtime sockets), the io watcher and the greenlet that serve it, and the guard that keeps one
connection's handler from holding up the others. Each ready connection reads what its socket
has without waiting and delivers its messages (JsonWebSocket._read_ready); at load the sockets
of many calls are served in one wake-up, after which the reader pauses READ_INTERVAL_S so that
the next wake-up finds several again. A reader greenlet per call cost a hub switch, an io
watcher's start and stop and a read that fails with EAGAIN for every model message, and kept a
parked greenlet (its saved stack) per call.

Message handlers must not wait (they never do in relay: what waits is spawned), but should one
wait on I/O, the guard notices within HELD_AFTER_S: that connection is set aside (its bytes
stay in the kernel, so its messages keep their order), a new greenlet serves the others, and
the held connection is served again once its handler returns.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import gevent
import gevent.event
from gevent import monkey

from relay.cooperate import pause

if TYPE_CHECKING:
    from relay.wsclient import JsonWebSocket

log = logging.getLogger(__name__)

READ_INTERVAL_S = 0.001     # after a wake-up that found sockets ready, the next one waits this
SLICE_S = 0.0005            # serving longer than this, the reader lets the others run (pacer)
HELD_AFTER_S = 0.05         # a handler still running after this long is waiting on something
MAX_READY = 1024            # sockets served per wake-up (the rest stay ready for the next)
_EPOLLIN = 0x001


def available() -> bool:
    """Whether this platform has epoll (Linux); elsewhere each socket has its own reader."""
    try:
        monkey.get_original("select", "epoll")
    except AttributeError:
        return False
    return True


class SocketReader:
    """Serves the registered connections from one greenlet (start/stop)."""

    def __init__(self, interval_s: float = READ_INTERVAL_S,
                 held_after_s: float = HELD_AFTER_S) -> None:
        self._epoll = monkey.get_original("select", "epoll")()
        self._interval_s = interval_s
        self._held_after_s = held_after_s
        self._members: dict[int, "JsonWebSocket"] = {}
        self._due: list[int] = []       # fds to serve though epoll may not say so (TLS bytes)
        self._held: dict[int, "JsonWebSocket"] = {}     # set aside while their handler waits
        self._serving: Optional[tuple[int, float, Any]] = None   # (fd, since, runner)
        self._wake = gevent.event.Event()
        self._watcher: Any = None
        self._guard: Any = None
        self._runner: Optional[gevent.Greenlet] = None
        self._stopped = False
        self.wakeups = 0            # wake-ups that served at least one socket
        self.served = 0             # sockets served (reads)
        self.held = 0               # handlers that waited and were set aside

    def __len__(self) -> int:
        return len(self._members)

    def start(self) -> None:
        """Start serving (add() starts it too: a socket is never left unread)."""
        if self._runner is not None or self._stopped:
            return
        loop = gevent.get_hub().loop
        self._watcher = loop.io(self._epoll.fileno(), 1)
        self._guard = loop.timer(self._held_after_s, self._held_after_s)
        self._guard.start(self._check_held)
        self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopped = True
        runner, self._runner = self._runner, None
        for watcher in (self._watcher, self._guard):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._watcher = self._guard = None
        if runner is not None:
            runner.kill(block=True, timeout=1.0)
        self._members.clear()
        self._held.clear()
        self._epoll.close()

    def add(self, fd: int, conn: "JsonWebSocket", due: bool = False) -> None:
        """Serve conn's socket from now on; due: serve it once at once, whatever epoll says
        (bytes a TLS object decrypted already are not in the kernel any more). ValueError once
        the reader is stopped."""
        if self._stopped:
            raise ValueError("the model socket reader is stopped")
        self.start()
        self._members[fd] = conn
        self._epoll.register(fd, _EPOLLIN)
        if due:
            self._due.append(fd)
            self._wake.set()

    def remove(self, fd: int, conn: Any = None) -> None:
        """Stop serving fd: before its socket is closed (epoll would keep a closed socket's
        registration while another descriptor shares the file). With conn, only while fd is
        still conn's (a number the kernel gave to a newer socket is that one's)."""
        if conn is not None and self._members.get(fd) is not conn:
            return
        if self._members.pop(fd, None) is None:
            return
        if self._held.pop(fd, None) is not None:
            return      # out of the set already
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    # the runner
    def _run(self) -> None:
        me = gevent.getcurrent()
        poll, wake, sleep, watcher = self._epoll.poll, self._wake, gevent.sleep, self._watcher
        while self._runner is me:
            if not self._due:
                # watched only while waiting: the epoll descriptor stays readable while
                # sockets are ready, which would keep the hub spinning between reads
                watcher.start(self._readable)
                wake.wait()
                watcher.stop()
            wake.clear()
            try:
                ready = self._ready(poll)
                while ready and self._runner is me:
                    self.wakeups += 1
                    if not self._serve(ready, me):
                        return      # held in a handler: another runner serves the rest
                    sleep(self._interval_s)
                    ready = self._ready(poll)
            except gevent.GreenletExit:
                raise
            except Exception:   # a bug here must not leave every call's model unread
                log.exception("model socket reader: a round failed; reading on")
                self._serving = None
                sleep(self._interval_s)

    def _readable(self) -> None:
        self._watcher.stop()
        self._wake.set()

    def _ready(self, poll) -> list[int]:
        fds = [fd for fd, _ in poll(0, MAX_READY)]
        if self._due:
            fds += self._due
            self._due = []
        return fds

    def _serve(self, fds: list[int], me: Any) -> bool:
        """Serve each ready socket once, in slices: past SLICE_S the others (the pacer above
        all, whose frames are due every millisecond) run before the rest are served."""
        members, clock = self._members, time.monotonic
        slice_end = clock() + SLICE_S
        for fd in fds:
            conn = members.get(fd)
            if conn is None or fd in self._held:
                continue        # removed (or set aside) by an earlier one of this batch
            now = clock()
            if now > slice_end:
                pause()
                if self._runner is not me:
                    return False
                now = clock()
                slice_end = now + SLICE_S
                if members.get(fd) is not conn or fd in self._held:
                    continue
            self._serving = (fd, now, me)
            try:
                conn._read_ready()  # handles its own errors: one connection's end is its own
            except Exception:       # a bug past them: this connection ends, not the others
                self._drop(fd, conn)
            self._serving = None
            self.served += 1
            if self._runner is not me:
                self._release(fd, conn)
                return False
        return True

    def _drop(self, fd: int, conn: "JsonWebSocket") -> None:
        log.exception("%s: reading failed: the connection is closed", conn.name)
        self.remove(fd, conn)
        try:
            conn.close(1011, "relay could not read the connection")
        except Exception:
            log.exception("%s: closing failed", conn.name)

    # the guard
    def _check_held(self) -> None:
        """In the hub, every HELD_AFTER_S: a handler that has run that long is waiting (had it
        kept the CPU, this timer would not run): set its connection aside, start a new runner."""
        serving = self._serving
        if serving is None or self._runner is None:
            return
        fd, since, runner = serving
        if runner is not self._runner or time.monotonic() - since < self._held_after_s:
            return
        conn = self._members.get(fd)
        if conn is None:
            return
        self._serving = None
        self._held[fd] = conn
        try:    # out of the set (a hang-up would still be reported): its bytes wait, in order
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        self.held += 1
        log.warning("%s: a message handler has waited over %.0f ms: its connection is set "
                    "aside until it returns, the other connections are served meanwhile",
                    conn.name, self._held_after_s * 1000)
        self._runner = gevent.spawn(self._run)
        self._wake.set()

    def _release(self, fd: int, conn: "JsonWebSocket") -> None:
        """The held handler returned: its connection is served again (unless it ended)."""
        if self._held.pop(fd, None) is None or self._members.get(fd) is not conn:
            return
        try:
            self._epoll.register(fd, _EPOLLIN)
        except (OSError, ValueError):
            return
        self._wake.set()
