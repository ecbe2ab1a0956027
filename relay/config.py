"""Settings: config/default.json, an optional site file, environment overrides, agent configs.

Owns: loading and validating every setting once, at start, with errors that name the file, the
key and what is wrong. Every setting has a working default in config/default.json; its type
there is the type the setting must have. Nothing here opens a socket or reads a setting later.

Environment variables keep the names users of the original Node.js design know (see ENV_VARS).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.outbound.settings import OutboundAgentConfig, parse_outbound
from relay.realtime_endpoint import AUTH_MODES, realtime_url
from relay.sounds import SoundError, load_sound
from relay.tools.spec import ToolConfigError, parse_tools
from relay.watchdog import WatchdogConfig, parse_watchdog

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PACKAGE_ROOT / "config" / "default.json"

# environment variable -> dotted setting
ENV_VARS: dict[str, str] = {
    "ARI_URL": "ari.url",
    "ARI_USERNAME": "ari.username",
    "ARI_PASSWORD": "ari.password",
    "ARI_APP_NAME": "ari.app",
    "OPENAI_API_KEY": "openai.api_key",
    "OPENAI_REALTIME_URL": "openai.realtime_url",
    "OPENAI_BASE_URL": "openai.realtime_url",
    "REALTIME_MODEL": "openai.model",
    "OPENAI_REALTIME_MODEL": "openai.model",
    "OPENAI_AUTH": "openai.auth",
    "OPENAI_AUTH_HEADER": "openai.auth",
    "ACTIVE_AGENT_CONFIG_KEY": "agent.active",
    "AGENT_CONFIGS_DIR": "agent.configs_dir",
    "INITIAL_USER_PROMPT": "agent.initial_user_prompt",
    "RTP_HOST": "rtp.bind_host",
    "RTP_ADVERTISE_HOST": "rtp.advertise_host",
    "RTP_PORT_MIN": "rtp.port_min",
    "RTP_PORT_MAX": "rtp.port_max",
    "RTP_JITTER_ADAPTIVE": "rtp.jitter_adaptive",
    "ARI_SWEEP_INTERVAL_S": "ari.sweep_interval_s",
    "MAX_CALL_DURATION_S": "call.max_duration_s",
    "MEDIA_STASIS_WAIT_S": "call.media_stasis_wait_s",
    "WAITING_CALLERS": "call.waiting_callers",
    "TRANSCRIPTS_DIR": "call.transcripts_dir",
    "OUTBOUND_CALLER_ID": "outbound.caller_id",
    "OUTBOUND_RING_TIMEOUT_S": "outbound.ring_timeout_s",
    "OUTBOUND_AMD_CONTEXT": "outbound.amd_context",
    "CAMPAIGNS_ENABLED": "campaigns.enabled",
    "DTMF_INTER_DIGIT_TIMEOUT_MS": "dtmf.inter_digit_timeout_ms",
    "DTMF_MAX_DIGITS": "dtmf.max_digits",
    "DTMF_TERMINATOR": "dtmf.terminator",
    "LOG_LEVEL": "log.level",
    "RECORD_CALLS": "call.record",
    "RECORDINGS_DIR": "call.recordings_dir",
    "RETENTION_DAYS": "call.retention_days",
    "ASYNC_STT_ENABLED": "stt.asyncSttEnabled",
    "ASYNC_STT_PROVIDER": "stt.asyncSttProvider",
    "ASYNC_STT_MODEL": "stt.model",
    "ASYNC_STT_LANGUAGE": "stt.language",
    "ASYNC_STT_PROMPT": "stt.prompt",
    "ASYNC_STT_API_KEY": "stt.api_key",
    "ASYNC_STT_TIMEOUT_S": "stt.timeout_s",
    "ASYNC_STT_FALLBACK_AFTER_S": "stt.fallback_after_s",
    "ASYNC_STT_END_OF_CALL_WAIT_S": "stt.end_of_call_wait_s",
    "ASYNC_STT_MAX_CONCURRENT": "stt.max_concurrent",
    "ASYNC_STT_OPENAI_BASE_URL": "stt.openai_base_url",
    "ASYNC_STT_GOOGLE_BASE_URL": "stt.google_base_url",
    "GOOGLE_STT_API_KEY": "stt.google_api_key",
    "GOOGLE_STT_BEARER_TOKEN": "stt.google_bearer_token",
    "GOOGLE_STT_KEY_IN": "stt.google_key_in",
    "RELAY_WORKERS": "fleet.workers",
    "DRAIN_TIMEOUT_S": "fleet.drain_timeout_s",
    "WEB_HOST": "web.host",
    "WEB_PORT": "web.port",
    "WEB_TOKEN": "web.token",
    "DASHBOARD_TOKEN": "web.token",
    "DATABASE_URL": "history.database_url",
    "HISTORY_ENABLED": "history.enabled",
    "HISTORY_PERSONAL_DATA": "history.personal_data",
    "HISTORY_SQLITE_PATH": "history.sqlite_path",
    "HISTORY_SPOOL_PATH": "history.spool_path",
}

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
AUDIO_FORMATS = ("audio/pcmu", "audio/pcma", "audio/pcm")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
WAITING_CALLER_POLICIES = ("take_over", "hang_up")
STT_PROVIDERS = ("openai", "google")
OPENAI_AUTH_MODES = AUTH_MODES    # Authorization: Bearer KEY / api-key: KEY (Azure)
SECRETS = ("ari.password", "openai.api_key", "stt.api_key", "stt.google_api_key",
           "stt.google_bearer_token")
SECRETS += ("web.token", "history.database_url")
# pricing.models.<model>: USD per 1M tokens of each kind (relay/history/pricing.py)
PRICE_KEYS = ("text_in", "cached_text_in", "text_out", "audio_in", "cached_audio_in", "audio_out")
PRICED_MODELS = "pricing.models."      # a site config may add models under it
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MIN_WEB_TOKEN = 8
DEFAULT_TURN_DETECTION = {"type": "server_vad"}
AGENT_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names where and what."""


