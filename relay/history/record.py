"""The record of one ended call (docs/HISTORY.md, "The call record"), built from its Call.

Owns: `call_record(call)`, the JSON-serialisable dict the history writer hands to the store:
who called, when, how it ended, what was said and done (transcript and tools), how it sounded
(media figures, turn latencies, pacing), what the model did and what it cost. Texts from
outside (caller name, end reasons, model error codes) are scrubbed of the secrets; transcript
entries already are (relay/transcript.py). Called once per call, after it ended: nothing here
runs on a per-packet path. The privacy setting is applied by relay/history/privacy.py.
"""

from __future__ import annotations

import math
import re
import socket
import time
from typing import Any, Optional

from relay.history.pricing import cost_usd, prices_for, warn_if_unpriced
from relay.history.privacy import for_store
from relay.redact import PROCESS

FLEET_APP = re.compile(r"-(w\d+)-\d+$")      # relay-w0-3: a worker process of `relay serve`
TOOL_DONE = ("ok", "error")                   # a finished tool's status in the transcript
TOOL_FIELDS = ("result", "error")


def worker_label(worker: Any) -> str:
    """The worker's label: its own `label`, else its slot in a fleet (`w0`), else `serve`."""
    label = getattr(worker, "label", "")
    if label:
        return str(label)
    app = str(getattr(getattr(worker, "settings", None), "tree", {}).get("ari", {}).get("app", ""))
    found = FLEET_APP.search(app)
    return found.group(1) if found else "serve"


def percentile(values: list[float], q: float) -> Optional[float]:
    """The q-th percentile (0..100) by the nearest-rank method; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: list[float]) -> dict:
    values = [round(v, 1) for v in values_ms]
    return {"count": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values) if values else None, "values": values}


def jsonable(value: Any) -> Any:
    """value in plain JSON types: dict keys as text, tuples as lists, a NaN or infinite
    number as None, anything else as its text."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def call_record(call: Any, personal_data: Optional[bool] = None) -> dict:
    """The record of `call` (a relay.call.Call that has ended; docs/HISTORY.md), without its
    personal data unless `personal_data` (default: the history.personal_data setting)."""
    scrub = PROCESS.scrub
    tree = call.settings.tree
    session = call.session
    model = tree["openai"]["model"]
    usage = call.usage.as_dict()
    started = call.created_at
    ended = call.ended_at if call.ended_at is not None else time.time()
    transcript = [{k: v for k, v in entry.items() if k != "call_id"}
                  for entry in call.transcript.entries()]
    warn_if_unpriced(tree)
    record = {
        "id": call.id,
        "worker": worker_label(call.worker),
        "host": socket.gethostname(),
        "agent": call.agent.key,
        "direction": str(getattr(call, "direction", "inbound") or "inbound"),
        "caller_number": scrub(call.caller_number),
        "caller_name": scrub(call.caller_name),
        "started_at": round(started, 3),
        "answered_at": None if call.answered_at is None else round(call.answered_at, 3),
        "ended_at": round(ended, 3),
        "duration_s": round(max(0.0, ended - started), 3),
        "end_reason": scrub(call.end_reason),
        "barge_ins": call.barge_ins,
        "turn_latency_ms": latency_summary(call.turn_latencies_ms),
        "quality": quality(call),
        "model": {
            "name": model,
            "errors": {scrub(code): n for code, n in call.model_errors.items()},
            "reconnects": session.reconnects if session else 0,
            "sockets": session.connections if session else 0,
            "resumed": session.resumed if session else 0,
            "failed_attempts": session.failed_attempts if session else 0,
            "bad_events": getattr(call.watch, "bad_events", 0),
        },
        "usage": usage,
        "cost_usd": cost_usd(usage, prices_for(model, tree["pricing"]["models"])),
        "recording_path": call.recording_path or "",
        "transcript": transcript,
        "tools": tools_of(transcript),
        "outbound": getattr(call, "outbound", None),
    }
    if personal_data is None:
        personal_data = tree["history"]["personal_data"]
    return for_store(jsonable(record), personal_data)


def dial_record(outcome: Any, worker: Any, personal_data: Optional[bool] = None) -> dict:
    """The record of an outbound dial that never became a conversation (busy, no answer,
    rejected, failed: relay.outbound.DialOutcome), so that the history holds every dial's
    outcome, not only the answered ones. No audio, no model, no cost."""
    tree = worker.settings.tree
    started = float(outcome.started_at or time.time())
    ended = float(outcome.ended_at or started)
    callee = outcome.endpoint.partition("/")[2].partition("@")[0]
    reason = PROCESS.scrub(outcome.reason or outcome.outcome)
    record = {
        "id": outcome.channel_id,
        "worker": worker_label(worker),
        "host": socket.gethostname(),
        "agent": outcome.agent,
        "direction": "outbound",
        "caller_number": PROCESS.scrub(callee),
        "caller_name": "",
        "started_at": round(started, 3),
        "answered_at": None,
        "ended_at": round(ended, 3),
        "duration_s": round(max(0.0, ended - started), 3),
        "end_reason": f"{outcome.outcome}: {reason}" if reason != outcome.outcome else reason,
        "barge_ins": 0,
        "turn_latency_ms": latency_summary([]),
        "quality": {},
        "model": {"name": tree["openai"]["model"], "errors": {}, "reconnects": 0,
                  "sockets": 0, "resumed": 0},
        "usage": {},
        "cost_usd": None,
        "recording_path": "",
        "transcript": [{"t": round(ended, 3), "kind": "event",
                        "text": f"dialled {outcome.endpoint}: {outcome.outcome} ({reason})"}],
        "tools": [],
        "outbound": outcome.record(),
    }
    if personal_data is None:
        personal_data = tree["history"]["personal_data"]
    return for_store(jsonable(record), personal_data)


def quality(call: Any) -> dict:
    """The call's media figures (CallMedia.stats()), its setup time, its barge-in reactions,
    and the worker-wide pacing figures while it lasted (pacer late ticks and skipped slots:
    shared by every call of the worker at the time, a sign of an overloaded worker)."""
    figures = dict(call.media.stats())
    figures["setup_ms"] = None if call.setup_ms is None else round(call.setup_ms, 1)
    figures["barge_in_reaction_ms"] = [round(x, 1) for x in call.barge_in_reactions_ms]
    figures["truncations"] = len(call.truncations)
    figures["transcript_dropped"] = call.transcript.dropped
    pacer = call.worker.pacer
    late, skipped = getattr(call, "pacer_marks", (0, 0))
    figures["pacer_late_ticks"] = max(0, getattr(pacer, "late_ticks", 0) - late)
    figures["pacer_skipped_slots"] = max(0, getattr(pacer, "skipped_slots", 0) - skipped)
    return figures


def tools_of(transcript: list[dict]) -> list[dict]:
    """One entry per finished tool call (its transcript entry with status ok or error)."""
    tools = []
    for entry in transcript:
        if entry.get("kind") != "tool" or entry.get("status") not in TOOL_DONE:
            continue
        tool = {"t": entry.get("t"), "name": entry.get("text", ""),
                "arguments": entry.get("arguments"), "status": entry["status"],
                "duration_ms": entry.get("duration_ms")}
        for field in TOOL_FIELDS:
            if field in entry:
                tool[field] = entry[field]
        tools.append(tool)
    return tools
