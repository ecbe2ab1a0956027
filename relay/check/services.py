"""Other services an agent relies on: the fallback transcriber's key, tools' webhooks."""

from __future__ import annotations

import urllib3

from relay.check import FAIL, OK, WARN, Check
from relay.config import Settings
from relay.stt.providers import openai_auth_header

TIMEOUT_S = 5.0


def _pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=TIMEOUT_S)


def transcriber(settings: Settings) -> list[Check]:
    """A cheap authenticated request with the fallback transcriber's key (when enabled)."""
    stt = settings.tree["stt"]
    group = "fallback transcription"
    if not stt["asyncSttEnabled"]:
        return []
    pool = _pool()
    if stt["asyncSttProvider"] == "openai":
        key = stt["api_key"] or settings.get("openai.api_key")
        url = stt["openai_base_url"].rstrip("/") + "/v1/models"
        # as the transcriber sends it: the Realtime key goes as openai.auth says (Azure: api-key)
        headers = openai_auth_header("bearer" if stt["api_key"] else
                                     settings.get("openai.auth"), key)
        fix = "check ASYNC_STT_API_KEY (stt.api_key; empty: OPENAI_API_KEY is used)"
    else:
        url = stt["google_base_url"].rstrip("/") + "/v1/operations"
        headers, fields = {}, {}
        if stt["google_api_key"]:
            if stt["google_key_in"] == "query":
                fields = {"key": stt["google_api_key"]}
            else:
                headers["X-Goog-Api-Key"] = stt["google_api_key"]
        else:
            headers["Authorization"] = f"Bearer {stt['google_bearer_token']}"
        if fields:
            url += "?key=" + fields["key"]
        fix = "check GOOGLE_STT_API_KEY / GOOGLE_STT_BEARER_TOKEN and that Speech-to-Text " \
              "is enabled for the key's project"
    shown = url.split("?")[0]
    try:
        response = pool.request("GET", url, headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        return [Check(group, stt["asyncSttProvider"], FAIL, f"cannot reach {shown}: {exc}",
                      "check the base URL (ASYNC_STT_*_BASE_URL) and outbound HTTPS")]
    finally:
        pool.clear()
    if response.status in (401, 403):
        body = response.data[:200].decode("utf-8", "replace")
        for secret in (stt["api_key"], stt["google_api_key"], settings.get("openai.api_key")):
            if secret:
                body = body.replace(secret, "***")
        return [Check(group, stt["asyncSttProvider"], FAIL,
                      f"{shown}: key refused ({response.status}): {body}", fix)]
    if response.status >= 500:
        return [Check(group, stt["asyncSttProvider"], WARN,
                      f"{shown}: {response.status} (the service failed; key not verified)",
                      "try again later")]
    return [Check(group, stt["asyncSttProvider"], OK,
                  f"{shown}: {response.status}, key accepted")]


def webhooks(settings: Settings) -> list[Check]:
    """Each webhook tool's URL answers (OPTIONS; any HTTP answer will do). Warnings only."""
    out: list[Check] = []
    seen: set[str] = set()
    pool = _pool()
    try:
        for agent in settings.agents.values():
            for spec in agent.tool_specs:
                hook = getattr(spec, "webhook", None)
                if hook is None or hook.url in seen:
                    continue
                seen.add(hook.url)
                name = f"{agent.key}: {spec.name}"
                try:
                    response = pool.request("OPTIONS", hook.url)
                except urllib3.exceptions.HTTPError as exc:
                    out.append(Check("tools", name, WARN, f"{hook.url} unreachable: "
                                     f"{getattr(exc, 'reason', None) or exc}",
                                     "the tool will fail on calls until it answers: check "
                                     "its URL, DNS and firewall"))
                    continue
                out.append(Check("tools", name, OK,
                                 f"{hook.url} answers (OPTIONS: {response.status})"))
    finally:
        pool.clear()
    return out
