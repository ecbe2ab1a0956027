"""Redaction: the one implementation that keeps secrets out of everything relay writes or sends.

Owns: `Redactor`, which replaces by "***" each configured secret (in its raw and its
JSON-escaped forms) and anything shaped like an OpenAI API key (`sk-...`) or a bearer token's
value, in text, bytes and JSON-able values; the process-wide redactor (`PROCESS`) that every log
record and every transcript entry goes through (`register()` adds a worker's secrets to it);
`secrets_of(settings)`, the secrets a configuration holds; and `RedactingFilter`, the
logging.Filter that `install_log_redaction()` puts on the root logger's handlers (message,
arguments, exception text and stack).

The dashboard's server and event socket (relay/web) use the same class as their last line of
defence. Secrets shorter than MIN_LENGTH are not scrubbed (replacing a one-letter password
everywhere would wreck every text); relay still never writes them on purpose. No I/O here.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

import ujson

MIN_LENGTH = 4
MASK = "***"
# An OpenAI key: sk-, sk-proj-, sk-svcacct-... then a long run of key characters.
OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")
# The value after "Bearer " (an Authorization header quoted in an error or a URL dump).
BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


class Redactor:
    """scrub(text) -> text without any of the secrets, nor anything shaped like a key."""

    def __init__(self, secrets: Iterable[str] = (), patterns: bool = True) -> None:
        self._secrets: set[str] = set()
        self._forms: list[str] = []
        self._bytes: list[tuple[bytes, bytes]] = []
        self._patterns = patterns
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Scrub these secrets too (empty and short ones are ignored)."""
        new = {str(s) for s in secrets if s and len(str(s)) >= MIN_LENGTH} - self._secrets
        if not new:
            return
        self._secrets |= new
        forms: set[str] = set()
        for secret in self._secrets:
            forms.add(secret)
            forms.add(ujson.dumps(secret, ensure_ascii=False, escape_forward_slashes=False)[1:-1])
            forms.add(ujson.dumps(secret)[1:-1])
        # longest first, so a secret containing another is replaced whole
        self._forms = sorted(forms, key=len, reverse=True)
        self._bytes = [(f.encode("utf-8"), MASK.encode()) for f in self._forms]

    def __len__(self) -> int:
        return len(self._secrets)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        if self._patterns:
            if "sk-" in text:
                text = OPENAI_KEY.sub(MASK, text)
            if "earer" in text:
                text = BEARER.sub(lambda m: m.group(1) + MASK, text)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for form, mask in self._bytes:
            if form in data:
                data = data.replace(form, mask)
        if self._patterns and (b"sk-" in data or b"earer" in data):
            text = data.decode("utf-8", "surrogateescape")
            scrubbed = self.scrub(text)
            if scrubbed != text:
                data = scrubbed.encode("utf-8", "surrogateescape")
        return data

    def scrub_value(self, value: Any) -> Any:
        """A JSON-able value (dicts, lists, strings...) with every string scrubbed; keys too."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_value(v)
                    for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub_value(v) for v in value)
        return value


# Every log record and transcript entry of this process goes through this one.
PROCESS = Redactor()


def register(secrets: Iterable[str]) -> None:
    """Add secrets to the process-wide redactor (each worker registers its settings')."""
    PROCESS.add(secrets)


def secrets_of(settings: Any) -> list[str]:
    """The secrets a configuration holds: relay.config.SECRETS (API keys, ARI password,
    dashboard token, STT keys) and the header values of the agents' webhook tools (taken from
    the environment)."""
    from relay.config import SECRETS

    found = [str(settings.get(dotted)) for dotted in SECRETS]
    found += _url_password(str(settings.get("history.database_url")))
    for agent in getattr(settings, "agents", {}).values():
        for spec in getattr(agent, "tool_specs", ()):
            webhook = getattr(spec, "webhook", None)
            for value in (getattr(webhook, "headers", None) or {}).values():
                found.append(str(value))
                if " " in str(value):       # "Bearer TOKEN": the token alone too
                    found.append(str(value).split(" ", 1)[1])
    return found


def _url_password(url: str) -> list[str]:
    """The password of a database URL (postgresql://user:PASSWORD@host/db), alone: a driver's
    error may quote it without the rest of the URL."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [unquote(password)] if password else []


class RedactingFilter(logging.Filter):
    """Scrubs a log record in place: the formatted message (its arguments included), the
    exception text and the stack. Put on handlers, it covers records of every logger."""

    def __init__(self, redactor: Redactor = PROCESS) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self.redactor.scrub
        try:
            message = record.getMessage()
        except Exception:       # a bad format string: the handler reports it as usual
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None,
                          redactor: Redactor = PROCESS) -> int:
    """Put a RedactingFilter on every handler of `logger` (default: the root logger) that has
    none yet; returns how many handlers it now covers."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) and f.redactor is redactor
                   for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))
    return len(logger.handlers)
