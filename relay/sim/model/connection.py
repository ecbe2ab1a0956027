"""One client connection of the simulated model: a WebSocket carrying one RealtimeSession.

Owns: what happens on a connection after the upgrade: client messages to session.receive (the
shared reader, relay/sim/model/reader.py, calls on_message/on_audio), session ticks at their
deadlines (the shared timer, relay/sim/model/deadlines.py, calls on_deadline), sending every
event in the order it was produced, armed faults, the closing handshake, and ending on every
path: client close, our close (expiry, rejection, fault), a cut socket, server stop, a simulator
bug. Events are sent at once, without blocking, from the greenlet that produced them; a pump
greenlet exists only while something must wait: a socket that would block, armed faults (a
delay, a close), the closing handshake. The handler greenlet waits for the reading to end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
from collections import Counter
from typing import Callable, Optional

import gevent
import orjson
from gevent.event import Event
from gevent.queue import Queue
from geventwebsocket.exceptions import WebSocketError

from relay.sim._ws_reader import send_nowait, text_frame
from relay.sim.model.faults import Fault
from relay.sim.model.handshake import Rejection
from relay.sim.model.session import RealtimeSession
from relay.sim.model.wshandler import SimWebSocket

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
                 spawn: Callable[..., gevent.Greenlet], reader, timer) -> None:
        self.ws = ws
        self.clock = clock
        self._spawn = spawn  # the server's greenlet group: stop() can account for the pump
        self._reader = reader
        self._timer = timer
        self.fd = ws.handler.socket.fileno()
        self.session: Optional[RealtimeSession] = None
        self.faults: list[Fault] = []
        self.queue: Queue = Queue()     # what the pump has to send, in order
        self.reader_done = Event()
        self.reading_ended = False
        self.fragment: Optional[list] = None    # a fragmented message being read (the reader's)
        self.deadline: Optional[float] = None   # armed in the shared timer
        self.armed_deadlines: set = set()       # this connection's entries in the timer's heap
        self.api_key = ""           # the key the client sent (an error fault may quote it)
        self.stalled_until = 0.0    # a stall fault: nothing is sent before this (clock time)
        self.stalled_events = 0     # events a stall swallowed
        self._ordinals: Counter = Counter()     # events of each type offered for sending
        self._pump: Optional[gevent.Greenlet] = None
        self._sending_ended = False     # closed, cut or finished: nothing more is sent
        self._ended = False
        self._closing = False

    @property
    def session_id(self) -> Optional[str]:
        return self.session.id if self.session is not None else None

    # ---- the handler greenlet ------------------------------------------------------------------

    def reject(self, rejection: Rejection) -> None:
        """Refuse after the upgrade: the error event, the close frame, the client's reply."""
        self._to_pump([{"type": "error", "event_id": "event_SimRejected",
                        "error": rejection.error}])
        self._to_pump(_Close(rejection.close_code, rejection.close_reason))
        self._serve_until_read()

    def serve(self, session: RealtimeSession, faults: list[Fault]) -> None:
        self.session = session
        self.faults.extend(faults)
        self._emit(session.open())
        self._serve_until_read()

    def _serve_until_read(self) -> None:
        try:
            if not self.reading_ended:
                self._reader.add(self)
            self._arm()
            self.reader_done.wait()
        finally:
            self._finish()

    def _finish(self) -> None:
        self.end_reading()
        self.deadline = None
        pump = self._pump
        if pump is not None:
            self.queue.put(_STOP)
            pump.join(timeout=CLOSE_WAIT_S + 1.0)
            if not pump.dead:
                pump.kill(block=True, timeout=1.0)
        self._sending_ended = True
        if self.session is not None:
            self.session.shutdown()
        self._ended = True
        self.ws.closed = True

    # ---- reading (the shared reader) -----------------------------------------------------------

    def end_reading(self) -> None:
        if not self.reading_ended:
            self.reading_ended = True
            self._reader.remove(self)
            self.reader_done.set()

    def fail(self) -> None:
        """A bug in the simulator: this connection ends (cut), the others go on."""
        self._abort()
        self.end_reading()

    def on_audio(self, audio: bytes) -> None:
        """An append in the compact shape, its audio decoded by the reader."""
        session = self.session
        if session is None or self._closing:
            return          # draining until the client's close frame
        out = session.receive_audio(audio, self.clock())
        if out:     # else no turn edge, no error: the timers and the response are as they were
            self._after(session, out)

    def on_message(self, text) -> None:
        """Any other client message: text, or a bytearray for a binary one."""
        session = self.session
        if session is None or self._closing:
            return
        self._after(session, session.receive(text, self.clock()))

    def on_deadline(self) -> None:
        """The shared timer: the session's deadline has come."""
        self.deadline = None
        session = self.session
        if session is None or self._ended:
            return
        self._after(session, session.tick(self.clock()))

    def _after(self, session: RealtimeSession, out: list) -> None:
        if out:
            self._emit(out)
        if session.close_request is not None and not self._closing:
            self._closing = True
            self._to_pump(_Close(*session.close_request))
        self._arm()

    def _arm(self) -> None:
        session = self.session
        if session is None or self._ended:
            return
        deadline = session.next_deadline()
        if deadline != self.deadline:
            self.deadline = deadline
            if deadline is not None:
                self._timer.arm(self, deadline)

    # ---- sending -------------------------------------------------------------------------------

    def _emit(self, events: list) -> None:
        """Send events now when nothing must wait; else hand them to the pump, in order."""
        if self._pump is not None or self.faults or self._closing:
            self._to_pump(events)
            return
        if self._sending_ended or self.ws.closed:
            return
        session, clock, frames = self.session, self.clock, []
        for event in events:
            kind = event["type"]
            self._ordinals[kind] += 1
            if self.stalled_until and clock() < self.stalled_until:
                self.stalled_events += 1
                continue
            frames.append(text_frame(orjson.dumps(event)))    # UTF-8 JSON bytes
            if session is not None:
                session.sent_types[kind] += 1
        if frames:
            self.send_raw(frames[0] if len(frames) == 1 else b"".join(frames))

    def send_raw(self, data: bytes) -> None:
        """Frames already built: written now if the socket takes them, else by the pump."""
        if self._pump is not None:
            self._to_pump(data)
            return
        if self._sending_ended:
            return
        try:
            rest = send_nowait(self.fd, data)
        except OSError:
            self._abort()
            return
        if rest:
            self._to_pump(rest)

    def _to_pump(self, item) -> None:
        if self._sending_ended:
            return
        if type(item) is list and self.queue.qsize() >= MAX_QUEUED:  # the client does not read
            log.warning("sim-model: session %s: client not reading, dropped", self.session_id)
            self._abort()
            return
        self.queue.put(item)
        if self._pump is None and not self._ended:
            self._pump = self._spawn(self._run_pump)

    def _run_pump(self) -> None:
        queue = self.queue
        try:
            while not self._ended and not self._sending_ended:
                if self.faults and not self._immediate_faults():
                    return
                if not self.faults and not queue.qsize():
                    return          # nothing waits any more: events go out at once again
                item = queue.get()
                if item is _STOP:
                    return
                if type(item) is list:
                    if not self._send_events(item):
                        return
                elif type(item) is bytes:
                    with self.ws._send_lock:
                        self.ws.handler.socket.sendall(item)
                elif isinstance(item, _Close):
                    self._close(item.code, item.reason)
                    return
        except (WebSocketError, OSError):
            self._abort()
        except Exception:
            log.exception("sim-model: pump of session %s failed", self.session_id)
            self._abort()
        finally:
            if self._pump is gevent.getcurrent():
                self._pump = None

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
            send(orjson.dumps(event).decode())
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
        log.info("sim-model: fault %s on %s", fault.kind, self.session_id)
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
            self.ws.send(orjson.dumps(self.session.fault_error(error)).decode())
        elif fault.kind == "malformed":
            self.ws.send(fault.text)
        elif fault.kind == "event":
            self.ws.send(orjson.dumps(fault.payload()).decode())
        return True

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)
        self._to_pump([])  # the pump performs it

    # ---- ending --------------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """The closing handshake: our close frame, the client's reply (bounded), then EOF."""
        self._closing = True
        self._sending_ended = True
        self.ws.close(code, reason)
        self.reader_done.wait(CLOSE_WAIT_S)
        self._shutdown_socket()

    def _abort(self) -> None:
        """Cut the connection: no close frame."""
        self._closing = True
        self._sending_ended = True
        self.ws.closed = True
        self._shutdown_socket()

    def terminate(self) -> None:
        """Server stopping: going-away close frame, then the socket is cut."""
        self._closing = True
        try:
            self.ws.close(1001, "server stopping")
        finally:
            self._sending_ended = True
            self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        sock = getattr(self.ws.handler, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
