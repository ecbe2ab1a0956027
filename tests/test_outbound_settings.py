"""An agent's "outbound" settings (relay/outbound/settings.py) and the outbound section of the
settings (relay/config.py), with their errors."""

from __future__ import annotations

import json

import pytest

from relay.config import ConfigError, load_agent, load_settings
from relay.outbound.outcomes import outcome_for_cause
from relay.outbound.settings import OutboundAgentConfig, parse_outbound


def test_defaults_and_a_full_setting():
    assert parse_outbound(None) == OutboundAgentConfig(amd=False, on_machine="hangup")
    assert parse_outbound({"amd": True, "on_machine": "message", "machine_message": "Hi."}) == \
        OutboundAgentConfig(True, "message", "Hi.")


@pytest.mark.parametrize("data, message", [
    ([], "must be an object"), ({"amd": "yes"}, "outbound.amd"),
    ({"on_machine": "dance"}, "outbound.on_machine"),
    ({"on_machine": "message"}, "machine_message' is empty"),
    ({"machine_message": 3}, "machine_message"), ({"colour": 1}, "unknown key"),
])
def test_bad_agent_settings(data, message):
    with pytest.raises(ValueError, match=message):
        parse_outbound(data)


def test_an_agent_file_with_a_bad_outbound_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"instructions": "x", "outbound": {"on_machine": "dance"}}))
    with pytest.raises(ConfigError, match=r"bad.json: 'outbound.on_machine'"):
        load_agent(path)


def test_the_bundled_reminder_agent_is_an_outbound_sample():
    agent = load_settings(env={}).agent("reminder")
    assert agent.outbound.amd and agent.outbound.on_machine == "message"
    assert "{customer_name}" in agent.instructions


@pytest.mark.parametrize("dotted, value, message", [
    ("outbound.ring_timeout_s", 0, "1..600"), ("outbound.amd_context", " ", "not be empty"),
    ("outbound.amd_wait_s", 0.0, "0..300"), ("outbound.max_pending", 0, "1..100000"),
    ("outbound.answer_grace_s", 500.0, "0..120"),
])
def test_bad_outbound_settings(dotted, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, overrides={dotted: value})


def test_environment_overrides():
    settings = load_settings(env={"OUTBOUND_RING_TIMEOUT_S": "12",
                                  "OUTBOUND_CALLER_ID": "5550100",
                                  "OUTBOUND_AMD_CONTEXT": "my-amd"})
    assert settings.tree["outbound"]["ring_timeout_s"] == 12
    assert settings.tree["outbound"]["caller_id"] == "5550100"
    assert settings.tree["outbound"]["amd_context"] == "my-amd"


@pytest.mark.parametrize("cause, outcome", [
    (17, "busy"), (18, "no_answer"), (19, "no_answer"), (21, "rejected"), (34, "failed"),
    (38, "failed"), (16, "failed"), (None, "failed")])
def test_causes_before_an_answer(cause, outcome):
    assert outcome_for_cause(cause) == outcome
