"""The simulated model's server: RealtimeSession objects behind real WebSockets (gevent).

Owns: the listening socket (gevent.pywsgi + geventwebsocket, handlers in a bounded pool), the
routing of a request (the Realtime WebSocket path, or the HTTP control routes of control.py), the
connection checks on upgrade, the one reader of every connection (reader.py) and the one timer
of every session (deadlines.py), the sessions kept for inspection, the script in use, fault
injection, and stopping with no greenlet or socket left behind. A connection's life is in
connection.py; the protocol in session.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl

import gevent
from gevent.event import Event
from gevent.pool import Group, Pool
from gevent.pywsgi import WSGIServer

from relay.sim.model import control
from relay.sim.model.connection import Connection
from relay.sim.model.deadlines import DeadlineTimer
from relay.sim.model.faults import Fault
from relay.sim.model.handshake import (
    AUTH_MODES,
    KNOWN_MODELS,
    Rejection,
    check_connection,
    presented_key,
)
from relay.sim.model.reader import SharedReader
from relay.sim.model.script import Script
from relay.sim.model.session import DEFAULT_SESSION_LIMIT_S, RealtimeSession
from relay.sim.model.vad import MIN_SPEECH_MS
from relay.sim.model.wshandler import SimHandler, SimWebSocket

PATH = "/v1/realtime"
PATHS = (PATH, "/openai/v1/realtime")     # OpenAI's, and Azure OpenAI's GA path
KEEP_SESSIONS = 500         # ended sessions kept for inspection


class SimModel:
    """The simulated OpenAI Realtime model: a WebSocket server speaking the GA protocol.

    `SimModel(api_key="sk-test", script={...}).start()` listens on host:port (0: any free
    port); `.url` is ws://host:port/v1/realtime and `.http_url` the control endpoint's base.
    `auth="api-key"` makes it take the key as Azure OpenAI does (an `api-key` header, not
    `Authorization: Bearer`); it also answers on Azure's path (`.azure_url`).
    `.stop()` ends every connection and greenlet. Also a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "sk-sim-test",
                 script: Union[Script, dict, None] = None,
                 session_limit_s: float = DEFAULT_SESSION_LIMIT_S,
                 models: Optional[frozenset] = KNOWN_MODELS, min_speech_ms: int = MIN_SPEECH_MS,
                 max_connections: int = 5000, keep_sessions: int = KEEP_SESSIONS,
                 clock: Callable[[], float] = time.monotonic, auth: str = "bearer") -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {auth!r}")
        if auth == "api-key" and models is KNOWN_MODELS:
            models = None       # Azure: the "model" is a deployment, named by its owner
        self.host = host
        self.api_key = api_key
        self.auth = auth
        self.session_limit_s = session_limit_s
        self.models = models
        self.min_speech_ms = min_speech_ms
        self.clock = clock
        self._script = script if isinstance(script, Script) else Script.from_dict(script)
        self._requested_port = port
        self._max_connections = max_connections
        self._keep_sessions = keep_sessions
        self._sessions: OrderedDict[str, RealtimeSession] = OrderedDict()
        self._connections: dict[int, Connection] = {}
        self._future_faults: list[Fault] = []
        self._greenlets = Group()
        self._server: Optional[WSGIServer] = None
        self._reader: Optional[SharedReader] = None
        self._timer: Optional[DeadlineTimer] = None
        self._session_added = Event()
        self.port: Optional[int] = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "SimModel":
        if self._server is not None:
            return self
        server = WSGIServer((self.host, self._requested_port), self._app, log=None,
                            handler_class=SimHandler, spawn=Pool(self._max_connections))
        server.start()
        self._reader = SharedReader(SimWebSocket.max_message_bytes)
        self._reader.start()
        self._timer = DeadlineTimer(self.clock)
        self._timer.start()
        self._server = server
        self.port = server.server_port
        return self

    def stop(self, timeout: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for conn in list(self._connections.values()):
            conn.terminate()
        server.stop(timeout=timeout)
        self._greenlets.kill(block=True, timeout=timeout)
        self._reader.stop()
        self._timer.stop()

    def __enter__(self) -> "SimModel":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def azure_url(self) -> str:
        """The URL in Azure OpenAI's form (its path; the model is the deployment name)."""
        return f"ws://{self.host}:{self.port}{PATHS[1]}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- script, faults, inspection ------------------------------------------------------------

    @property
    def script(self) -> Script:
        return self._script

    @script.setter
    def script(self, script: Union[Script, dict]) -> None:
        """Replace the script for new sessions and for the sessions open now."""
        self._script = script if isinstance(script, Script) else Script.from_dict(script)
        for conn in self._connections.values():
            if conn.session is not None:
                conn.session.script = self._script

    def inject(self, fault: Optional[Fault] = None, **fields: Any) -> Fault:
        """Arm a fault (a Fault, or its fields as keywords); see relay.sim.model.faults."""
        fault = fault or Fault(**fields)
        live = [c for c in self._connections.values() if c.session is not None]
        if fault.target in ("current", "all"):
            for conn in live:
                conn.add_fault(dataclasses.replace(fault))
        if fault.target in ("next", "all"):
            self._future_faults.append(fault)
        elif fault.target != "current":
            targets = [c for c in live if c.session.id == fault.target]
            if not targets:
                raise ValueError(f"no open session {fault.target!r}")
            targets[0].add_fault(dataclasses.replace(fault))
        return fault

    @property
    def sessions(self) -> list[RealtimeSession]:
        """Sessions in the order they opened (open ones and the last ended ones)."""
        return list(self._sessions.values())

    def session(self, session_id: str) -> RealtimeSession:
        return self._sessions[session_id]

    def open_sessions(self) -> list[RealtimeSession]:
        return [c.session for c in self._connections.values() if c.session is not None
                and not c.session.closed]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def greenlet_count(self) -> int:
        """Pump greenlets alive (0 after stop()): a connection has one only while something
        must wait (a full socket, armed faults, a closing handshake)."""
        return len(self._greenlets)

    def wait_for_sessions(self, count: int, timeout: float = 5.0) -> list[RealtimeSession]:
        """Block until `count` sessions have opened; TimeoutError otherwise."""
        deadline = self.clock() + timeout
        while len(self._sessions) < count:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._sessions)} of {count} sessions opened")
            self._session_added.clear()
            self._session_added.wait(remaining)
        return self.sessions

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll a condition on the server's state (every 5 ms); TimeoutError after `timeout`."""
        deadline = self.clock() + timeout
        while not predicate():
            if self.clock() >= deadline:
                raise TimeoutError("condition not reached")
            gevent.sleep(0.005)

    # ---- WSGI ----------------------------------------------------------------------------------

    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        if environ.get("PATH_INFO") in PATHS:
            if ws is None:
                start_response("426 Upgrade Required", [("Content-Type", "text/plain"),
                                                         ("Connection", "close")])
                return [b"WebSocket upgrade required\n"]
            self._serve_websocket(environ, ws)
            return []
        if ws is not None:
            ws.close(1008, "unknown path")
            return []
        return control.handle(self, environ, start_response)

    def _serve_websocket(self, environ: dict, ws: SimWebSocket) -> None:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        verdict = check_connection(headers, query, self.api_key, self.models, self.auth)
        conn = Connection(ws, self.clock, self._greenlets.spawn, self._reader, self._timer)
        conn.api_key = presented_key(headers, self.auth)
        self._connections[id(conn)] = conn
        try:
            if isinstance(verdict, Rejection):
                conn.reject(verdict)
                return
            session = RealtimeSession(model=verdict, script=self._script, now=self.clock(),
                                      wall_time=time.time(),
                                      session_limit_s=self.session_limit_s,
                                      min_speech_ms=self.min_speech_ms)
            self._sessions[session.id] = session
            while len(self._sessions) > self._keep_sessions:
                oldest = next(iter(self._sessions))
                if not self._sessions[oldest].closed:
                    break
                del self._sessions[oldest]
            self._session_added.set()
            faults = [dataclasses.replace(f) for f in self._future_faults]
            self._future_faults = [f for f in self._future_faults if f.target == "all"]
            conn.serve(session, faults)
        finally:
            del self._connections[id(conn)]
