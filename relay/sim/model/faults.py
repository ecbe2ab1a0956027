"""Fault injection for the simulated model: what can go wrong on purpose, and when.

Owns: the Fault description (JSON-able, for Python and the HTTP control endpoint) and the
decision whether an armed fault fires before a given server event. Performing it (closing a
socket, sleeping) is the server's job.

Kinds:
  drop       the TCP connection is cut (no close frame)
  close      a close frame with `close_code`/`close_reason`, then the connection ends
  delay      the outgoing event stream stalls for `delay_ms` (order kept)
  stall      the session stops sending anything (no response.created, no audio, nothing) but
             keeps the socket open and goes on reading: for `delay_ms` (0: for good); what it
             would have sent meanwhile is lost
  error      an `error` event (`error`: the error object's fields, default server_error);
             `quote_key`: its message quotes the API key the client sent (as some real error
             messages do)
  malformed  a text frame that is not a valid event (`text`, default: truncated JSON)
  event      a JSON object sent as an event as is (`event`, or a `shape` of WRONG_SHAPES:
             well-formed JSON of the wrong shape)

Targets: "current" (sessions open now), "next" (the next session to open), "all" (open now and
every later one) or a session id. `on_event`: fire just before the `count`-th server event of
that type on the connection (e.g. "response.output_audio.delta", count 3: after two audio
deltas); None fires at once (for new sessions: before session.created, so a "drop" with
target "all" makes every new socket die at once: short-lived sockets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

KINDS = ("drop", "close", "delay", "stall", "error", "malformed", "event")
TARGETS = ("current", "next", "all")
DEFAULT_MALFORMED = '{"type": "response.output_audio.delta", "delta": "AAAA'
# Valid JSON, wrong shape: what a client must count and ignore, never die of.
WRONG_SHAPES: dict[str, dict] = {
    "error_string": {"type": "error", "error": "a string"},
    "error_list": {"type": "error", "error": ["server_error"]},
    "delta_without_item": {"type": "response.output_audio.delta", "response_id": "resp_x",
                           "output_index": 0, "content_index": 0, "delta": "AAAA"},
    "delta_not_text": {"type": "response.output_audio.delta", "response_id": "resp_x",
                       "item_id": "item_x", "output_index": 0, "content_index": 0,
                       "delta": 12345},
    "done_list": {"type": "response.done", "response": ["resp_x"]},
    "created_without_response": {"type": "response.created"},
    "transcript_without_item": {"type": "conversation.item.input_audio_transcription.completed",
                                "content_index": 0, "transcript": "hello"},
    "no_type": {"item_id": "item_x", "delta": "AAAA"},
    "type_not_text": {"type": 42},
}


@dataclass
class Fault:
    """One armed fault (see the module docstring for kinds and targets)."""

    kind: str
    target: str = "current"
    on_event: Optional[str] = None
    delay_ms: int = 0
    error: dict = field(default_factory=dict)
    text: str = DEFAULT_MALFORMED
    close_code: int = 1011
    close_reason: str = "server_error"
    count: int = 1
    quote_key: bool = False
    event: dict = field(default_factory=dict)
    shape: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError("fault count must be a positive integer")
        if not isinstance(self.event, dict):
            raise ValueError("fault event must be an object")
        if self.shape and self.shape not in WRONG_SHAPES:
            raise ValueError(f"fault shape must be one of {sorted(WRONG_SHAPES)}")
        if self.kind == "event" and not (self.event or self.shape):
            raise ValueError("an event fault needs an `event` or a `shape`")
        if not isinstance(self.target, str) or not self.target:
            raise ValueError("fault target must be 'current', 'next', 'all' or a session id")
        if not isinstance(self.delay_ms, int) or self.delay_ms < 0:
            raise ValueError("fault delay_ms must be a non-negative integer")
        if not isinstance(self.error, dict):
            raise ValueError("fault error must be an object")

    @classmethod
    def from_dict(cls, data: Any) -> "Fault":
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        return cls(**data)

    def as_dict(self) -> dict:
        return asdict(self)

    def fires_before(self, event_type: Optional[str], ordinal: int = 1) -> bool:
        """Whether this armed fault fires before an event of `event_type` (None: no event),
        the `ordinal`-th of its type on the connection."""
        return self.on_event is None or (self.on_event == event_type and ordinal >= self.count)

    def payload(self) -> dict:
        """What an `event` fault sends."""
        return dict(self.event) if self.event else dict(WRONG_SHAPES[self.shape])
