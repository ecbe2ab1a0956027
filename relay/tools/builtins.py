"""The built-in tools every agent may declare: end_call, transfer_call, get_current_time,
send_dtmf.

Owns: what each of them does, the schema the model sees by default, and the check of its
`config` at start. Call actions go through ToolContext (see relay.tools.context).
"""

from __future__ import annotations

import re
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from relay.tools.context import ToolContext
from relay.tools.errors import INVALID_ARGUMENTS, ToolError
from relay.tools.registry import builtin, refuse_unknown_keys

DTMF = re.compile(r"^[0-9A-Da-d*#]{1,32}$")
TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# end_call --------------------------------------------------------------------------------------

def _end_call_config(config: dict, base_dir: Path) -> dict:
    refuse_unknown_keys(config, ("continue_in_dialplan",))
    value = config.get("continue_in_dialplan")
    if value is not None and not isinstance(value, bool):
        raise ValueError("'config.continue_in_dialplan' must be true or false")
    return dict(config)


@builtin("end_call",
         description="End the phone call. Say goodbye in the same response first: the call ends "
                     "once the caller has heard your last sentence.",
         parameters={"type": "object", "additionalProperties": False, "properties": {
             "reason": {"type": "string", "description": "Why the call ends, for the call log."}}},
         prepare=_end_call_config)
def end_call(ctx: ToolContext, args: dict) -> dict:
    reason = str(args.get("reason") or "").strip()[:200]
    ctx.end_call(f"the agent ended the call{': ' + reason if reason else ''}",
                 ctx.config.get("continue_in_dialplan"))
    return {"ok": True, "result": "The call ends after your last sentence has been heard."}


# transfer_call ---------------------------------------------------------------------------------

def _transfer_config(config: dict, base_dir: Path) -> dict:
    refuse_unknown_keys(config, ("targets",))
    targets = config.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise ValueError("'config.targets' must be a non-empty object: department -> "
                         "{context, extension, priority} or {endpoint}")
    prepared = {}
    for name, target in targets.items():
        where = f"'config.targets.{name}'"
        if not TARGET_NAME.match(name):
            raise ValueError(f"{where}: department names may use letters, digits, '.', '_', '-'")
        if not isinstance(target, dict):
            raise ValueError(f"{where} must be an object")
        unknown = set(target) - {"context", "extension", "priority", "endpoint", "description"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if "endpoint" in target:
            endpoint = target["endpoint"]
            if set(target) & {"context", "extension", "priority"}:
                raise ValueError(f"{where}: give either an endpoint or a dialplan location")
            if not isinstance(endpoint, str) or "/" not in endpoint.strip("/"):
                raise ValueError(f"{where}.endpoint must be TECH/RESOURCE, e.g. PJSIP/sales")
        else:
            for key in ("context", "extension"):
                if not isinstance(target.get(key), str) or not target[key]:
                    raise ValueError(f"{where} needs '{key}' (a non-empty string), or an "
                                     f"'endpoint'")
            priority = target.get("priority", 1)
            if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
                raise ValueError(f"{where}.priority must be a positive integer")
            target = {**target, "priority": priority}
        if not isinstance(target.get("description", ""), str):
            raise ValueError(f"{where}.description must be a string")
        prepared[name] = dict(target)
    return {"targets": prepared}


def _transfer_parameters(config: dict) -> dict:
    targets = config["targets"]
    described = "; ".join(f"{name}: {t['description']}" for name, t in targets.items()
                          if t.get("description"))
    return {"type": "object", "additionalProperties": False, "required": ["department"],
            "properties": {"department": {
                "type": "string", "enum": list(targets),
                "description": "Where to transfer the caller." + (
                    f" {described}." if described else "")}}}


@builtin("transfer_call",
         description="Transfer the caller to a department. First tell the caller, in the same "
                     "response, where you are putting them through: the transfer happens once "
                     "they have heard it.",
         parameters=_transfer_parameters, prepare=_transfer_config)
def transfer_call(ctx: ToolContext, args: dict) -> dict:
    targets = ctx.config["targets"]
    department = args.get("department")
    if department not in targets:
        raise ToolError(INVALID_ARGUMENTS, f"unknown department {department!r}",
                        choices=list(targets))
    ctx.transfer(targets[department], str(department))
    return {"ok": True, "result": f"The caller is transferred to {department} after your last "
                                  f"sentence."}


# get_current_time ------------------------------------------------------------------------------

def zone(name: str) -> tzinfo:
    """The tzinfo of an IANA name (UTC without needing the time zone database)."""
    if name in ("UTC", "Etc/UTC"):
        return timezone.utc
    return ZoneInfo(name)


@builtin("get_current_time",
         description="The current date and time where the business is (its time zone).")
def get_current_time(ctx: ToolContext, args: dict) -> dict[str, Any]:
    name = getattr(ctx.agent, "timezone", "") or "UTC"
    now = ctx.now().astimezone(zone(name))
    offset = now.strftime("%z")
    return {"timezone": name, "iso": now.isoformat(timespec="seconds"),
            "date": now.strftime("%Y-%m-%d"), "time": now.strftime("%H:%M"),
            "weekday": now.strftime("%A"), "utc_offset": f"{offset[:3]}:{offset[3:]}"}


# send_dtmf -------------------------------------------------------------------------------------

@builtin("send_dtmf",
         description="Send touch tones (DTMF) on the line, for example to answer a phone menu.",
         parameters={"type": "object", "additionalProperties": False, "required": ["digits"],
                     "properties": {"digits": {
                         "type": "string", "pattern": "^[0-9A-Da-d*#]{1,32}$",
                         "description": "The keys to press: 0-9, *, #, A-D (at most 32)."}}})
def send_dtmf(ctx: ToolContext, args: dict) -> dict:
    digits = str(args.get("digits", ""))
    if not DTMF.match(digits):
        raise ToolError(INVALID_ARGUMENTS, "digits must be 1 to 32 of 0-9, *, #, A-D")
    ctx.send_dtmf(digits)
    return {"ok": True, "sent": digits}
