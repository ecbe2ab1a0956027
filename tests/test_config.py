"""Settings: defaults, environment overrides, and errors that say where and what."""

import json

import pytest

from relay.config import ConfigError, load_agent, load_settings


def test_defaults_load_and_name_an_active_agent():
    settings = load_settings(env={})
    assert settings.get("ari.app") == "relay"
    assert settings.agent().key == settings.get("agent.active")


def test_environment_overrides_with_the_known_names():
    settings = load_settings(env={
        "ARI_URL": "http://10.0.0.5:8088/ari", "OPENAI_API_KEY": "sk-test",
        "REALTIME_MODEL": "gpt-realtime-2", "RTP_PORT_MIN": "41000", "RTP_PORT_MAX": "41010",
        "LOG_LEVEL": "debug", "INITIAL_USER_PROMPT": "Say hello",
    })
    assert settings.get("openai.model") == "gpt-realtime-2"
    assert settings.get("rtp.port_min") == 41000
    assert settings.get("log.level") == "DEBUG"
    assert settings.get("agent.initial_user_prompt") == "Say hello"
    assert settings.redacted()["openai"]["api_key"] == "***"


def test_a_wrong_type_in_the_environment_names_the_variable():
    with pytest.raises(ConfigError, match="RTP_PORT_MIN.*must be int"):
        load_settings(env={"RTP_PORT_MIN": "forty"})


def test_an_unknown_active_agent_names_the_setting_and_the_known_agents():
    with pytest.raises(ConfigError, match="ACTIVE_AGENT_CONFIG_KEY.*known: .*default"):
        load_settings(env={"ACTIVE_AGENT_CONFIG_KEY": "nope"})


def test_a_site_file_with_an_unknown_key_names_the_file_and_key(tmp_path):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"ari": {"pasword": "x"}}))
    with pytest.raises(ConfigError, match=r"site.json: unknown setting 'ari.pasword'"):
        load_settings(site, env={})


def test_broken_json_names_the_line(tmp_path):
    site = tmp_path / "site.json"
    site.write_text('{"ari": {\n  "url": }')
    with pytest.raises(ConfigError, match="invalid JSON at line 2"):
        load_settings(site, env={})


def test_invalid_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="rtp.port_min/port_max"):
        load_settings(env={"RTP_PORT_MIN": "5000", "RTP_PORT_MAX": "4000"})
    with pytest.raises(ConfigError, match="openai.realtime_url"):
        load_settings(env={"OPENAI_REALTIME_URL": "http://x"})


@pytest.mark.parametrize("agent, message", [
    ({"voice": "marin"}, "'instructions' must be a non-empty string"),
    ({"instructions": "x", "voice": "robot"}, "'voice' must be one of"),
    ({"instructions": "x", "colour": "red"}, "unknown key"),
    ({"instructions": "x", "turn_detection": {"type": "magic"}}, "turn_detection"),
    ({"instructions": "x", "tools": [{"description": "no name"}]}, r"tools\[0\]"),
])
def test_agent_config_errors_name_the_file_and_what(tmp_path, agent, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(agent))
    with pytest.raises(ConfigError, match=message) as error:
        load_agent(path)
    assert "bad.json" in str(error.value)


def test_jitter_buffer_settings(tmp_path):
    settings = load_settings(env={})
    assert settings.get("rtp.jitter_adaptive") is True
    assert settings.get("rtp.jitter_max_depth") == 8
    assert load_settings(env={"RTP_JITTER_ADAPTIVE": "false"}).get("rtp.jitter_adaptive") is False
    for rtp, name in (({"jitter_max_depth": 0}, "rtp.jitter_max_depth"),
                      ({"jitter_max_depth": 32}, "rtp.jitter_max_depth"),
                      ({"jitter_depth": 32}, "rtp.jitter_depth")):
        site = tmp_path / "site.json"
        site.write_text(json.dumps({"rtp": rtp}))
        with pytest.raises(ConfigError, match=f"{name}.*1..31"):
            load_settings(site, env={})


def test_long_silence_settings(tmp_path):
    settings = load_settings(env={})
    assert settings.get("rtp.long_silence_after_ms") == 1500
    assert settings.get("rtp.long_silence_append_ms") == 200
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"rtp": {"long_silence_after_ms": 0}}))
    assert load_settings(site, env={}).get("rtp.long_silence_after_ms") == 0     # never
    for rtp, name in (({"long_silence_after_ms": 500}, "rtp.long_silence_after_ms"),
                      ({"long_silence_append_ms": 30}, "rtp.long_silence_append_ms"),
                      ({"long_silence_append_ms": 2000}, "rtp.long_silence_append_ms")):
        site.write_text(json.dumps({"rtp": rtp}))
        with pytest.raises(ConfigError, match=name):
            load_settings(site, env={})
