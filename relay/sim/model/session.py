"""One simulated Realtime session, sans-IO: client event text in, server events out.

Owns: the behaviour of a GA Realtime session over one WebSocket — session.created and
session.update, the input audio buffer under server VAD or manual commits, the user items and
their (scripted) input transcription, responses from the script (speech, function calls,
failures), interruption and truncation, the errors the real service gives, the session time
limit, and what tests inspect afterwards. Time is passed in: `now` (seconds, monotonic) for
pacing, delays and expiry; audio time (ms of audio received) for everything VAD-related.

Drive it with `open()`, `receive(text, now)` and `tick(now)` at `next_deadline()`. When
`close_request` is set, the I/O shell sends what was returned, then closes the socket with that
(code, reason). Nothing here touches a socket or the clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from typing import Any, Callable, Optional

from relay.sim.model import events as ev
from relay.sim.model import session_config as sc
from relay.sim.model.audio import AudioFormat, audio_format
from relay.sim.model.conversation import Conversation
from relay.sim.model.input_buffer import InputAudioBuffer
from relay.sim.model.recognition import recognise
from relay.sim.model.response import Pacing, Response
from relay.sim.model.script import Reply, Script
from relay.sim.model.vad import MIN_SPEECH_MS, STARTED, Vad
from relay.sim.model.validation import (
    EventError,
    decode_append,
    fast_append_audio,
    invalid_value,
    parse,
    validate,
)

DEFAULT_SESSION_LIMIT_S = 3600.0
RECORD_LIMIT = 1000
COMMIT_MIN_MS = 100


class RealtimeSession:
    """The state machine of one session (see the module docstring)."""

    def __init__(self, *, model: str = ev.DEFAULT_MODEL, script: Optional[Script] = None,
                 now: float = 0.0, wall_time: float = 0.0,
                 session_limit_s: float = DEFAULT_SESSION_LIMIT_S,
                 min_speech_ms: int = MIN_SPEECH_MS, record_limit: int = RECORD_LIMIT,
                 ids: Optional[ev.Ids] = None) -> None:
        self.ids = ids or ev.Ids()
        self.id = self.ids.session
        self.model = model
        self.script = script or Script()
        self.session_limit_s = session_limit_s
        self.opened_at = now
        self.expires_at = now + session_limit_s
        self.min_speech_ms = min_speech_ms
        self.config = sc.normalise(ev.default_session(self.id, model,
                                                      int(wall_time + session_limit_s)))
        self.conversation = Conversation()
        # --- what tests inspect
        self.client_events: deque = deque(maxlen=record_limit)  # every non-append event
        self.appends = 0
        self.audio_bytes_received = 0
        self.errors_sent: deque = deque(maxlen=record_limit)
        self.truncations: deque = deque(maxlen=record_limit)   # (item_id, audio_end_ms)
        self.responses: deque = deque(maxlen=record_limit)     # final response objects
        self.heard: dict[str, str] = {}                         # user audio item -> phrase
        self.sent_types: Counter = Counter()                    # filled by the I/O shell
        self.faults_fired: list[str] = []                       # filled by the I/O shell
        # --- state
        self.response: Optional[Response] = None
        self.audio_produced = False
        self.close_request: Optional[tuple[int, str]] = None
        self.closed = False
        self._pending_calls: dict[str, Optional[Reply]] = {}
        self._timers: list = []
        self._timer_seq = itertools.count()
        self._speech_item: Optional[str] = None
        self._speech_start_ms = 0
        self._out: list[dict] = []
        self._fmt: AudioFormat = audio_format(sc.input_format(self.config))
        self.buffer = InputAudioBuffer(self._fmt)
        self._td: Optional[dict] = None
        self.vad: Optional[Vad] = None
        self._configure_input(force=True)
        self._handlers: dict[str, Callable[[dict, float], None]] = {
            "session.update": self._session_update,
            "input_audio_buffer.commit": self._commit_buffer,
            "input_audio_buffer.clear": self._clear_buffer,
            "output_audio_buffer.clear": self._output_clear,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # ---- driving -------------------------------------------------------------------------------

    def open(self) -> list[dict]:
        """The events that greet a new connection."""
        self._out = []
        self._emit({"type": "session.created", "session": ev.snapshot(self.config)})
        return self._out

    def receive(self, text: Any, now: float) -> list[dict]:
        """One client message (JSON text); the server events it causes."""
        out = self._out = []
        if self.closed:
            return out
        audio = fast_append_audio(text)
        if audio is not None:  # the hot path: 50 appends per second per call
            self._audio(audio, now)
            return out
        event = None
        try:
            event = parse(text)
            if event.get("type") == "input_audio_buffer.append":
                self._audio(decode_append(event), now)
            else:
                self.client_events.append(event)
                validate(event)
                self._handlers[event["type"]](event, now)
        except EventError as err:
            if event is None:
                self.client_events.append({"invalid_json": str(text)[:1000]})
            elif event.get("type") == "input_audio_buffer.append":
                audio_field = event.get("audio")
                self.client_events.append({**event, "audio": f"<{len(audio_field)} chars>"}
                                          if isinstance(audio_field, str) else event)
            self._error(err)
        if self.response is not None and self.response.done:
            self._response_finished()
        return out

    def receive_audio(self, audio: bytes, now: float) -> list[dict]:
        """An `input_audio_buffer.append` already recognised and decoded by the I/O shell
        (relay.sim._sim_audio): what `receive` does for one in the compact shape."""
        out = self._out = []
        if not self.closed:
            self._audio(audio, now)
        return out

    def _audio(self, audio: bytes, now: float) -> None:
        self.appends += 1
        self.audio_bytes_received += len(audio)
        edges = self.buffer.append(audio, self.vad)
        if edges is not None:
            self._turn_edges(edges, now)
            if self.response is not None and self.response.done:
                self._response_finished()

    def tick(self, now: float) -> list[dict]:
        """The events due by `now` (response pacing, delayed transcriptions, expiry)."""
        out = self._out = []
        if self.closed:
            return out
        if now >= self.expires_at:
            self._expire()
            return out
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action()
        if self.response is not None:
            out.extend(self.response.tick(now))
            if self.response.done:
                self._response_finished()
        return out

    def next_deadline(self) -> Optional[float]:
        """When tick() next has something to do (None: closed)."""
        if self.closed:
            return None
        deadline = self.expires_at
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self.response is not None and self.response.next_deadline is not None:
            deadline = min(deadline, self.response.next_deadline)
        return deadline

    def fault_error(self, error: Optional[dict] = None) -> dict:
        """An injected `error` event (fault injection); recorded like any error sent."""
        err = ev.error_object("server_error", "The server had an error while processing your "
                              "request.", type_="server_error")
        err.update(error or {})
        self.errors_sent.append(err)
        return {"type": "error", "event_id": self.ids.new("event"), "error": err}

    def shutdown(self) -> None:
        """The connection is gone: stop everything, emit nothing."""
        self.closed = True
        if self.response is not None:
            self.response.abort()
        self._timers.clear()

    def inspect(self) -> dict:
        """Everything tests look at, JSON-able."""
        return {
            "id": self.id, "model": self.model, "config": ev.snapshot(self.config),
            "closed": self.closed, "close_request": self.close_request,
            "client_events": list(self.client_events), "appends": self.appends,
            "audio_ms_received": self.buffer.received_ms,
            "items": [ev.snapshot(item) for item in self.conversation],
            "item_history": [ev.snapshot(item) for item in self.conversation.history],
            "truncations": [list(t) for t in self.truncations],
            "errors_sent": list(self.errors_sent), "responses": list(self.responses),
            "heard": dict(self.heard), "sent_types": dict(self.sent_types),
            "faults_fired": list(self.faults_fired),
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        event["event_id"] = self.ids.new("event")
        self._out.append(event)

    def _error(self, err: EventError) -> None:
        error = err.as_error()
        self.errors_sent.append(error)
        self._emit({"type": "error", "error": error})

    def _at(self, due: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (due, next(self._timer_seq), action))

    def _expire(self) -> None:
        minutes = round(self.session_limit_s / 60)
        self._error(EventError("session_expired", f"Your session hit the maximum duration of "
                               f"{minutes} minutes."))
        self.close_request = (1001, "invalid_request_error.session_expired")
        self.shutdown()

    def _configure_input(self, force: bool = False) -> None:
        """Follow the effective input format and turn detection (after session.update)."""
        fmt = audio_format(sc.input_format(self.config))
        td = sc.turn_detection(self.config)
        new_format = force or fmt is not self._fmt
        if new_format:
            self._fmt = fmt
            self.buffer = InputAudioBuffer(fmt, start_ms=self.buffer.received_ms)
        if new_format or td != self._td:
            self._td = ev.snapshot(td)
            self.vad = Vad.from_turn_detection(td, self.min_speech_ms) if td else None
            self._speech_item = None

    # ---- input audio and turns -----------------------------------------------------------------

    def _turn_edges(self, edges: list[tuple[int, int]], now: float) -> None:
        for kind, ms in edges:
            if kind == STARTED:
                self._speech_started(ms, now)
            else:
                self._speech_stopped(ms, now)

    def _speech_started(self, start_ms: int, now: float) -> None:
        assert self._td is not None
        item_id = self._speech_item = self.ids.new("item")
        self._speech_start_ms = start_ms
        self._emit({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": self._speech_start_ms, "item_id": item_id})
        if (self.response is not None and not self.response.done
                and self._td.get("interrupt_response", True)
                and self.response.obj.get("conversation_id") is not None):
            self._out.extend(self.response.cancel("turn_detected"))
            self._response_finished()

    def _speech_stopped(self, end_ms: int, now: float) -> None:
        assert self._td is not None
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        self._emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms,
                    "item_id": item_id})
        self._commit(item_id, self.buffer.take(self._speech_start_ms, end_ms), now)
        if self._td.get("create_response", True) and self.response is None:
            self._start_response({}, now)

    def _commit(self, item_id: str, audio: bytes, now: float) -> None:
        previous = self.conversation.last_id
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                    "previous_item_id": previous})
        item = ev.user_audio_item(item_id)
        self.conversation.add(item)
        self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                    "item": ev.snapshot(item)})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous,
                    "item": ev.snapshot(item)})
        phrase = recognise(audio, self._fmt, self.script.phrasebook)
        heard = phrase if phrase is not None else self.script.default_transcript
        self.heard[item_id] = heard
        if len(self.heard) > RECORD_LIMIT:
            del self.heard[next(iter(self.heard))]
        if sc.transcription(self.config) is None:
            return
        plan = self.script.transcription_for(phrase)
        if plan.mode == "omit":
            return
        audio_ms = self._fmt.ms(len(audio))

        def deliver() -> None:
            self._transcription(item, plan.mode, heard, audio_ms)

        if plan.delay_ms:
            self._at(now + plan.delay_ms / 1000.0, deliver)
        else:
            deliver()

    def _transcription(self, item: dict, mode: str, heard: str, audio_ms: int) -> None:
        where = {"item_id": item["id"], "content_index": 0}
        if mode == "fail":
            self._emit({"type": "conversation.item.input_audio_transcription.failed", **where,
                        "error": {"type": "transcription_error", "code": "audio_unintelligible",
                                  "message": "The audio could not be transcribed.",
                                  "param": None}})
            return
        item["content"][0]["transcript"] = heard
        audio_tokens = max(1, audio_ms // 100)
        text_tokens = max(1, len(heard) // 4) if heard else 0
        if heard:
            self._emit({"type": "conversation.item.input_audio_transcription.delta", **where,
                        "delta": heard})
        self._emit({"type": "conversation.item.input_audio_transcription.completed", **where,
                    "transcript": heard,
                    "usage": {"type": "tokens", "input_tokens": audio_tokens,
                              "output_tokens": text_tokens,
                              "total_tokens": audio_tokens + text_tokens,
                              "input_token_details": {"audio_tokens": audio_tokens,
                                                      "text_tokens": 0}}})

    # ---- responses -----------------------------------------------------------------------------

    def _start_response(self, params: dict, now: float) -> None:
        reply, transcript, output = self._choose_reply(params)
        audio_out = (params.get("audio") or {}).get("output") or {}
        voice = audio_out.get("voice", sc.output_voice(self.config))
        if isinstance(voice, dict):  # a custom voice: {"id": "voice_..."}
            voice = voice.get("id")
        fmt = audio_format(audio_out.get("format") or sc.output_format(self.config))
        modalities = params.get("output_modalities") or self.config.get("output_modalities") \
            or ["audio"]
        out_of_band = params.get("conversation") == "none"
        metadata = params.get("metadata")
        max_tokens = params.get("max_output_tokens", self.config.get("max_output_tokens", "inf"))
        script = self.script
        self.response = Response(
            ids=self.ids, reply=reply, text=reply.render(transcript, output),
            conversation=None if out_of_band else self.conversation,
            conversation_id=None if out_of_band else self.ids.conversation, fmt=fmt,
            voice=voice, modalities=modalities, max_output_tokens=max_tokens,
            metadata=metadata,
            pacing=Pacing(script.chunk_ms, script.chunk_interval_ms, script.latency_ms),
            input_tokens=100 + 20 * len(self.conversation), now=now)
        self._out.extend(self.response.tick(now))

    def _choose_reply(self, params: dict) -> tuple[Reply, str, str]:
        """What the next response says: (reply, what the caller said, last tool output)."""
        items = params.get("input")
        if items is None:
            items = list(self.conversation)
        last = items[-1] if items else None
        script = self.script
        if last is None or last.get("role") == "system":
            return script.greeting or script.default, "", ""
        if last.get("type") == "function_call_output":
            then = self._pending_calls.get(last.get("call_id"))
            return then or script.default, "", last.get("output", "")
        if last.get("type") == "message" and last.get("role") == "user":
            transcript = self._user_text(last)
            return script.reply_for(transcript), transcript, ""
        return script.default, "", ""

    def _user_text(self, item: dict) -> str:
        texts = []
        for part in item.get("content") or ():
            if part.get("type") == "input_text":
                texts.append(part.get("text") or "")
            elif part.get("type") == "input_audio":
                heard = self.heard.get(item.get("id", ""))
                texts.append(heard if heard is not None else (part.get("transcript") or ""))
        return " ".join(t for t in texts if t)

    def _response_finished(self) -> None:
        response = self.response
        assert response is not None
        if response.audio_ms:
            self.audio_produced = True
        for call_id in response.call_ids:
            self._pending_calls[call_id] = response.reply.then
        while len(self._pending_calls) > RECORD_LIMIT:
            del self._pending_calls[next(iter(self._pending_calls))]
        self.responses.append(response.obj)
        self.response = None

    # ---- client event handlers -----------------------------------------------------------------

    def _session_update(self, event: dict, now: float) -> None:
        audio_produced = self.audio_produced or (self.response is not None
                                                 and self.response.audio_ms > 0)
        self.config = sc.apply_update(self.config, event["session"], audio_produced,
                                      event.get("event_id"))
        self._configure_input()
        self._emit({"type": "session.updated", "session": ev.snapshot(self.config)})

    def _commit_buffer(self, event: dict, now: float) -> None:
        buffered = self.buffer.buffered_ms
        if buffered < COMMIT_MIN_MS:
            raise EventError("input_audio_buffer_commit_empty", "Error committing input audio "
                             f"buffer: buffer too small. Expected at least {COMMIT_MIN_MS}ms of "
                             f"audio, but buffer only has {buffered:.2f}ms of audio.", None,
                             event.get("event_id"))
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        if self.vad is not None:
            self.vad.reset()
        self._commit(item_id, self.buffer.take(), now)

    def _clear_buffer(self, event: dict, now: float) -> None:
        self.buffer.clear()
        if self.vad is not None:
            self.vad.reset()
        self._speech_item = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _output_clear(self, event: dict, now: float) -> None:
        raise invalid_value("type", "output_audio_buffer.clear is only supported for WebRTC and "
                            "SIP connections.", event.get("event_id"))

    def _item_create(self, event: dict, now: float) -> None:
        event_id = event.get("event_id")
        item = ev.snapshot(event["item"])
        if item.get("id") is not None and item["id"] in self.conversation:
            raise invalid_value("item.id", f"Item with id '{item['id']}' already exists.",
                                event_id)
        if (item.get("type") == "function_call_output"
                and item.get("call_id") not in self.conversation.call_ids()):
            raise EventError("invalid_tool_call_id", f"Tool call ID '{item.get('call_id')}' not "
                             "found in conversation.", "item.call_id", event_id)
        item.setdefault("id", None)
        if item["id"] is None:
            item["id"] = self.ids.new("item")
        item["object"] = "realtime.item"
        item["status"] = "completed"
        try:
            previous = self.conversation.add(item, event.get("previous_item_id"),
                                             append="previous_item_id" not in event)
        except KeyError:
            raise invalid_value("previous_item_id", "Previous item with id "
                                f"'{event.get('previous_item_id')}' not found.", event_id) from None
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._emit({"type": kind, "previous_item_id": previous, "item": ev.snapshot(item)})

    def _item_delete(self, event: dict, now: float) -> None:
        if not self.conversation.delete(event["item_id"]):
            raise invalid_value("item_id", "Error deleting item: the item with id "
                                f"'{event['item_id']}' does not exist.", event.get("event_id"))
        self._emit({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    def _item_retrieve(self, event: dict, now: float) -> None:
        item = self.conversation.get(event["item_id"])
        if item is None:
            raise invalid_value("item_id", f"Item with id '{event['item_id']}' not found.",
                                event.get("event_id"))
        self._emit({"type": "conversation.item.retrieved", "item": ev.snapshot(item)})

    def _item_truncate(self, event: dict, now: float) -> None:
        event_id = event.get("event_id")
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        item = self.conversation.get(item_id)
        if item is None:
            raise invalid_value("item_id", f"Item with item_id '{item_id}' not found.", event_id)
        generated = self.conversation.audio_ms.get(item_id)
        if item.get("role") != "assistant" or generated is None:
            raise EventError("unsupported_content_type", "Only model output audio messages can "
                             "be truncated", "item_id", event_id)
        if event["content_index"] != 0:
            raise invalid_value("content_index", "Invalid 'content_index': the item has one "
                                "content part (index 0).", event_id)
        if end_ms > generated:
            raise invalid_value("audio_end_ms", f"Audio content of {generated}ms is already "
                                f"shorter than {end_ms}ms", event_id)
        self.conversation.audio_ms[item_id] = end_ms
        for part in item.get("content") or ():
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self.truncations.append((item_id, end_ms))
        self._emit({"type": "conversation.item.truncated", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": end_ms})

    def _response_create(self, event: dict, now: float) -> None:
        if self.response is not None:
            raise EventError("conversation_already_has_active_response", "Conversation already "
                             f"has an active response in progress: {self.response.id}. Wait "
                             "until the response is finished before creating a new one.", None,
                             event.get("event_id"))
        self._start_response(event.get("response") or {}, now)

    def _response_cancel(self, event: dict, now: float) -> None:
        wanted = event.get("response_id")
        if self.response is None or (wanted is not None and wanted != self.response.id):
            raise EventError("response_cancel_not_active", "Cancellation failed: no active "
                             "response found", None, event.get("event_id"))
        self._out.extend(self.response.cancel("client_cancelled"))
        self._response_finished()
