"""Fault injection for the simulated PBX: what goes wrong on purpose, how often, and matching.

Owns: the Fault description (JSON-able: the same dict in Python and over `POST /sim/faults`),
the list of faults added (kept after they are used up, with how often each fired) and the
decisions: which request fault a REST request meets, whether an event is dropped or what it is
replaced with. Performing a fault (sleeping, answering, closing a socket) is the server's job
(relay.sim.pbx.server); no sockets here.

Kinds and their fields (`times`: how many times it fires, default 1, 0 = for ever):

  respond      {"kind": "respond", "method": "POST", "path": "^/bridges/[^/]+/addChannel$",
                "status": 503, "message": "..."}: answer `status` with {"message": ...} WITHOUT
               applying the operation.
  late         {"kind": "late", "method": "POST", "path": "^/channels/externalMedia$",
                "delay_s": 3.0}: hold the request `delay_s` seconds, THEN apply it and answer
               (a client that gave up meanwhile finds the resource created afterwards).
  after        {"kind": "after", "method": "DELETE", "path": "^/channels/", "status": 500}:
               apply the operation, then answer `status`: it happened, the client hears an error.
  slow_answer  {"kind": "slow_answer", "method": "DELETE", "path": "^/channels/",
                "delay_s": 0.5}: apply the operation and send its events, THEN hold the answer
               `delay_s` seconds (a loaded Asterisk: the client reads the operation's own events
               before its answer).
  drop_event   {"kind": "drop_event", "event_type": "StasisStart", "app": "voicebot",
                "channel": "^em-"}: matching events are not delivered (`app` and `channel`
               optional; `channel` is a regex searched in the event's channel id or name, or
               in the Dial event's peer; `event_type` optional: any type).
  mangle_event {"kind": "mangle_event", "event_type": "StasisStart",
                "set": {"channel": "garbage", "channel.id": "other"}}: matching events are
               delivered with these fields replaced (dotted names reach into objects; the other
               apps' copies are not touched). Same matching as drop_event.
  inject_event {"kind": "inject_event", "app": "voicebot", "event": {...} or "raw text"}:
               at once, push that frame, as given, to the events WebSocket serving `app`.
  drop_events_connection {"kind": "drop_events_connection", "app": "voicebot",
                "abrupt": false}: at once, close the events WebSocket serving `app` (a close
               frame; `abrupt`: the TCP connection is cut instead). Its apps go inactive; the
               client may reconnect.

Request faults match `method` (absent: any) and `path`, a regex searched in the path relative
to /ari (absent: any path), e.g. `^/bridges/[^/]+$`; the first active match fires. They apply to
the events WebSocket's opening too (method GET, path `/events`): `respond` refuses it, `late`
answers the handshake late; `after` never matches it. The two immediate kinds are performed
when added and listed with `fired` = the number of connections they reached.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST_KINDS = ("respond", "late", "after", "slow_answer")
DELAYED_KINDS = ("late", "slow_answer")
EVENTS_SOCKET_KINDS = ("respond", "late")   # the request kinds the events WebSocket meets
EVENT_KINDS = ("drop_event", "mangle_event")
ACTION_KINDS = ("inject_event", "drop_events_connection")
KINDS = REQUEST_KINDS + EVENT_KINDS + ACTION_KINDS
MAX_DELAY_S = 600.0


@dataclass(eq=False)
class Fault:
    """One fault (see the module docstring for the kinds and their fields)."""

    kind: str
    method: str | None = None
    path: str | None = None
    status: int = 500
    message: str = "Simulated failure"
    delay_s: float = 0.0
    event_type: str | None = None
    app: str | None = None
    channel: str | None = None
    set: dict = field(default_factory=dict)
    event: Any = None
    abrupt: bool = False
    times: int = 1
    id: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.times, bool) or not isinstance(self.times, int) or self.times < 0:
            raise ValueError("times must be a non-negative integer (0: for ever)")
        for name in ("method", "path", "event_type", "app", "channel"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
        if self.method is not None:
            self.method = self.method.upper()
            if self.method == "*":
                self.method = None
        try:
            self._path = re.compile(self.path) if self.path is not None else None
            self._channel = re.compile(self.channel) if self.channel is not None else None
        except re.error as exc:
            raise ValueError(f"bad regex: {exc}") from None
        if isinstance(self.status, bool) or not isinstance(self.status, int) \
                or not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if not isinstance(self.message, str):
            raise ValueError("message must be a string")
        if isinstance(self.delay_s, bool) or not isinstance(self.delay_s, (int, float)) \
                or not 0 <= self.delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be a number of seconds in [0, {MAX_DELAY_S:g}]")
        if self.kind in DELAYED_KINDS and self.delay_s <= 0:
            raise ValueError(f"a {self.kind} fault needs delay_s > 0")
        if not isinstance(self.set, dict) or (self.kind == "mangle_event" and not self.set):
            raise ValueError("a mangle_event fault needs set: {field: value, ...}")
        if self.kind in ACTION_KINDS:
            if not self.app:
                raise ValueError(f"{self.kind} needs app")
            if self.kind == "inject_event" and not isinstance(self.event, (dict, list, str)):
                raise ValueError("inject_event needs event: an object, or a text frame")
            self.times = 1

    @classmethod
    def from_dict(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        if "kind" not in data:
            raise ValueError(f"a fault needs a kind, one of {KINDS}")
        unknown = (set(data) - set(cls.__dataclass_fields__)) | ({"id", "fired"} & set(data))
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        return cls(**data)

    @property
    def active(self) -> bool:
        """Still matching requests or events (the immediate kinds never are: done when added)."""
        if self.kind in ACTION_KINDS:
            return False
        return self.times == 0 or self.fired < self.times

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "times": self.times,
                               "fired": self.fired, "active": self.active}
        if self.kind in REQUEST_KINDS:
            out.update(method=self.method, path=self.path)
            if self.kind in DELAYED_KINDS:
                out["delay_s"] = self.delay_s
            else:
                out.update(status=self.status, message=self.message)
        elif self.kind in EVENT_KINDS:
            out.update(event_type=self.event_type, app=self.app, channel=self.channel)
            if self.kind == "mangle_event":
                out["set"] = self.set
        else:
            out["app"] = self.app
            if self.kind == "inject_event":
                out["event"] = self.event
            else:
                out["abrupt"] = self.abrupt
        return out

    # ------------------------------------------------------------------ matching
    def matches_request(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self._path is None or self._path.search(path) is not None))

    def matches_event(self, app: str, event: dict) -> bool:
        if self.event_type is not None and event.get("type") != self.event_type:
            return False
        if self.app is not None and self.app != app:
            return False
        if self._channel is not None:
            ch = event.get("channel")
            if not isinstance(ch, dict):
                ch = event.get("peer")
            if not isinstance(ch, dict):
                return False
            search = self._channel.search
            if not (search(str(ch.get("id", ""))) or search(str(ch.get("name", "")))):
                return False
        return True


def _mangled(event: dict, changes: dict) -> dict:
    """A copy of `event` with `changes` applied ("a.b" reaches into objects, copying them)."""
    out = dict(event)
    for key, value in changes.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


class Faults:
    """The faults of one simulated PBX: added, matched, counted."""

    def __init__(self, on_action: Callable[[Fault], int] | None = None) -> None:
        self.on_action = on_action          # performs inject_event / drop_events_connection
        self.all: list[Fault] = []
        self.request_rules: list[Fault] = []
        self.event_rules: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault | dict | None = None, /, **fields: Any) -> Fault:
        """Add a fault: a Fault, a dict, or its fields as keywords (kind=..., ...). The immediate
        kinds (inject_event, drop_events_connection) are performed now."""
        if fault is None:
            fault = Fault.from_dict(fields)
        elif isinstance(fault, dict):
            fault = Fault.from_dict({**fault, **fields})
        elif fields:
            raise TypeError("give a Fault, a dict, or keyword fields, not a Fault and fields")
        fault.id = next(self._ids)
        if fault.kind in ACTION_KINDS:
            if self.on_action is None:
                raise ValueError(f"{fault.kind} needs a running SimPbx")
            fault.fired = self.on_action(fault)
            fault.times = 1
        elif fault.kind in REQUEST_KINDS:
            self.request_rules.append(fault)
        else:
            self.event_rules.append(fault)
        self.all.append(fault)
        return fault

    def remove(self, fault_id: int) -> bool:
        fault = next((f for f in self.all if f.id == fault_id), None)
        if fault is None:
            return False
        self.all.remove(fault)
        for rules in (self.request_rules, self.event_rules):
            if fault in rules:
                rules.remove(fault)
        return True

    def clear(self) -> None:
        self.all.clear()
        self.request_rules.clear()
        self.event_rules.clear()

    def list(self) -> list[dict]:
        return [f.as_dict() for f in self.all]

    def _fire(self, fault: Fault, rules: list[Fault]) -> None:
        fault.fired += 1
        if not fault.active:
            rules.remove(fault)

    def match_request(self, method: str, path: str, events: bool = False) -> Fault | None:
        """The request fault this request meets (counted as fired), or None. `path` is relative
        to /ari; `events`: the events WebSocket's opening (EVENTS_SOCKET_KINDS apply)."""
        for fault in self.request_rules:
            if events and fault.kind not in EVENTS_SOCKET_KINDS:
                continue
            if fault.matches_request(method, path):
                self._fire(fault, self.request_rules)
                return fault
        return None

    def on_event(self, app: str, event: dict) -> dict | None:
        """The event as `app` should get it: None when dropped, a changed copy when mangled."""
        out = event
        for fault in list(self.event_rules):
            if fault.matches_event(app, out):
                self._fire(fault, self.event_rules)
                if fault.kind == "drop_event":
                    return None
                out = _mangled(out, fault.set)
        return out