@dataclass(frozen=True)
class AgentConfig:
    """One agent: what the model is told, how it sounds and listens, and what it may do."""

    key: str
    name: str
    instructions: str
    voice: str = "marin"
    greeting_instructions: str = ""
    greeting_sound: str = ""
    audio_format: str = "audio/pcmu"
    turn_detection: Optional[dict] = None
    input_transcription: Optional[dict] = None
    tools: tuple = ()
    source: str = ""
    extra: dict = field(default_factory=dict)
    record: Optional[bool] = None   # record this agent's calls; None: the call.record setting
    timezone: str = "UTC"           # IANA name: the agent's local time (get_current_time)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)   # relay/watchdog.py
    outbound: OutboundAgentConfig = field(default_factory=OutboundAgentConfig)  # relay/outbound
    tool_specs: tuple = field(default=(), repr=False, compare=False)   # relay.tools.spec.ToolSpec


@dataclass
class Settings:
    """All settings: the merged tree and the agents, validated."""

    tree: dict
    agents: dict[str, AgentConfig]
    sources: list[str]

    def get(self, dotted: str) -> Any:
        node: Any = self.tree
        for part in dotted.split("."):
            node = node[part]
        return node

    def agent(self, key: Optional[str] = None) -> AgentConfig:
        """The agent named key, or the active one. KeyError names the known agents."""
        key = key or self.get("agent.active")
        try:
            return self.agents[key]
        except KeyError:
            known = ", ".join(sorted(self.agents))
            raise KeyError(f"no agent config {key!r} (known: {known})") from None

    def redacted(self) -> dict:
        """The tree with every secret replaced, for logs and the dashboard."""
        tree = copy.deepcopy(self.tree)
        for dotted in SECRETS:
            section, key = dotted.split(".")
            if tree[section][key]:
                tree[section][key] = "***"
        return tree


