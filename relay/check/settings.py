"""Settings and agent files, loaded exactly as `relay serve` loads them."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from relay.check import FAIL, OK, Check
from relay.config import ConfigError, Settings, load_settings

GROUP = "settings"


def check(config_file: Optional[str], overrides: Optional[Mapping[str, Any]] = None,
          env: Optional[Mapping[str, str]] = None) -> tuple[Optional[Settings], list[Check]]:
    try:
        settings = load_settings(config_file, env=env, overrides=overrides)
    except ConfigError as exc:
        return None, [Check(GROUP, "settings and agents", FAIL, str(exc),
                            "correct the file or environment variable named above (README, "
                            "Settings and Agents)")]
    agents = ", ".join(sorted(settings.agents))
    out = [Check(GROUP, "settings", OK, "valid (" + " + ".join(settings.sources) +
                 " + environment)"),
           Check(GROUP, "agent files", OK, f"{len(settings.agents)} valid: {agents}; active: "
                 f"{settings.get('agent.active')}")]
    if not settings.get("openai.api_key"):
        out.append(Check(GROUP, "OpenAI key", FAIL, "openai.api_key is empty",
                         "set OPENAI_API_KEY (or openai.api_key in the --config file)"))
    return settings, out
