"""The call record (relay/history/record.py) of a real call through the simulated PBX and model:
transcript, tools, latencies, usage added up from the model's response.done events (malformed
ones included), cost from the price table, the privacy setting, JSON; plus the usage reader,
the price lookup and the history and pricing settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from stack import API_KEY, wait_for

from relay.config import PRICE_KEYS, ConfigError, load_settings
from relay.history.pricing import cost_usd, prices_for, warn_if_unpriced
from relay.history.privacy import without_personal_data
from relay.history.record import call_record, percentile, worker_label
from relay.history.usage import USAGE_KEYS, Usage

TIME = "What time is it?"
BYE = "Thank you, goodbye."
NUMBER = "+15551234567"
NAME = f"Ann Example {API_KEY}"          # a secret in a caller's name is scrubbed
SNAPSHOT = "gpt-realtime-2025-08-28"     # a dated snapshot, priced as gpt-realtime

SCRIPT = {
    "phrasebook": [TIME, BYE],
    "rules": [
        {"keywords": ["time is it"], "calls": [
            {"name": "get_current_time", "arguments": {}},
            {"name": "no_such_tool", "arguments": {"x": 1}}], "then": "It is late."},
        {"keywords": ["goodbye"], "say": "Goodbye, have a nice day."},
    ],
}
AGENT = {"name": "Historian", "instructions": "You are a test agent with a clock.",
         "timezone": "Europe/Paris", "audio_format": "audio/pcmu",
         "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
         "input_transcription": {"model": "gpt-4o-transcribe"},
         "tools": [{"name": "get_current_time"}]}
# response.done events of the wrong shape, sent by the model on purpose: the response counts,
# a count of the wrong type counts as zero (a float is a number: it counts)
BAD_DONES = [
    {"type": "response.done", "response": {"id": "resp_bad1", "status": "completed",
                                           "output": [], "usage": None}},
    {"type": "response.done", "response": {"id": "resp_bad2", "status": "completed",
                                           "output": [], "usage": ["tokens"]}},
    {"type": "response.done", "response": {"id": "resp_bad3", "status": "completed",
                                           "output": [], "usage": {
                                               "input_token_details": "junk",
                                               "output_token_details": {
                                                   "audio_tokens": "12", "text_tokens": 3.0}}}},
]
BAD_DONE_OUTPUT_TEXT = 3


def expected_usage(responses: list[dict], extra_responses: int) -> dict:
    """The usage totals, added up here from the simulated model's own response objects."""
    totals = dict.fromkeys(USAGE_KEYS, 0)
    for response in responses:
        usage = response.get("usage") or {}
        given = usage.get("input_token_details") or {}
        cached = given.get("cached_tokens_details") or {}
        made = usage.get("output_token_details") or {}
        totals["input_text"] += given.get("text_tokens", 0)
        totals["input_audio"] += given.get("audio_tokens", 0)
        totals["input_cached_text"] += cached.get("text_tokens", 0)
        totals["input_cached_audio"] += cached.get("audio_tokens", 0)
        totals["output_text"] += made.get("text_tokens", 0)
        totals["output_audio"] += made.get("audio_tokens", 0)
    totals["responses"] = len(responses) + extra_responses
    return totals


def expected_cost(usage: dict, prices: dict) -> float:
    per_token = {k: v / 1e6 for k, v in prices.items()}
    return (
        (usage["input_text"] - usage["input_cached_text"]) * per_token["text_in"]
        + usage["input_cached_text"] * per_token["cached_text_in"]
        + (usage["input_audio"] - usage["input_cached_audio"]) * per_token["audio_in"]
        + usage["input_cached_audio"] * per_token["cached_audio_in"]
        + usage["output_text"] * per_token["text_out"]
        + usage["output_audio"] * per_token["audio_out"])