def _merge(base: dict, override: Mapping, source: str, path: str = "") -> None:
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base and path == PRICED_MODELS:
            base[key] = _new_model_prices(value, source, where)
            continue
        if key not in base:
            raise ConfigError(f"{source}: unknown setting {where!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where!r} must be an object")
            _merge(base[key], value, source, where + ".")
        else:
            base[key] = _coerce(value, base[key], source, where)


def _new_model_prices(value: Any, source: str, where: str) -> dict:
    """The prices of a model the defaults do not list: every one of PRICE_KEYS, a number."""
    if not isinstance(value, dict) or set(value) != set(PRICE_KEYS):
        raise ConfigError(f"{source}: {where!r} must be an object with exactly "
                          f"{', '.join(PRICE_KEYS)} (USD per 1M tokens)")
    return {key: _coerce(value[key], 0.0, source, f"{where}.{key}") for key in PRICE_KEYS}


def _coerce(value: Any, default: Any, source: str, where: str) -> Any:
    """Convert value (from JSON or the environment) to the type of the default."""
    expected = type(default)
    if isinstance(value, str) and expected is not str:
        text = value.strip()
        try:
            if expected is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            return expected(text)
        except ValueError:
            raise ConfigError(
                f"{source}: {where!r} must be {expected.__name__}, got {value!r}") from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {where!r} must be {expected.__name__}, got {value!r}")
    return value


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    return data


def _check_tree(tree: dict) -> None:
    def require(ok: bool, dotted: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"setting {dotted!r} {what}")

    require(tree["ari"]["url"].startswith(("http://", "https://")), "ari.url",
            "must start with http:// or https://")
    require(bool(tree["ari"]["app"]), "ari.app", "must not be empty")
    require(tree["openai"]["realtime_url"].startswith(("ws://", "wss://")), "openai.realtime_url",
            "must start with ws:// or wss://")
    require(bool(tree["openai"]["model"]), "openai.model", "must not be empty")
    rtp = tree["rtp"]
    require(0 <= rtp["port_min"] <= rtp["port_max"] < 65536, "rtp.port_min/port_max",
            "must be a port range within 1..65535 (or 0 and 0: any free port)")
    require(rtp["port_min"] > 0 or rtp["port_max"] == 0, "rtp.port_min/port_max",
            "0 means any free port, and then both must be 0")
    require(1 <= rtp["jitter_depth"] <= 31, "rtp.jitter_depth",
            "must be 1..31 packets (the jitter buffer has 32 slots)")
    require(1 <= rtp["jitter_max_depth"] <= 31, "rtp.jitter_max_depth",
            "must be 1..31 packets (the jitter buffer has 32 slots)")
    require(1 <= rtp["append_frames"] <= 25, "rtp.append_frames", "must be 1..25 frames")
    require(rtp["long_silence_after_ms"] == 0 or 1000 <= rtp["long_silence_after_ms"] <= 60000,
            "rtp.long_silence_after_ms", "must be 0 (never) or 1000..60000 ms (longer than the "
            "model's end-of-turn silence)")
    require(20 <= rtp["long_silence_append_ms"] <= 1000
            and rtp["long_silence_append_ms"] % 20 == 0,
            "rtp.long_silence_append_ms", "must be 20..1000 ms, a multiple of 20")
    require(tree["call"]["max_duration_s"] > 0, "call.max_duration_s", "must be positive")
    require(tree["dtmf"]["max_digits"] >= 1, "dtmf.max_digits", "must be at least 1")
    require(tree["dtmf"]["terminator"] in ("", "#", "*"), "dtmf.terminator",
            "must be '', '#' or '*'")
    require(tree["log"]["level"].upper() in LOG_LEVELS, "log.level",
            f"must be one of {', '.join(LOG_LEVELS)}")
    for section, key in (("ari", "request_timeout_s"), ("openai", "connect_timeout_s"),
                         ("call", "setup_timeout_s")):
        require(tree[section][key] > 0, f"{section}.{key}", "must be positive")
    _check_reconciliation(tree, require)
    _check_realtime_endpoint(tree, require)
    _check_reconnection(tree, require)
    _check_recording_and_stt(tree, require)
    _check_fleet(tree, require)
    _check_web(tree, require)
    _check_tools(tree, require)
    _check_history(tree, require)
    _check_outbound(tree, require)
    _check_campaigns(tree, require)


