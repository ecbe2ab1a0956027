"""The call watchdog's state machine and the agent's watchdog settings, with the time passed in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.config import ConfigError, load_agent
from relay.watchdog import (
    DEFAULT_APOLOGY_SOUND,
    DEFAULT_HOLD_SOUND,
    GIVEUP,
    HOLD,
    RETRY,
    Watchdog,
    WatchdogConfig,
    parse_watchdog,
)

CONFIG = WatchdogConfig(timeout_s=4.0, hold_s=1.5, give_up_s=10.0)


def test_no_audio_after_a_turn_retries_once_then_holds_then_gives_up():
    dog = Watchdog(CONFIG)
    dog.expect(100.0, "the caller's turn")
    assert dog.poll(103.9) is None
    assert dog.next_deadline() == 104.0
    assert dog.poll(104.0) == RETRY
    assert dog.poll(105.4) is None
    assert dog.poll(105.5) == HOLD
    assert dog.poll(115.4) is None
    assert dog.poll(115.5) == GIVEUP
    assert dog.poll(200.0) is None                   # once
    assert (dog.retries, dog.holds, dog.gave_up) == (1, 1, True)
    dog.expect(300.0, "the caller's turn")          # nothing after giving up
    assert dog.poll(400.0) is None and dog.state == "gave_up"


def test_model_audio_ends_the_wait_at_any_step_and_a_new_turn_starts_afresh():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "the caller's turn")
    assert dog.poll(4.0) == RETRY
    assert dog.satisfied("audio") is True
    assert dog.state == "idle" and dog.poll(60.0) is None
    dog.expect(60.0, "a response was asked for")
    assert dog.poll(63.0) is None and dog.poll(64.0) == RETRY     # a new wait, a new retry
    assert dog.retries == 2


def test_a_wait_under_way_keeps_its_start():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "the caller's turn")
    dog.expect(3.0, "a response was asked for")       # the server's own response.create
    assert dog.poll(4.0) == RETRY and dog.reason == "the caller's turn"


def test_the_caller_speaking_again_ends_the_wait():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "the caller's turn")
    dog.cancel()
    assert dog.poll(30.0) is None and not dog.waiting


def test_waiting_for_the_session_holds_without_a_retry_and_ready_ends_it():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "model socket lost", until="ready")
    assert dog.satisfied("audio") is True                 # audio implies ready
    dog.expect(10.0, "model socket lost", until="ready")
    assert dog.poll(14.0) == HOLD                         # nothing to ask for again
    assert dog.poll(24.0) == GIVEUP
    other = Watchdog(CONFIG)
    other.expect(0.0, "the call began", until="ready")
    assert other.satisfied("ready") is True and not other.waiting


def test_ready_does_not_end_a_wait_for_audio_and_audio_upgrades_a_wait_for_ready():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "model socket lost", until="ready")
    dog.expect(1.0, "the caller's turn")                  # now the caller wants an answer
    assert dog.until == "audio" and dog.since == 0.0
    assert dog.satisfied("ready") is False and dog.waiting
    assert dog.poll(4.0) == RETRY


def test_give_up_at_once_and_a_disabled_watchdog():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "the caller's turn")
    assert dog.give_up() is True and dog.give_up() is False
    assert dog.poll(100.0) is None
    off = Watchdog(WatchdogConfig(enabled=False))
    off.expect(0.0, "the caller's turn")
    assert not off.waiting and off.poll(1000.0) is None


def test_the_view_for_the_dashboard():
    dog = Watchdog(CONFIG)
    dog.expect(0.0, "the caller's turn")
    dog.poll(4.0)
    assert dog.view() == {"state": "retried", "waiting_for": "audio",
                          "reason": "the caller's turn", "retries": 1, "holds": 0,
                          "gave_up": False}


# the agent's watchdog block ------------------------------------------------------------------

def test_defaults_and_a_full_block(tmp_path: Path):
    assert parse_watchdog(None, tmp_path) == WatchdogConfig()
    assert WatchdogConfig().hold_sound == DEFAULT_HOLD_SOUND
    assert WatchdogConfig().apology_sound == DEFAULT_APOLOGY_SOUND
    (tmp_path / "sounds").mkdir()
    hold = tmp_path / "sounds" / "hold.wav"
    hold.write_bytes(Path(DEFAULT_HOLD_SOUND).read_bytes())
    config = parse_watchdog({"timeout_s": 3, "hold_s": 0, "give_up_s": 8,
                             "hold_sound": "sounds/hold.wav",
                             "ending": {"endpoint": "PJSIP/desk"}}, tmp_path)
    assert (config.timeout_s, config.hold_s, config.give_up_s) == (3.0, 0.0, 8.0)
    assert config.hold_sound == str(hold) and config.apology_sound == DEFAULT_APOLOGY_SOUND
    assert config.describe_ending() == "transfer to PJSIP/desk"
    located = parse_watchdog({"ending": {"context": "ops", "extension": "9"}}, tmp_path)
    assert located.ending == {"context": "ops", "extension": "9", "priority": 1}
    assert parse_watchdog({"ending": "continue"}, tmp_path).describe_ending() == \
        "continue in the dialplan"


@pytest.mark.parametrize("block, problem", [
    ([], "must be an object"),
    ({"timeout": 3}, "unknown key"),
    ({"timeout_s": 0.1}, "timeout_s"),
    ({"give_up_s": "10"}, "give_up_s"),
    ({"enabled": "yes"}, "enabled"),
    ({"hold_sound": "missing.wav"}, "no such file"),
    ({"ending": "explode"}, "ending"),
    ({"ending": {"endpoint": "desk"}}, "TECH/RESOURCE"),
    ({"ending": {"endpoint": "PJSIP/a", "context": "x"}}, "either"),
    ({"ending": {"context": "ops"}}, "extension"),
    ({"ending": {"context": "ops", "extension": "1", "priority": 0}}, "priority"),
])
def test_bad_blocks_say_what_is_wrong(tmp_path: Path, block, problem):
    with pytest.raises(ValueError, match=problem):
        parse_watchdog(block, tmp_path)


def test_an_agent_file_with_a_watchdog_and_one_with_a_sound_relay_cannot_play(tmp_path: Path):
    path = tmp_path / "desk.json"
    path.write_text(json.dumps({"instructions": "x", "watchdog": {
        "timeout_s": 2.5, "ending": "hangup"}}))
    agent = load_agent(path)
    assert agent.watchdog.timeout_s == 2.5 and agent.watchdog.ending == "hangup"
    (tmp_path / "stereo.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    path.write_text(json.dumps({"instructions": "x", "watchdog": {
        "apology_sound": "stereo.wav"}}))
    with pytest.raises(ConfigError, match="stereo.wav"):
        load_agent(path)
    path.write_text(json.dumps({"instructions": "x", "watchdog": {"timeout_s": 99}}))
    with pytest.raises(ConfigError, match=r"desk\.json.*watchdog\.timeout_s"):
        load_agent(path)


@pytest.mark.parametrize("turn_detection, problem", [
    (None, "cannot be turned off"),
    ({"type": "server_vad", "create_response": False}, "create_response cannot be false"),
    ({"type": "push"}, "server_vad or semantic_vad"),
])
def test_an_agent_that_would_be_deaf_is_refused(tmp_path: Path, turn_detection, problem):
    path = tmp_path / "deaf.json"
    path.write_text(json.dumps({"instructions": "x", "turn_detection": turn_detection}))
    with pytest.raises(ConfigError, match=problem):
        load_agent(path)