@pytest.fixture
def ended_call(stack, tmp_path):
    """A call with two turns and two tool calls (one fails), ended; (stack, relay call)."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "historian.json").write_text(json.dumps(AGENT))
    s = stack(model_script=SCRIPT, settings={
        "agent.configs_dir": str(agents), "agent.active": "historian",
        "openai.model": SNAPSHOT})
    call_id = s.call({"caller": {"number": NUMBER, "name": NAME}, "steps": [
        {"pause_ms": 1200}, {"say": TIME},
        {"after_agent": BYE, "silence_ms": 600},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.state == "active" and s.model.open_sessions(), 10, "the call")
    for event in BAD_DONES:
        s.model.inject(kind="event", event=event)
    wait_for(lambda: relay_call.usage.totals["responses"] >= len(BAD_DONES), 10,
             "the malformed response.done events")
    s.wait_calls([call_id], 60)
    return s, relay_call


def test_the_record_of_a_real_call(ended_call):
    s, relay_call = ended_call
    record = call_record(relay_call)
    assert json.loads(json.dumps(record, allow_nan=False)) == record     # plain JSON
    assert record["id"] == relay_call.id and record["agent"] == "historian"
    assert record["direction"] == "inbound" and record["outbound"] is None
    assert record["worker"] == "serve" and record["host"]
    assert record["caller_number"] == NUMBER
    assert record["caller_name"] == "Ann Example ***"
    assert record["started_at"] < record["answered_at"] < record["ended_at"]
    assert record["duration_s"] == pytest.approx(record["ended_at"] - record["started_at"],
                                                 abs=0.002)
    assert record["end_reason"] == relay_call.end_reason
    assert record["recording_path"] == ""
    # what was said, in order, with the tools' entries
    spoken = [(e["kind"], e["text"]) for e in record["transcript"]
              if e["kind"] in ("caller", "assistant")]
    assert spoken == [("caller", TIME), ("assistant", "It is late."), ("caller", BYE),
                      ("assistant", "Goodbye, have a nice day.")]
    assert all("call_id" not in e for e in record["transcript"])
    tools = {t["name"]: t for t in record["tools"]}
    assert set(tools) == {"get_current_time", "no_such_tool"}
    ok, failed = tools["get_current_time"], tools["no_such_tool"]
    assert ok["status"] == "ok" and ok["arguments"] == {}
    assert json.loads(ok["result"])["timezone"] == "Europe/Paris"
    assert failed["status"] == "error" and failed["error"]["code"] == "unknown_tool"
    assert json.loads(failed["arguments"]) == {"x": 1}    # unknown tool: as the model sent them
    assert all(t["duration_ms"] >= 0 and t["t"] >= record["started_at"] for t in tools.values())
    # latencies: every turn, with the figures of those values
    latency = record["turn_latency_ms"]
    values = latency["values"]
    assert latency["count"] == len(values) == len(relay_call.turn_latencies_ms) >= 2
    ordered = sorted(values)
    assert latency["max"] == ordered[-1]
    assert latency["p50"] == ordered[math.ceil(0.5 * len(ordered)) - 1]
    assert latency["p95"] == ordered[math.ceil(0.95 * len(ordered)) - 1]
    # media figures and pacing
    quality = record["quality"]
    assert quality["rtp_in"] > 50 and quality["rtp_out"] > 50 and quality["lost"] == 0
    assert quality["setup_ms"] > 0 and quality["pacer_late_ticks"] >= 0
    # the model and its usage, from the simulated model's own response.done events
    model = record["model"]
    assert model["name"] == SNAPSHOT and model["sockets"] == 1 and model["reconnects"] == 0
    session = s.model.sessions[0]
    usage = expected_usage(list(session.responses), len(BAD_DONES))
    usage["output_text"] += BAD_DONE_OUTPUT_TEXT
    assert record["usage"] == usage
    assert usage["input_text"] > 0 and usage["output_audio"] > 0
    prices = s.settings.tree["pricing"]["models"]["gpt-realtime"]
    assert record["cost_usd"] == pytest.approx(expected_cost(usage, prices), abs=1e-6)
    assert record["cost_usd"] > 0


def test_without_personal_data_the_record_keeps_only_figures(ended_call):
    s, relay_call = ended_call
    full = call_record(relay_call)
    s.settings.tree["history"]["personal_data"] = False     # the setting is the default
    record = call_record(relay_call)
    assert record == call_record(relay_call, personal_data=False)
    text = json.dumps(record)
    for personal in (NUMBER, "Ann Example", TIME, BYE, "It is late", "Europe/Paris", '"x"'):
        assert personal not in text, personal
    assert record["caller_number"] == "" and record["caller_name"] == ""
    # the figures stay: turns, tools' names, status, codes and durations, latencies, cost
    assert [e["kind"] for e in record["transcript"]] == [e["kind"] for e in full["transcript"]]
    assert [(t["name"], t["status"], t["duration_ms"]) for t in record["tools"]] == \
        [(t["name"], t["status"], t["duration_ms"]) for t in full["tools"]]
    failed = next(t for t in record["tools"] if t["status"] == "error")
    assert failed["error"] == {"code": "unknown_tool"} and "arguments" not in failed
    for key in ("turn_latency_ms", "usage", "cost_usd", "quality", "model", "barge_ins",
                "duration_s", "end_reason", "agent", "id"):
        assert record[key] == full[key]
    assert full["caller_number"] == NUMBER          # the record given was not changed


def test_privacy_strips_an_outbound_calls_endpoint_and_variables():
    record = {"id": "c1", "caller_number": "555", "caller_name": "Bo", "transcript": [
        {"t": 1.0, "kind": "dtmf", "text": "4"},
        {"t": 2.0, "kind": "tool", "text": "lookup", "status": "error", "arguments": {"a": 1},
         "error": {"code": "timeout", "message": "order 42 of Bo"}, "duration_ms": 5.0}],
        "tools": [], "outbound": {"endpoint": "PJSIP/555", "outcome": "answered",
                                  "variables": {"NAME": "Bo"}, "attempt": 2}}
    stripped = without_personal_data(record)
    assert stripped["outbound"] == {"outcome": "answered", "attempt": 2}
    assert stripped["transcript"] == [
        {"t": 1.0, "kind": "dtmf", "text": ""},
        {"t": 2.0, "kind": "tool", "text": "lookup", "status": "error", "duration_ms": 5.0,
         "error": {"code": "timeout"}}]
    assert record["outbound"]["variables"] == {"NAME": "Bo"}


def test_usage_tolerates_missing_null_and_wrongly_typed_parts():
    usage = Usage()
    for bad in (None, [], "x", 7, {}, {"input_token_details": None},
                {"input_token_details": {"text_tokens": "5", "audio_tokens": True,
                                         "cached_tokens_details": "x"}},
                {"output_token_details": {"text_tokens": -4, "audio_tokens": float("nan")}},
                {"output_token_details": {"audio_tokens": float("inf")}}):
        usage.add(bad)
    assert usage.as_dict() == dict(dict.fromkeys(USAGE_KEYS, 0), responses=9)
    usage.add({"input_token_details": {"text_tokens": 10, "audio_tokens": 20,
                                       "cached_tokens_details": {"text_tokens": 4,
                                                                 "audio_tokens": 8}},
               "output_token_details": {"text_tokens": 2, "audio_tokens": 30}})
    assert usage.as_dict() == {"input_text": 10, "input_audio": 20, "input_cached_text": 4,
                               "input_cached_audio": 8, "output_text": 2, "output_audio": 30,
                               "responses": 10}


def test_prices_by_model_family_and_cost():
    models = load_settings(env={}).tree["pricing"]["models"]
    assert set(models) == {"gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview",
                           "gpt-4o-mini-realtime-preview"}
    assert prices_for("gpt-realtime", models) is models["gpt-realtime"]
    assert prices_for("gpt-realtime-2025-08-28", models) is models["gpt-realtime"]
    assert prices_for("gpt-realtime-mini-2025-10-06", models) is models["gpt-realtime-mini"]
    assert prices_for("gpt-4o-mini-realtime-preview-2024-12-17", models) is \
        models["gpt-4o-mini-realtime-preview"]
    assert prices_for("gpt-realtimeX", models) is None
    assert prices_for("my-azure-deployment", models) is None
    realtime = models["gpt-realtime"]
    assert (realtime["audio_in"], realtime["cached_audio_in"], realtime["audio_out"]) == \
        (32.0, 0.4, 64.0)
    assert (realtime["text_in"], realtime["cached_text_in"], realtime["text_out"]) == \
        (4.0, 0.4, 16.0)
    # a million cached audio tokens cost the cached price, not the full one
    usage = dict(dict.fromkeys(USAGE_KEYS, 0), input_audio=1_000_000,
                 input_cached_audio=1_000_000, output_audio=500_000)
    assert cost_usd(usage, realtime) == pytest.approx(0.4 + 32.0)
    assert cost_usd(usage, None) is None
    # more cached than given (a malformed count) never makes a negative cost
    assert cost_usd(dict(usage, input_audio=0, output_audio=0), realtime) == 0.0


def test_an_unpriced_model_is_warned_about_once_and_costs_null(caplog):
    tree = load_settings(env={}, overrides={"openai.model": "azure-voice-deployment-1"}).tree
    assert warn_if_unpriced(tree) is False
    assert warn_if_unpriced(tree) is False
    warnings = [r for r in caplog.records if "azure-voice-deployment-1" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert warn_if_unpriced(load_settings(env={}).tree) is True


def test_worker_label_and_percentile():
    class Worker:
        def __init__(self, app: str, label: str = "") -> None:
            self.settings = type("S", (), {"tree": {"ari": {"app": app}}})()
            if label:
                self.label = label
    assert worker_label(Worker("relay-w3-17")) == "w3"
    assert worker_label(Worker("relay")) == "serve"
    assert worker_label(Worker("relay", label="edge-1")) == "edge-1"
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


# settings ----------------------------------------------------------------------------------

def site(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "site.json"
    path.write_text(json.dumps(tree))
    return path


def test_history_settings_defaults_and_environment():
    history = load_settings(env={}).tree["history"]
    assert history == {"enabled": True, "database_url": "", "sqlite_path": "var/relay.db",
                       "spool_path": "var/history-spool.jsonl", "queue_max": 10000,
                       "batch_max": 50, "retry_max_s": 30.0, "personal_data": True}
    url = "postgresql://relay:s3cret-pw@db.example/relay"
    settings = load_settings(env={"DATABASE_URL": url, "HISTORY_ENABLED": "false",
                                  "HISTORY_PERSONAL_DATA": "0",
                                  "HISTORY_SQLITE_PATH": "/data/relay.db",
                                  "HISTORY_SPOOL_PATH": "/data/spool.jsonl"})
    assert settings.tree["history"]["sqlite_path"] == "/data/relay.db"
    assert settings.tree["history"]["spool_path"] == "/data/spool.jsonl"
    assert settings.tree["history"]["database_url"] == url
    assert settings.tree["history"]["enabled"] is False
    assert settings.tree["history"]["personal_data"] is False
    assert settings.redacted()["history"]["database_url"] == "***"
    from relay.redact import secrets_of
    assert "s3cret-pw" in secrets_of(settings)


@pytest.mark.parametrize("override, message", [
    ({"history.queue_max": 0}, "history.queue_max"),
    ({"history.batch_max": 100_000}, "history.batch_max"),
    ({"history.spool_path": " "}, "history.spool_path"),
    ({"history.sqlite_path": ""}, "history.sqlite_path"),
    ({"history.database_url": " postgresql://x"}, "history.database_url"),
    ({"pricing.as_of": "last week"}, "pricing.as_of"),
])
def test_bad_history_and_pricing_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(env={}, overrides=override)


def test_history_off_needs_no_paths():
    tree = load_settings(env={}, overrides={"history.enabled": False,
                                            "history.sqlite_path": "",
                                            "history.spool_path": ""}).tree
    assert tree["history"]["enabled"] is False


def test_a_site_config_changes_prices_and_adds_a_model(tmp_path):
    added = {key: 1.5 for key in PRICE_KEYS}
    path = site(tmp_path, {"pricing": {"as_of": "2027-01-31", "models": {
        "gpt-realtime": {"audio_out": 60},
        "my-azure-deployment": added}}})
    pricing = load_settings(path, env={}).tree["pricing"]
    assert pricing["as_of"] == "2027-01-31"
    assert pricing["models"]["gpt-realtime"]["audio_out"] == 60.0
    assert pricing["models"]["gpt-realtime"]["audio_in"] == 32.0
    assert pricing["models"]["my-azure-deployment"] == added
    assert prices_for("my-azure-deployment", pricing["models"]) == added


@pytest.mark.parametrize("models, message", [
    ({"new-model": {"text_in": 1.0}}, "exactly"),
    ({"new-model": 3}, "exactly"),
    ({"new-model": dict.fromkeys(PRICE_KEYS, "cheap")}, "must be float"),
    ({"gpt-realtime": {"audio_in": -1}}, "gpt-realtime.audio_in"),
    ({"gpt-realtime": {"audio_cheap": 1}}, "unknown setting"),
])
def test_bad_prices_are_refused(tmp_path, models, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(site(tmp_path, {"pricing": {"models": models}}), env={})
