"""Strict validation of the client events the simulated model receives.

Owns: deciding whether one client event is acceptable to the real service, and the exact
`error` it earns otherwise (code, message, dotted `param`, echoed `event_id`): broken JSON,
unknown event types, unknown fields at any depth (`unknown_parameter`), missing fields
(`missing_required_parameter`), wrong types (`invalid_type`) and wrong values (`invalid_value`).

Non-audio events are checked by the `openai` package's pydantic models (strict mode) and a walk of
`model_extra` (the SDK models accept extra fields; the real service does not). The hot event,
`input_audio_buffer.append` (50 per second per call), has a hand-written check instead.
No session state here: whether an event makes sense *now* is the session's business.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union, get_args

import ujson
from openai.types.realtime import RealtimeClientEvent
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from relay.tools.schema import json_type

MAX_APPEND_AUDIO_CHARS = (15 * 1024 * 1024 * 4) // 3 + 4  # 15 MiB of audio, base64-encoded
_APPEND_KEYS = frozenset(("type", "event_id", "audio"))
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


@dataclass
class EventError(Exception):
    """A client event refused: becomes the `error` object of an `error` server event."""

    code: str
    message: str
    param: Optional[str] = None
    event_id: Optional[str] = None
    type: str = "invalid_request_error"

    def as_error(self) -> dict:
        """The `error` object of the server event."""
        return {"type": self.type, "code": self.code, "message": self.message,
                "param": self.param, "event_id": self.event_id}

    def with_event_id(self, event_id: Optional[str]) -> "EventError":
        return EventError(self.code, self.message, self.param, event_id, self.type)


def _discriminated(alias: Any) -> TypeAdapter:
    members = get_args(get_args(alias)[0])  # strip Annotated, take the Union's members
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])


CLIENT_EVENTS = _discriminated(RealtimeClientEvent)


def unknown_parameter(param: str, event_id: Optional[str] = None) -> EventError:
    return EventError("unknown_parameter", f"Unknown parameter: '{param}'.", param, event_id)


def missing_parameter(param: str, event_id: Optional[str] = None) -> EventError:
    return EventError("missing_required_parameter", f"Missing required parameter: '{param}'.",
                      param, event_id)


def invalid_value(param: str, message: str, event_id: Optional[str] = None) -> EventError:
    return EventError("invalid_value", message, param, event_id)


def parse(text: Union[str, bytes]) -> dict:
    """JSON text -> the event dict; EventError(invalid_json) when it is not a JSON object."""
    try:
        obj = ujson.loads(text)
    except (ValueError, TypeError):
        raise EventError("invalid_json", "We could not parse the JSON body of your request. "
                         "(HINT: This likely means you aren't using your HTTP library correctly. "
                         "The OpenAI API expects a JSON payload.)") from None
    if type(obj) is not dict:
        raise EventError("invalid_json", "Invalid event: expected a JSON object, got "
                         f"{type(obj).__name__}.")
    return obj


_FAST_PREFIXES = ('{"type":"input_audio_buffer.append","audio":"',
                  '{"type": "input_audio_buffer.append", "audio": "')


def fast_append_audio(text: object) -> Optional[bytes]:
    """The audio of an append sent in the usual compact shape, without a JSON parse; else None.

    Only `{"type":"input_audio_buffer.append","audio":"<base64>"}` (or with ", " separators)
    qualifies: strict base64 admits no quote or backslash, so nothing else can hide inside.
    Anything else (other keys, event_id, escapes, bad base64) returns None for the full path.
    """
    if type(text) is not str or not text.endswith('"}'):
        return None
    for prefix in _FAST_PREFIXES:
        if text.startswith(prefix):
            try:
                return binascii.a2b_base64(text[len(prefix):-2], strict_mode=True)
            except (binascii.Error, ValueError):
                return None
    return None


def decode_append(event: dict) -> bytes:
    """The audio bytes of an `input_audio_buffer.append` event (the hot path: no pydantic)."""
    for key in event:
        if key not in _APPEND_KEYS:
            raise unknown_parameter(str(key), _event_id(event))
    audio = event.get("audio")
    event_id = event.get("event_id")
    if event_id is not None and type(event_id) is not str:
        raise _invalid_type("event_id", "a string", event_id, None)
    if type(audio) is not str:
        if audio is None:
            raise missing_parameter("audio", event_id)
        raise _invalid_type("audio", "a string", audio, event_id)
    if len(audio) > MAX_APPEND_AUDIO_CHARS:
        raise invalid_value("audio", "Audio content exceeds the 15 MiB limit of one event.",
                            event_id)
    try:
        return binascii.a2b_base64(audio, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid_value("audio", "Invalid 'audio'. Expected base64-encoded audio bytes.",
                            event_id) from None


def validate(event: dict) -> BaseModel:
    """Validate a non-append client event fully; the SDK model, or EventError."""
    event_id = _event_id(event)
    try:
        model = CLIENT_EVENTS.validate_python(event, strict=True)
    except ValidationError as exc:
        raise _from_validation_error(exc, event, event_id) from None
    path = _first_unknown(model, event, "")
    if path is not None:
        raise unknown_parameter(path, event_id)
    check = _SEMANTIC_CHECKS.get(event.get("type"))
    if check is not None:
        check(event, event_id)
    return model


def _event_id(event: dict) -> Optional[str]:
    event_id = event.get("event_id")
    return event_id if type(event_id) is str else None


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _first_unknown(value: Any, raw: Any, path: str) -> Optional[str]:
    """The dotted path of the first field the SDK model accepted only as an extra, or None.

    Walks the validated model and the raw input side by side, in the client's key order.
    """
    if isinstance(value, BaseModel):
        if not isinstance(raw, dict):
            return None
        extra = value.__pydantic_extra__ or {}
        for key, raw_child in raw.items():
            if key in extra:
                return _join(path, key)
            found = _first_unknown(getattr(value, key, None), raw_child, _join(path, key))
            if found is not None:
                return found
    elif isinstance(value, list) and isinstance(raw, list):
        for index, (child, raw_child) in enumerate(zip(value, raw)):
            found = _first_unknown(child, raw_child, _join(path, index))
            if found is not None:
                return found
    return None


def _clean_loc(loc: tuple, raw: Any, missing: bool) -> str:
    """A pydantic error location as the service's dotted param, dropping union member tags."""
    path, node = "", raw
    last = len(loc) - 1
    for index, seg in enumerate(loc):
        if isinstance(node, dict) and isinstance(seg, str) and seg in node:
            path, node = _join(path, seg), node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            path, node = _join(path, seg), node[seg]
        elif missing and index == last:
            path = _join(path, seg)
    return path


