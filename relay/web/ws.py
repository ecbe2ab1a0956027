"""The event WebSocket (/ws): the worker's events for every dashboard, never at a call's cost.

Owns: the dashboard clients (`ClientHub`: each client's bounded queue and writer greenlet, the
snapshot a client gets first, a periodic `stats` message, the fan-out that serialises each
message once, secrets scrubbed, and offers the text to every queue with put_nowait: a client
whose queue is full is dropped on the spot, its connection aborted, so a broadcast never blocks
and a client that stops reading never slows a call), and `EventHub`, the one observer the
dashboard puts on a worker (Worker.subscribe): its snapshot is the worker's live calls, the last
ended ones, recent events and the worker status; its `stats` message, every stats_interval_s,
carries the live calls' changing figures (who speaks, duration, audio), built in small steps
that yield to the calls. No per-packet events. The fleet's hub (relay.web.fleet_ws) is the
other ClientHub.

Messages (JSON text): {"type": "snapshot", "calls", "finished", "recent", "worker"},
{"type": "call", "call"}, {"type": "transcript", "call_id", "entry"} (call_id: the relay call),
{"type": "stats", "calls", "worker"}.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Optional

import gevent
import gevent.queue
from geventwebsocket.exceptions import WebSocketError

from relay.cooperate import pause
from relay.web import views
from relay.web.handler import DashboardWebSocket
from relay.web.http import dumps

if TYPE_CHECKING:
    from relay.worker import Worker

log = logging.getLogger(__name__)

STATS_BATCH = 25            # call summaries built between two yields to the hub
_CLOSE = object()           # queued to close a client gracefully


class WsClient:
    """One dashboard connection: a bounded queue drained by its own writer greenlet."""

    def __init__(self, ws: DashboardWebSocket, queue_max: int, address: str = "") -> None:
        self.ws = ws
        self.address = address
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=queue_max)
        self.dropped = False
        self.drop_reason = ""
        self.sent = 0
        self._writer: Optional[gevent.Greenlet] = None

    def offer(self, text: object) -> bool:
        """Queue a message without ever blocking; a full queue drops the client."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(text)
        except gevent.queue.Full:
            self.drop("it does not keep up with the events")
            return False
        return True

    def drop(self, reason: str) -> None:
        """Abort the connection now (no write: the client may not be reading)."""
        if self.dropped:
            return
        self.dropped = True
        self.drop_reason = reason
        self.ws.abort()

    def close(self) -> None:
        """Close with 1001 after what is queued, or abort when the queue is full."""
        if not self.offer(_CLOSE):
            self.ws.abort()

    def run(self) -> None:
        """In the connection's greenlet: start the writer, read until the client goes."""
        self._writer = gevent.spawn(self._write_loop)
        try:
            while not self.dropped and not self.ws.closed:
                if self.ws.receive() is None:     # clients send nothing that matters
                    break
        except (WebSocketError, OSError):
            pass
        finally:
            self.ws.abort()
            self._writer.kill(block=True, timeout=2)

    def _write_loop(self) -> None:
        ws, queue = self.ws, self.queue
        try:
            while True:
                text = queue.get()
                if text is _CLOSE:
                    ws.close(1001, "relay is stopping")
                    break
                ws.send(text)
                self.sent += 1
        except (WebSocketError, OSError):
            pass
        finally:
            ws.abort()


