"""The ARI events WebSocket (`/ari/events?app=NAME[,NAME2]&api_key=U:P[&subscribeAll=...]`).

Owns: one connection's bounded outgoing queue and the loops that write events to the socket and
notice when it closes. A connection serves the app names it asked for until another connection
takes a name over (that name's last event here is ApplicationReplaced) or it closes (its apps go
inactive; their channels stay in Stasis). A consumer too slow to keep its queue under the bound
is disconnected, never allowed to hold the simulator up.

Latency: each queued event carries the time it is due, `now` + a delay drawn from
`latency_ms` (relay.sim.pbx.timing), never before the event queued ahead of it, so one
connection's events keep their order; the writer waits until the head of the queue is due. No
greenlet or timer per event: one time check per event, one sleep per wait.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
import ujson
from gevent.event import Event
from geventwebsocket.exceptions import WebSocketError

log = logging.getLogger(__name__)


def dumps(event: dict) -> str:
    return ujson.dumps(event, escape_forward_slashes=False, ensure_ascii=False)


class EventConnection:
    """One events WebSocket: `send_event()` from anywhere (never blocks), `serve()` in the
    greenlet of the WebSocket's HTTP handler until the socket closes or `close()`."""

    def __init__(self, ws, apps: list[str], subscribe_all: bool = False,
                 max_queue: int = 20000, latency_ms: tuple[float, float] = (0.0, 0.0),
                 rng: random.Random | None = None) -> None:
        self.ws = ws
        self.apps = list(dict.fromkeys(apps))
        self.serving = set(self.apps)
        self.subscribe_all = subscribe_all
        self.max_queue = max_queue
        self.latency_ms = latency_ms
        self.rng = rng or random.Random()
        self._queue: deque[tuple[float, str]] = deque()     # (due, text), due never decreasing
        self._last_due = 0.0
        self._ready = Event()
        self.closed = False
        self.close_reason = ""
        self.sent = 0

    def send_event(self, app: str, event: dict) -> None:
        if self.closed or app not in self.serving:
            return
        event["application"] = app
        self._push(dumps(event))

    def send_raw(self, frame: Any) -> None:
        """A frame as given (fault injection): a dict or list as JSON, a string as is."""
        if not self.closed:
            self._push(frame if isinstance(frame, str) else dumps(frame))

    def _push(self, text: str) -> None:
        if len(self._queue) >= self.max_queue:
            log.warning("events WebSocket for %s: %d events queued, disconnecting a slow consumer",
                        ",".join(self.apps), len(self._queue))
            self.close("slow consumer")
            return
        low, high = self.latency_ms
        due = self._last_due
        if high > 0.0:
            due = max(due, monotonic() + (low + (high - low) * self.rng.random()) / 1000.0)
            self._last_due = due
        self._queue.append((due, text))
        self._ready.set()

    def replaced(self, app: str, event: dict) -> None:
        """ApplicationReplaced for `app`: the last thing this connection hears about it."""
        self.send_event(app, event)
        self.serving.discard(app)

    def close(self, reason: str = "closed") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._ready.set()

    def cut(self, reason: str = "cut") -> None:
        """End the connection without a close frame: the TCP connection is shut down."""
        handler = getattr(self.ws, "handler", None)
        sock = getattr(handler, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.close(reason)

    def serve(self, on_closed: Callable[[EventConnection], None]) -> None:
        """Write queued events until the socket or the connection closes."""
        reader = gevent.spawn(self._read)
        try:
            queue, ws = self._queue, self.ws
            while not self.closed:
                self._ready.wait()
                self._ready.clear()
                now = 0.0
                while queue and not self.closed:
                    due, text = queue[0]
                    if due > now:
                        now = monotonic()
                        if due > now:
                            gevent.sleep(due - now)
                            continue
                    queue.popleft()
                    ws.send(text)
                    self.sent += 1
        except (WebSocketError, OSError) as exc:    # a broken socket ends this connection only
            self.close(f"send failed: {exc}")
        finally:
            self.closed = True
            reader.kill(block=False)
            with contextlib.suppress(WebSocketError, OSError):
                self.ws.close()
            on_closed(self)

    def _read(self) -> None:
        try:
            while True:
                message: str | None = self.ws.receive()
                if message is None:
                    break
        except (WebSocketError, OSError):
            pass
        self.close("client closed")
