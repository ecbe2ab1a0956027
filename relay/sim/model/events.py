"""Server event shapes and identifiers of the simulated model.

Owns: the ids of one session (events, items, responses, calls: deterministic, shaped like the
real service's), the default GA session object, and the shape of the objects many events carry
(items, responses, usage, rate limits, errors). Every builder returns a fresh dict, so an event
queued for sending never changes afterwards. No state besides the id counters, no I/O.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Optional

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_INSTRUCTIONS = ("Your knowledge cutoff is 2023-10. You are a helpful, witty, and "
                        "friendly AI.")
DEFAULT_SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                      "silence_duration_ms": 500, "idle_timeout_ms": None,
                      "create_response": True, "interrupt_response": True}
DEFAULT_SEMANTIC_VAD = {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                        "interrupt_response": True}
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_session_numbers = itertools.count(1)


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]     # two base-62 digits, "00".."zz"


def _b62(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 3844)
        out = _PAIRS[r] + out
    return out.lstrip("0").rjust(width, "0")


class Ids:
    """The identifiers of one session: `event_…`, `item_…`, `resp_…`, `call_…`, `sess_…`."""

    __slots__ = ("tag", "_counter")

    def __init__(self, number: Optional[int] = None) -> None:
        self.tag = "Sim" + _b62(next(_session_numbers) if number is None else number, 5)
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self.tag}{_b62(next(self._counter), 8)}"

    @property
    def session(self) -> str:
        return f"sess_{self.tag}"

    @property
    def conversation(self) -> str:
        return f"conv_{self.tag}"


def default_session(session_id: str, model: str, expires_at: int) -> dict:
    """The session object of session.created: what the service uses before any update."""
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
        "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf",
        "tracing": None, "truncation": "auto", "prompt": None, "expires_at": expires_at,
        "include": None,
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                      "noise_reduction": None, "turn_detection": dict(DEFAULT_SERVER_VAD)},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin",
                       "speed": 1.0},
        },
    }


def error_object(code: Optional[str], message: str, param: Optional[str] = None,
                 event_id: Optional[str] = None, type_: str = "invalid_request_error") -> dict:
    return {"type": type_, "code": code, "message": message, "param": param,
            "event_id": event_id}


_ATOMS = frozenset((str, int, float, bool, type(None)))


def snapshot(obj: Any) -> Any:
    """A deep copy of an item or session, for an event queued while the original lives on
    (JSON-shaped: dicts and lists are copied, strings and numbers shared, anything else
    deep-copied)."""
    kind = type(obj)
    if kind is dict:
        return {key: snapshot(value) for key, value in obj.items()}
    if kind is list:
        return [snapshot(value) for value in obj]
    if kind in _ATOMS:
        return obj
    return copy.deepcopy(obj)


def user_audio_item(item_id: str) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": None}]}


def assistant_item(item_id: str) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []}


def function_call_item(item_id: str, call_id: str, name: str) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""}


def response_object(response_id: str, conversation_id: Optional[str], modalities: list,
                    fmt: dict, voice: Any, max_output_tokens: Any,
                    metadata: Optional[dict]) -> dict:
    return {"object": "realtime.response", "id": response_id, "status": "in_progress",
            "status_details": None, "output": [], "conversation_id": conversation_id,
            "output_modalities": list(modalities), "max_output_tokens": max_output_tokens,
            "audio": {"output": {"format": dict(fmt), "voice": voice}}, "usage": None,
            "metadata": metadata}


def usage(input_tokens: int, audio_ms: int, text: str) -> dict:
    """Plausible token counts: 1 audio token per 50 ms of speech, 1 text token per 4 chars."""
    audio_tokens = audio_ms // 50
    text_tokens = max(1, len(text) // 4) if text else 0
    output = audio_tokens + text_tokens
    return {"total_tokens": input_tokens + output, "input_tokens": input_tokens,
            "output_tokens": output,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0,
                                    "image_tokens": 0, "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0,
                                                              "audio_tokens": 0,
                                                              "image_tokens": 0}},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens}}


def rate_limits() -> list:
    return [{"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}]
