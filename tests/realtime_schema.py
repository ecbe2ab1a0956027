"""Strict validation of OpenAI Realtime (GA) events against the `openai` package's models.

Shared by the tests: every event the simulated model sends and every event relay sends is
checked here. Deliberately independent of relay's own code (it is the oracle).

- validate_server_event(event): the event must parse as one member of RealtimeServerEvent
  (discriminated by `type`, strict types); WebRTC/SIP-only events are refused (never sent over a
  WebSocket). Extra fields are allowed (the service adds some), unless extra_ok=False.
- validate_client_event(event, strict=True): the same for RealtimeClientEvent; with strict, any
  field the models do not know, at any depth, raises (the real service refuses those).
"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, Field, TypeAdapter

WEBRTC_ONLY = frozenset(("output_audio_buffer.started", "output_audio_buffer.stopped",
                         "output_audio_buffer.cleared"))


def _discriminated(alias: Any) -> TypeAdapter:
    members = get_args(get_args(alias)[0])  # strip Annotated, take the Union's members
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])


CLIENT = _discriminated(RealtimeClientEvent)
SERVER = _discriminated(RealtimeServerEvent)


class UnknownFieldError(ValueError):
    """A field the SDK models accepted only as an extra."""


def unknown_fields(model: Any, raw: Any, path: str = "") -> list[str]:
    """Dotted paths of every field of `raw` that `model` (validated from it) holds as extra."""
    found: list[str] = []
    if isinstance(model, BaseModel) and isinstance(raw, dict):
        extra = model.model_extra or {}
        for key, value in raw.items():
            where = f"{path}.{key}" if path else key
            if key in extra:
                found.append(where)
            else:
                found.extend(unknown_fields(getattr(model, key, None), value, where))
    elif isinstance(model, list) and isinstance(raw, list):
        for index, (child, value) in enumerate(zip(model, raw)):
            found.extend(unknown_fields(child, value, f"{path}[{index}]"))
    return found


def validate_server_event(event: dict, extra_ok: bool = True) -> BaseModel:
    """The SDK model of a server event; pydantic.ValidationError / ValueError otherwise."""
    if event.get("type") in WEBRTC_ONLY:
        raise ValueError(f"{event['type']} is WebRTC/SIP only, never sent over a WebSocket")
    model = SERVER.validate_python(event, strict=True)
    if not extra_ok:
        extras = unknown_fields(model, event)
        if extras:
            raise UnknownFieldError(f"{event['type']}: unknown fields {extras}")
    return model


def validate_client_event(event: dict, strict: bool = True) -> BaseModel:
    """The SDK model of a client event; with strict, unknown fields raise UnknownFieldError."""
    model = CLIENT.validate_python(event, strict=True)
    if strict:
        extras = unknown_fields(model, event)
        if extras:
            raise UnknownFieldError(f"{event.get('type')}: unknown fields {extras}")
    return model
