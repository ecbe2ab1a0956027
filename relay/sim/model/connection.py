"""One client connection of the simulated model: a WebSocket carrying one RealtimeSession.

Owns: the two greenlets of a connection — the reader (the WSGI handler greenlet: client text ->
session.receive) and the pump (session ticks at their deadlines, sending every event in the order
it was produced, armed faults, the closing handshake) — and ending them on every path: client
close, our close (expiry, rejection, fault), a cut socket, server stop, a simulator bug.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
from collections import Counter
from typing import Callable, Optional

import gevent
import ujson
from gevent.event import Event
from gevent.queue import Empty, Queue
from geventwebsocket.exceptions import WebSocketError

from relay.sim.model.faults import Fault
from relay.sim.model.handshake import Rejection
from relay.sim.model.session import RealtimeSession
from relay.sim.model.wshandler import AppendAudio, SimWebSocket

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000         # event batches waiting to be sent before a client counts as stuck
CLOSE_WAIT_S = 2.0          # how long a closing handshake waits for the client's close frame
_STOP = object()


@dataclasses.dataclass
class _Close:
    code: int
    reason: str


class Connection:
    """One client WebSocket and the session it carries."""

    def __init__(self, ws: SimWebSocket, clock: Callable[[], float],
                 spawn: Callable[..., gevent.Greenlet]) -> None:
        self.ws = ws
        self.clock = clock
        self._spawn = spawn  # the server's greenlet group: stop() can account for the pump
        self.session: Optional[RealtimeSession] = None
        self.faults: list[Fault] = []
        self.queue: Queue = Queue()
        self.reader_done = Event()
        self.api_key = ""           # the key the client sent (an error fault may quote it)
        self.stalled_until = 0.0    # a stall fault: nothing is sent before this (clock time)
        self.stalled_events = 0     # events a stall swallowed
        self._ordinals: Counter = Counter()     # events of each type offered for sending
        self._ended = False
        self._closing = False

    # ---- reader (the handler greenlet) ---------------------------------------------------------

    def reject(self, rejection: Rejection) -> None:
        """Refuse after the upgrade: the error event, the close frame, the client's reply."""
        self.queue.put([{"type": "error", "event_id": "event_SimRejected",
                         "error": rejection.error}])
        self.queue.put(_Close(rejection.close_code, rejection.close_reason))
        pump = self._spawn(self._pump)
        try:
            self._read_until_closed(None)
        finally:
            self._finish(pump)

    def serve(self, session: RealtimeSession, faults: list[Fault]) -> None:
        self.session = session
        self.faults.extend(faults)
        self.queue.put(session.open())
        pump = self._spawn(self._pump)
        try:
            self._read_until_closed(session)
        finally:
            self._finish(pump)

    def _read_until_closed(self, session: Optional[RealtimeSession]) -> None:
        clock, queue, ws = self.clock, self.queue, self.ws
        try:
            while True:
                text = ws.receive()
                if text is None:
                    return
                if session is None or self._closing:
                    continue  # draining until the client's close frame
                if type(text) is AppendAudio:   # decoded by the WebSocket already
                    out = session.receive_audio(text.audio, clock())
                else:
                    out = session.receive(text, clock())
                if out:
                    if queue.qsize() >= MAX_QUEUED:  # the client does not read: drop it
                        log.warning("sim-model: session %s: client not reading, dropped",
                                    session.id)
                        self._abort()
                        return
                    queue.put(out)
                if session.close_request is not None and not self._closing:
                    self._closing = True
                    queue.put(_Close(*session.close_request))
        except (WebSocketError, OSError):
            return
        except Exception:  # a bug in the simulator ends this connection only
            log.exception("sim-model: session %s failed", session and session.id)
            self._abort()

    def _finish(self, pump: gevent.Greenlet) -> None:
        self.reader_done.set()
        self.queue.put(_STOP)
        pump.join(timeout=CLOSE_WAIT_S + 1.0)
        if not pump.dead:
            pump.kill(block=True, timeout=1.0)
        if self.session is not None:
            self.session.shutdown()
        self._ended = True
        self.ws.closed = True

    # ---- pump (ticks, sending, faults) ---------------------------------------------------------

    def _pump(self) -> None:
        session, queue, clock = self.session, self.queue, self.clock
        try:
            while not self._ended:
                if self.faults and not self._immediate_faults():
                    return
                deadline = session.next_deadline() if session is not None else None
                timeout = None if deadline is None else max(0.0, deadline - clock())
                try:
                    item = queue.get(timeout=timeout)
                except Empty:
                    item = None
                if item is _STOP:
                    return
                if isinstance(item, list):
                    if not self._send_events(item):
                        return
                elif isinstance(item, _Close):
                    self._close(item.code, item.reason)
                    return
                if session is not None and deadline is not None and clock() >= deadline:
                    out = session.tick(clock())
                    if out:
                        queue.put(out)
                    if session.close_request is not None and not self._closing:
                        self._closing = True
                        queue.put(_Close(*session.close_request))
        except (WebSocketError, OSError):
            self._abort()
        except Exception:
            log.exception("sim-model: pump of session %s failed", session and session.id)
            self._abort()

    def _send_events(self, events: list[dict]) -> bool:
        session, send = self.session, self.ws.send
        for event in events:
            kind = event["type"]
            self._ordinals[kind] += 1
            if self.faults and not self._faults_before(kind, self._ordinals[kind]):
                return False
            if self.stalled_until and self.clock() < self.stalled_until:
                self.stalled_events += 1
                continue
            send(ujson.dumps(event, escape_forward_slashes=False))
            if session is not None:
                session.sent_types[kind] += 1
        return True

    def _immediate_faults(self) -> bool:
        return self._faults_before(None)

    def _faults_before(self, event_type: Optional[str], ordinal: int = 1) -> bool:
        """Perform the armed faults due before an event; False when the connection ended."""
        for fault in [f for f in self.faults if f.fires_before(event_type, ordinal)]:
            self.faults.remove(fault)
            if not self._perform(fault):
                return False
        return True

    def _perform(self, fault: Fault) -> bool:
        log.info("sim-model: fault %s on %s", fault.kind, self.session and self.session.id)
        if self.session is not None:
            self.session.faults_fired.append(fault.kind)
        if fault.kind == "drop":
            self._abort()
            return False
        if fault.kind == "close":
            self._close(fault.close_code, fault.close_reason)
            return False
        if fault.kind == "delay":
            gevent.sleep(fault.delay_ms / 1000.0)
        elif fault.kind == "stall":
            self.stalled_until = (self.clock() + fault.delay_ms / 1000.0 if fault.delay_ms
                                  else math.inf)
        elif fault.kind == "error" and self.session is not None:
            error = dict(fault.error)
            if fault.quote_key:
                error["message"] = (f"{error.get('message') or 'Incorrect API key provided'}: "
                                    f"{self.api_key}")
            self.ws.send(ujson.dumps(self.session.fault_error(error)))
        elif fault.kind == "malformed":
            self.ws.send(fault.text)
        elif fault.kind == "event":
            self.ws.send(ujson.dumps(fault.payload(), escape_forward_slashes=False))
        return True

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)
        self.queue.put([])  # wake the pump

    # ---- ending --------------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """The closing handshake: our close frame, the client's reply (bounded), then EOF."""
        self._closing = True
        self.ws.close(code, reason)
        self.reader_done.wait(CLOSE_WAIT_S)
        self._shutdown_socket()

    def _abort(self) -> None:
        """Cut the connection: no close frame."""
        self._closing = True
        self.ws.closed = True
        self._shutdown_socket()

    def terminate(self) -> None:
        """Server stopping: going-away close frame, then the socket is cut."""
        self._closing = True
        try:
            self.ws.close(1001, "server stopping")
        finally:
            self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        sock = getattr(self.ws.handler, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
