"""How long the simulated Asterisk takes: the delays that make a REST answer and its events race.

A real Asterisk is not one atomic state machine answering in order. Its HTTP threads, the dial
thread of an originated channel, the channel's own Stasis control thread and the event
WebSocket's writer all run concurrently, so (shared/reference/asterisk/FACTS.md):

- the 200 answer to `POST /channels/externalMedia` (and to a snoop) comes once the channel is
  created and answered, and it enters the app a moment later: an `addChannel` sent straight
  after the answer can get `422 Channel not in Stasis application`;
- `move`, `continue` and the teardown after `DELETE /channels/{id}` are commands queued to the
  channel's thread: they happen after the 204;
- a REST answer and the events it caused are not ordered: either can arrive first.

PbxTiming holds those delays, each a `(low, high)` range in milliseconds drawn uniformly (a
range of `(0, 0)` means "at once, in the same step", the old synchronous behaviour):

  stasis_entry_ms     externalMedia and snoop channels entering the app after the REST answer
  command_ms          move, continue and the DELETE teardown, after the REST answer (FIFO per
                      channel)
  rest_latency_ms     each ARI REST answer is written this long after the operation was applied
  event_latency_ms    each event reaches its events WebSocket this long after it was produced
                      (each connection keeps its FIFO order)
  dial_ms             an originated PJSIP channel rings (180 Ringing) this long after the
                      originate (its callee then answers or refuses after its own ring time:
                      relay.sim.pbx.callees)
  keep_alive_ms       an HTTP connection idle this long between requests is closed by the
                      server (Asterisk's http.conf session_keep_alive, 15000 ms by default);
                      (0, 0): kept open for ever

`PbxTiming.realistic()` is the default everywhere (SimPbx, `relay sim-pbx`, the model): it is at
least as unkind as the observed Asterisk, on purpose — the entry delay makes the addChannel race
frequent rather than 1 in 20 (as on an idle machine), so that tests exercise it.
`PbxTiming.instant()` is the old kind behaviour, for the model's own unit tests that check event
sequences step by step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

Range = tuple[float, float]

FIELDS = ("stasis_entry_ms", "command_ms", "rest_latency_ms", "event_latency_ms",
          "keep_alive_ms", "dial_ms")
MAX_MS = 3_600_000.0


def _check_range(name: str, value: Any) -> Range:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} must be [low, high] in milliseconds, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not 0.0 <= low <= high <= MAX_MS:       # NaN fails here too
        raise ValueError(f"{name} must satisfy 0 <= low <= high <= {MAX_MS:g}, got {value!r}")
    return low, high


@dataclass(frozen=True)
class PbxTiming:
    """The simulated Asterisk's delays, as (low, high) milliseconds (see the module docstring)."""

    stasis_entry_ms: Range = (1.0, 15.0)
    command_ms: Range = (0.2, 2.0)
    rest_latency_ms: Range = (0.2, 3.0)
    event_latency_ms: Range = (0.2, 3.0)
    keep_alive_ms: Range = (15000.0, 15000.0)
    dial_ms: Range = (20.0, 150.0)

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))

    @classmethod
    def realistic(cls, **overrides: Any) -> PbxTiming:
        """The default: as unkind as the real Asterisk (ranges above), with `overrides`."""
        return cls(**overrides)

    @classmethod
    def instant(cls, **overrides: Any) -> PbxTiming:
        """Everything at once and in order: the REST answer after its events, Stasis entry
        inside the request. Only for tests of the model's own event sequences."""
        values: dict[str, Any] = {name: (0.0, 0.0) for name in FIELDS}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> PbxTiming:
        if name == "realistic":
            return cls.realistic(**overrides)
        if name == "instant":
            return cls.instant(**overrides)
        raise ValueError(f"timing must be 'realistic' or 'instant', got {name!r}")

    @classmethod
    def from_dict(cls, data: Any) -> PbxTiming:
        """{"base": "realistic"|"instant", "<field>": [low, high], ...}; absent fields keep the
        base's value."""
        if not isinstance(data, dict):
            raise ValueError("timing must be an object")
        unknown = set(data) - set(FIELDS) - {"base"}
        if unknown:
            raise ValueError(f"unknown timing field(s): {sorted(unknown)}")
        overrides = {k: v for k, v in data.items() if k != "base"}
        return cls.named(data.get("base", "realistic"), **overrides)

    def replace(self, **overrides: Any) -> PbxTiming:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(overrides)
        return PbxTiming(**values)

    def as_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in FIELDS}

    @property
    def is_instant(self) -> bool:
        return all(getattr(self, name)[1] == 0.0 for name in FIELDS)


def draw_s(rng: random.Random, ms: Range) -> float:
    """A delay in seconds drawn uniformly from a (low, high) millisecond range; 0.0 for (0, 0)."""
    low, high = ms
    if high <= 0.0:
        return 0.0
    return (low + (high - low) * rng.random()) / 1000.0
