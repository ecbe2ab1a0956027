"""What the dashboard shows of a worker, a call and an agent, as JSON-able dicts.

Owns: choosing the fields the outside sees. Every view is built from named fields, never by
dumping a settings tree or an agent file, so secrets (API keys, passwords, a webhook tool's
headers) cannot leak through them. Reads only; no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from relay import realtime_events as ev
from relay.config import VOICES, AgentConfig

if TYPE_CHECKING:
    from relay.call import Call
    from relay.worker import Worker

FINISHED_SHOWN = 50
COUNTER_KEYS = ("calls_total", "calls_ended", "calls_failed", "ari_events", "ari_reconnects",
                "model_bad_events")
LABELLED_KEYS = ("model_errors", "tool_calls", "fallback_transcriptions", "watchdog")


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000.0, 2)


def worker_status(worker: "Worker") -> dict:
    """Readiness, counters, pacing and latency figures of the worker."""
    counters = worker.counters
    status: dict[str, Any] = {
        "ready": bool(worker.ready), "ari_connected": bool(worker.events.connected),
        "accepting": bool(worker.accepting), "calls_active": len(worker.calls),
        "agent": worker.settings.get("agent.active"),
        "counters": {key: counters.get(key, 0) for key in COUNTER_KEYS},
    }
    for key in LABELLED_KEYS:
        status["counters"][key] = dict(counters.get(key) or {})
    breaker = getattr(worker, "model_breaker", None)
    if breaker is not None:
        status["counters"]["model_breaker_opened"] = breaker.opened_total
        status["model_breaker"] = breaker.view()
    pacer = worker.pacer
    pacing: dict[str, Any] = {"streams": len(pacer), "late_ticks": pacer.late_ticks}
    lateness = getattr(pacer, "lateness", None)
    if lateness is not None:
        snap = lateness.snapshot()
        pacing.update(lateness_p50_ms=_ms(snap["p50"]), lateness_p99_ms=_ms(snap["p99"]),
                      lateness_mean_ms=_ms(snap["mean"]))
    status["pacing"] = pacing
    for name, key in (("turn_latency_seconds", "turn_latency"),
                      ("barge_in_reaction_seconds", "barge_in_reaction")):
        histogram = getattr(worker, "histograms", {}).get(name)
        if histogram is not None:
            snap = histogram.snapshot()
            status[key] = {"count": snap["count"], "mean_ms": _ms(snap["mean"]),
                           "p50_ms": _ms(snap["p50"]), "p99_ms": _ms(snap["p99"])}
    return status


def call_config(call: "Call") -> dict:
    """What the operator can change on the live call, as the model has it now."""
    session = call.session.session if call.session is not None else ev.session_config(call.agent)
    audio_input = (session.get("audio") or {}).get("input") or {}
    return {
        "instructions": session.get("instructions", call.agent.instructions),
        "voice": call.current_voice(),
        "voice_locked": bool(call.session is not None and call.session.model_has_spoken),
        "voices": list(VOICES),
        "turn_detection": audio_input.get("turn_detection"),
        "tools": [tool.get("name") for tool in session.get("tools") or []],
        "available_tools": [_tool_view(tool) for tool in call.agent.tools],
    }


def call_detail(call: "Call") -> dict:
    """A live call: its summary, whole transcript (entries, by kind) and its current config."""
    detail = call.summary()
    detail["transcript"] = call.transcript.entries()
    detail["transcript_dropped"] = call.transcript.dropped
    detail["config"] = call_config(call)
    detail["live"] = True
    return detail


def finished_detail(summary: dict) -> dict:
    """An ended call, from the summary the worker kept (its transcript holds spoken turns)."""
    detail = {k: v for k, v in summary.items() if k != "transcript"}
    detail["transcript"] = [{"kind": kind, "text": text, "call_id": summary.get("id")}
                            for kind, text in summary.get("transcript") or []]
    detail["live"] = False
    return detail


def finished_calls(worker: "Worker", limit: int = FINISHED_SHOWN) -> list[dict]:
    recent = list(worker.finished)[-limit:]
    return [{k: v for k, v in s.items() if k != "transcript"} for s in reversed(recent)]


def _tool_view(tool: dict) -> dict:
    return {"name": str(tool.get("name", "")), "description": str(tool.get("description", ""))}


def agent_view(agent: AgentConfig, active: bool) -> dict:
    """An agent as the dashboard lists it (no tool endpoints, headers or file paths)."""
    return {
        "key": agent.key, "name": agent.name, "active": active,
        "instructions": agent.instructions, "voice": agent.voice,
        "audio_format": agent.audio_format, "turn_detection": agent.turn_detection,
        "greeting": bool(agent.greeting_instructions or agent.greeting_sound),
        "tools": [_tool_view(tool) for tool in agent.tools],
    }