def _check_history(tree: dict, require) -> None:
    """The history of ended calls (relay/history, docs/HISTORY.md) and the price table."""
    history = tree["history"]
    require(1 <= history["queue_max"] <= 1_000_000, "history.queue_max", "must be 1..1000000")
    require(1 <= history["batch_max"] <= 10_000, "history.batch_max", "must be 1..10000")
    require(0.1 <= history["retry_max_s"] <= 3600, "history.retry_max_s",
            "must be 0.1..3600 seconds")
    require(history["database_url"] == history["database_url"].strip(), "history.database_url",
            "(DATABASE_URL) must not start or end with spaces")
    if history["enabled"]:
        require(bool(history["spool_path"].strip()), "history.spool_path",
                "must not be empty while the history is enabled")
        require(bool(history["database_url"] or history["sqlite_path"].strip()),
                "history.sqlite_path", "must not be empty when history.database_url "
                "(DATABASE_URL) is not set")
    pricing = tree["pricing"]
    require(bool(ISO_DATE.match(pricing["as_of"])), "pricing.as_of",
            f"must be a date YYYY-MM-DD, got {pricing['as_of']!r}")
    for model, prices in pricing["models"].items():
        require(bool(model.strip()), "pricing.models", "model names must not be empty")
        for key in PRICE_KEYS:
            price = prices.get(key)
            require(isinstance(price, float) and 0 <= price < 1e6,
                    f"pricing.models.{model}.{key}",
                    f"must be a price in USD per 1M tokens (0 or more), got {price!r}")


def _check_campaigns(tree: dict, require) -> None:
    """The campaign engine (relay/campaigns, docs/OUTBOUND.md "Campaigns")."""
    camp = tree["campaigns"]
    require(0.01 <= camp["poll_s"] <= 60, "campaigns.poll_s", "must be 0.01..60 seconds")
    require(0.1 <= camp["heartbeat_s"] <= 600, "campaigns.heartbeat_s",
            "must be 0.1..600 seconds")
    require(camp["engine_timeout_s"] >= 3 * camp["heartbeat_s"], "campaigns.engine_timeout_s",
            "must be at least 3 x campaigns.heartbeat_s (a live engine is never taken for dead)")
    require(0.1 <= camp["recover_every_s"] <= 3600, "campaigns.recover_every_s",
            "must be 0.1..3600 seconds")
    longest = tree["outbound"]["ring_timeout_s"] + tree["outbound"]["answer_grace_s"] + \
        tree["call"]["max_duration_s"]
    require(camp["stale_after_s"] > longest, "campaigns.stale_after_s",
            f"must be longer than the longest dial (ring timeout + grace + "
            f"call.max_duration_s = {longest:g} s)")


def _check_outbound(tree: dict, require) -> None:
    """Outbound dials (relay.outbound): the AMD dialplan location and the waits."""
    out = tree["outbound"]
    require(bool(out["amd_context"].strip()), "outbound.amd_context", "must not be empty")
    require(bool(out["amd_extension"].strip()), "outbound.amd_extension", "must not be empty")
    require(1 <= out["ring_timeout_s"] <= 600, "outbound.ring_timeout_s",
            "must be 1..600 seconds")
    require(0 < out["answer_grace_s"] <= 120, "outbound.answer_grace_s",
            "must be within 0..120 seconds")
    require(0 < out["amd_wait_s"] <= 300, "outbound.amd_wait_s", "must be within 0..300 seconds")
    require(1 <= out["max_pending"] <= 100000, "outbound.max_pending", "must be 1..100000")


