"""Every client event relay can send validates strictly against the openai package's models."""

import json
from pathlib import Path

import pytest
from realtime_schema import validate_client_event

from relay import realtime_events as ev
from relay.config import PACKAGE_ROOT, load_agent


def agents():
    folder = PACKAGE_ROOT / "config" / "agentConfigs"
    return [load_agent(p) for p in sorted(folder.glob("*.json"))]


@pytest.mark.parametrize("agent", agents(), ids=lambda a: a.key)
def test_session_update_of_every_bundled_agent_is_valid(agent):
    validate_client_event(ev.session_update(ev.session_config(agent)))


def test_session_update_with_tools_pcm_and_the_default_turn_detection(tmp_path: Path):
    path = tmp_path / "tooly.json"
    path.write_text(json.dumps({
        "instructions": "x", "audio_format": "audio/pcm",
        "input_transcription": None,
        "tools": [{"name": "lookup", "description": "Look up an order",
                   "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                  "required": ["id"]},
                   "webhook": {"url": "http://127.0.0.1:9/lookup"}},
                  {"name": "transfer_call",
                   "config": {"targets": {"sales": {"endpoint": "PJSIP/sales"}}}}]}))
    session = ev.session_config(load_agent(path))
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    # no turn_detection in the file: the model's server VAD (relay needs one; null is refused)
    assert session["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    assert [t["name"] for t in session["tools"]] == ["lookup", "transfer_call"]
    # relay's own fields (webhook, builtin, config) never reach the model
    assert set(session["tools"][1]) == {"type", "name", "description", "parameters"}
    validate_client_event(ev.session_update(session))


@pytest.mark.parametrize("event", [
    ev.input_audio_append(b"\xff" * 320),
    json.loads(ev.input_audio_append_json(bytes(range(256)) * 2)),    # the pre-encoded one
    ev.response_create(),
    ev.response_create("Greet the caller."),
    ev.response_cancel(),
    ev.response_cancel("resp_123"),
    ev.truncate("item_1", 1234),
    ev.user_text("The caller pressed the keys: 12"),
    ev.assistant_text("Hello, how can I help?"),
    ev.function_output("call_1", '{"ok": true}'),
    ev.session_update({"instructions": "Be brief."}),
], ids=lambda e: e["type"])
def test_each_client_event_is_valid(event):
    validate_client_event(event)


def test_the_validator_itself_refuses_an_unknown_field():
    event = ev.session_update({"instructions": "x"})
    event["session"]["input_audio_format"] = "g711_ulaw"
    with pytest.raises(ValueError):
        validate_client_event(event)


def test_the_pre_encoded_append_is_the_same_event():
    audio = bytes(range(256)) * 3
    assert json.loads(ev.input_audio_append_json(audio)) == ev.input_audio_append(audio)
