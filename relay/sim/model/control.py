"""The simulated model's HTTP control endpoint (JSON), served beside the WebSocket.

Owns: the routes tests and demos use from outside the process:

  GET  /sim/health              {"ok": true, "sessions": N, "open": M}
  GET  /sim/sessions            [{id, model, open, appends, items, errors}, ...]
  GET  /sim/sessions/<id>       the session's full inspection (RealtimeSession.inspect())
  POST /sim/faults              body: a Fault as JSON -> {"ok": true, "fault": {...}}
  GET  /sim/script              the script in use (as given)
  PUT  /sim/script              body: a script -> {"ok": true}

Bad requests get 400 {"error": "..."}; every response closes the connection (no keep-alive, so
stopping the server never waits for an idle client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import ujson

from relay.sim.model.faults import Fault

if TYPE_CHECKING:
    from relay.sim.model.server import SimModel

MAX_BODY = 1 << 20


def _reply(start_response: Callable, status: str, body: Any) -> list[bytes]:
    data = ujson.dumps(body, escape_forward_slashes=False).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), ("Connection", "close")])
    return [data]


def _body(environ: dict) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ValueError("bad Content-Length") from None
    if length > MAX_BODY:
        raise ValueError("body too large")
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        return ujson.loads(raw or b"null")
    except ValueError:
        raise ValueError("body is not JSON") from None


def _summary(model: "SimModel") -> list[dict]:
    open_ids = {s.id for s in model.open_sessions()}
    return [{"id": s.id, "model": s.model, "open": s.id in open_ids, "appends": s.appends,
             "items": len(s.conversation), "errors": len(s.errors_sent)}
            for s in model.sessions]


def handle(model: "SimModel", environ: dict, start_response: Callable) -> list[bytes]:
    """The WSGI response for a control request."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "").rstrip("/")
    try:
        if path == "/sim/health" and method == "GET":
            return _reply(start_response, "200 OK", {"ok": True, "sessions": len(model.sessions),
                                                     "open": len(model.open_sessions())})
        if path == "/sim/sessions" and method == "GET":
            return _reply(start_response, "200 OK", _summary(model))
        if path.startswith("/sim/sessions/") and method == "GET":
            session_id = path[len("/sim/sessions/"):]
            try:
                session = model.session(session_id)
            except KeyError:
                return _reply(start_response, "404 Not Found",
                              {"error": f"no session {session_id!r}"})
            return _reply(start_response, "200 OK", session.inspect())
        if path == "/sim/faults" and method == "POST":
            fault = model.inject(Fault.from_dict(_body(environ)))
            return _reply(start_response, "200 OK", {"ok": True, "fault": fault.as_dict()})
        if path == "/sim/script" and method == "GET":
            return _reply(start_response, "200 OK", model.script.source)
        if path == "/sim/script" and method == "PUT":
            model.script = _body(environ) or {}
            return _reply(start_response, "200 OK", {"ok": True})
    except (ValueError, TypeError) as exc:
        return _reply(start_response, "400 Bad Request", {"error": str(exc)})
    return _reply(start_response, "404 Not Found", {"error": f"no route {method} {path}"})
