"""One call's conversation with the OpenAI Realtime model, across socket replacements.

Owns: the call's Realtime WebSocket (through JsonWebSocket), the effective session config, the
response-in-flight bookkeeping (one response at a time: a response.create asked for while one
is active is sent after its response.done), decoding server events into calls on a handler,
and replacing a dropped or expired socket: a new socket, the same session.update, the
conversation so far re-injected as text. It does not know about RTP, ARI or tools.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import deque
from typing import Any, Callable, Optional, Protocol
from urllib.parse import urlencode

import gevent

from relay import realtime_events as ev
from relay.wsclient import JsonWebSocket

log = logging.getLogger(__name__)

FATAL_CLOSE_CODES = {3000: "invalid API key", 4000: "beta protocol refused"}
FATAL_ERROR_CODES = {"invalid_api_key", "beta_api_shape_disabled", "model_not_found",
                     "insufficient_quota"}
HISTORY_TURNS = 40


class RealtimeHandler(Protocol):
    """What a call hears from its model session (all called in the session's greenlets)."""

    def rt_ready(self, first: bool) -> None: ...
    def rt_speech_started(self, item_id: str, audio_start_ms: int) -> None: ...
    def rt_speech_stopped(self, item_id: str, audio_end_ms: int) -> None: ...
    def rt_committed(self, item_id: str) -> None: ...
    def rt_user_transcript(self, item_id: str, text: str) -> None: ...
    def rt_transcription_failed(self, item_id: str, message: str) -> None: ...
    def rt_audio(self, response_id: str, item_id: str, audio: bytes) -> None: ...
    def rt_audio_done(self, item_id: str) -> None: ...
    def rt_assistant_transcript(self, item_id: str, text: str) -> None: ...
    def rt_function_call(self, response_id: str, call_id: str, name: str,
                         arguments: str) -> None: ...
    def rt_response_done(self, response: dict) -> None: ...
    def rt_error(self, code: str, message: str) -> None: ...
    def rt_failed(self, reason: str) -> None: ...


class RealtimeSession:
    """The model side of one call. start() blocks until the first socket is open."""

    def __init__(self, *, url: str, model: str, api_key: str, session: dict,
                 handler: RealtimeHandler, connect_timeout: float = 10.0,
                 max_reconnects: int = 3, name: str = "call",
                 on_append_sent: Optional[Callable[[float], None]] = None) -> None:
        self.url = f"{url}?{urlencode({'model': model})}"
        self._api_key = api_key
        self.session = session
        self._handler = handler
        self._connect_timeout = connect_timeout
        self._max_reconnects = max_reconnects
        self.name = name
        self._on_append_sent = on_append_sent     # seconds from caller RTP to append sent
        self._socket: Optional[JsonWebSocket] = None
        self._closing = False
        self._reconnecting = False
        self._awaiting_ready = False
        self.response_id: Optional[str] = None      # the response in flight
        self._create_sent = False                   # response.create sent, not yet created
        self._wanted: Optional[dict] = None          # a response.create waiting for response.done
        self.history: deque[tuple[str, str]] = deque(maxlen=HISTORY_TURNS)
        self.model_has_spoken = False
        self.connections = 0
        self.reconnects = 0
        self.errors: dict[str, int] = {}
        self.bad_events = 0
        self.last_event_at = 0.0

    # lifecycle
    def start(self) -> None:
        self._connect(first=True)

    def close(self) -> None:
        self._closing = True
        if self._socket is not None:
            self._socket.close(1000, "call ended")
            self._socket = None

    @property
    def connected(self) -> bool:
        return self._socket is not None and self._socket.connected

    def _connect(self, first: bool) -> None:
        sock = JsonWebSocket(
            self.url, headers=[f"Authorization: Bearer {self._api_key}"],
            on_message=self._on_event, on_closed=self._on_closed,
            on_bad_message=self._on_bad_message, on_sent=self._on_append_sent,
            connect_timeout=self._connect_timeout,
            name=f"realtime:{self.name}")
        sock.connect()
        if self._closing:           # the call ended while this socket was being opened
            sock.close(1000, "call ended")
            return
        self._socket = sock
        self.connections += 1
        self.response_id, self._create_sent = None, False
        self._awaiting_ready = True
        sock.send(ev.session_update(self.session))
        if not first:
            for role, text in self.history:
                sock.send(ev.user_text(text) if role == "user" else ev.assistant_text(text))

    # sending
    def send(self, event: dict) -> bool:
        return self._socket is not None and self._socket.send(event)

    def append_audio(self, audio: bytes, stamp: Optional[float] = None) -> bool:
        """input_audio_buffer.append; stamp: when its oldest caller packet arrived."""
        return self._socket is not None and self._socket.send(
            ev.input_audio_append_json(audio), stamp)

    def update_session(self, changes: dict) -> bool:
        """Send a partial session.update; remembered for any later socket."""
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(self.session.get(key), dict):
                _deep_merge(self.session[key], value)
            else:
                self.session[key] = value
        return self.send(ev.session_update(changes))

    def request_response(self, instructions: Optional[str] = None) -> None:
        """response.create now, or right after the response in flight is done."""
        event = ev.response_create(instructions)
        if self.response_id is not None or self._create_sent:
            self._wanted = event
            return
        self._create_sent = self.send(event)

    def cancel_response(self) -> None:
        if self.response_id is not None:
            self.send(ev.response_cancel(self.response_id))

    def add_user_text(self, text: str, respond: bool = True) -> None:
        self.send(ev.user_text(text))
        self.history.append(("user", text))
        if respond:
            self.request_response()

    # receiving
    def _on_bad_message(self, text: str, error: Exception) -> None:
        self.bad_events += 1
        if self.bad_events <= 3:
            log.warning("%s: model sent a malformed event (%s): %.80s", self.name, error, text)

    def _on_event(self, event: Any) -> None:
        self.last_event_at = time.monotonic()
        if not isinstance(event, dict):
            self._on_bad_message(str(event), ValueError("not an object"))
            return
        kind = event.get("type")
        handler = _DISPATCH.get(kind)   # type: ignore[arg-type]
        if handler is None:
            return
        try:
            handler(self, event)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            self._on_bad_message(str(event)[:200], exc)

    def _session_updated(self, event: dict) -> None:
        if not self._awaiting_ready:
            return      # the answer to a later update (an operator's change)
        self._awaiting_ready = False
        first = self.connections == 1 and not self._reconnecting
        self._reconnecting = False
        self._handler.rt_ready(first)

    def _speech_started(self, event: dict) -> None:
        self._handler.rt_speech_started(event.get("item_id", ""),
                                        int(event.get("audio_start_ms", 0)))

    def _speech_stopped(self, event: dict) -> None:
        self._handler.rt_speech_stopped(event.get("item_id", ""), int(event.get("audio_end_ms", 0)))

    def _committed(self, event: dict) -> None:
        self._handler.rt_committed(event.get("item_id", ""))

    def _transcription_completed(self, event: dict) -> None:
        text = event.get("transcript") or ""
        if text:
            self.history.append(("user", text))
        self._handler.rt_user_transcript(event["item_id"], text)

    def _transcription_failed(self, event: dict) -> None:
        error = event.get("error") or {}
        self._handler.rt_transcription_failed(event["item_id"], str(error.get("message", "")))

    def _response_created(self, event: dict) -> None:
        self.response_id = event["response"]["id"]
        self._create_sent = False

    def _audio_delta(self, event: dict) -> None:
        self.model_has_spoken = True
        self._handler.rt_audio(event.get("response_id", ""), event["item_id"],
                               base64.b64decode(event["delta"]))

    def _audio_done(self, event: dict) -> None:
        self._handler.rt_audio_done(event["item_id"])

    def _transcript_done(self, event: dict) -> None:
        text = event.get("transcript") or ""
        if text:
            self.history.append(("assistant", text))
        self._handler.rt_assistant_transcript(event["item_id"], text)

    def _function_call(self, event: dict) -> None:
        self._handler.rt_function_call(event.get("response_id", ""), event["call_id"],
                                       event.get("name", ""), event.get("arguments", ""))

    def _response_done(self, event: dict) -> None:
        response = event.get("response") or {}
        self.response_id = None
        self._create_sent = False
        self._handler.rt_response_done(response)
        if self._wanted is not None:
            wanted, self._wanted = self._wanted, None
            # Asked for while that response ran: one new response answers all of it, so a
            # create the handler just sent (tool outputs) makes this one unnecessary.
            if not self._create_sent:
                self._create_sent = self.send(wanted)

    def _error(self, event: dict) -> None:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "unknown")
        message = str(error.get("message", ""))
        self.errors[code] = self.errors.get(code, 0) + 1
        if code == "conversation_already_has_active_response":
            # Our response.create raced a response the server started itself: retry after it.
            self._create_sent = False
            if self._wanted is None:
                self._wanted = ev.response_create()
            return
        if code == "response_cancel_not_active":
            return
        if code in FATAL_ERROR_CODES:
            self._fail(f"model error {code}: {message}")
            return
        if code != "session_expired":
            log.warning("%s: model error %s: %s", self.name, code, message)
        self._handler.rt_error(code, message)

    # the socket ended
    def _on_closed(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._socket = None
        if code in FATAL_CLOSE_CODES:
            self._fail(f"model closed the session: {code} {FATAL_CLOSE_CODES[code]} ({reason})")
            return
        gevent.spawn(self._reconnect, code, reason)

    def _reconnect(self, code: int, reason: str) -> None:
        self._reconnecting = True
        for attempt in range(1, self._max_reconnects + 1):
            if self._closing:
                return
            try:
                self._connect(first=False)
            except Exception as exc:
                log.warning("%s: Realtime reconnect %d/%d failed: %s", self.name, attempt,
                            self._max_reconnects, exc)
                gevent.sleep(min(0.2 * 2 ** attempt, 3.0))
                continue
            self.reconnects += 1
            log.info("%s: Realtime socket replaced after %s %s (attempt %d)", self.name, code,
                     reason, attempt)
            return
        self._fail(f"Realtime socket lost ({code} {reason}) and {self._max_reconnects} "
                   f"reconnects failed")

    def _fail(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        if self._socket is not None:
            self._socket.close(1000, "giving up")
            self._socket = None
        self._handler.rt_failed(reason)


def _deep_merge(base: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


_DISPATCH = {
    "session.updated": RealtimeSession._session_updated,
    "input_audio_buffer.speech_started": RealtimeSession._speech_started,
    "input_audio_buffer.speech_stopped": RealtimeSession._speech_stopped,
    "input_audio_buffer.committed": RealtimeSession._committed,
    "conversation.item.input_audio_transcription.completed":
        RealtimeSession._transcription_completed,
    "conversation.item.input_audio_transcription.failed": RealtimeSession._transcription_failed,
    "response.created": RealtimeSession._response_created,
    "response.output_audio.delta": RealtimeSession._audio_delta,
    "response.output_audio.done": RealtimeSession._audio_done,
    "response.output_audio_transcript.done": RealtimeSession._transcript_done,
    "response.function_call_arguments.done": RealtimeSession._function_call,
    "response.done": RealtimeSession._response_done,
    "error": RealtimeSession._error,
}
