"""The dashboard's web server: one gevent WSGI server for the page, the API and /ws.

Owns: the listening socket (web.host:web.port, 127.0.0.1:8080 by default) and its handler
greenlets (a bounded pool), the refusal to start without a token anywhere but on loopback, the
order in which a request is judged (open: /healthz, the login page and its style; then the
token; then same-origin for changes; then the route), the page's login (the `/login` form, or
`/?token=` once: it sets the session cookie and redirects to a clean URL), redaction of every
JSON/text body (a streamed one chunk by chunk; audio and images are left as they are), and a
clean stop (clients closed, handlers ended). A streamed answer whose source fails after its
headers went out is logged once and its connection closed without the final chunk, so the
client sees an incomplete answer, never a truncated one that looks whole.

`DashboardServer` does all of that over a pluggable backend: `api` (routes: handle(request) ->
Response or None) and `hub` (the /ws clients: a relay.web.ws.ClientHub). `WebServer` is one
worker's (relay.web.api.Api + relay.web.ws.EventHub; calls are never touched from here except
through the API's documented Call methods); relay.web.fleet.FleetWebServer is the master's, over
all the workers.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Protocol, Self
from urllib.parse import parse_qsl

from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from relay.config import Settings, is_loopback
from relay.redact import secrets_of
from relay.web import pages
from relay.web.api import Api, allow
from relay.web.auth import Auth
from relay.web.handler import DashboardHandler
from relay.web.http import HttpError, Request, Response, error_response
from relay.web.redact import Redactor
from relay.web.ws import ClientHub, EventHub

if TYPE_CHECKING:
    from relay.worker import Worker

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
PAGE_PATHS = ("/", "/index.html")
LOGIN_ASSETS = ("/static/style.css", "/static/favicon.svg")   # the login page needs them
UNSCRUBBED_TYPES = ("image/", "audio/", "text/css", "text/javascript")   # no secret, or binary


class Routes(Protocol):
    """The API half of a backend: /healthz, /readyz, /metrics and /api/... ."""

    def handle(self, request: Request) -> Optional[Response]:
        """The answer, or None when the path is not the API's (raises HttpError)."""


