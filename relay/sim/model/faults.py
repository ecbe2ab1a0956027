"""Fault injection for the simulated model: what can go wrong on purpose, and when.

Owns: the Fault description (JSON-able, for Python and the HTTP control endpoint) and the
decision whether an armed fault fires before a given server event. Performing it (closing a
socket, sleeping) is the server's job.

Kinds:
  drop       the TCP connection is cut (no close frame)
  close      a close frame with `close_code`/`close_reason`, then the connection ends
  delay      the outgoing event stream stalls for `delay_ms` (order kept)
  error      an `error` event (`error`: the error object's fields, default server_error)
  malformed  a text frame that is not a valid event (`text`, default: truncated JSON)

Targets: "current" (sessions open now), "next" (the next session to open), "all" (open now and
every later one) or a session id. `on_event`: fire just before the first server event of that
type (e.g. "response.output_audio.delta"); None fires at once (for new sessions: right after
session.created).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

KINDS = ("drop", "close", "delay", "error", "malformed")
TARGETS = ("current", "next", "all")
DEFAULT_MALFORMED = '{"type": "response.output_audio.delta", "delta": "AAAA'


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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
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

    def fires_before(self, event_type: Optional[str]) -> bool:
        """Whether this armed fault fires before an event of `event_type` (None: no event)."""
        return self.on_event is None or self.on_event == event_type