def _check_reconciliation(tree: dict, require) -> None:
    """How the worker keeps itself and Asterisk in agreement (relay.worker, relay.janitor)."""
    ari, call = tree["ari"], tree["call"]
    require(ari["sweep_interval_s"] == 0 or 1 <= ari["sweep_interval_s"] <= 3600,
            "ari.sweep_interval_s", "(ARI_SWEEP_INTERVAL_S) must be 0 (off) or 1..3600 seconds")
    require(0 <= ari["waiting_confirm_s"] <= 10, "ari.waiting_confirm_s",
            "must be 0..10 seconds")
    require(0 < call["media_stasis_wait_s"] <= 60, "call.media_stasis_wait_s",
            "(MEDIA_STASIS_WAIT_S) must be within 0..60 seconds")
    require(call["waiting_callers"] in WAITING_CALLER_POLICIES, "call.waiting_callers",
            f"(WAITING_CALLERS) must be one of {', '.join(WAITING_CALLER_POLICIES)}")


def _check_realtime_endpoint(tree: dict, require) -> None:
    """Where the Realtime socket goes and how the key is sent: OpenAI (Bearer) or a
    GA-compatible endpoint such as Azure OpenAI (`api-key` header, the deployment as model)."""
    openai = tree["openai"]
    require(openai["auth"] in OPENAI_AUTH_MODES, "openai.auth",
            f"(OPENAI_AUTH) must be one of {', '.join(OPENAI_AUTH_MODES)} (bearer: "
            "'Authorization: Bearer KEY', OpenAI; api-key: 'api-key: KEY', Azure OpenAI)")
    require(bool(openai["model"].strip()), "openai.model",
            "(REALTIME_MODEL) must not be empty (on Azure: the deployment name)")
    url = openai["realtime_url"]
    require(url.startswith(("ws://", "wss://")), "openai.realtime_url",
            f"(OPENAI_REALTIME_URL) must start with ws:// or wss://, got {url!r}")
    try:
        realtime_url(url, openai["model"])
    except ValueError as exc:
        require(False, "openai.realtime_url", f"(OPENAI_REALTIME_URL) {exc}")


def _check_reconnection(tree: dict, require) -> None:
    """How calls re-open Realtime sockets, and the worker's circuit breaker (relay/backoff.py)."""
    openai = tree["openai"]
    require(0 <= openai["max_reconnects"] <= 100, "openai.max_reconnects",
            "must be 0..100 (failed attempts in a row before a call gives up)")
    require(1 <= openai["max_sockets_per_call"] <= 10000, "openai.max_sockets_per_call",
            "must be 1..10000")
    require(0.01 <= openai["reconnect_initial_s"] <= openai["reconnect_max_s"] <= 300,
            "openai.reconnect_initial_s/reconnect_max_s",
            "must be 0.01 <= initial <= max <= 300 seconds")
    require(0 < openai["healthy_after_s"] <= 600, "openai.healthy_after_s",
            "must be within 0..600 seconds")
    require(0 < openai["reconnect_budget_s"] <= 3600, "openai.reconnect_budget_s",
            "must be within 0..3600 seconds")
    require(1 <= openai["breaker_threshold"] <= 10000, "openai.breaker_threshold",
            "must be 1..10000 (failed attempts in a row, across calls)")
    require(0 < openai["breaker_cooldown_s"] <= 3600, "openai.breaker_cooldown_s",
            "must be within 0..3600 seconds")