class ClientHub:
    """The dashboard clients of one server and what they all get: a snapshot on connect, each
    broadcast message, and a periodic stats message. Subclasses say what the snapshot and the
    stats message are (EventHub: one worker; relay.web.fleet_ws.FleetHub: all workers)."""

    def __init__(self, *, queue_max: int, stats_interval_s: float, max_clients: int,
                 scrub: Callable[[str], str] = lambda text: text) -> None:
        self.queue_max = queue_max
        self.stats_interval_s = stats_interval_s
        self.max_clients = max_clients
        self.scrub = scrub
        self.clients: list[WsClient] = []
        self.dropped = 0
        self.messages = 0
        self._stats: Optional[gevent.Greenlet] = None

    # what the clients see (subclasses)
    def snapshot(self) -> dict:
        """The first message of a new client. Must not yield: it is built and queued, and the
        client registered, with no other greenlet running in between."""
        raise NotImplementedError

    def stats_message(self) -> Optional[dict]:
        """The message sent every stats_interval_s while clients are connected (None: nothing
        this time). May yield."""
        raise NotImplementedError

    # life cycle
    def start(self) -> None:
        self._stats = gevent.spawn(self._stats_loop)

    def stop(self, timeout: float = 2.0) -> None:
        if self._stats is not None:
            self._stats.kill()
            self._stats = None
        for client in list(self.clients):
            client.close()
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for client in list(self.clients):
            client.ws.abort()

    def stats(self) -> dict:
        return {"clients": len(self.clients), "dropped": self.dropped, "messages": self.messages}

    @property
    def full(self) -> bool:
        return len(self.clients) >= self.max_clients

    # fan-out: never blocks
    def broadcast(self, message: dict) -> None:
        """Serialise message once (scrubbed) and queue it for every client."""
        if self.clients:
            self._broadcast(self.scrub(dumps(message)))

    def _broadcast(self, text: str) -> None:
        for client in tuple(self.clients):
            self.messages += 1
            if not client.offer(text):
                self._forget(client)

    def _forget(self, client: WsClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
            if client.dropped:
                self.dropped += 1
                log.warning("dashboard: dropped client %s: %s", client.address,
                            client.drop_reason)

    # one connection, in its handler greenlet
    def serve(self, ws: DashboardWebSocket, address: str = "") -> None:
        client = WsClient(ws, self.queue_max, address)
        # snapshot then registration, with no yield between: no event is missed or doubled
        client.offer(self.scrub(dumps(self.snapshot())))
        self.clients.append(client)
        try:
            client.run()
        finally:
            self._forget(client)

    def _stats_loop(self) -> None:
        while True:
            gevent.sleep(self.stats_interval_s)
            if not self.clients:
                continue
            try:
                message = self.stats_message()
                if message is not None:
                    self.broadcast(message)
            except Exception:
                log.exception("dashboard: building the stats message failed")


class EventHub(ClientHub):
    """Fans one worker's events out to the dashboard clients."""

    def __init__(self, worker: "Worker", *, queue_max: int, stats_interval_s: float,
                 max_clients: int, scrub: Callable[[str], str] = lambda text: text) -> None:
        super().__init__(queue_max=queue_max, stats_interval_s=stats_interval_s,
                         max_clients=max_clients, scrub=scrub)
        self.worker = worker

    def start(self) -> None:
        self.worker.subscribe(self._on_event)
        super().start()

    def stop(self, timeout: float = 2.0) -> None:
        self.worker.unsubscribe(self._on_event)
        super().stop(timeout)

    # the observer: runs in whatever greenlet published (a call's): must never block
    def _on_event(self, message: dict) -> None:
        if not self.clients:
            return
        if message.get("type") == "transcript":
            message = {"type": "transcript", "call_id": self._owner(message["entry"]),
                       "entry": message["entry"]}
        self.broadcast(message)

    def _owner(self, entry: dict) -> str:
        """The relay call an entry belongs to."""
        return str(entry.get("call_id", ""))

    def snapshot(self) -> dict:
        worker = self.worker
        return {"type": "snapshot", "t": time.time(),
                "calls": [call.summary() for call in list(worker.calls.values())],
                "finished": views.finished_calls(worker, 20),
                "recent": list(worker.recent), "worker": views.worker_status(worker)}

    def stats_message(self) -> dict:
        summaries = []
        for index, call in enumerate(list(self.worker.calls.values())):
            summaries.append(call.summary())
            if index % STATS_BATCH == STATS_BATCH - 1:
                pause()         # the pacer's frames are due every millisecond
        return {"type": "stats", "t": time.time(), "calls": summaries,
                "worker": views.worker_status(self.worker)}
