"""The worker's fallback transcriber: one provider, one pooled HTTP session, bounded concurrency.

Owns, for one worker: the `requests` session (a connection pool sized for `max_concurrent`),
the provider chosen by the `stt` settings with its credentials (never logged), the limit on
requests in flight and waiting, the counters (per provider: ok; failed: an error, a timeout, or
given up in flight when a call ended; skipped: not sent, too many waiting or given up while
waiting for a slot) and a worker-wide rate limit on the warnings failures log. `transcribe`
blocks only the greenlet that calls it (a call's own, see CallFallback); it never runs on the
packet path.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import gevent
import gevent.lock
import requests

from relay.http import pooled_session
from relay.stt.providers import PROVIDERS, ProviderConfig, SttError, redact

log = logging.getLogger(__name__)

WARNINGS_PER_MINUTE = 10


class SttBusy(SttError):
    """Too many transcriptions waiting: this one was not sent."""


class FallbackTranscriber:
    """Sends caller turns to the configured provider (see the module docstring)."""

    def __init__(self, stt: dict, openai_api_key: str = "", openai_auth: str = "bearer",
                 http: Optional[requests.Session] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        name = stt["asyncSttProvider"]
        if name not in PROVIDERS:
            raise ValueError(f"unknown fallback transcription provider {name!r}")
        self.provider = PROVIDERS[name]
        if name == "openai":
            # Its own key (stt.api_key) is an OpenAI key: Bearer. Without one it uses the
            # Realtime key, sent as the Realtime endpoint wants it (openai.auth: Azure's api-key).
            own = bool(stt["api_key"])
            config = ProviderConfig(base_url=stt["openai_base_url"], model=stt["model"],
                                    language=stt["language"], prompt=stt["prompt"],
                                    api_key=stt["api_key"] or openai_api_key,
                                    auth="bearer" if own else openai_auth)
        else:
            config = ProviderConfig(base_url=stt["google_base_url"], model=stt["model"],
                                    language=stt["language"], api_key=stt["google_api_key"],
                                    bearer_token=stt["google_bearer_token"],
                                    key_in=stt["google_key_in"])
        self.config = config
        self.timeout_s = float(stt["timeout_s"])
        self.fallback_after_s = float(stt["fallback_after_s"])
        self.end_of_call_wait_s = float(stt["end_of_call_wait_s"])
        self.max_turn_s = float(stt["max_turn_s"])
        self.max_pending_turns = int(stt["max_pending_turns"])
        self.max_concurrent = int(stt["max_concurrent"])
        self.max_waiting = 4 * self.max_concurrent
        self._own_http = http is None
        if http is None:
            http = pooled_session(self.max_concurrent, hosts=2)
        self.http = http
        self._slots = gevent.lock.BoundedSemaphore(self.max_concurrent)
        self.in_flight = 0
        self.waiting = 0
        self.counters: dict[str, dict[str, int]] = {
            name: {"ok": 0, "failed": 0, "skipped": 0}}
        self._clock = clock
        self._warn_window = 0.0
        self._warnings = 0
        self.suppressed_warnings = 0

    @property
    def name(self) -> str:
        return self.provider.name

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def transcribe(self, audio: bytes, line_format: str) -> str:
        """The text of a turn (line codec audio). SttError (with the provider's message, never a
        credential) when it fails; SttBusy when too many are waiting. Blocks this greenlet for at
        most about timeout_s once a slot is free."""
        counts = self.counters[self.name]
        if self.waiting >= self.max_waiting:
            counts["skipped"] += 1
            raise SttBusy(f"{self.waiting} transcriptions already waiting")
        self.waiting += 1
        try:
            self._slots.acquire()
        except BaseException:           # given up while waiting (the call ended): not sent
            counts["skipped"] += 1
            raise
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            text = self._send(audio, line_format)
        except BaseException:           # an error, a timeout, or given up (the call ended)
            counts["failed"] += 1
            raise
        finally:
            self.in_flight -= 1
            self._slots.release()
        counts["ok"] += 1
        return text

    def _send(self, audio: bytes, line_format: str) -> str:
        secrets = self.config.secrets()
        late = SttError(f"no answer within {self.timeout_s:g} s")
        try:
            # requests' timeout bounds the connect and each read; this bounds the whole.
            with gevent.Timeout(2 * self.timeout_s + 1, late):
                request = self.provider.build(audio, line_format, self.config)
                # proxies and CA bundle from the environment, as requests.request() does
                options = self.http.merge_environment_settings(request.url, {}, None, None,
                                                               None)
                response = self.http.send(request, timeout=self.timeout_s,
                                          allow_redirects=False, **options)
                try:
                    body = response.content
                finally:
                    response.close()
        except SttError:
            raise
        except requests.Timeout:
            raise late from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise SttError(redact(f"{type(exc).__name__}: {exc}", secrets)[:300]) from None
        try:
            return self.provider.parse(response.status_code, body)
        except SttError as exc:
            exc.message = redact(exc.message, secrets)
            raise

    def should_log(self) -> bool:
        """Worker-wide rate limit of failure warnings (WARNINGS_PER_MINUTE)."""
        now = self._clock()
        if now - self._warn_window >= 60.0:
            self._warn_window, self._warnings = now, 0
        self._warnings += 1
        if self._warnings > WARNINGS_PER_MINUTE:
            self.suppressed_warnings += 1
            return False
        return True

    def describe(self) -> dict[str, Any]:
        """For logs and the dashboard: no credentials."""
        return {"provider": self.name, "base_url": self.config.base_url,
                "model": self.config.model, "timeout_s": self.timeout_s,
                "max_concurrent": self.max_concurrent, "in_flight": self.in_flight,
                "waiting": self.waiting}