def turn_detection_problem(turn_detection: Any) -> str:
    """Why a turn_detection cannot be used ("" when it can). relay relies on the model's turn
    detection to commit the caller's audio and answer each turn: without it (null) or with
    create_response false, nobody would ask for an answer and the agent would go deaf."""
    if turn_detection is None:
        return ("turn_detection cannot be turned off (null): relay relies on the model's turn "
                "detection to commit the caller's audio and answer each turn; use server_vad "
                "or semantic_vad")
    if not isinstance(turn_detection, dict) or turn_detection.get("type") not in (
            "server_vad", "semantic_vad"):
        return "turn_detection must be an object with type server_vad or semantic_vad"
    if turn_detection.get("create_response") is False:
        return ("turn_detection.create_response cannot be false: relay relies on the model to "
                "answer each turn it detects")
    return ""


def _check_tools(tree: dict, require) -> None:
    """How tools run: the per-call limit, the default timeout, the webhook pool."""
    tools = tree["tools"]
    require(1 <= tools["max_concurrent_per_call"] <= 64, "tools.max_concurrent_per_call",
            "must be 1..64")
    require(0 < tools["default_timeout_s"] <= 600, "tools.default_timeout_s",
            "must be within 0..600 seconds")
    require(1 <= tools["webhook_pool_size"] <= 1000, "tools.webhook_pool_size", "must be 1..1000")


def _check_fleet(tree: dict, require) -> None:
    """`relay serve` and its worker processes (relay.fleet): counts, deadlines, intervals."""
    fleet = tree["fleet"]
    require(0 <= fleet["workers"] <= 64, "fleet.workers",
            "(RELAY_WORKERS, --workers) must be 0..64 (0: one process, no master)")
    require(0 <= fleet["drain_timeout_s"] <= 86400, "fleet.drain_timeout_s",
            "(DRAIN_TIMEOUT_S, --drain-timeout) must be 0..86400 seconds")
    require(0 < fleet["stop_timeout_s"] <= 600, "fleet.stop_timeout_s",
            "(--stop-timeout) must be within 0..600 seconds")
    require(0.05 <= fleet["health_interval_s"] <= 10, "fleet.health_interval_s",
            "must be 0.05..10 seconds")
    require(1 <= fleet["start_timeout_s"] <= 600, "fleet.start_timeout_s",
            "must be 1..600 seconds")
    require(1 <= fleet["unresponsive_kill_s"] <= 3600, "fleet.unresponsive_kill_s",
            "must be 1..3600 seconds")
    require(0.01 <= fleet["restart_backoff_initial_s"] <= fleet["restart_backoff_max_s"] <= 3600,
            "fleet.restart_backoff_initial_s/restart_backoff_max_s",
            "must be 0.01 <= initial <= max <= 3600 seconds")
    require(100 <= fleet["max_tracked_calls"] <= 10_000_000, "fleet.max_tracked_calls",
            "must be 100..10000000")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_web(tree: dict, require) -> None:
    """The dashboard's server: a token is required unless it listens on loopback only."""
    web = tree["web"]
    require(0 <= web["port"] < 65536, "web.port", "must be 0..65535 (0: any free port)")
    require(not web["token"] or len(web["token"]) >= MIN_WEB_TOKEN, "web.token",
            f"(WEB_TOKEN / DASHBOARD_TOKEN) must be at least {MIN_WEB_TOKEN} characters")
    require(not web["enabled"] or bool(web["token"]) or is_loopback(web["host"]), "web.token",
            f"(WEB_TOKEN / DASHBOARD_TOKEN) is required: the dashboard listens on "
            f"{web['host'] or 'every interface'!r}, not on loopback only; set a token, or "
            "WEB_HOST=127.0.0.1")
    require(1024 <= web["max_body_bytes"] <= 16 << 20, "web.max_body_bytes",
            "must be 1024..16777216")
    require(1 <= web["ws_queue_max"] <= 100000, "web.ws_queue_max", "must be 1..100000")
    require(1 <= web["ws_max_clients"] <= 10000, "web.ws_max_clients", "must be 1..10000")
    require(0.1 <= web["stats_interval_s"] <= 60, "web.stats_interval_s",
            "must be 0.1..60 seconds")


