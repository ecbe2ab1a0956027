"""The ARI events WebSocket (`/ari/events?app=NAME[,NAME2]&api_key=U:P[&subscribeAll=...]`).

Owns: one connection's bounded outgoing queue and the loops that write events to the socket and
notice when it closes. A connection serves the app names it asked for until another connection
takes a name over (that name's last event here is ApplicationReplaced) or it closes (its apps go
inactive; their channels stay in Stasis). A consumer too slow to keep its queue under the bound
is disconnected, never allowed to hold the simulator up.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable

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
                 max_queue: int = 20000) -> None:
        self.ws = ws
        self.apps = list(dict.fromkeys(apps))
        self.serving = set(self.apps)
        self.subscribe_all = subscribe_all
        self.max_queue = max_queue
        self._queue: deque[str] = deque()
        self._ready = Event()
        self.closed = False
        self.close_reason = ""
        self.sent = 0

    def send_event(self, app: str, event: dict) -> None:
        if self.closed or app not in self.serving:
            return
        if len(self._queue) >= self.max_queue:
            log.warning("events WebSocket for %s: %d events queued, disconnecting a slow consumer",
                        ",".join(self.apps), len(self._queue))
            self.close("slow consumer")
            return
        event["application"] = app
        self._queue.append(dumps(event))
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

    def serve(self, on_closed: Callable[[EventConnection], None]) -> None:
        """Write queued events until the socket or the connection closes."""
        reader = gevent.spawn(self._read)
        try:
            queue, ws = self._queue, self.ws
            while not self.closed:
                self._ready.wait()
                self._ready.clear()
                while queue and not self.closed:
                    ws.send(queue.popleft())
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