# A value's JSON type, as the real service's error messages name it.
_DESCRIBED = {"null": "null", "boolean": "a boolean", "integer": "an integer",
              "number": "a decimal", "string": "a string", "array": "an array",
              "object": "an object"}


def _describe(value: Any) -> str:
    kind = json_type(value)
    return _DESCRIBED.get(kind, kind)


_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a decimal",
             "bool_type": "a boolean", "list_type": "an array", "dict_type": "an object",
             "model_type": "an object", "model_attributes_type": "an object",
             "int_from_float": "an integer", "float_parsing": "a decimal",
             "int_parsing": "an integer"}


def _invalid_type(param: str, expected: str, value: Any, event_id: Optional[str]) -> EventError:
    return EventError("invalid_type", f"Invalid type for '{param}': expected {expected}, but got "
                      f"{_describe(value)} instead.", param, event_id)


def _from_validation_error(exc: ValidationError, raw: dict, event_id: Optional[str]) -> EventError:
    errors = exc.errors(include_url=False)
    # In a union every member reports; the member that got furthest (deepest path) is the one
    # the client meant.
    ranked = []
    for position, err in enumerate(errors):
        missing = err["type"] in ("missing", "union_tag_not_found")
        param = _clean_loc(err["loc"], raw, missing)
        ranked.append((-param.count(".") - param.count("["), position, param, err))
    ranked.sort(key=lambda r: (r[0], r[1]))
    _, _, param, err = ranked[0]
    kind, value = err["type"], err.get("input")
    if kind == "union_tag_not_found":
        return missing_parameter(_join(param, "type"), event_id)
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        expected = (err.get("ctx") or {}).get("expected_tags", "")
        return invalid_value(_join(param, "type"), f"Invalid value: '{tag}'. Supported values "
                             f"are: {expected}.", event_id)
    if kind == "missing":
        return missing_parameter(param, event_id)
    if kind in _EXPECTED:
        return _invalid_type(param, _EXPECTED[kind], value, event_id)
    if kind in ("literal_error", "enum"):
        expected = (err.get("ctx") or {}).get("expected", "")
        return invalid_value(param, f"Invalid value: '{value}'. Supported values are: "
                             f"{expected}.", event_id)
    return invalid_value(param, f"Invalid value for '{param}': {err['msg']}.", event_id)


# ---- checks the SDK schema cannot express -------------------------------------------------------

def _check_format(fmt: Any, param: str, event_id: Optional[str]) -> None:
    if not isinstance(fmt, dict):
        return
    kind = fmt.get("type")
    if kind is None:
        raise missing_parameter(f"{param}.type", event_id)
    if kind == "audio/pcm" and "rate" not in fmt:
        raise missing_parameter(f"{param}.rate", event_id)


