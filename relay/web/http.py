"""HTTP plumbing of the dashboard: the request as the handlers see it, and the responses.

Owns: reading a WSGI request (method, path, query, headers, a JSON body bounded by
max_body_bytes: 413 past it), `HttpError` (a status and a message, answered as JSON), and the
`Response` value with the security headers every answer carries (its body in memory, or
`stream`: an iterable of byte chunks sent as they come, with `close()` called when the answer is
over or not sent, e.g. to HEAD). No routing, no calls here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional
from urllib.parse import parse_qsl

import ujson

REASONS = {
    200: "OK", 202: "Accepted", 206: "Partial Content", 303: "See Other", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    426: "Upgrade Required", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class HttpError(Exception):
    """An answer other than success: status, a message for the JSON body, extra headers."""

    def __init__(self, status: int, message: str,
                 headers: Optional[list[tuple[str, str]]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Optional[Iterable[bytes]] = None     # instead of body: sent chunk by chunk
    stream_length: Optional[int] = None          # its length when known (else chunked)

    @property
    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, 'Unknown')}"

    def all_headers(self) -> list[tuple[str, str]]:
        headers = [("Content-Type", self.content_type)]
        length = len(self.body) if self.stream is None else self.stream_length
        if length is not None:
            headers.append(("Content-Length", str(length)))
        headers += SECURITY_HEADERS
        if self.content_type.startswith("text/html"):
            headers.append(("Content-Security-Policy", PAGE_POLICY))
        if not any(name.lower() == "cache-control" for name, _ in self.headers):
            headers.append(("Cache-Control", "no-store"))
        return headers + self.headers


    def close_stream(self) -> None:
        """Release what the stream holds (a file, a cursor); safe to call more than once."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()


def dumps(data: Any) -> str:
    return ujson.dumps(data, ensure_ascii=False, escape_forward_slashes=False)


def json_response(data: Any, status: int = 200,
                  headers: Optional[list[tuple[str, str]]] = None) -> Response:
    return Response(status, dumps(data).encode("utf-8"), "application/json", headers or [])


def error_response(error: HttpError) -> Response:
    return json_response({"error": error.message, "status": error.status}, error.status,
                         error.headers)


class Request:
    """One request: method, path, query, headers, and its body read once, bounded."""

    def __init__(self, environ: dict, max_body_bytes: int) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "/") or "/"
        self.query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        self.max_body_bytes = max_body_bytes
        self._body: Optional[bytes] = None

    def header(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return str(self.environ.get(key, "") or "")
        return str(self.environ.get("HTTP_" + key, "") or "")

    @property
    def is_websocket(self) -> bool:
        return self.environ.get("wsgi.websocket") is not None

    def body(self) -> bytes:
        """The body (413 when larger than max_body_bytes, 400 with a bad Content-Length)."""
        if self._body is not None:
            return self._body
        limit = self.max_body_bytes
        length_text = self.header("Content-Length").strip()
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise HttpError(400, "Content-Length is not a number") from None
            if length < 0:
                raise HttpError(400, "Content-Length is negative")
            if length > limit:
                raise HttpError(413, f"the body is larger than {limit} bytes",
                                [("Connection", "close")])
            data = self.environ["wsgi.input"].read(length) if length else b""
        else:       # chunked, or no body at all
            data = self.environ["wsgi.input"].read(limit + 1)
            if len(data) > limit:
                raise HttpError(413, f"the body is larger than {limit} bytes",
                                [("Connection", "close")])
        self._body = data
        return data

    def json_object(self, empty_ok: bool = False) -> dict:
        """The body as a JSON object (400 otherwise; {} for an empty body when empty_ok)."""
        data = self.body()
        if not data.strip():
            if empty_ok:
                return {}
            raise HttpError(400, "the body must be a JSON object")
        content_type = self.header("Content-Type").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, "the body must be sent as Content-Type: application/json")
        try:
            value = ujson.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "the body must be a JSON object")
        return value


def allow(request: "Request", *methods: str) -> None:
    """405 with an Allow header unless the request's method is one of `methods`."""
    if request.method not in methods:
        raise HttpError(405, f"{request.method} is not allowed on {request.path}; use "
                        f"{' or '.join(methods)}", [("Allow", ", ".join(methods))])
