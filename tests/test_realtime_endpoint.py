"""GA-compatible Realtime endpoints: OpenAI (Authorization: Bearer) and Azure OpenAI (an
`api-key` header, its /openai/v1/realtime path, the deployment as the model)."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, load_settings
from relay.realtime_endpoint import auth_headers, realtime_url
from relay.sim.model.handshake import Rejection, check_connection

HELLO = "Hello, is anybody there?"
SCRIPT = {"phrasebook": [HELLO], "default": "Yes, I am here."}


def test_the_model_is_added_to_whatever_query_the_url_has():
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime") == \
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert realtime_url("wss://acme.openai.azure.com/openai/v1/realtime?api-version=2025-08-28",
                        "my-voice") == ("wss://acme.openai.azure.com/openai/v1/realtime?"
                                        "api-version=2025-08-28&model=my-voice")
    assert realtime_url("ws://h/v1/realtime?model=m", "m") == "ws://h/v1/realtime?model=m"
    with pytest.raises(ValueError, match="names model 'other'"):
        realtime_url("ws://h/v1/realtime?model=other", "m")


def test_the_key_goes_in_the_header_the_endpoint_expects():
    assert auth_headers("bearer", "k") == ["Authorization: Bearer k"]
    assert auth_headers("api-key", "k") == ["api-key: k"]


def test_settings_validate_the_auth_mode_and_the_url():
    settings = load_settings(env={"OPENAI_AUTH": "api-key", "REALTIME_MODEL": "my-voice",
                                  "OPENAI_REALTIME_URL":
                                  "wss://acme.openai.azure.com/openai/v1/realtime"})
    assert settings.get("openai.auth") == "api-key"
    with pytest.raises(ConfigError, match="openai.auth.*OPENAI_AUTH.*bearer, api-key"):
        load_settings(env={"OPENAI_AUTH": "basic"})
    with pytest.raises(ConfigError, match="openai.realtime_url.*ws:// or wss://"):
        load_settings(env={"OPENAI_REALTIME_URL": "https://api.openai.com/v1/realtime"})
    with pytest.raises(ConfigError, match="openai.realtime_url.*names model 'dep'"):
        load_settings(env={"OPENAI_REALTIME_URL": "wss://x/openai/v1/realtime?model=dep"})


def test_the_simulated_model_says_which_header_it_wanted():
    bearer_sent = {"authorization": "Bearer k"}
    refused = check_connection(bearer_sent, {}, "k", None, auth="api-key")
    assert isinstance(refused, Rejection) and refused.close_code == 3000
    assert "'api-key' header" in refused.error["message"]
    assert "Authorization: Bearer" in refused.error["message"]
    assert check_connection({"api-key": "k"}, {"model": "dep"}, "k", None, "api-key") == "dep"
    refused = check_connection({"api-key": "k"}, {}, "k", None, auth="bearer")
    assert isinstance(refused, Rejection)
    assert "an 'api-key' header was sent" in refused.error["message"]


def test_relay_carries_a_call_to_an_api_key_endpoint_on_the_azure_path(stack):
    s = stack(model_script=SCRIPT, model_auth="api-key",
              settings={"openai.auth": "api-key", "openai.model": "my-voice-deployment"})
    s.worker.settings.tree["openai"]["realtime_url"] = s.model.azure_url + "?api-version=x"
    call_id = s.call({"steps": [{"pause_ms": 300}, {"say": HELLO},
                                {"wait_agent_done": {"silence_ms": 500}}]})
    s.wait_calls([call_id], 30)
    summary = s.finished(call_id)
    assert ("caller", HELLO) in summary["transcript"]
    assert ("assistant", "Yes, I am here.") in summary["transcript"]
    [session] = s.model.sessions
    assert session.model == "my-voice-deployment"


def test_the_bearer_form_is_refused_by_an_api_key_endpoint_with_a_clear_reason(stack):
    s = stack(model_script=SCRIPT, model_auth="api-key")     # relay still sends Bearer
    call_id = s.call({"steps": [{"pause_ms": 5000}]})
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 20)
    assert "invalid_api_key" in relay_call.end_reason
    assert "'api-key' header" in relay_call.end_reason
