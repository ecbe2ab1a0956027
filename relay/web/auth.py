"""Access to the dashboard: the token, how a request proves it knows it, and same-origin checks.

Owns: deciding whether a request is authorised. With no token configured (only allowed when the
server listens on loopback) everything is open. With a token, a request is authorised by
`Authorization: Bearer <token>` (API clients, scrapers) or by the session cookie the login form
or `/?token=<token>` sets (browsers). The cookie holds an HMAC derived from the token, never the
token itself, and is HttpOnly and SameSite=Strict; state-changing requests and WebSocket
upgrades whose Origin names another host are refused (cross-site request forgery). Comparisons
are constant-time. No I/O; never logs a token.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from relay.web.http import Request

COOKIE = "relay_session"


class Auth:
    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")
        self.required = bool(token)
        self._session = (hmac.new(self._token, b"relay dashboard session", hashlib.sha256)
                         .hexdigest() if token else "")

    def token_matches(self, candidate: str) -> bool:
        return self.required and hmac.compare_digest(candidate.encode("utf-8"), self._token)

    def authorised(self, request: Request) -> bool:
        if not self.required:
            return True
        scheme, _, value = request.header("Authorization").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        cookie = self._cookie(request)
        return bool(cookie) and hmac.compare_digest(cookie, self._session)

    @staticmethod
    def _cookie(request: Request) -> str:
        raw = request.header("Cookie")
        if not raw:
            return ""
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return ""
        morsel = jar.get(COOKIE)
        return morsel.value if morsel is not None else ""

    def session_cookie(self) -> str:
        """The Set-Cookie value that logs a browser in."""
        return f"{COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict"

    @staticmethod
    def same_origin(request: Request) -> bool:
        """False when the request names an Origin other than the host it was sent to."""
        origin = request.header("Origin")
        if not origin:
            return True
        if origin == "null":
            return False
        return urlsplit(origin).netloc.lower() == request.header("Host").lower()
