"""What the fleet dashboard shows of several workers at once, merged from what each one said.

Owns the rules for putting the workers' views together (sans-IO: dicts in, dicts out):
- a call summary gets a "worker" field, the name of the worker carrying it;
- live calls are the union of the workers' (oldest first); ended calls are the union, newest
  end first (start + duration), cut to the number the single-worker view shows;
- the "worker" status keeps relay.web.views.worker_status's shape: counters (labelled ones key
  by key) and calls_active are summed; `ready` and `accepting` are true when any worker's is
  (the fleet takes calls while one worker does), `ari_connected` only when every reporting
  worker's is (one lost events socket shows); pacing streams and late ticks are summed, the
  lateness p50/p99/mean are the worst worker's; a latency's count is summed, its mean weighted
  by the counts, its p50/p99 the worst worker's. The workers' quantiles are bucket upper bounds,
  and the fleet's quantile can never exceed the largest of them, so the merged figure is still a
  true "at most" (the page shows them as "≤ N ms").
No I/O, no sockets: relay.web.fleet_api and relay.web.fleet_ws feed it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from relay.web.views import FINISHED_SHOWN

LATENCY_KEYS = ("turn_latency", "barge_in_reaction")
PACING_WORST = ("lateness_p50_ms", "lateness_p99_ms", "lateness_mean_ms")


def tag(summary: dict, worker: str) -> dict:
    """The call summary with the name of its worker (in place: the summaries are ours)."""
    summary["worker"] = worker
    return summary


def live_calls(calls: Iterable[dict]) -> list[dict]:
    """The live calls of every worker, oldest first."""
    return sorted(calls, key=lambda c: c.get("started_at") or 0.0)


def _ended_at(summary: Mapping[str, Any]) -> float:
    return float(summary.get("started_at") or 0.0) + float(summary.get("duration_s") or 0.0)


def finished_calls(finished: Iterable[dict], limit: int = FINISHED_SHOWN) -> list[dict]:
    """The ended calls of every worker, the last to end first, at most limit."""
    return sorted(finished, key=_ended_at, reverse=True)[:limit]


def _add(total: dict, part: Mapping[str, Any]) -> None:
    """Add part's numbers into total, key by key, nested dicts included."""
    for key, value in part.items():
        if isinstance(value, Mapping):
            _add(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def _worst(values: Iterable[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _latency(parts: list[Mapping[str, Any]]) -> dict:
    count = sum(int(p.get("count") or 0) for p in parts)
    weighted = [(p["mean_ms"], int(p.get("count") or 0)) for p in parts
                if p.get("mean_ms") is not None and p.get("count")]
    total = sum(n for _, n in weighted)
    mean = round(sum(m * n for m, n in weighted) / total, 2) if total else None
    observed = [p for p in parts if p.get("count")]
    return {"count": count, "mean_ms": mean,
            "p50_ms": _worst(p.get("p50_ms") for p in observed),
            "p99_ms": _worst(p.get("p99_ms") for p in observed)}


def worker_status(statuses: list[Mapping[str, Any]], agent: Optional[str] = None) -> dict:
    """One status for the fleet from the workers' statuses (see the module docstring)."""
    counters: dict[str, Any] = {}
    for status in statuses:
        _add(counters, status.get("counters") or {})
    pacings = [s.get("pacing") or {} for s in statuses]
    pacing: dict[str, Any] = {"streams": sum(int(p.get("streams") or 0) for p in pacings),
                              "late_ticks": sum(int(p.get("late_ticks") or 0) for p in pacings)}
    for key in PACING_WORST:
        if any(key in p for p in pacings):
            pacing[key] = _worst(p.get(key) for p in pacings)
    merged: dict[str, Any] = {
        "ready": any(bool(s.get("ready")) for s in statuses),
        "ari_connected": bool(statuses) and all(bool(s.get("ari_connected")) for s in statuses),
        "accepting": any(bool(s.get("accepting")) for s in statuses),
        "calls_active": sum(int(s.get("calls_active") or 0) for s in statuses),
        "agent": agent if agent is not None else next(
            (s.get("agent") for s in statuses if s.get("agent")), None),
        "counters": counters,
        "pacing": pacing,
        "workers_reporting": len(statuses),
        "workers_ari_connected": sum(1 for s in statuses if s.get("ari_connected")),
    }
    for key in LATENCY_KEYS:
        parts = [s[key] for s in statuses if isinstance(s.get(key), Mapping)]
        if parts:
            merged[key] = _latency(parts)
    return merged