class DashboardServer:
    """The server and its request judging; subclasses set `self.api` and `self.hub` in their
    __init__ (after this one's, which builds `self.redactor` for the hub's scrub)."""

    api: Routes
    hub: ClientHub
    label = "dashboard"          # in the start-up log line

    def __init__(self, settings: Settings, host: Optional[str] = None,
                 port: Optional[int] = None, extra_secrets: Iterable[str] = ()) -> None:
        web = settings.tree["web"]
        self.settings = settings
        self.host = web["host"] if host is None else host
        self._requested_port = web["port"] if port is None else port
        token = web["token"]
        if not token and not is_loopback(self.host):
            raise ValueError(f"the dashboard would listen on {self.host or 'every interface'!r}"
                             " without an access token: set web.token (WEB_TOKEN or "
                             "DASHBOARD_TOKEN), or listen on 127.0.0.1")
        self.auth = Auth(token)
        secrets = secrets_of(settings)
        self.redactor = Redactor(secrets + [str(s) for s in extra_secrets])
        self.max_body_bytes = web["max_body_bytes"]
        self._server: Optional[WSGIServer] = None
        self.port: Optional[int] = None

    # life cycle
    def start(self) -> Self:
        """Bind and serve (OSError when the address is taken)."""
        if self._server is not None:
            return self
        server = WSGIServer((self.host, self._requested_port), self._app,
                            handler_class=DashboardHandler, spawn=Pool(MAX_CONNECTIONS),
                            log=None, error_log=logging.getLogger("relay.web.http"))
        server.websocket_gate = self._websocket_gate     # read by DashboardHandler
        server.logger = logging.getLogger("relay.web.ws")   # for geventwebsocket
        server.start()
        self._server = server
        self.port = server.server_port
        self._start_backend()
        log.info("%s on %s (%s)", self.label, self.url,
                 "access token required" if self.auth.required else "loopback, no token")
        return self

    def stop(self, timeout: float = 2.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_backend(timeout)
        server.stop(timeout=timeout)

    def _start_backend(self) -> None:
        self.hub.start()

    def _stop_backend(self, timeout: float) -> None:
        self.hub.stop(timeout)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # requests
    def _websocket_gate(self, environ: dict) -> bool:
        """May this request be upgraded to the event WebSocket? (Otherwise the application
        answers it as plain HTTP, with the reason.)"""
        request = Request(environ, self.max_body_bytes)
        return (request.path == "/ws" and self.auth.authorised(request)
                and self.auth.same_origin(request) and not self.hub.full)

    def _app(self, environ: dict, start_response) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        if ws is not None:          # upgraded: the gate has let it through
            self.hub.serve(ws, str(environ.get("REMOTE_ADDR", "")))
            return []
        request = Request(environ, self.max_body_bytes)
        try:
            response = self._respond(request)
        except HttpError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.path)
            response = error_response(HttpError(500, "internal error (see relay's log)"))
        scrub = not response.content_type.startswith(UNSCRUBBED_TYPES)
        if scrub:
            response.body = self.redactor.scrub_bytes(response.body)
        start_response(response.status_line, response.all_headers())
        if response.stream is not None:
            if request.method == "HEAD":
                response.close_stream()
                return [b""]
            return StreamedBody(response, request, self.redactor.scrub_bytes if scrub else None)
        return [b""] if request.method == "HEAD" else [response.body]

    def _respond(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            response = self.api.handle(request)
            assert response is not None
            return response
        if path == "/login":
            return self._login(request)
        if path in LOGIN_ASSETS:
            allow(request, "GET", "HEAD")
            return pages.static_file(path[len("/static/"):])
        if not self.auth.authorised(request):
            return self._unauthorised(request)
        if request.method not in ("GET", "HEAD") and not self.auth.same_origin(request):
            raise HttpError(403, "cross-origin request refused")
        if path == "/ws":
            allow(request, "GET")
            if not self.auth.same_origin(request):
                raise HttpError(403, "cross-origin WebSocket refused")
            if self.hub.full:
                raise HttpError(503, "too many dashboard clients")
            raise HttpError(426, "a WebSocket upgrade is required here",
                            [("Upgrade", "websocket")])
        if path in PAGE_PATHS:
            allow(request, "GET", "HEAD")
            if "token" in request.query:        # already logged in: drop it from the URL
                return self._redirect("/")
            return pages.index_page()
        if path.startswith("/static/"):
            allow(request, "GET", "HEAD")
            return pages.static_file(path[len("/static/"):])
        response = self.api.handle(request)
        if response is None:
            raise HttpError(404, f"nothing at {path}")
        return response

    def _unauthorised(self, request: Request) -> Response:
        if request.path in PAGE_PATHS and request.method in ("GET", "HEAD"):
            token = request.query.get("token")
            if token is None:
                return self._redirect("/login")
            if self.auth.token_matches(token):
                return self._redirect("/", login=True)
            return pages.login_page("That token is not right.", status=401)
        raise HttpError(401, "an access token is required: send 'Authorization: Bearer "
                        "<token>', or log in at /login",
                        [("WWW-Authenticate", 'Bearer realm="relay"')])

    def _login(self, request: Request) -> Response:
        if not self.auth.required:
            allow(request, "GET", "HEAD", "POST")
            return self._redirect("/")
        if request.method in ("GET", "HEAD"):
            return pages.login_page()
        allow(request, "GET", "HEAD", "POST")
        if not self.auth.same_origin(request):
            raise HttpError(403, "cross-origin request refused")
        form = dict(parse_qsl(request.body().decode("utf-8", "replace")))
        if self.auth.token_matches(form.get("token", "")):
            return self._redirect("/", login=True)
        return pages.login_page("That token is not right.", status=401)

    def _redirect(self, location: str, login: bool = False) -> Response:
        headers = [("Location", location)]
        if login:
            headers.append(("Set-Cookie", self.auth.session_cookie()))
        return Response(303, b"", "text/plain; charset=utf-8", headers)


class StreamedBody:
    """A streamed answer as the WSGI server iterates it: each chunk scrubbed (when asked), the
    source closed at the end (`close()`, called by the server whatever happened), and a source
    that fails half-way logged once and turned into a reset connection (no final chunk)."""

    def __init__(self, response: Response, request: Request, scrub) -> None:
        self.response = response
        self.what = f"{request.method} {request.path}"
        self.scrub = scrub

    def __iter__(self) -> Iterator[bytes]:
        assert self.response.stream is not None
        try:
            for chunk in self.response.stream:
                yield self.scrub(chunk) if self.scrub is not None else chunk
        except Exception:       # the source's (the client's socket errors are raised elsewhere)
            log.exception("dashboard: %s failed after its answer began; connection closed",
                          self.what)
            raise ConnectionResetError(errno.ECONNRESET, "the streamed answer failed") from None

    def close(self) -> None:
        self.response.close_stream()


class WebServer(DashboardServer):
    """One worker's dashboard: `WebServer(worker).start()`; `.url`, `.port`; `.stop()`.
    Settings from the worker's `web` section; host and port may be overridden (tests bind
    port 0)."""

    def __init__(self, worker: "Worker", host: Optional[str] = None,
                 port: Optional[int] = None) -> None:
        super().__init__(worker.settings, host, port)
        web = worker.settings.tree["web"]
        self.worker = worker
        self.hub = EventHub(worker, queue_max=web["ws_queue_max"],
                            stats_interval_s=web["stats_interval_s"],
                            max_clients=web["ws_max_clients"], scrub=self.redactor.scrub)
        self.api = Api(worker, web_stats=self.hub.stats)
