"""Small synchronous helpers for tests that drive the simulated PBX (or a real Asterisk).

`AriClient`: ARI over requests, recording every exchange and handing it to an optional
`check(method, path, status, body)` (e.g. a Swagger validator). `EventStream`: an events
WebSocket (websocket-client) read by a background greenlet into a list, with bounded waits for
the event you expect. Both need gevent monkey patching (tests/conftest.py does it).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import requests
import websocket
from gevent.event import Event

Check = Callable[[str, str, int, Any], None]


class AriClient:
    def __init__(self, base_url: str, user: str, password: str,
                 check: Check | None = None, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.check = check
        self.timeout = timeout
        self.exchanges: list[tuple[str, str, int, Any]] = []

    def request(self, method: str, path: str, json_body: Any = None, **params: Any
                ) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        params = {k: v for k, v in params.items() if v is not None}
        r = self.session.request(method, self.base_url + path, params=params, json=json_body,
                                 timeout=self.timeout)
        body = r.json() if r.content else None
        self.exchanges.append((method, path, r.status_code, body))
        if self.check is not None:
            self.check(method, path.split("?", 1)[0], r.status_code, body)
        return r.status_code, body

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.request("GET", path, **params)

    def post(self, path: str, json_body: Any = None, **params: Any) -> tuple[int, Any]:
        return self.request("POST", path, json_body, **params)

    def delete(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.request("DELETE", path, **params)

    def close(self) -> None:
        self.session.close()


class EventStream:
    """Every event of one events WebSocket, as a growing list."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.ws.settimeout(None)
        self.events: list[dict] = []
        self.closed = False
        self._new = Event()
        self._cursor = 0
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                if not text:
                    break
                self.events.append(json.loads(text))
                self._new.set()
        except (websocket.WebSocketException, OSError, ValueError):
            pass            # closed, or broken: either way the stream ends here
        self.closed = True
        self._new.set()

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 5.0,
                 since: int | None = None) -> dict:
        """The first event (from index `since`, default: after the last one returned) that
        matches; AssertionError after `timeout` seconds."""
        start = self._cursor if since is None else since
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                event = self.events[i]
                i += 1
                if predicate(event):
                    self._cursor = i
                    return event
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                seen = [e.get("type") for e in self.events[start:]]
                raise AssertionError(f"expected event not received in {timeout}s "
                                     f"(closed={self.closed}); got {seen}")
            self._new.clear()
            self._new.wait(min(left, 0.5))

    def wait_type(self, type_: str, timeout: float = 5.0, **match: Any) -> dict:
        """The next event of `type_` whose channel/bridge/playback/recording id or other
        top-level fields equal `match` (channel="id" matches event["channel"]["id"])."""
        def pred(e: dict) -> bool:
            if e.get("type") != type_:
                return False
            for key, want in match.items():
                got = e.get(key)
                if isinstance(got, dict):
                    got = got.get("id", got.get("name"))
                if got != want:
                    return False
            return True
        return self.wait_for(pred, timeout)

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close()
        self._reader.join(timeout=2)
        self._reader.kill(block=False)