def _check_recording_and_stt(tree: dict, require) -> None:
    """call.record* / retention and the fallback transcriber (the `stt` section)."""
    require(tree["call"]["retention_days"] >= 0, "call.retention_days",
            "must be 0 (keep forever) or a number of days")
    stt = tree["stt"]
    require(stt["asyncSttProvider"] in STT_PROVIDERS, "stt.asyncSttProvider",
            f"must be one of {', '.join(STT_PROVIDERS)}, got {stt['asyncSttProvider']!r}")
    require(stt["google_key_in"] in ("header", "query"), "stt.google_key_in",
            "must be 'header' (X-Goog-Api-Key) or 'query' (?key=)")
    for key in ("openai_base_url", "google_base_url"):
        require(stt[key].startswith(("http://", "https://")), f"stt.{key}",
                "must start with http:// or https://")
    require(stt["timeout_s"] > 0, "stt.timeout_s", "must be positive")
    require(stt["fallback_after_s"] >= 0, "stt.fallback_after_s",
            "must be 0 (only on failure) or positive")
    require(0 <= stt["end_of_call_wait_s"] <= 60, "stt.end_of_call_wait_s",
            "must be 0 (turns left at the end of a call are not sent) to 60 seconds")
    require(0 < stt["max_turn_s"] <= 120, "stt.max_turn_s", "must be within 0..120 seconds")
    require(1 <= stt["max_pending_turns"] <= 64, "stt.max_pending_turns", "must be 1..64")
    require(1 <= stt["max_concurrent"] <= 1000, "stt.max_concurrent", "must be 1..1000")
    if stt["asyncSttEnabled"]:
        if stt["asyncSttProvider"] == "openai":
            require(bool(stt["api_key"] or tree["openai"]["api_key"]), "stt.api_key",
                    "(or openai.api_key, OPENAI_API_KEY) is needed by the openai fallback "
                    "transcriber")
        else:
            require(bool(stt["google_api_key"] or stt["google_bearer_token"]),
                    "stt.google_api_key", "(GOOGLE_STT_API_KEY) or stt.google_bearer_token "
                    "(GOOGLE_STT_BEARER_TOKEN) is needed by the google fallback transcriber")


def load_agent(path: Path, environ: Optional[Mapping[str, str]] = None) -> AgentConfig:
    """Read and validate one agent config file. Webhook header values (`${VAR}`) are taken
    from environ (default: the process environment)."""
    data = _read_json(path)
    key = path.stem

    def fail(what: str) -> ConfigError:
        return ConfigError(f"{path}: {what}")

    known = {"name", "instructions", "voice", "greeting", "audio_format", "turn_detection",
             "input_transcription", "tools", "description", "record", "timezone", "watchdog",
             "outbound"}
    unknown = set(data) - known
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))} "
                   f"(known: {', '.join(sorted(known))})")
    instructions = data.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise fail("'instructions' must be a non-empty string")
    voice = data.get("voice", "marin")
    if voice not in VOICES:
        raise fail(f"'voice' must be one of {', '.join(VOICES)}, got {voice!r}")
    audio_format = data.get("audio_format", "audio/pcmu")
    if audio_format not in AUDIO_FORMATS:
        raise fail(f"'audio_format' must be one of {', '.join(AUDIO_FORMATS)}")
    greeting = data.get("greeting") or {}
    if not isinstance(greeting, dict) or set(greeting) - {"instructions", "sound"}:
        raise fail("'greeting' must be an object with 'instructions' and/or 'sound'")
    sound = str(greeting.get("sound", ""))
    if sound:
        sound_path = Path(sound) if Path(sound).is_absolute() else path.parent / sound
        if not sound_path.is_file():
            raise fail(f"'greeting.sound' {sound!r}: no such file ({sound_path})")
        sound = str(sound_path)
    turn_detection = data.get("turn_detection", DEFAULT_TURN_DETECTION)
    problem = turn_detection_problem(turn_detection)
    if problem:
        raise fail(problem)
    transcription = data.get("input_transcription")
    if transcription is not None and not (isinstance(transcription, dict) and
                                          isinstance(transcription.get("model"), str)):
        raise fail("'input_transcription' must be null or an object with a 'model'")
    timezone = data.get("timezone", "UTC")
    try:
        if not isinstance(timezone, str) or not timezone:
            raise ValueError
        if timezone not in ("UTC", "Etc/UTC"):      # these need no time zone database
            ZoneInfo(timezone)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        raise fail(f"'timezone' must be an IANA time zone name such as Europe/Paris, got "
                   f"{timezone!r}") from None
    try:
        watchdog = parse_watchdog(data.get("watchdog"), path.parent)
        for watchdog_sound in (watchdog.hold_sound, watchdog.apology_sound):
            load_sound(watchdog_sound)      # readable and in a format relay plays
    except (ValueError, SoundError) as exc:
        raise fail(str(exc)) from None
    try:
        outbound = parse_outbound(data.get("outbound"))
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        tools, tool_specs = parse_tools(data.get("tools", []), path.parent,
                                        os.environ if environ is None else environ)
    except ToolConfigError as exc:
        raise fail(str(exc)) from None
    return AgentConfig(
        key=key,
        name=str(data.get("name") or key),
        instructions=instructions,
        voice=voice,
        greeting_instructions=str(greeting.get("instructions", "")),
        greeting_sound=sound,
        audio_format=audio_format,
        turn_detection=turn_detection,
        input_transcription=transcription,
        tools=tuple(tools),
        source=str(path),
        record=_record_flag(data.get("record"), path),
        timezone=timezone,
        tool_specs=tool_specs,
        watchdog=watchdog,
        outbound=outbound,
    )


