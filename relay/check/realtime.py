"""The Realtime endpoint: reachable, and the key accepted (a session opened, then closed)."""

from __future__ import annotations

import gevent.event

from relay.check import FAIL, OK, Check
from relay.config import Settings
from relay.realtime_endpoint import auth_headers, realtime_url
from relay.wsclient import JsonWebSocket

GROUP = "model (Realtime)"


def check(settings: Settings) -> list[Check]:
    openai = settings.tree["openai"]
    if not openai["api_key"]:
        return [Check(GROUP, "session", FAIL, "no key to try (openai.api_key is empty)",
                      "set OPENAI_API_KEY")]
    url = realtime_url(openai["realtime_url"], openai["model"])
    shown = url.split("?")[0] + f" (model {openai['model']!r}, auth {openai['auth']})"
    messages: list = []
    closed: list = []
    done = gevent.event.Event()

    def on_message(message) -> None:
        messages.append(message)
        if isinstance(message, dict) and message.get("type") in ("session.created", "error"):
            done.set()

    def on_closed(code: int, reason: str) -> None:
        closed.append((code, reason))
        done.set()

    sock = JsonWebSocket(url, headers=auth_headers(openai["auth"], openai["api_key"]),
                         on_message=on_message, on_closed=on_closed,
                         connect_timeout=openai["connect_timeout_s"], name="check-realtime")
    try:
        sock.connect()
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".replace(openai["api_key"], "***")
        fix = _fix_for(text, openai)
        return [Check(GROUP, "session", FAIL, f"{shown}: cannot open the socket: {text}", fix)]
    try:
        done.wait(openai["connect_timeout_s"])
    finally:
        sock.close(1000, "relay check done")
    for message in messages:
        if isinstance(message, dict) and message.get("type") == "session.created":
            model = (message.get("session") or {}).get("model", openai["model"])
            return [Check(GROUP, "session", OK, f"{shown}: session.created (model {model})")]
    errors = [m.get("error") or {} for m in messages
              if isinstance(m, dict) and m.get("type") == "error"]
    if errors:
        error = errors[0]
        text = f"{error.get('code') or error.get('type')}: {error.get('message')}"
        return [Check(GROUP, "session", FAIL, f"{shown}: refused: {text}",
                      _fix_for(text, openai))]
    if closed and closed[0][0] not in (1000,):
        code, reason = closed[0]
        return [Check(GROUP, "session", FAIL, f"{shown}: closed {code} {reason}",
                      _fix_for(reason, openai))]
    return [Check(GROUP, "session", FAIL, f"{shown}: no session.created within "
                  f"{openai['connect_timeout_s']:g} s", "is OPENAI_REALTIME_URL a Realtime "
                  "endpoint?")]


def _fix_for(text: str, openai: dict) -> str:
    lowered = text.lower()
    if "api_key" in lowered or "api key" in lowered or "401" in lowered or "403" in lowered \
            or "subscription key" in lowered:
        other = "api-key" if openai["auth"] == "bearer" else "bearer"
        return ("check OPENAI_API_KEY (openai.api_key); and the header form: openai.auth "
                f"(OPENAI_AUTH) is {openai['auth']!r}, Azure OpenAI takes 'api-key', OpenAI "
                f"'bearer' (try {other!r} if the message names the other header)")
    if "model" in lowered:
        return "check REALTIME_MODEL (openai.model; on Azure, the deployment name)"
    return ("check OPENAI_REALTIME_URL (openai.realtime_url), DNS and outbound HTTPS "
            "(a proxy?) from this machine")
