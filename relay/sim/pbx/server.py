"""SimPbx: the simulated Asterisk as one object you start and stop (tests, demo, benchmarks).

Owns: the HTTP server (gevent.pywsgi + geventwebsocket) answering ARI under /ari, the events
WebSocket at /ari/events and the simulator's API under /sim; the clock greenlet that runs the
model's timers and the callers' scripts; delivering the model's events to the WebSockets; the
timing (relay.sim.pbx.timing) and the faults (relay.sim.pbx.faults) it applies; and the Python
API for scenarios, faults and inspection. Everything it opens (listening socket, RTP sockets,
greenlets, WebSockets) is closed by stop().

    with SimPbx(user="u", password="p", recordings_dir=tmp) as pbx:
        ids = pbx.start_calls({"steps": [{"say": "hello"}]}, count=10, app="voicebot", rate=5)
        results = pbx.wait_calls(ids, timeout=30)

Unkind by default, as Asterisk is: `timing=PbxTiming.realistic()` unless told otherwise. A REST
request is applied when it arrives, its answer written `rest_latency_ms` later; the events it
caused are queued on each events connection with `event_latency_ms` of latency each (order kept
per connection), so either can reach the client first. externalMedia and snoop channels enter
Stasis after their answer (relay.sim.pbx.model). Faults: `pbx.faults.add(kind=..., ...)` or
`POST /sim/faults`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, quote

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from relay.sim.pbx.ari import ASTERISK_VERSION, AriApi, Params, check_auth
from relay.sim.pbx.capture import RtpCapture
from relay.sim.pbx.control import ControlApi
from relay.sim.pbx.faults import Fault, Faults
from relay.sim.pbx.media import MediaEngine
from relay.sim.pbx.model import AriError, Pbx
from relay.sim.pbx.scenario import Call, Scenario
from relay.sim.pbx.stats import WindowStats
from relay.sim.pbx.timing import PbxTiming, draw_s
from relay.sim.pbx.ws import EventConnection, dumps

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            412: "Precondition Failed", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_FAULT_KEY = "relay.sim.fault"


class _Handler(WebSocketHandler):
    """Upgrades only valid /ari/events requests; everything else is plain WSGI. As Asterisk's
    HTTP server: at most `http_session_limit` connections at once (events WebSockets count:
    each holds its session), one more is closed before its request is read; a connection idle
    `keep_alive_ms` between requests is closed."""

    def handle(self) -> None:
        sim: SimPbx = self.server.sim
        limit = sim.http_session_limit
        if limit and sim.http_sessions >= limit:
            sim.http_refused += 1
            (log.warning if sim.http_refused == 1 else log.debug)(
                "sim-pbx: HTTP session count exceeded %d sessions (%d refused so far)",
                limit, sim.http_refused)
            with contextlib.suppress(OSError):
                self.socket.close()
            return
        try:    # small responses must not wait for the client's delayed ACK (Nagle)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sim.http_sessions += 1
        try:
            super().handle()
        finally:
            sim.http_sessions -= 1

    def read_requestline(self) -> str:
        idle = draw_s(self.server.sim.timing_rng, self.server.sim.timing.keep_alive_ms)
        if idle <= 0.0:
            return super().read_requestline()
        with gevent.Timeout(idle, False):
            return super().read_requestline()
        return ""           # idle too long: the server closes the connection

    def log_request(self) -> None:      # no access log
        pass


class SimPbx:
    """A simulated Asterisk 22: ARI REST + events WebSocket + externalMedia RTP + callers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, user: str = "asterisk",
                 password: str = "asterisk", recordings_dir: str | Path | None = None, *,
                 asterisk_id: str = "02:fc:00:00:00:01", keep_audio: bool = True,
                 event_history: int = 0, seed: int | None = None,
                 timing: PbxTiming | str | dict | None = None,
                 http_session_limit: int = 100) -> None:
        """`timing`: a PbxTiming, "realistic" (the default) or "instant", or a dict for
        PbxTiming.from_dict. `seed` also seeds the delays (drawn from an rng of their own, so
        that ids do not depend on how requests interleave). `http_session_limit`: connections
        served at once, events WebSockets included (Asterisk's http.conf session_limit, 100 by
        default); more are closed unanswered; 0: no limit."""
        self.host = host
        self.requested_port = port
        self.user = user
        self.password = password
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        self.port: int = 0
        rng = random.Random(seed)
        self.timing_rng = random.Random(None if seed is None else f"{seed}/timing")
        self.media = MediaEngine(host, keep_audio=keep_audio, rng=rng,
                                 on_closed=self._endpoint_closed)
        self.model = Pbx(self.media, asterisk_id=asterisk_id, rng=rng, now=time.monotonic(),
                         timing=_timing(timing), timing_rng=self.timing_rng)
        self.model.history_limit = event_history
        self.faults = Faults(on_action=self._perform_action)
        self.http_session_limit = http_session_limit
        self.http_sessions = 0
        self.http_refused = 0
        self.scenario: Scenario | None = None
        self.api = AriApi(self.model)
        self.control = ControlApi(self)
        self._server: WSGIServer | None = None
        self._clock: gevent.Greenlet | None = None
        self._wake = Event()
        self._call_ended = Event()
        self._connections: set[EventConnection] = set()
        self._running = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        """http://HOST:PORT/ari"""
        return f"http://{self.host}:{self.port}/ari"

    def events_url(self, app: str, subscribe_all: bool = False) -> str:
        """ws://HOST:PORT/ari/events?app=APP&api_key=USER:PASS[&subscribeAll=true]"""
        url = (f"ws://{self.host}:{self.port}/ari/events?app={quote(app, safe=',')}"
               f"&api_key={quote(self.user)}:{quote(self.password)}")
        return url + ("&subscribeAll=true" if subscribe_all else "")

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    @property
    def timing(self) -> PbxTiming:
        return self.model.timing

    def set_timing(self, timing: PbxTiming | str | dict) -> PbxTiming:
        """Change the delays from now on (events already queued keep their due times)."""
        self.model.timing = _timing(timing)
        for conn in self._connections:
            conn.latency_ms = self.model.timing.event_latency_ms
        return self.model.timing

    def start(self) -> Self:
        if self._running:
            return self
        if self.recordings_dir is None:
            self.recordings_dir = Path(tempfile.mkdtemp(prefix="sim-pbx-"))
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = Scenario(self.model, self.recordings_dir, self.media.endpoints,
                                 wake=self._wake.set, on_call_ended=self._on_call_ended)
        # handlers in a group of ours, so that stop() ends them all: a client's idle
        # keep-alive connection must not keep a greenlet of a stopped server alive
        server = WSGIServer((self.host, self.requested_port), self._wsgi,
                            handler_class=_Handler, log=None, error_log=log, spawn=Pool())
        server.pre_start_hook = self._pre_start_hook
        server.sim = self
        server.start()
        self._server = server
        self.port = server.server_port
        self._running = True
        self.media.start()
        self._clock = gevent.spawn(self._run_clock)
        return self

    def stop(self) -> None:
        """Close everything: WebSockets, the HTTP server, RTP sockets (writing the WAVs)."""
        if not self._running:
            return
        self._running = False
        self._wake.set()
        for conn in list(self._connections):
            conn.close("server stopping")
        if self._clock is not None:
            self._clock.kill(block=True, timeout=2)
            self._clock = None
        if self._server is not None:
            self._server.stop(timeout=0.5)
            self._server = None
        self.media.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the clock
    def _run_clock(self) -> None:
        model, wake = self.model, self._wake
        while self._running:
            now = time.monotonic()
            try:
                model.advance(now)
                self.scenario.advance(now)
            except Exception:        # one bad step must not stop every call
                log.exception("simulated PBX clock step failed")
            self._flush()
            deadlines = [d for d in (model.next_deadline(), self.scenario.next_deadline())
                         if d is not None]
            timeout = min(deadlines) - time.monotonic() if deadlines else 1.0
            if timeout > 0:
                wake.wait(min(timeout, 1.0))
            wake.clear()

    def _flush(self) -> None:
        """Queue the model's events on the WebSockets of the apps that hear them (each with its
        latency), through the event faults when there are any."""
        outbox = self.model.outbox
        if not outbox:
            return
        self.model.outbox = []
        apps = self.model.apps
        faults = self.faults if self.faults.event_rules else None
        for names, event, conn in outbox:
            if conn is not None:
                for name in names:
                    conn.replaced(name, event)
                continue
            for name in names:
                app = apps.get(name)
                if app is not None and app.connection is not None:
                    if faults is None:
                        app.connection.send_event(name, event)
                        continue
                    out = faults.on_event(name, event)
                    if out is not None:
                        app.connection.send_event(name, out)

    def _op(self) -> None:
        """Before a model operation from outside the clock: bring the model's time forward."""
        self.model.now = time.monotonic()

    def _after_op(self) -> None:
        self._flush()
        self._wake.set()

    # ------------------------------------------------------------------ HTTP
    def _pre_start_hook(self, handler: WebSocketHandler) -> bool:
        """True: answer as plain HTTP (no WebSocket upgrade)."""
        env = handler.environ
        if env.get("PATH_INFO") != "/ari/events":
            return True
        if self._events_error(env) is not None:
            return True
        if self.faults.request_rules:
            fault = self.faults.match_request("GET", "/events", events=True)
            if fault is not None:
                log.info("sim-pbx: fault %s #%d on the events WebSocket", fault.kind, fault.id)
                if fault.kind == "respond":
                    env[_FAULT_KEY] = fault
                    return True
                gevent.sleep(fault.delay_s)         # late: the handshake is answered late
                if _peer_closed(handler.socket):    # ... to nobody: register nothing
                    env[_FAULT_KEY] = Fault(kind="respond", status=400,
                                            message="client gone")
                    return True
        return False

    def _events_error(self, env: dict) -> tuple[int, str] | None:
        if not check_auth(env, self.user, self.password):
            return 401, "Authentication required"
        query = parse_qs(env.get("QUERY_STRING", ""), keep_blank_values=True)
        if not [a for v in query.get("app", []) for a in v.split(",") if a]:
            return 400, "Missing param 'app'"
        return None

    def _respond(self, start_response, status: int, body: Any,
                 extra: list | None = None) -> list[bytes]:
        headers = [("Server", f"Asterisk/{ASTERISK_VERSION}")] + (extra or [])
        if body is None or status == 204:
            start_response(f"{status} {_REASONS.get(status, 'OK')}", headers)
            return []
        data = dumps(body).encode("utf-8")
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(f"{status} {_REASONS.get(status, 'OK')}", headers)
        return [data]

    def _wsgi(self, environ: dict, start_response) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/ari/events":
            ws = environ.get("wsgi.websocket")
            if ws is None:
                fault = environ.get(_FAULT_KEY)
                if fault is not None:
                    return self._respond(start_response, fault.status,
                                         {"message": fault.message})
                err = self._events_error(environ) or (400, "WebSocket upgrade required")
                return self._auth_respond(start_response, err)
            self._serve_events(environ, ws)
            return []
        if not path.startswith(("/ari/", "/sim/")):
            return self._respond(start_response, 404, {"message": "Resource not found"})
        if not check_auth(environ, self.user, self.password):
            return self._auth_respond(start_response, (401, "Authentication required"))
        try:
            params = Params.from_environ(environ)
        except AriError as exc:
            return self._respond(start_response, exc.status, {"message": exc.message})
        if path.startswith("/sim/"):        # the harness's own API: no latency, no faults
            status, body = self._apply(self.control.handle, method, path, params)
            return self._respond(start_response, status, body)
        status, body = self._ari(method, path[4:], params)
        delay = draw_s(self.timing_rng, self.model.timing.rest_latency_ms)
        if delay > 0.0:
            gevent.sleep(delay)
        return self._respond(start_response, status, body)

    def _ari(self, method: str, path: str, params: Params) -> tuple[int, Any]:
        """Apply one ARI request (through the request faults) and flush its events."""
        fault = self.faults.match_request(method, path) if self.faults.request_rules else None
        if fault is not None:
            log.info("sim-pbx: fault %s #%d on %s %s", fault.kind, fault.id, method, path)
            if fault.kind == "respond":
                return fault.status, {"message": fault.message}
            if fault.kind == "late":
                gevent.sleep(fault.delay_s)
        status, body = self._apply(self.api.handle, method, path, params)
        if fault is not None and fault.kind == "after":
            return fault.status, {"message": fault.message}
        if fault is not None and fault.kind == "slow_answer":
            gevent.sleep(fault.delay_s)     # its events are out already
        return status, body

    def _apply(self, handle, method: str, path: str, params: Params) -> tuple[int, Any]:
        """One request on the model at the current time, its events flushed; a simulator bug
        answers 500 for this request only."""
        self._op()
        try:
            status, body = handle(method, path, params)
        except Exception as exc:
            log.exception("simulated PBX failed on %s %s", method, path)
            status, body = 500, {"message": f"Internal error: {exc}"}
        self._after_op()
        return status, body

    def _auth_respond(self, start_response, err: tuple[int, str]) -> list[bytes]:
        extra = [("WWW-Authenticate", 'Basic realm="Asterisk REST Interface"')] \
            if err[0] == 401 else []
        return self._respond(start_response, err[0], {"message": err[1]}, extra)

    def _serve_events(self, environ: dict, ws) -> None:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        apps = [a for v in query.get("app", []) for a in v.split(",") if a]
        sub_all = (query.get("subscribeAll", ["false"])[-1].lower() in ("true", "1", "yes"))
        conn = EventConnection(ws, apps, subscribe_all=sub_all,
                               latency_ms=self.model.timing.event_latency_ms,
                               rng=self.timing_rng)
        self._connections.add(conn)
        self._op()
        for app in conn.apps:
            self.model.register_app(app, conn, sub_all)
        self._after_op()
        conn.serve(self._events_closed)

    def _events_closed(self, conn: EventConnection) -> None:
        self._connections.discard(conn)
        self._op()
        for app in conn.apps:
            self.model.unregister_app(app, conn)
        self._after_op()

    # ------------------------------------------------------------------ faults (Python API)
    def add_fault(self, fault: Fault | dict | None = None, /, **fields: Any) -> Fault:
        """`pbx.add_fault(kind="respond", method="POST", path="^/bridges$", status=503)`; the
        same as `pbx.faults.add(...)` (relay.sim.pbx.faults lists the kinds)."""
        return self.faults.add(fault, **fields)

    def inject_event(self, app: str, event: Any) -> int:
        """Push `event` (a dict, sent as JSON exactly as given, or a text frame) to the events
        WebSocket serving `app`, behind the events already queued there. Returns the number of
        connections it went to (0 or 1)."""
        return self.faults.add(kind="inject_event", app=app, event=event).fired

    def drop_events_connection(self, app: str, abrupt: bool = False) -> int:
        """Close the events WebSocket serving `app` (a close frame; `abrupt`: cut the TCP
        connection). Returns the number of connections closed (0 or 1)."""
        return self.faults.add(kind="drop_events_connection", app=app, abrupt=abrupt).fired

    def _perform_action(self, fault: Fault) -> int:
        app = self.model.apps.get(fault.app or "")
        conn = app.connection if app is not None else None
        if conn is None or getattr(conn, "closed", False):
            return 0
        log.info("sim-pbx: fault %s on the events WebSocket of %s", fault.kind, fault.app)
        if fault.kind == "inject_event":
            conn.send_raw(fault.event)
        elif fault.abrupt:
            conn.cut("dropped by a fault")
        else:
            conn.close("dropped by a fault")
        return 1

    # ------------------------------------------------------------------ scenarios (Python API)
    def start_calls(self, script: Any, count: int = 1, app: str = "voicebot",
                    rate: float | None = None, delay: float = 0.0) -> list[str]:
        """Schedule `count` inbound calls running `script` (see relay.sim.pbx.caller) into
        Stasis(app), `rate` calls per second (None: all now), starting after `delay` seconds."""
        self._require_started()
        ids = self.scenario.schedule(script, app, count=count, rate=rate,
                                     now=time.monotonic(), delay=delay)
        self._wake.set()
        return ids

    def start_call(self, script: Any, app: str = "voicebot") -> str:
        return self.start_calls(script, 1, app)[0]

    def wait_ended(self, call_ids: list[str] | None = None, timeout: float = 30.0) -> bool:
        """Wait until every listed call (default: all) has ended; False on timeout."""
        self._require_started()
        deadline = time.monotonic() + timeout
        while True:
            calls = self.scenario.calls
            ids = call_ids if call_ids is not None else list(calls)
            if all(cid not in calls or calls[cid].ended for cid in ids):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._call_ended.clear()
            self._call_ended.wait(min(left, 0.5))

    def wait_calls(self, call_ids: list[str] | None = None, timeout: float = 30.0
                   ) -> list[dict]:
        """Wait for the calls to end and return their results; TimeoutError if they do not."""
        if not self.wait_ended(call_ids, timeout):
            active = [c["id"] for c in self.calls(call_ids) if c["state"] not in ("ended",
                                                                                  "failed")]
            raise TimeoutError(f"calls still active after {timeout} s: {active}")
        return self.calls(call_ids)

    def _on_call_ended(self, call: Call) -> None:
        self._call_ended.set()

    def call(self, call_id: str) -> dict:
        """One call's result: state, script progress, DTMF/playbacks it heard, RTP, WAVs."""
        self._require_started()
        call = self.scenario.calls.get(call_id)
        if call is None:
            raise AriError(404, f"No such call {call_id}")
        return call.result(self.media.endpoints)

    def calls(self, call_ids: list[str] | None = None) -> list[dict]:
        self._require_started()
        calls = self.scenario.calls
        ids = call_ids if call_ids is not None else list(calls)
        return [calls[c].result(self.media.endpoints) for c in ids if c in calls]

    def hangup_call(self, call_id: str) -> None:
        """The caller hangs up now (events as for a SIP BYE: cause 16)."""
        self._require_started()
        if call_id not in self.scenario.calls:
            raise AriError(404, f"No such call {call_id}")
        self._op()
        self.scenario.hangup(call_id)
        self._after_op()

    def register_dialplan(self, context: str, script: Any) -> None:
        """The script the ;2 half of Local/EXTEN@context runs (see relay.sim.pbx.scenario)."""
        self._require_started()
        self.scenario.register_dialplan(context, script)

    def register_endpoint(self, name: str, callee: Any) -> None:
        """Who answers an originated PJSIP/name: a callee spec or the script it runs once it
        answers (relay.sim.pbx.callees)."""
        self._require_started()
        self.scenario.register_endpoint(name, callee)

    def capture(self, call_id: str, channel_id: str | None = None) -> RtpCapture:
        """The RTP the relay sent on the call's (first, or given) externalMedia channel."""
        self._require_started()
        call = self.scenario.calls[call_id]
        if not call.captures:
            raise KeyError(f"call {call_id} has no externalMedia channel")
        return call.captures[channel_id or next(iter(call.captures))]

    def write_wavs(self, call_id: str) -> list[Path]:
        """Write the call's WAV files now (they are written anyway when the externalMedia
        channel goes away, or at stop())."""
        self._require_started()
        call = self.scenario.calls[call_id]
        return [self.scenario.write_wav(call, em) for em in list(call.captures)]

    def _endpoint_closed(self, ep: Any) -> None:
        if self.scenario is not None:
            try:
                self.scenario.endpoint_closed(ep)
            except OSError:
                log.exception("writing the WAV of %s failed", ep.channel_id)

    def inspect(self) -> dict:
        """Everything alive now, and every call with its script progress and RTP."""
        self._require_started()
        out = self.model.live_summary()
        out["rtp"] = self.media.snapshot()
        out["calls"] = self.calls()
        out["pacer"] = {"ticks_skipped": self.media.ticks_skipped,
                        "frames": self.media.frames_run}
        out["recordings_dir"] = str(self.recordings_dir)
        out["websockets"] = [{"apps": c.apps, "serving": sorted(c.serving), "sent": c.sent}
                             for c in self._connections]
        out["timing"] = self.timing.as_dict()
        out["http_sessions"] = {"open": self.http_sessions, "limit": self.http_session_limit,
                                "refused": self.http_refused}
        out["faults"] = self.faults.list()
        return out

    def stats(self, since: float | None = None, until: float | None = None) -> dict:
        """Totals for load tests, cheap enough to ask during a run: RTP counts of every
        externalMedia channel since start, live channels and bridges, calls by state. With
        `since` (and `until`, default now; time.monotonic() seconds, the same clock in every
        process of the machine) also the figures of that window over every call's capture:
        pacing, sequence gaps, turn latency, barge-ins (relay.sim.pbx.stats; costs about a second
        per million packets, so ask once the calls are over)."""
        self._require_started()
        now = time.monotonic()
        states: dict[str, int] = {}
        for call in self.scenario.calls.values():
            states[call.state] = states.get(call.state, 0) + 1
        out: dict[str, Any] = {
            "now": now, "rtp": self.media.totals(),
            "pacer": {"ticks_skipped": self.media.ticks_skipped,
                      "frames": self.media.frames_run},
            "live": {"channels": len(self.model.channels), "bridges": len(self.model.bridges),
                     "endpoints": len(self.media.endpoints)},
            "calls": states,
        }
        if since is not None:
            window = WindowStats(since, now if until is None else until)
            seen: set[int] = set()
            captures = [c for call in self.scenario.calls.values()
                        for c in call.captures.values()]
            captures += [ep.capture for ep in self.media.endpoints.values()]
            for cap in captures:
                if id(cap) not in seen:
                    seen.add(id(cap))
                    window.add_capture(cap)
            for call in self.scenario.calls.values():
                window.add_turns(call.activity.turns)
                window.add_barge_ins(call.activity.barge_ins)
            out["window"] = window.result()
        return out

    @property
    def events(self) -> list[dict]:
        """The last `event_history` events produced (all apps), when enabled."""
        return list(self.model.history)

    def _require_started(self) -> None:
        if self.scenario is None:
            raise RuntimeError("SimPbx not started")


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client closed its end (EOF or an error waiting), without blocking."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _timing(timing: PbxTiming | str | dict | None) -> PbxTiming:
    if timing is None:
        return PbxTiming.realistic()
    if isinstance(timing, PbxTiming):
        return timing
    if isinstance(timing, str):
        return PbxTiming.named(timing)
    return PbxTiming.from_dict(timing)
