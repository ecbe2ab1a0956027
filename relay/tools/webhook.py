"""HTTP webhook tools: one pooled requests session per worker.

Owns: the worker's connection pool to tool webhooks and one request per tool call:
`{"arguments": {...}, "context": {"call_id", "caller_number", "agent"}}` (an outbound call's
context adds "direction": "outbound" and its "variables") as JSON with the
tool's headers (values from the environment), a timeout, no retries, no redirects followed, a
bounded response body. The body (JSON or text) is the tool's output; an HTTP error status, a
timeout or a connection failure becomes a ToolError the model hears about. Needs gevent's
monkey patching (relay's entry points do it) so a slow webhook blocks only its own greenlet.
"""

from __future__ import annotations

import requests
import ujson

from relay.http import pooled_session
from relay.tools.errors import CONNECTION_ERROR, HTTP_ERROR, TIMEOUT, ToolError
from relay.tools.spec import WebhookSpec

MAX_BODY = 64 * 1024        # bytes of a response body read at most
EXCERPT = 200               # characters of an error body given to the model
USER_AGENT = "relay-tools/1"


class WebhookClient:
    """Calls webhook tools through one pooled session (thread/greenlet safe for requests)."""

    def __init__(self, pool_size: int = 64, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self._session = pooled_session(pool_size, hosts=16)
        self._session.headers["User-Agent"] = USER_AGENT
        self.requests_made = 0
        self.errors = 0

    def close(self) -> None:
        self._session.close()

    def call(self, hook: WebhookSpec, arguments: dict, context: dict, timeout: float) -> str:
        """The webhook's answer as text (ToolError on any failure)."""
        body = ujson.dumps({"arguments": arguments, "context": context}, ensure_ascii=False)
        headers = {"Content-Type": "application/json",
                   "Accept": "application/json, text/plain;q=0.9, */*;q=0.5", **hook.headers}
        self.requests_made += 1
        try:
            response = self._session.request(
                hook.method, hook.url, data=body.encode("utf-8"), headers=headers,
                timeout=(timeout, timeout), stream=True, allow_redirects=False)
        except requests.Timeout:
            self.errors += 1
            raise ToolError(TIMEOUT, f"the webhook did not answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            self.errors += 1
            raise ToolError(CONNECTION_ERROR, f"cannot reach the webhook: {_reason(exc)}") from None
        try:
            text = self._read(response)
        except requests.RequestException as exc:
            self.errors += 1
            raise ToolError(CONNECTION_ERROR, f"the webhook's answer broke off: {_reason(exc)}"
                            ) from None
        finally:
            response.close()
        if response.status_code >= 300:
            self.errors += 1
            excerpt = text.strip()[:EXCERPT]
            raise ToolError(HTTP_ERROR, f"the webhook answered HTTP {response.status_code} "
                            f"{response.reason or ''}".strip(),
                            status=response.status_code, body=excerpt)
        text = text.strip()
        return text if text else ujson.dumps({"ok": True, "status": response.status_code})

    def _read(self, response: requests.Response) -> str:
        data = bytearray()
        for chunk in response.iter_content(chunk_size=8192):
            data += chunk
            if len(data) > self.max_body:
                del data[self.max_body:]
                break
        try:
            return data.decode(_charset(response.headers.get("Content-Type", "")), "replace")
        except LookupError:
            return data.decode("utf-8", "replace")


def _charset(content_type: str) -> str:
    """The charset a Content-Type names; UTF-8 when it names none (JSON's encoding)."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"


def _reason(exc: Exception) -> str:
    """The innermost useful message of a requests/urllib3 error (e.g. Connection refused)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "No route to host", "Connection reset"):
        if marker in text:
            return marker
    return f"{type(exc).__name__}: {text[:160]}"