def _record_flag(value: Any, path: Path) -> Optional[bool]:
    """An agent's "record": true/false overrides the call.record setting; absent: None."""
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{path}: 'record' must be true or false, got {value!r}")
    return value


def load_settings(
    config_file: Optional[str | Path] = None,
    env: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Defaults, then config_file (or $RELAY_CONFIG), then the environment, then overrides
    (a dict of dotted keys, for tests and the demo); then the agent configs. Validated."""
    env = os.environ if env is None else env
    tree = _read_json(DEFAULT_CONFIG)
    sources = [str(DEFAULT_CONFIG)]
    config_file = config_file or env.get("RELAY_CONFIG")
    if config_file:
        _merge(tree, _read_json(Path(config_file)), str(config_file))
        sources.append(str(config_file))
    for var, dotted in ENV_VARS.items():
        if var in env:
            _set_dotted(tree, dotted, env[var], f"environment variable {var}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value, "override")
    tree["log"]["level"] = tree["log"]["level"].upper()
    _check_tree(tree)

    configs_dir = Path(tree["agent"]["configs_dir"])
    if not configs_dir.is_absolute():
        configs_dir = PACKAGE_ROOT / configs_dir
    if not configs_dir.is_dir():
        raise ConfigError(f"setting 'agent.configs_dir': {configs_dir} is not a directory")
    agents = {}
    for path in sorted(configs_dir.glob("*.json")):
        if not AGENT_KEY.match(path.stem):
            raise ConfigError(
                f"{path}: agent file names may only use letters, digits, '.', '_', '-'")
        agents[path.stem] = load_agent(path)
    active = tree["agent"]["active"]
    if active not in agents:
        raise ConfigError(
            f"setting 'agent.active' (ACTIVE_AGENT_CONFIG_KEY) is {active!r}, but {configs_dir} "
            f"has no {active}.json (known: {', '.join(sorted(agents)) or 'none'})")
    return Settings(tree=tree, agents=agents, sources=sources)


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    section, key = dotted.split(".", 1)
    if section not in tree or key not in tree[section]:
        raise ConfigError(f"{source}: unknown setting {dotted!r}")
    tree[section][key] = _coerce(value, tree[section][key], source, dotted)
