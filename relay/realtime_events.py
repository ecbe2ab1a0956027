"""Client events of the OpenAI Realtime GA protocol, built as plain dicts.

Owns: the exact shape of every event relay sends to the model (see
../shared/reference/openai-realtime/FACTS.md). Nothing else in relay writes a client event by
hand, so the tests that validate these against the `openai` package's models cover them all.
No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from typing import Any, Optional

from relay.config import AgentConfig

_event_ids = itertools.count(1)


def _event_id() -> str:
    return f"relay_{next(_event_ids)}"


def audio_format(name: str) -> dict:
    """The GA format object for audio/pcmu, audio/pcma or audio/pcm (24 kHz)."""
    if name == "audio/pcm":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": name}


def function_tools(agent: AgentConfig) -> list[dict]:
    """The function schemas the model sees, from the agent's tool declarations."""
    tools = []
    for tool in agent.tools:
        spec: dict[str, Any] = {"type": "function", "name": tool["name"]}
        if tool.get("description"):
            spec["description"] = tool["description"]
        spec["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        tools.append(spec)
    return tools


def function_tools_named(agent: AgentConfig, names: list[str]) -> list[dict]:
    """The function schemas of the named tools of an agent, in the order given."""
    by_name = {tool["name"]: tool for tool in function_tools(agent)}
    return [by_name[name] for name in names]


def session_config(agent: AgentConfig, instructions: Optional[str] = None) -> dict:
    """The full `session` object for session.update, from an agent config."""
    audio_input: dict[str, Any] = {
        "format": audio_format(agent.audio_format),
        "turn_detection": agent.turn_detection,
    }
    if agent.input_transcription:
        audio_input["transcription"] = dict(agent.input_transcription)
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": agent.instructions if instructions is None else instructions,
        "audio": {
            "input": audio_input,
            "output": {"format": audio_format(agent.audio_format), "voice": agent.voice},
        },
    }
    tools = function_tools(agent)
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    return session


def session_update(session: dict) -> dict:
    """session.update with the fields to change (`session.type` is always required)."""
    return {"type": "session.update", "event_id": _event_id(),
            "session": {"type": "realtime", **session}}


def input_audio_append(audio: bytes) -> dict:
    return {"type": "input_audio_buffer.append",
            "audio": base64.b64encode(audio).decode("ascii")}


_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'


def input_audio_append_json(audio: bytes) -> bytes:
    """input_audio_append(audio) already JSON-encoded (base64 needs no escaping). Relay sends
    this event 25-50 times a second per call through relay/_ws.pyx append_frame, which writes
    these same bytes straight into the WebSocket frame (tests/test_ws_frames.py compares them)."""
    return _APPEND_HEAD + binascii.b2a_base64(audio, newline=False) + b'"}'


def response_create(instructions: Optional[str] = None) -> dict:
    event: dict[str, Any] = {"type": "response.create", "event_id": _event_id()}
    if instructions:
        event["response"] = {"instructions": instructions}
    return event


def response_cancel(response_id: Optional[str] = None) -> dict:
    event: dict[str, Any] = {"type": "response.cancel", "event_id": _event_id()}
    if response_id:
        event["response_id"] = response_id
    return event


def truncate(item_id: str, audio_end_ms: int) -> dict:
    return {"type": "conversation.item.truncate", "event_id": _event_id(),
            "item_id": item_id, "content_index": 0, "audio_end_ms": int(audio_end_ms)}


def user_text(text: str) -> dict:
    """A user message (DTMF results, injected prompts)."""
    return {"type": "conversation.item.create", "event_id": _event_id(),
            "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": text}]}}


def system_text(text: str) -> dict:
    """A system message (context relay adds: a tool's result after a socket was replaced)."""
    return {"type": "conversation.item.create", "event_id": _event_id(),
            "item": {"type": "message", "role": "system",
                     "content": [{"type": "input_text", "text": text}]}}


def assistant_text(text: str) -> dict:
    """An assistant message replayed as text (history after a reconnect)."""
    return {"type": "conversation.item.create", "event_id": _event_id(),
            "item": {"type": "message", "role": "assistant",
                     "content": [{"type": "output_text", "text": text}]}}


def function_output(call_id: str, output: str) -> dict:
    return {"type": "conversation.item.create", "event_id": _event_id(),
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}
