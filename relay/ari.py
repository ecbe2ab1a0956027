"""The Asterisk REST Interface: REST requests and the events WebSocket.

Owns: talking to Asterisk. AriClient makes REST calls through one urllib3 connection pool (kept
alive, bounded below Asterisk's HTTP session limit, no retries, no proxy or .netrc lookups: a
call's setup makes five of them, so the per-request cost of a full requests.Session showed in
the load profile) with a timeout on every request and turns errors into AriError with
Asterisk's message. AriEvents
keeps the application's events WebSocket connected, reconnecting with capped exponential
backoff, and hands each event to a callback. Paths and parameters follow the Swagger
description shipped with Asterisk 22 (reference/asterisk/ari-api-docs). No call logic here.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import gevent
import gevent.event
import ujson
import urllib3

from relay.wsclient import JsonWebSocket

log = logging.getLogger(__name__)


class AriError(Exception):
    """An ARI request failed: HTTP status (0 when Asterisk could not be reached) and message."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {message}".strip())
        self.status = status
        self.message = message


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/ari")] if url.endswith("/ari") else url


class AriClient:
    """REST calls to one Asterisk. Thread-safe enough for greenlets: one pooled session."""

    def __init__(self, url: str, username: str, password: str, app: str,
                 timeout: float = 5.0, pool_size: int = 32) -> None:
        self.base = _base_url(url) + "/ari"
        self.app = app
        self.timeout = timeout
        # At most pool_size connections to Asterisk, a request waiting (up to its timeout) for
        # a free one: Asterisk's HTTP server serves 100 sessions at once, events WebSockets
        # included (http.conf sessionlimit), and refuses the next ones.
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=True,
                                         retries=False)
        self._headers = urllib3.make_headers(basic_auth=f"{username}:{password}")
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self.requests_made = 0
        self.errors = 0

    def close(self) -> None:
        self._pool.clear()

    def request(self, method: str, path: str, params: Optional[dict] = None,
                body: Optional[dict] = None) -> Any:
        """One REST call; the decoded JSON body (None when empty). AriError otherwise."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base + path + ("?" + urlencode(clean) if clean else "")
        self.requests_made += 1
        try:
            response = self._pool.request(
                method, url, body=None if body is None else ujson.dumps(body),
                headers=self._headers if body is None else self._json_headers,
                timeout=self.timeout, pool_timeout=self.timeout)
        except urllib3.exceptions.HTTPError as exc:
            self.errors += 1
            reason = getattr(exc, "reason", None) or exc
            raise AriError(0, f"{type(exc).__name__}: {reason}", method, path) from None
        data = response.data
        if response.status >= 400:
            self.errors += 1
            text = data.decode("utf-8", "replace")
            try:
                message = ujson.loads(data).get("message", text)
            except (ValueError, AttributeError):
                message = text[:200]
            raise AriError(response.status, message, method, path)
        if not data:
            return None
        try:
            return ujson.loads(data)
        except ValueError:
            raise AriError(response.status, "response is not JSON", method, path) from None

    # channels
    def answer(self, channel_id: str) -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/answer")

    def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.request("DELETE", f"/channels/{quote(channel_id)}", {"reason": reason})

    def get_channel(self, channel_id: str) -> dict:
        return self.request("GET", f"/channels/{quote(channel_id)}")

    def list_channels(self) -> list[dict]:
        return self.request("GET", "/channels") or []

    def external_media(self, channel_id: str, external_host: str, fmt: str = "ulaw",
                       data: str = "") -> dict:
        return self.request("POST", "/channels/externalMedia", {
            "app": self.app, "channelId": channel_id, "external_host": external_host,
            "format": fmt, "encapsulation": "rtp", "transport": "udp", "direction": "both",
            "data": data or None,
        })

    def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/variable",
                     {"variable": name, "value": value})

    def continue_in_dialplan(self, channel_id: str, context: Optional[str] = None,
                             extension: Optional[str] = None,
                             priority: Optional[int] = None) -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/continue",
                     {"context": context, "extension": extension, "priority": priority})

    def redirect(self, channel_id: str, endpoint: str) -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/redirect", {"endpoint": endpoint})

    def move(self, channel_id: str, app: str, app_args: str = "") -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/move",
                     {"app": app, "appArgs": app_args or None})

    def play(self, channel_id: str, media: str, playback_id: Optional[str] = None) -> dict:
        return self.request("POST", f"/channels/{quote(channel_id)}/play",
                            {"media": media, "playbackId": playback_id})

    def send_dtmf(self, channel_id: str, dtmf: str) -> None:
        self.request("POST", f"/channels/{quote(channel_id)}/dtmf", {"dtmf": dtmf})

    # bridges
    def create_bridge(self, bridge_id: str, bridge_type: str = "mixing", name: str = "") -> dict:
        return self.request("POST", "/bridges",
                            {"type": bridge_type, "bridgeId": bridge_id, "name": name or None})

    def add_channel(self, bridge_id: str, channel_ids: list[str]) -> None:
        self.request("POST", f"/bridges/{quote(bridge_id)}/addChannel",
                     {"channel": ",".join(channel_ids)})

    def add_channel_once_in_app(
            self, bridge_id: str, channel_ids: list[str], *, tries: int = 6,
            first_pause_s: float = 0.02,
            retry_also: Callable[[AriError], bool] = lambda error: False,
            before_try: Callable[[], None] = lambda: None,
            on_retry: Callable[[AriError], None] = lambda error: None) -> None:
        """addChannel, asked again after a 422 "Channel not in Stasis application" (Asterisk
        answers externalMedia before its channel enters the app: FACTS.md) or an error that
        `retry_also` accepts, `tries` times in all with pauses doubling from first_pause_s.
        `before_try()` may raise to stop; the last error is raised."""
        for attempt in range(tries):
            before_try()
            try:
                self.add_channel(bridge_id, channel_ids)
                return
            except AriError as exc:
                if attempt == tries - 1 or not (exc.status == 422 or retry_also(exc)):
                    raise
                on_retry(exc)
                gevent.sleep(first_pause_s * 2 ** attempt)

    def destroy_bridge(self, bridge_id: str) -> None:
        self.request("DELETE", f"/bridges/{quote(bridge_id)}")

    def events_url(self, apps: str, api_key: str) -> str:
        """ws(s)://HOST/ari/events?app=...&api_key=... for the events WebSocket."""
        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"app": apps, "api_key": api_key, "subscribeAll": "false"})
        return urlunsplit((scheme, parts.netloc, parts.path + "/events", query, ""))


