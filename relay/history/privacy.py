"""The history.personal_data setting: what of a call record may hold personal data.

Owns: `without_personal_data(record)`, the record the store gets when history.personal_data is
false: no caller number or name, no transcript text (what was said, the keys pressed, the
events that quote them), no tool arguments, results or error messages, no outbound endpoint or
variables. What stays is what the figures need: every transcript entry's time and kind (so
turns can be counted), tool names, status, error codes and durations, latencies, media figures,
usage and cost. No I/O; the record given is not changed.
"""

from __future__ import annotations

from typing import Any

# Transcript entry fields that hold no personal data (relay's own marks and figures).
SAFE_ENTRY_FIELDS = ("t", "kind", "item_id", "interrupted", "heard_ms", "status",
                     "duration_ms", "function_call_id", "level")
SAFE_TOOL_FIELDS = ("t", "name", "status", "duration_ms")
SAFE_OUTBOUND_FIELDS = ("outcome", "cause", "amd", "campaign_id", "attempt")


def without_personal_data(record: dict) -> dict:
    """A copy of `record` (docs/HISTORY.md) without its personal data (see the module)."""
    stripped = dict(record)
    stripped["caller_number"] = ""
    stripped["caller_name"] = ""
    stripped["transcript"] = [_entry(entry) for entry in record.get("transcript") or ()]
    stripped["tools"] = [_tool(tool) for tool in record.get("tools") or ()]
    outbound = record.get("outbound")
    if isinstance(outbound, dict):
        stripped["outbound"] = {k: outbound[k] for k in SAFE_OUTBOUND_FIELDS if k in outbound}
    return stripped


def _entry(entry: dict) -> dict:
    kept = {k: entry[k] for k in SAFE_ENTRY_FIELDS if k in entry}
    # a tool entry's text is the tool's name (relay's configuration), any other is speech,
    # keys or an event that may quote them
    kept["text"] = entry.get("text", "") if entry.get("kind") == "tool" else ""
    if isinstance(entry.get("error"), dict) and "code" in entry["error"]:
        kept["error"] = {"code": entry["error"]["code"]}
    return kept


def _tool(tool: dict) -> dict:
    kept: dict[str, Any] = {k: tool[k] for k in SAFE_TOOL_FIELDS if k in tool}
    if isinstance(tool.get("error"), dict) and "code" in tool["error"]:
        kept["error"] = {"code": tool["error"]["code"]}
    return kept


def for_store(record: dict, personal_data: bool) -> dict:
    """The record as the store may keep it under the history.personal_data setting."""
    return record if personal_data else without_personal_data(record)
