"""RealtimeSession without sockets: responses in flight, retries, errors, bad events."""

from __future__ import annotations

import pytest

from relay.realtime_session import RealtimeSession


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


def test_model_errors_are_counted_by_code(wired):
    session, _, handler = wired
    for _ in range(2):
        session._on_event({"type": "error", "error": {"code": "server_error", "message": "x"}})
    session._on_event({"type": "error", "error": {"type": "invalid_request_error"}})
    assert session.errors == {"server_error": 2, "invalid_request_error": 1}
    assert ("rt_error", "server_error", "x") in handler.calls