class AriEvents:
    """Keeps the events WebSocket of an application connected, forever, until stop().

    on_event(event) for each event, on_connected() after each (re)connection (so the owner can
    reconcile its calls with what Asterisk still has), on_disconnected(reason) when it drops.
    """

    def __init__(self, url: str, *, on_event: Callable[[dict], None],
                 on_connected: Callable[[], None], on_disconnected: Callable[[str], None],
                 initial_backoff: float = 0.25, max_backoff: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        self.url = url
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        self._greenlet: Optional[gevent.Greenlet] = None
        self._socket: Optional[JsonWebSocket] = None
        self._stopping = False
        self.connected = False
        self.connections = 0
        self.bad_messages = 0

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopping = True
        if self._socket is not None:
            self._socket.close()
        if self._greenlet is not None:
            self._greenlet.kill()
        self.connected = False

    def drop(self) -> None:
        """Close the current connection (it will reconnect): for tests and operators."""
        if self._socket is not None:
            self._socket.close(1001, "dropped")

    def _run(self) -> None:
        backoff = self._initial_backoff
        while not self._stopping:
            done = gevent.event.Event()
            reason_box: list[str] = []

            def closed(code: int, reason: str, done=done, reason_box=reason_box) -> None:
                reason_box.append(f"{code} {reason}")
                done.set()

            sock = JsonWebSocket(self.url, on_message=self._message, on_closed=closed,
                                 on_bad_message=self._bad_message,
                                 connect_timeout=self._connect_timeout, name="ari-events")
            try:
                sock.connect()
            except Exception as exc:
                log.warning("ARI events: cannot connect (%s); retrying in %.1f s", exc, backoff)
                gevent.sleep(backoff * (0.8 + 0.4 * random.random()))
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._socket = sock
            self.connected = True
            self.connections += 1
            backoff = self._initial_backoff
            log.info("ARI events connected (%s)",
                     "reconnected" if self.connections > 1 else "first")
            try:
                self._on_connected()
            except Exception:
                log.exception("ARI events: on_connected failed")
            done.wait()
            self.connected = False
            self._socket = None
            if self._stopping:
                return
            log.warning("ARI events disconnected: %s", reason_box[0] if reason_box else "?")
            try:
                self._on_disconnected(reason_box[0] if reason_box else "")
            except Exception:
                log.exception("ARI events: on_disconnected failed")
            gevent.sleep(backoff)

    def _message(self, message: Any) -> None:
        """One event to the owner; an event the owner cannot handle is logged and counted,
        never fatal to the socket (the events after it still come)."""
        if not (isinstance(message, dict) and isinstance(message.get("type"), str)):
            self._bad_message(str(message)[:200], ValueError("not an ARI event object"))
            return
        try:
            self._on_event(message)
        except Exception as exc:
            self._bad_message(str(message)[:200], exc)

    def _bad_message(self, text: str, error: Exception) -> None:
        self.bad_messages += 1
        if self.bad_messages <= 3 or self.bad_messages % 1000 == 0:
            log.warning("ARI events: ignoring malformed message #%d (%s): %.80s",
                        self.bad_messages, error, text)

