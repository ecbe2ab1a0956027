"""The effective configuration of one simulated session, and how session.update changes it.

Owns: applying an update (only the fields sent change; nested objects merge; formats, tools,
lists and scalars are replaced; `null` clears), filling turn_detection defaults, the rules an
update must obey given the session's history (voice fixed once audio was produced, model fixed),
and reading the effective values the session needs. No events, no I/O.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from relay.sim.model.events import DEFAULT_SEMANTIC_VAD, DEFAULT_SERVER_VAD
from relay.sim.model.validation import EventError, invalid_value

_REPLACED = frozenset(("format", "tools", "tool_choice", "prompt", "tracing", "truncation",
                       "include", "output_modalities", "reasoning"))


def apply_update(current: dict, update: dict, audio_produced: bool,
                 event_id: Optional[str] = None) -> dict:
    """The new effective session after `update` (a validated session.update `session`).

    EventError when the update is refused as a whole.
    """
    out_update = (update.get("audio") or {}).get("output") or {}
    voice = out_update.get("voice")
    if "voice" in out_update and voice != output_voice(current) and audio_produced:
        raise EventError("cannot_update_voice", "Cannot update a conversation's voice if "
                         "assistant audio is present.", "session.audio.output.voice", event_id)
    if update.get("model") is not None and update["model"] != current.get("model"):
        raise invalid_value("session.model", "Cannot update a session's model with "
                            "session.update; open a new session instead.", event_id)
    new = copy.deepcopy(current)
    _merge_into(new, update)
    return normalise(new)


def _merge_into(target: dict, update: dict) -> None:
    for key, value in update.items():
        old = target.get(key)
        if (isinstance(value, dict) and isinstance(old, dict) and key not in _REPLACED
                and not (key == "turn_detection" and value.get("type") != old.get("type"))):
            _merge_into(old, value)
        else:
            target[key] = copy.deepcopy(value)


def normalise(config: dict) -> dict:
    """Fill the defaults the service fills (turn_detection settings)."""
    audio_in = config.setdefault("audio", {}).setdefault("input", {})
    td = audio_in.get("turn_detection")
    if isinstance(td, dict):
        defaults = DEFAULT_SEMANTIC_VAD if td.get("type") == "semantic_vad" \
            else DEFAULT_SERVER_VAD
        audio_in["turn_detection"] = {**defaults, **td}
    return config


def turn_detection(config: dict) -> Optional[dict]:
    return ((config.get("audio") or {}).get("input") or {}).get("turn_detection")


def input_format(config: dict) -> dict:
    return ((config.get("audio") or {}).get("input") or {}).get("format") or \
        {"type": "audio/pcm", "rate": 24000}


def output_format(config: dict) -> dict:
    return ((config.get("audio") or {}).get("output") or {}).get("format") or \
        {"type": "audio/pcm", "rate": 24000}


def output_voice(config: dict) -> Any:
    return ((config.get("audio") or {}).get("output") or {}).get("voice")


def transcription(config: dict) -> Optional[dict]:
    return ((config.get("audio") or {}).get("input") or {}).get("transcription")
