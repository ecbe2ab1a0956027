"""RealtimeSession without sockets: responses in flight, retries, errors, bad events."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import gevent
import pytest
import ujson

from relay.backoff import CLOSED, OPEN, CircuitBreaker, ReconnectPolicy
from relay.realtime_session import RealtimeSession
from relay.sim.model.faults import WRONG_SHAPES


class FakeSocket:
    connected = True

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, event: dict) -> bool:
        self.sent.append(event)
        return True

    def close(self, *args) -> None:
        self.connected = False


class Handler:
    def __init__(self):
        self.calls: list[tuple] = []
        self.session: RealtimeSession | None = None
        self.on_done = None

    def __getattr__(self, name):
        if not name.startswith("rt_"):
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name, *args))
            if name == "rt_response_done" and self.on_done:
                self.on_done()
        return record


@pytest.fixture
def wired():
    handler = Handler()
    session = RealtimeSession(url="ws://x", model="m", api_key="k", session={"type": "realtime"},
                              handler=handler)
    socket = FakeSocket()
    session._socket = socket
    session.connections = 1
    session._awaiting_ready = True
    session._ready_at = 0.0           # configured (tests that need the first ready reset it)
    handler.session = session
    return session, socket, handler


def creates(socket) -> int:
    return sum(1 for e in socket.sent if e["type"] == "response.create")


def test_a_response_asked_for_during_another_waits_for_its_done(wired):
    session, socket, _ = wired
    session._on_event({"type": "response.created", "response": {"id": "r1"}})
    session.request_response()
    session.request_response()
    assert creates(socket) == 0
    session._on_event({"type": "response.done", "response": {"id": "r1"}})
    assert creates(socket) == 1


def test_a_create_sent_by_the_handler_at_done_absorbs_a_waiting_one(wired):
    session, socket, handler = wired
    session._on_event({"type": "response.created", "response": {"id": "r1"}})
    session.add_user_text("The caller pressed the keys: 1")      # wants a response
    handler.on_done = lambda: session.request_response()         # tool outputs are all sent
    session._on_event({"type": "response.done", "response": {"id": "r1"}})
    assert creates(socket) == 1


def test_active_response_error_retries_after_the_done(wired):
    session, socket, _ = wired
    session.request_response()
    assert creates(socket) == 1
    session._on_event({"type": "error", "error": {
        "code": "conversation_already_has_active_response", "message": "busy"}})
    session._on_event({"type": "response.created", "response": {"id": "server"}})
    session._on_event({"type": "response.done", "response": {"id": "server"}})
    assert creates(socket) == 2


def test_a_fatal_key_error_fails_the_session_once(wired):
    session, _, handler = wired
    session._on_event({"type": "error", "error": {"code": "invalid_api_key", "message": "no"}})
    session._on_event({"type": "error", "error": {"code": "invalid_api_key", "message": "no"}})
    failed = [c for c in handler.calls if c[0] == "rt_failed"]
    assert len(failed) == 1 and "invalid_api_key" in failed[0][1]


def test_only_the_first_session_updated_of_a_socket_means_ready(wired):
    session, _, handler = wired
    session._on_event({"type": "session.updated", "session": {}})
    session._on_event({"type": "session.updated", "session": {}})
    assert [c for c in handler.calls if c[0] == "rt_ready"] == [("rt_ready", True)]


@pytest.mark.parametrize("event", [
    {"type": "response.output_audio.delta", "item_id": "i", "delta": "%%%not base64"},
    {"type": "response.output_audio.delta", "delta": "AAAA"},          # no item_id
    {"type": "response.created"},                                     # no response
    {"type": "conversation.item.input_audio_transcription.completed"},
    ["not", "an", "object"],
    {"type": "some.future.event", "x": 1},
])
def test_malformed_or_unknown_events_are_counted_not_raised(wired, event):
    session, _, handler = wired
    session._on_event(event)
    assert not [c for c in handler.calls if c[0] == "rt_failed"]


def test_the_raw_fast_path_drops_what_the_session_does_not_handle_and_hands_on_the_rest(wired):
    """The socket's on_raw: a transcript delta (a type the session does not handle) is taken
    and dropped without JSON decoding, though it shows the model alive; an event the session
    handles, or one the fast path cannot read, is handed on (False) to the general path."""
    session, _, handler = wired
    session.last_event_at = None
    delta = (b'{"type":"response.output_audio_transcript.delta","response_id":"r","item_id":"i",'
             b'"output_index":0,"content_index":0,"delta":"Hi "}')
    assert session._on_audio_message(delta) is True
    assert session.last_event_at is not None and session.bad_events == 0
    assert session._on_audio_message(b'{"type":"response.created","response":{"id":"r"}}') \
        is False
    assert session._on_audio_message(b'{"type":"response.done","x":1}') is False
    assert session._on_audio_message(b'{"type":"x","delta":"caf\xc3\xa9"}') is False
    assert session._on_audio_message(b'not json') is False
    assert not [c for c in handler.calls if c[0] in ("rt_failed", "rt_bad_event")]


def test_model_errors_are_counted_by_code(wired):
    session, _, handler = wired
    for _ in range(2):
        session._on_event({"type": "error", "error": {"code": "server_error", "message": "x"}})
    session._on_event({"type": "error", "error": {"type": "invalid_request_error"}})
    assert session.errors == {"server_error": 2, "invalid_request_error": 1}
    assert ("rt_error", "server_error", "x") in handler.calls


# wrong shapes --------------------------------------------------------------------------------

def state_of(session: RealtimeSession) -> tuple:
    return (session.response_id, session._create_sent, session._wanted, session.owed,
            session.model_has_spoken, dict(session.errors), session.connections,
            list(session.history))


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_an_event_of_the_wrong_shape_changes_nothing_but_a_counter(wired, shape):
    session, socket, handler = wired
    session._on_event({"type": "response.created", "response": {"id": "r1"}})
    before = state_of(session)
    session._on_event(dict(WRONG_SHAPES[shape]))
    assert state_of(session) == before
    assert session.bad_events == 1
    assert [c[0] for c in handler.calls] == ["rt_bad_event"]
    assert socket.connected and socket.sent == []


def test_bad_events_are_logged_once_per_call(wired, caplog):
    session, _, _ = wired
    for _ in range(5):
        session._on_event({"type": "error", "error": "a string"})
    assert session.bad_events == 5
    assert len([r for r in caplog.records if "unexpected shape" in r.getMessage()]) == 1


# replacing a socket: resumption, items, backoff, the breaker ----------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ServerSocket(FakeSocket):
    """A socket the test plays the server of: it may close it (as the reader would)."""

    def __init__(self, on_message, on_closed) -> None:
        super().__init__()
        self.on_message, self.on_closed = on_message, on_closed

    def event(self, event: dict) -> None:
        self.on_message(event)

    def server_close(self, code: int = 1006, reason: str = "connection lost") -> None:
        self.connected = False
        self.on_closed(code, reason)

    def types(self) -> list[str]:
        return [e["type"] for e in self.sent]


class Service:
    """The socket factory: each attempt gets a ServerSocket, or raises while `down`."""

    def __init__(self) -> None:
        self.sockets: list[ServerSocket] = []
        self.down = 0           # this many next attempts raise (connection refused)

    def __call__(self, on_message, on_closed, on_bad_message):
        if self.down:
            self.down -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        sock = ServerSocket(on_message, on_closed)
        self.sockets.append(sock)
        return sock


@pytest.fixture
def live():
    """A session over a Service, with a clock the sleeps advance (delays recorded)."""
    clock, service, handler, delays = Clock(), Service(), Handler(), []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        clock.now += seconds
        gevent.sleep(0)

    def make(breaker=None, policy=None) -> RealtimeSession:
        session = RealtimeSession(
            url="ws://x", model="m", api_key="k", session={"type": "realtime"},
            handler=handler, clock=clock, sleep=sleep, socket_factory=service,
            breaker=breaker, policy=policy or ReconnectPolicy(
                initial_s=0.25, max_s=5.0, max_failures=3, max_sockets=30,
                healthy_after_s=3.0, budget_s=60.0))
        handler.session = session
        return session

    yield SimpleNamespace(make=make, clock=clock, service=service, handler=handler,
                          delays=delays)


def settle(session: RealtimeSession) -> None:
    recovery = session._recovery
    if recovery is not None:
        recovery.join(timeout=5)
    gevent.sleep(0)


def ready(sock: ServerSocket) -> None:
    sock.event({"type": "session.updated", "session": {}})


def test_a_turn_committed_before_a_drop_is_answered_on_the_new_socket(live):
    session = live.make()
    session.start()
    first = live.service.sockets[0]
    ready(first)
    first.event({"type": "input_audio_buffer.committed", "item_id": "item_u1"})
    first.event({"type": "conversation.item.input_audio_transcription.completed",
                 "item_id": "item_u1", "transcript": "What time is it?"})
    assert session.owed
    first.server_close(1006, "connection lost")
    settle(session)
    second = live.service.sockets[1]
    # the same session, the conversation so far as text, and nothing asked yet
    assert second.types() == ["session.update", "conversation.item.create"]
    ready(second)
    assert second.types()[-1] == "response.create"
    assert session.resumed == 1 and session.reconnects == 1
    assert ("rt_socket_lost", "1006 connection lost") in live.handler.calls
    assert ("rt_ready", False) in live.handler.calls


@pytest.mark.parametrize("code, reason", [(1006, "connection lost"), (1011, "server_error"),
                                          (1001, "invalid_request_error.session_expired")])
def test_a_response_cut_by_the_end_of_its_socket_is_asked_for_again(live, code, reason):
    session = live.make()
    session.start()
    first = live.service.sockets[0]
    ready(first)
    first.event({"type": "input_audio_buffer.committed", "item_id": "item_u1"})
    first.event({"type": "response.created", "response": {"id": "r1"}})
    first.event({"type": "response.output_audio.delta", "response_id": "r1",
                 "item_id": "item_a1", "delta": "AAAA"})
    assert session.owns_item("item_a1")
    if code == 1001:
        first.event({"type": "error", "error": {"code": "session_expired", "message": "60"}})
    live.clock.now += 10.0          # the socket had worked well: the next attempt is at once
    session.poll(live.clock.now)
    first.server_close(code, reason)
    settle(session)
    assert live.delays == []
    second = live.service.sockets[1]
    ready(second)
    assert second.types().count("response.create") == 1
    # the new conversation has none of the old socket's items: nothing may truncate them
    assert not session.owns_item("item_a1") and not session.owns_item("item_u1")


def test_nothing_is_asked_again_when_the_caller_was_not_waiting(live):
    session = live.make()
    session.start()
    first = live.service.sockets[0]
    ready(first)
    first.event({"type": "input_audio_buffer.committed", "item_id": "item_u1"})
    first.event({"type": "response.created", "response": {"id": "r1"}})
    first.event({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    first.server_close()
    settle(session)
    ready(live.service.sockets[1])
    assert "response.create" not in live.service.sockets[1].types()
    assert session.resumed == 0


def test_a_greeting_cut_by_a_drop_is_asked_for_again_with_its_instructions(live):
    session = live.make()
    session.start()
    first = live.service.sockets[0]
    ready(first)
    session.request_response("Greet the caller.")
    first.server_close()
    settle(session)
    second = live.service.sockets[1]
    ready(second)
    [create] = [e for e in second.sent if e["type"] == "response.create"]
    assert create["response"] == {"instructions": "Greet the caller."}


def test_sockets_that_die_at_once_are_failed_attempts_with_growing_delays(live):
    breaker = CircuitBreaker(threshold=50, cooldown_s=10.0, clock=live.clock)
    session = live.make(breaker=breaker)
    session.start()
    for _ in range(10):
        sockets = live.service.sockets
        if not sockets[-1].connected or session.failed:
            break
        sockets[-1].server_close(1006, "connection lost")      # before its session.updated
        settle(session)
    # three sockets in a row died before doing anything (openai.max_reconnects 3): it gives up
    assert len(live.service.sockets) == 3 and session.failed_attempts == 3
    assert live.delays == sorted(live.delays) and len(live.delays) == 2
    assert 0.125 <= live.delays[0] <= 0.25 and 0.25 <= live.delays[1] <= 0.5
    failed = [c for c in live.handler.calls if c[0] == "rt_failed"]
    assert len(failed) == 1 and "3 attempts in a row failed" in failed[0][1]
    assert breaker.failures == 3


def test_a_socket_that_works_long_enough_resets_the_count(live):
    breaker = CircuitBreaker(threshold=50, cooldown_s=10.0, clock=live.clock)
    session = live.make(breaker=breaker)
    session.start()
    live.service.sockets[0].server_close()
    settle(session)
    assert session._failures == 1
    second = live.service.sockets[1]
    ready(second)
    live.clock.now += 2.9
    session.poll(live.clock.now)
    assert session._failures == 1 and breaker.successes == 0
    live.clock.now += 0.1
    session.poll(live.clock.now)
    assert session._failures == 0 and breaker.successes == 1 and breaker.failures == 0


def test_refused_connections_then_the_budget_ends_the_session(live):
    live.service.down = 100
    session = live.make()
    session.start()
    settle(session)
    assert session.connections == 3 and session.failed_attempts == 3
    assert live.delays == sorted(live.delays)
    assert [c[0] for c in live.handler.calls].count("rt_failed") == 1
    assert session.connected          # failed, but the call still holds it (and closes it)


def test_a_new_call_finds_the_breaker_open_and_fails_at_once(live):
    breaker = CircuitBreaker(threshold=1, cooldown_s=10.0, clock=live.clock)
    breaker.failure()
    session = live.make(breaker=breaker)
    session.start()
    assert live.service.sockets == [] and session.connections == 0
    [failed] = [c for c in live.handler.calls if c[0] == "rt_failed"]
    assert "circuit breaker is open" in failed[1]


def test_a_live_call_waits_for_the_half_open_probe_within_its_budget(live):
    breaker = CircuitBreaker(threshold=2, cooldown_s=10.0, clock=live.clock)
    session = live.make(breaker=breaker)
    session.start()
    first = live.service.sockets[0]
    ready(first)
    live.clock.now += 5.0
    session.poll(live.clock.now)                # a working socket
    breaker.failure()
    breaker.failure()                           # other calls' attempts failed: open
    assert breaker.state == OPEN
    first.server_close()
    settle(session)
    assert live.delays[0] == pytest.approx(10.0)    # waited for the cooldown, no attempt
    assert len(live.service.sockets) == 2           # then it was the probe
    ready(live.service.sockets[1])
    live.clock.now += 3.0
    session.poll(live.clock.now)
    assert breaker.state == CLOSED


def test_close_ends_a_recovery_under_way(live):
    live.service.down = 100
    session = live.make(policy=ReconnectPolicy(initial_s=5.0, max_s=5.0, max_failures=50,
                                               max_sockets=100, budget_s=1000.0))

    def slow_sleep(seconds):        # a real wait, so that close() finds it sleeping
        live.delays.append(seconds)
        gevent.sleep(10)

    session._sleep = slow_sleep
    session.start()
    gevent.sleep(0)
    recovery = session._recovery
    assert recovery is not None and not recovery.dead
    session.close()
    recovery.join(timeout=5)
    assert recovery.dead and not [c for c in live.handler.calls if c[0] == "rt_failed"]


def test_an_audio_delta_takes_the_fast_path_and_anything_else_the_general_one(wired):
    session, _, handler = wired
    delta = (b'{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1",'
             b'"output_index":0,"content_index":0,"delta":"QUJD"}')
    assert session._on_audio_message(delta) is True
    assert handler.calls[-1] == ("rt_audio", "resp_1", "item_1", b"ABC")
    assert session.owns_item("item_1") and session.model_has_spoken
    # not canonical base64, another event: left to the general path, which judges as before
    odd = delta.replace(b'"QUJD"', b'"QR=="')
    assert session._on_audio_message(odd) is False
    assert session._on_audio_message(b'{"type":"response.done","response":{}}') is False
    session._on_event(ujson.loads(odd))
    assert handler.calls[-1] == ("rt_audio", "resp_1", "item_1", base64.b64decode("QR=="))
