"""One call's conversation with the OpenAI Realtime model, across socket replacements.

Owns: the call's Realtime WebSocket (through JsonWebSocket), the effective session config, the
response-in-flight bookkeeping (one response at a time: a response.create asked for while one
is active is sent after its response.done), decoding server events into calls on a handler
(every field read defensively: an event of an unexpected shape is counted, logged once per call
and otherwise ignored, never fatal), and replacing a dropped or expired socket.

Replacing a socket: a new socket, the same session.update, the conversation so far re-injected
as text; then, when the caller was owed an answer at the loss (a committed turn with no
response yet, a response cut by the drop, a tool's output sent, a greeting under way), one
response.create for it. Items are tracked per socket, so nothing refers to an item of an
earlier socket (owns_item: the call truncates only items of the current one).

How often it tries (relay/backoff.py): an attempt fails when the socket cannot be opened or
dies before it did useful work (before its session.updated, or within `healthy_after_s`);
failed attempts in a row are spaced by an exponential backoff with jitter, bounded per call (in
a row, in all, in seconds), and reported to the worker's circuit breaker, which stops every call
from opening sockets for a while once too many fail in a row. A session that runs out of budget
(or that the breaker refuses at the start) fails: the handler hears rt_failed once.

It does not know about RTP, ARI or tools.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import deque
from typing import Any, Callable, Optional, Protocol

import gevent

from relay import realtime_events as ev
from relay._append import AppendWriter
from relay._events import IGNORED, audio_delta
from relay.backoff import CLOSED, Backoff, CircuitBreaker, ReconnectPolicy
from relay.realtime_endpoint import auth_headers, realtime_url
from relay.wsclient import JsonWebSocket

log = logging.getLogger(__name__)

FATAL_CLOSE_CODES = {3000: "invalid API key", 4000: "beta protocol refused"}
FATAL_ERROR_CODES = {"invalid_api_key", "beta_api_shape_disabled", "model_not_found",
                     "insufficient_quota"}
HISTORY_TURNS = 40
ITEMS_KEPT = 256            # item ids remembered for the current socket
PROBE_POLL_S = 0.25         # how often a call waiting for another call's probe looks again
BAD_EVENTS_LOGGED = 1       # bad events logged per call (all are counted)
FAILED_ATTEMPTS_LOGGED = 3  # failed connection attempts logged per call


class BadEvent(ValueError):
    """A server event without the fields its type requires."""


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
    def rt_response_requested(self) -> None: ...
    def rt_error(self, code: str, message: str) -> None: ...
    def rt_bad_event(self, kind: str, problem: str) -> None: ...
    def rt_socket_lost(self, reason: str) -> None: ...
    def rt_failed(self, reason: str) -> None: ...


def _text(event: dict, key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""


def _required_text(event: dict, key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"no {key}")
    return value


def _int(event: dict, key: str) -> int:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value)


def _object(event: dict, key: str) -> dict:
    value = event.get(key)
    if not isinstance(value, dict):
        raise BadEvent(f"{key} is {type(value).__name__}, not an object")
    return value


def _forget_frames(exc: BaseException) -> None:
    """A failed connect's exception (and those it was raised from) drops its traceback: the
    socket library's frames hold the exception in a local, a cycle that would keep the call
    (a caller's frame) alive until the collector's next full pass. Only its text is used."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


class RealtimeSession:
    """The model side of one call. start() blocks until the first socket is open (or its
    attempt failed: later ones are made in the background, within the call's budget)."""

    def __init__(self, *, url: str, model: str, api_key: str, session: dict,
                 handler: RealtimeHandler, connect_timeout: float = 10.0,
                 auth: str = "bearer",
                 max_reconnects: int = 3, name: str = "call",
                 on_append_sent: Optional[Callable[[float], None]] = None,
                 policy: Optional[ReconnectPolicy] = None,
                 breaker: Optional[CircuitBreaker] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = gevent.sleep,
                 socket_factory: Optional[Callable[..., Any]] = None,
                 reader: Any = None) -> None:
        self.url = realtime_url(url, model)
        self._headers = auth_headers(auth, api_key)
        self.session = session
        self._handler = handler
        self._connect_timeout = connect_timeout
        self.policy = policy or ReconnectPolicy(max_failures=max_reconnects)
        self._backoff = Backoff(self.policy.initial_s, self.policy.max_s)
        self.breaker = breaker
        self._clock = clock
        self._sleep = sleep
        self._socket_factory = socket_factory    # None: _open_websocket (not stored: a cycle)
        self._reader = reader           # the worker's SocketReader (relay/socket_reader.py)
        self.name = name
        self._on_append_sent = on_append_sent     # seconds from caller RTP to append sent
        self._socket: Any = None
        # the caller's audio, written to the socket from the pacer's tick in C (_use_socket)
        self.appender = AppendWriter()
        self._stopped = False          # no more sockets: closed by the call, or failed
        self.closed = False            # close() was called
        self.failed = ""               # why the session failed (rt_failed was called)
        self._awaiting_ready = False
        self._ever_ready = False
        self._ready_at: Optional[float] = None     # the current socket's session.updated
        self._proven = False           # the current socket counted as a success
        self._holds_probe = False      # this session's attempt is the breaker's probe
        self._recovery: Optional[gevent.Greenlet] = None
        self._outage_since: Optional[float] = None
        self._failures = 0             # failed attempts in a row
        self.failed_attempts = 0       # in all
        self.delays: deque[float] = deque(maxlen=20)     # the last waits before an attempt
        self.response_id: Optional[str] = None      # the response in flight
        self._create_sent = False                   # response.create sent, not yet created
        self._wanted: Optional[dict] = None          # a response.create waiting for response.done
        self._owed = False                            # the caller is owed an answer
        self._owed_instructions: Optional[str] = None
        self._items: set[str] = set()
        self._item_order: deque[str] = deque()
        self.history: deque[tuple[str, str]] = deque(maxlen=HISTORY_TURNS)
        self.model_has_spoken = False
        self.connections = 0
        self.reconnects = 0
        self.resumed = 0               # answers asked for again after a socket was replaced
        self.errors: dict[str, int] = {}
        self.bad_events = 0
        self.last_event_at = 0.0

    # lifecycle
    def start(self) -> None:
        """Open the first socket. The model being unreachable is not an exception here: a
        refused or failed first attempt goes on in the background within the call's budget, and
        a breaker open for the worker fails the session at once; the handler hears of either
        through rt_ready or rt_failed."""
        self._outage_since = self._clock()
        if not self._breaker_allows():
            retry_in = self.breaker.retry_in() if self.breaker is not None else 0.0
            self._fail(f"model unavailable: the worker's circuit breaker is open (it lets a "
                       f"probe through in {retry_in:.1f} s)")
            return
        try:
            self._connect()
        except Exception as exc:
            _forget_frames(exc)
            self._attempt_failed(f"cannot connect: {exc}")
            self._begin_recovery()

    def close(self) -> None:
        self.closed = True
        self._stopped = True
        if self._holds_probe and self.breaker is not None:
            self.breaker.abandon()
            self._holds_probe = False
        recovery, self._recovery = self._recovery, None
        if recovery is not None and recovery is not gevent.getcurrent():
            recovery.kill(block=False)
        if self._socket is not None:
            self._socket.close(1000, "call ended")
            self._use_socket(None)

    def let_go(self, handler: RealtimeHandler) -> None:
        """The call has ended (after close()): its handler is held as given (a weak proxy),
        and the append observer (which holds the call) is dropped, so that nothing here keeps
        the finished call alive."""
        self._handler = handler
        self._on_append_sent = None

    @property
    def connected(self) -> bool:
        """The session is the call's to use: not closed by the call. Its socket may be open or
        being re-opened (socket_open says which); if it fails for good, the handler hears
        rt_failed."""
        return not self.closed

    @property
    def socket_open(self) -> bool:
        return self._socket is not None and self._socket.connected

    @property
    def ready(self) -> bool:
        """A socket is open and its session configured (session.updated came)."""
        return self.socket_open and self._ready_at is not None

    @property
    def has_been_ready(self) -> bool:
        """Some socket of this session got its session.updated."""
        return self._ever_ready

    @property
    def owed(self) -> bool:
        """The caller is owed an answer (asked for, or their turn committed, and not done)."""
        return self._owed

    def owns_item(self, item_id: str) -> bool:
        """Whether the current socket's conversation has this item (seen on it)."""
        return item_id in self._items

    def _open_websocket(self, on_message, on_closed, on_bad_message) -> JsonWebSocket:
        sock = JsonWebSocket(
            self.url, headers=self._headers,
            on_message=on_message, on_closed=on_closed, on_bad_message=on_bad_message,
            on_sent=self._on_append_sent, on_raw=self._on_audio_message,
            connect_timeout=self._connect_timeout,
            name=f"realtime:{self.name}", reader=self._reader)
        sock.connect()
        return sock

    def _connect(self) -> None:
        generation = self.connections + 1
        self.connections = generation           # an attempt, counted even when it fails

        def closed(code: int, reason: str) -> None:
            self._on_closed(generation, code, reason)

        factory = self._socket_factory or self._open_websocket
        sock = factory(self._on_event, closed, self._on_bad_message)
        if self._stopped:           # the call ended while this socket was being opened
            sock.close(1000, "call ended")
            return
        self._use_socket(sock)
        self.response_id, self._create_sent, self._wanted = None, False, None
        self._ready_at, self._proven = None, False
        self._items.clear()
        self._item_order.clear()
        self._awaiting_ready = True
        sock.send(ev.session_update(self.session))
        if self._ever_ready:
            for role, text in self.history:
                if role == "user":
                    sock.send(ev.user_text(text))
                elif role == "system":
                    sock.send(ev.system_text(text))
                else:
                    sock.send(ev.assistant_text(text))

    def poll(self, now: float) -> None:
        """Housekeeping (the call's, a few times a second): a socket that has worked for
        healthy_after_s after its session.updated counts as a success."""
        if (self._ready_at is not None and not self._proven and self._socket is not None
                and now - self._ready_at >= self.policy.healthy_after_s):
            self._succeeded()

    # sending
    def send(self, event: dict) -> bool:
        return self._socket is not None and self._socket.send(event)

    def _use_socket(self, sock: Any) -> None:
        """The current socket (None: none), for the session and its appender alike."""
        self._socket = sock
        self.appender.point_at(sock, isinstance(sock, JsonWebSocket))

    def update_session(self, changes: dict) -> bool:
        """Send a partial session.update; remembered for any later socket."""
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(self.session.get(key), dict):
                _deep_merge(self.session[key], value)
            else:
                self.session[key] = value
        return self.send(ev.session_update(changes))

    def request_response(self, instructions: Optional[str] = None) -> None:
        """response.create now, or right after the response in flight is done (or on the next
        socket, if this one is lost first)."""
        self._owed = True
        self._owed_instructions = instructions
        event = ev.response_create(instructions)
        if self.response_id is not None or self._create_sent or not self.ready:
            self._wanted = event
        else:
            self._create_sent = self.send(event)
        self._handler.rt_response_requested()

    def retry_response(self) -> None:
        """Ask again for an answer that does not come (the call's watchdog): cancel a response
        that produces nothing, then response.create at once. Should the server still have one
        active, its error makes the create wait for that response's done."""
        if self.response_id is not None:
            self.send(ev.response_cancel(self.response_id))
        self.response_id, self._create_sent, self._wanted = None, False, None
        self.request_response(self._owed_instructions)

    def cancel_response(self) -> None:
        if self.response_id is not None:
            self.send(ev.response_cancel(self.response_id))

    def add_user_text(self, text: str, respond: bool = True) -> None:
        self.send(ev.user_text(text))
        self.history.append(("user", text))
        if respond:
            self.request_response()

    def add_context(self, text: str, respond: bool = True) -> None:
        """A system message for the model (e.g. a tool's result that arrived after its socket
        was replaced), kept for later sockets too."""
        self.send(ev.system_text(text))
        self.history.append(("system", text))
        if respond:
            self.request_response()

    # receiving
    def _on_bad_message(self, text: str, error: Exception) -> None:
        self._bad_event("malformed", f"{error}: {text[:80]}")

    def _bad_event(self, kind: str, problem: str) -> None:
        self.bad_events += 1
        if self.bad_events <= BAD_EVENTS_LOGGED:
            log.warning("%s: the model sent an event of an unexpected shape (%s: %s); ignored, "
                        "later ones are only counted", self.name, kind, problem[:200])
        self._handler.rt_bad_event(kind, problem)

    def _on_event(self, event: Any) -> None:
        self.last_event_at = time.monotonic()
        if not isinstance(event, dict):
            self._bad_event("not-an-object", f"a JSON {type(event).__name__}")
            return
        kind = event.get("type")
        handler = _DISPATCH.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if not isinstance(kind, str):
                self._bad_event("no-type", "an event without a type")
            return
        try:
            handler(self, event)
        except gevent.GreenletExit:
            raise
        except BadEvent as exc:
            self._bad_event(kind, str(exc))
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            self._bad_event(kind, f"{type(exc).__name__}: {exc}")

    def _remember_item(self, item_id: str) -> None:
        if not item_id or item_id in self._items:
            return
        self._items.add(item_id)
        self._item_order.append(item_id)
        if len(self._item_order) > ITEMS_KEPT:
            self._items.discard(self._item_order.popleft())

    def _session_updated(self, event: dict) -> None:
        if not self._awaiting_ready:
            return      # the answer to a later update (an operator's change)
        self._awaiting_ready = False
        self._ready_at = self._clock()
        first = not self._ever_ready
        self._ever_ready = True
        if not first:
            self.reconnects += 1
            log.info("%s: Realtime socket replaced (socket %d)", self.name, self.connections)
        self._handler.rt_ready(first)
        if self._owed and self.response_id is None and not self._create_sent:
            # asked for before this socket was ready: before the first one (a key pressed
            # early), or on the one it replaces (a committed turn with no answer yet, a
            # response cut by the drop, a tool's output, a greeting under way)
            if not first:
                self.resumed += 1
                log.info("%s: asking the new socket for the answer the caller was waiting for",
                         self.name)
            self.request_response(self._owed_instructions)

    def _speech_started(self, event: dict) -> None:
        item_id = _text(event, "item_id")
        self._remember_item(item_id)
        self._handler.rt_speech_started(item_id, _int(event, "audio_start_ms"))

    def _speech_stopped(self, event: dict) -> None:
        self._handler.rt_speech_stopped(_text(event, "item_id"), _int(event, "audio_end_ms"))

    def _committed(self, event: dict) -> None:
        item_id = _text(event, "item_id")
        self._remember_item(item_id)
        self._owed, self._owed_instructions = True, None
        self._handler.rt_committed(item_id)

    def _item_added(self, event: dict) -> None:
        item = event.get("item")
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            self._remember_item(item["id"])

    def _transcription_completed(self, event: dict) -> None:
        item_id = _required_text(event, "item_id")
        text = _text(event, "transcript")
        if text:
            self.history.append(("user", text))
        self._handler.rt_user_transcript(item_id, text)

    def _transcription_failed(self, event: dict) -> None:
        item_id = _required_text(event, "item_id")
        error = event.get("error")
        message = _text(error, "message") if isinstance(error, dict) else str(error or "")
        self._handler.rt_transcription_failed(item_id, message)

    def _response_created(self, event: dict) -> None:
        self.response_id = _required_text(_object(event, "response"), "id")
        self._create_sent = False

    def _audio_delta(self, event: dict) -> None:
        item_id = _required_text(event, "item_id")
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise BadEvent("delta is not a string")
        self._audio(_text(event, "response_id"), item_id, base64.b64decode(delta))

    def _on_audio_message(self, message: bytes) -> bool:
        """The socket's fast path: an audio delta read in C (relay/_events.pyx), without
        building the event; False for any other message (or one that path does not read)."""
        parsed = audio_delta(message, _HANDLED)
        if parsed is None:
            return False
        self.last_event_at = time.monotonic()
        if parsed is IGNORED:
            return True         # a type relay does not handle (transcript deltas...)
        try:
            self._audio(*parsed)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._bad_event("response.output_audio.delta", f"{type(exc).__name__}: {exc}")
        return True

    def _audio(self, response_id: str, item_id: str, audio: bytes) -> None:
        self.model_has_spoken = True
        self._remember_item(item_id)
        self._handler.rt_audio(response_id, item_id, audio)

    def _audio_done(self, event: dict) -> None:
        self._handler.rt_audio_done(_required_text(event, "item_id"))

    def _transcript_done(self, event: dict) -> None:
        item_id = _required_text(event, "item_id")
        text = _text(event, "transcript")
        if text:
            self.history.append(("assistant", text))
        self._handler.rt_assistant_transcript(item_id, text)

    def _function_call(self, event: dict) -> None:
        self._handler.rt_function_call(_text(event, "response_id"),
                                       _required_text(event, "call_id"), _text(event, "name"),
                                       _text(event, "arguments"))

    def _response_done(self, event: dict) -> None:
        response = _object(event, "response")
        self.response_id = None
        self._create_sent = False
        self._owed, self._owed_instructions = False, None
        self._handler.rt_response_done(response)
        if self._wanted is not None:
            wanted, self._wanted = self._wanted, None
            # Asked for while that response ran: one new response answers all of it, so a
            # create the handler just sent (tool outputs) makes this one unnecessary.
            if not self._create_sent:
                self._owed = True
                self._create_sent = self.send(wanted)

    def _error(self, event: dict) -> None:
        error = _object(event, "error")
        code = _text(error, "code") or _text(error, "type") or "unknown"
        message = _text(error, "message")
        self.errors[code] = self.errors.get(code, 0) + 1
        if code == "conversation_already_has_active_response":
            # Our response.create raced a response the server started itself: retry after it.
            self._create_sent = False
            if self._wanted is None:
                self._wanted = ev.response_create(self._owed_instructions)
            return
        if code == "response_cancel_not_active":
            return
        if code in FATAL_ERROR_CODES:
            self._fail(f"model error {code}: {message}")
            return
        if code != "session_expired":
            log.warning("%s: model error %s: %s", self.name, code, message)
        self._handler.rt_error(code, message)

    # how sockets end, and how they are replaced
    def _on_closed(self, generation: int, code: int, reason: str) -> None:
        if self._stopped or generation != self.connections:
            return      # closed by us, or an earlier socket's late news
        self._use_socket(None)
        lived = None if self._ready_at is None else self._clock() - self._ready_at
        if not self._proven:
            if lived is not None and lived >= self.policy.healthy_after_s:
                self._succeeded()
            else:
                when = "before its session.updated" if lived is None else \
                    f"{lived:.1f} s after its session.updated"
                self._attempt_failed(f"socket closed ({code} {reason}) {when}")
        if code in FATAL_CLOSE_CODES:
            self._fail(f"model closed the session: {code} {FATAL_CLOSE_CODES[code]} ({reason})")
            return
        # the answer the caller was waiting for (or a create waiting for a done that will
        # never come on this socket) is asked for again on the next one
        self._owed = self._owed or self._wanted is not None
        self._wanted = None
        self.response_id, self._create_sent = None, False
        if self._outage_since is None:
            self._outage_since = self._clock()
        self._handler.rt_socket_lost(f"{code} {reason}")
        self._begin_recovery()

    def _begin_recovery(self) -> None:
        if self._stopped:
            return
        if self._recovery is not None and not self._recovery.dead \
                and self._recovery is not gevent.getcurrent():
            return
        self._recovery = gevent.spawn(self._recover)

    def _recover(self) -> None:
        """Open a new socket: after a backoff when attempts failed in a row, when the breaker
        lets it, within the call's budget; fail the session once the budget is spent."""
        policy = self.policy
        outage = self._outage_since if self._outage_since is not None else self._clock()
        deadline = outage + policy.budget_s
        while not self._stopped:
            if self._failures >= policy.max_failures:
                self._fail(f"model unreachable: {self._failures} attempts in a row failed")
                return
            if self.connections >= policy.max_sockets:
                self._fail(f"model unreachable: {self.connections} sockets opened for this "
                           "call (openai.max_sockets_per_call)")
                return
            wait = self._backoff.delay(self._failures)
            if self.breaker is not None:
                wait = max(wait, self.breaker.retry_in())
            if self._clock() + wait > deadline:
                self._fail(f"model unreachable: no working socket within "
                           f"{policy.budget_s:g} s (openai.reconnect_budget_s)")
                return
            if wait > 0:
                self.delays.append(round(wait, 3))
                self._sleep(wait)
            if self._stopped:
                return
            if not self._breaker_allows():
                self._sleep(PROBE_POLL_S)       # another call's probe: wait for its verdict
                continue
            try:
                self._connect()
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                _forget_frames(exc)
                self._attempt_failed(f"cannot connect: {exc}")
                continue
            return      # open: its session.updated and its life say whether it worked

    def _breaker_allows(self) -> bool:
        breaker = self.breaker
        if breaker is None:
            return True
        probing = breaker.state != CLOSED
        if not breaker.allow():
            return False
        self._holds_probe = probing
        return True

    def _attempt_failed(self, reason: str) -> None:
        self._failures += 1
        self.failed_attempts += 1
        self._holds_probe = False
        if self.breaker is not None:
            self.breaker.failure()
        if self.failed_attempts <= FAILED_ATTEMPTS_LOGGED:
            log.warning("%s: Realtime attempt %d failed: %s", self.name, self.connections,
                        reason)

    def _succeeded(self) -> None:
        self._proven = True
        self._failures = 0
        self._outage_since = None
        self._holds_probe = False
        if self.breaker is not None:
            self.breaker.success()

    def _fail(self, reason: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.failed = reason
        if self._holds_probe and self.breaker is not None:
            self.breaker.abandon()
            self._holds_probe = False
        if self._socket is not None:
            self._socket.close(1000, "giving up")
            self._use_socket(None)
        log.warning("%s: model session failed: %s", self.name, reason)
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
    "conversation.item.added": RealtimeSession._item_added,
    "response.output_item.added": RealtimeSession._item_added,
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
# the types the fast path (relay/_events.pyx) hands on; a valid event of any other is dropped there
_HANDLED = frozenset(kind.encode() for kind in _DISPATCH)