def _check_modalities(modalities: Any, param: str, event_id: Optional[str]) -> None:
    if modalities is not None and len(modalities) != 1:
        raise invalid_value(param, "Invalid modalities: output_modalities must be ['audio'] or "
                            "['text'], not both and not empty.", event_id)


def _check_voice(voice: Any, param: str, event_id: Optional[str]) -> None:
    if isinstance(voice, str) and voice not in VOICES:
        supported = ", ".join(f"'{v}'" for v in VOICES)
        raise invalid_value(param, f"Invalid value: '{voice}'. Supported values are: "
                            f"{supported}.", event_id)


def _check_session_update(event: dict, event_id: Optional[str]) -> None:
    session = event["session"]
    if session.get("type") != "realtime":
        raise invalid_value("session.type", "Invalid value: 'transcription'. The simulated model "
                            "serves realtime sessions only.", event_id)
    _check_modalities(session.get("output_modalities"), "session.output_modalities", event_id)
    audio = session.get("audio") or {}
    audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
    _check_format(audio_in.get("format"), "session.audio.input.format", event_id)
    _check_format(audio_out.get("format"), "session.audio.output.format", event_id)
    _check_voice(audio_out.get("voice"), "session.audio.output.voice", event_id)
    speed = audio_out.get("speed")
    if speed is not None and not 0.25 <= speed <= 1.5:
        raise invalid_value("session.audio.output.speed", f"Invalid 'session.audio.output.speed': "
                            f"expected a value between 0.25 and 1.5, got {speed}.", event_id)
    td = audio_in.get("turn_detection")
    if isinstance(td, dict):
        base = "session.audio.input.turn_detection"
        threshold = td.get("threshold")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise invalid_value(f"{base}.threshold", f"Invalid '{base}.threshold': expected a "
                                f"value between 0 and 1, got {threshold}.", event_id)
        for key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
            value = td.get(key)
            if value is not None and value < 0:
                raise invalid_value(f"{base}.{key}", f"Invalid '{base}.{key}': expected a "
                                    f"non-negative integer, got {value}.", event_id)
    _check_max_tokens(session.get("max_output_tokens"), "session.max_output_tokens", event_id)


def _check_max_tokens(value: Any, param: str, event_id: Optional[str]) -> None:
    if isinstance(value, int) and not 1 <= value <= 4096:
        raise invalid_value(param, f"Invalid '{param}': integer must be between 1 and 4096, or "
                            f"'inf'.", event_id)


def _check_item(item: dict, param: str, event_id: Optional[str]) -> None:
    if item.get("type") != "message":
        return
    role = item.get("role")
    for index, part in enumerate(item.get("content") or []):
        where = f"{param}.content[{index}]"
        kind = part.get("type")
        if kind is None:
            raise missing_parameter(f"{where}.type", event_id)
        allowed = {"system": ("input_text",), "user": ("input_text", "input_audio", "input_image"),
                   "assistant": ("output_text", "output_audio")}[role]
        if kind not in allowed:
            raise invalid_value(f"{where}.type", f"Invalid value: '{kind}'. Supported values "
                                f"for {role} messages are: {', '.join(allowed)}.", event_id)
        needed = {"input_text": "text", "output_text": "text", "input_audio": "audio",
                  "input_image": "image_url", "output_audio": "audio"}[kind]
        if part.get(needed) is None:
            raise missing_parameter(f"{where}.{needed}", event_id)


def _check_item_create(event: dict, event_id: Optional[str]) -> None:
    _check_item(event["item"], "item", event_id)


def _check_response_create(event: dict, event_id: Optional[str]) -> None:
    response = event.get("response") or {}
    _check_modalities(response.get("output_modalities"), "response.output_modalities", event_id)
    output = (response.get("audio") or {}).get("output") or {}
    _check_format(output.get("format"), "response.audio.output.format", event_id)
    _check_voice(output.get("voice"), "response.audio.output.voice", event_id)
    _check_max_tokens(response.get("max_output_tokens"), "response.max_output_tokens", event_id)
    for index, item in enumerate(response.get("input") or []):
        _check_item(item, f"response.input[{index}]", event_id)


def _check_truncate(event: dict, event_id: Optional[str]) -> None:
    if event["audio_end_ms"] < 0:
        raise invalid_value("audio_end_ms", "Invalid 'audio_end_ms': expected a non-negative "
                            "integer.", event_id)


_SEMANTIC_CHECKS = {
    "session.update": _check_session_update,
    "conversation.item.create": _check_item_create,
    "response.create": _check_response_create,
    "conversation.item.truncate": _check_truncate,
}
