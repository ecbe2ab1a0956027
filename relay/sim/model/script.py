"""The script of the simulated model: what it says (or calls) in each turn, as plain JSON.

Owns: the script format, its validation (ValueError with the offending path) and the choice of a
reply for a turn. No session state, no I/O.

Format (every key optional)::

    {
      "greeting": REPLY,                  # when the assistant speaks first (no user turn yet)
      "rules": [                          # first match wins, tried on what the caller said
        {"match": "refund|money back",    # regex (re.search, case-insensitive) ...
         "keywords": ["refund"],          # ... and/or any of these words (case-insensitive)
         ...REPLY keys...},               # a rule with neither matches everything
      ],
      "default": REPLY,                   # no rule matched (default "I see. Please go on.")
      "phrasebook": ["I want a refund"],  # caller phrases the model can recognise in audio
      "default_transcript": "...",        # what it "heard" when no phrase is recognised
      "transcription": {                  # input transcription events (when the session asks)
        "mode": "complete",               # complete | fail | omit
        "delay_ms": 0,                    # sent this long after the commit
        "per_phrase": {"I want a refund": {"mode": "fail", "delay_ms": 0}}
      },
      "chunk_ms": 200,                    # audio per response.output_audio.delta
      "chunk_interval_ms": 5,             # wall time between deltas (faster than real time)
      "latency_ms": 0                     # wall time from response.created to the first item
    }

REPLY is a string (the text to say) or an object::

    {"say": "Let me check.",                               # spoken (audio + transcript)
     "calls": [{"name": "lookup", "arguments": {"id": 7}}],  # function calls (arguments: object
                                                           #   or JSON string)
     "then": REPLY,                                        # the reply after the outputs arrive
     "fail": {"code": "server_error", "message": "..."},   # the response fails instead
     "latency_ms": 0}                                      # overrides the script's latency

In "say"/"then" texts, "{transcript}" is replaced by what the caller said and "{output}" by the
last function_call_output received.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import ujson

DEFAULT_REPLY_TEXT = "I see. Please go on."
TRANSCRIPTION_MODES = ("complete", "fail", "omit")


@dataclass(frozen=True)
class FunctionCall:
    """A scripted function call: the tool name and its arguments as JSON text."""

    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Reply:
    """What one response does: speak, call functions, then (after the outputs) `then`."""

    say: Optional[str] = None
    calls: tuple[FunctionCall, ...] = ()
    then: Optional["Reply"] = None
    fail: Optional[dict] = None
    latency_ms: Optional[int] = None

    def render(self, transcript: str = "", output: str = "") -> Optional[str]:
        """The text to say with {transcript} and {output} filled in."""
        if self.say is None:
            return None
        return self.say.replace("{transcript}", transcript).replace("{output}", output)


@dataclass(frozen=True)
class Rule:
    """A reply for the caller turns that match a regex and/or contain a keyword."""

    reply: Reply
    pattern: Optional[re.Pattern] = None
    keywords: tuple[str, ...] = ()

    def matches(self, text: str) -> bool:
        if self.pattern is None and not self.keywords:
            return True
        if self.pattern is not None and self.pattern.search(text):
            return True
        lowered = text.lower()
        return any(k in lowered for k in self.keywords)


@dataclass(frozen=True)
class TranscriptionPlan:
    """How the input transcription of a turn goes: complete, fail or omit, after delay_ms."""

    mode: str = "complete"
    delay_ms: int = 0


@dataclass(frozen=True)
class Script:
    """A parsed script; build with Script.from_dict() (or Script() for the defaults)."""

    rules: tuple[Rule, ...] = ()
    default: Reply = Reply(say=DEFAULT_REPLY_TEXT)
    greeting: Optional[Reply] = None
    phrasebook: tuple[str, ...] = ()
    default_transcript: str = ""
    transcription: TranscriptionPlan = TranscriptionPlan()
    per_phrase: dict = field(default_factory=dict)  # phrase -> TranscriptionPlan
    chunk_ms: int = 200
    chunk_interval_ms: int = 5
    latency_ms: int = 0
    source: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "Script":
        """Parse and check a JSON-able script; ValueError naming the bad path."""
        data = data or {}
        _expect(data, dict, "script")
        _only(data, ("greeting", "rules", "default", "phrasebook", "default_transcript",
                     "transcription", "chunk_ms", "chunk_interval_ms", "latency_ms"), "script")
        rules = tuple(_rule(r, f"rules[{i}]")
                      for i, r in enumerate(_expect(data.get("rules", []), list, "rules")))
        phrasebook = tuple(_expect(p, str, f"phrasebook[{i}]") for i, p in
                           enumerate(_expect(data.get("phrasebook", []), list, "phrasebook")))
        transcription = _expect(data.get("transcription", {}), dict, "transcription")
        _only(transcription, ("mode", "delay_ms", "per_phrase"), "transcription")
        per_phrase = {
            _expect(k, str, "transcription.per_phrase"): _plan(v, f"transcription.per_phrase.{k}")
            for k, v in _expect(transcription.get("per_phrase", {}), dict,
                                "transcription.per_phrase").items()}
        return cls(
            rules=rules,
            default=_reply(data.get("default", DEFAULT_REPLY_TEXT), "default"),
            greeting=_reply(data["greeting"], "greeting") if data.get("greeting") else None,
            phrasebook=phrasebook,
            default_transcript=_expect(data.get("default_transcript", ""), str,
                                       "default_transcript"),
            transcription=_plan(transcription, "transcription"),
            per_phrase=per_phrase,
            chunk_ms=_int(data.get("chunk_ms", 200), "chunk_ms", 20),
            chunk_interval_ms=_int(data.get("chunk_interval_ms", 5), "chunk_interval_ms", 0),
            latency_ms=_int(data.get("latency_ms", 0), "latency_ms", 0),
            source=data,
        )

    def reply_for(self, transcript: str) -> Reply:
        """The reply to a caller turn (first matching rule, else the default)."""
        for rule in self.rules:
            if rule.matches(transcript):
                return rule.reply
        return self.default

    def transcription_for(self, phrase: Optional[str]) -> TranscriptionPlan:
        if phrase is not None and phrase in self.per_phrase:
            return self.per_phrase[phrase]
        return self.transcription


def _expect(value: Any, kind: Union[type, tuple], path: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"script: {path} must be {name}, got {type(value).__name__}")
    return value


def _only(data: dict, keys: tuple[str, ...], path: str) -> None:
    for key in data:
        if key not in keys:
            raise ValueError(f"script: unknown key {path}.{key}")


def _int(value: Any, path: str, minimum: int) -> int:
    _expect(value, int, path)
    if value < minimum:
        raise ValueError(f"script: {path} must be >= {minimum}")
    return value


def _plan(data: Any, path: str) -> TranscriptionPlan:
    _expect(data, dict, path)
    _only(data, ("mode", "delay_ms", "per_phrase"), path)
    mode = data.get("mode", "complete")
    if mode not in TRANSCRIPTION_MODES:
        raise ValueError(f"script: {path}.mode must be one of {TRANSCRIPTION_MODES}")
    return TranscriptionPlan(mode, _int(data.get("delay_ms", 0), f"{path}.delay_ms", 0))


_REPLY_KEYS = ("say", "calls", "then", "fail", "latency_ms")


def _reply(data: Any, path: str) -> Reply:
    if isinstance(data, str):
        return Reply(say=data)
    _expect(data, dict, path)
    _only(data, _REPLY_KEYS + ("match", "keywords"), path)
    calls = []
    for i, call in enumerate(_expect(data.get("calls", []), list, f"{path}.calls")):
        where = f"{path}.calls[{i}]"
        _expect(call, dict, where)
        _only(call, ("name", "arguments"), where)
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                ujson.loads(args)
            except ValueError:
                raise ValueError(f"script: {where}.arguments is not JSON") from None
        else:
            args = ujson.dumps(_expect(args, dict, f"{where}.arguments"))
        calls.append(FunctionCall(_expect(call.get("name"), str, f"{where}.name"), args))
    fail = data.get("fail")
    if fail is not None:
        _expect(fail, dict, f"{path}.fail")
        _only(fail, ("type", "code", "message"), f"{path}.fail")
    latency = data.get("latency_ms")
    say = data.get("say")
    reply = Reply(
        say=None if say is None else _expect(say, str, f"{path}.say"),
        calls=tuple(calls),
        then=_reply(data["then"], f"{path}.then") if data.get("then") is not None else None,
        fail=fail,
        latency_ms=None if latency is None else _int(latency, f"{path}.latency_ms", 0),
    )
    if reply.say is None and not reply.calls and reply.fail is None:
        raise ValueError(f"script: {path} says nothing (needs say, calls or fail)")
    return reply


def _rule(data: Any, path: str) -> Rule:
    _expect(data, dict, path)
    match = data.get("match")
    pattern = None
    if match is not None:
        try:
            pattern = re.compile(_expect(match, str, f"{path}.match"), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"script: {path}.match: {exc}") from None
    keywords = tuple(_expect(k, str, f"{path}.keywords[{i}]").lower() for i, k in
                     enumerate(_expect(data.get("keywords", []), list, f"{path}.keywords")))
    return Rule(reply=_reply(data, path), pattern=pattern, keywords=keywords)
