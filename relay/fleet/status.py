"""What the master shows of itself: its status (JSON), its readiness, its Prometheus families.

Owns the shape of all three, read from a relay.fleet.master.Master; the fleet web server
(relay.web.fleet) puts the status under "master" in /api/calls, answers /readyz with the
readiness and adds the families to the workers' merged /metrics. Their names do not collide with
a worker's. The readiness rule (`verdict`): ready when the public ARI app is registered on
Asterisk (the dispatcher's events socket is connected: connecting it is what registers the app,
and until then `Stasis(<app>)` fails), at least one worker of the current generation accepts
calls, and the master is not refusing callers (draining, stopping). Labels are bounded: a
worker's dispatch and restart counts are by slot (`worker="w0"`: a restarted worker and its
successors in later generations keep their slot), never by app name, which changes with each
spawn. No I/O; cheap enough to be read on every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from relay.metrics import Families

if TYPE_CHECKING:
    from relay.fleet.master import Master


def slot_label(index: int) -> str:
    return f"w{index}"


def dispatched_by_slot(master: "Master") -> dict[str, int]:
    """Moves accepted by Asterisk, per slot: the live processes' plus the ones gone."""
    totals = {slot_label(i): n for i, n in master.counters["dispatched_by_slot"].items()}
    dispatcher = master.dispatcher
    if dispatcher is not None:
        index_of = {p.app: p.index for p in master.processes() + master.exited}
        for app, n in dispatcher.counters["dispatched"].items():
            if app in index_of:
                label = slot_label(index_of[app])
                totals[label] = totals.get(label, 0) + n
    for i in range(master.count):
        totals.setdefault(slot_label(i), 0)
    return totals


def master_status(master: "Master") -> dict[str, Any]:
    dispatcher = master.dispatcher
    workers = []
    for slot in master.slots + master.pending:
        process = slot.process
        workers.append({"slot": slot.index, "generation": slot.generation,
                        "state": _state(process, current=slot in master.slots),
                        "restarts": slot.restarts, **_process(process)})
    for process in master.retired:
        workers.append({"slot": process.index, "generation": process.generation,
                        "state": "draining" if process.alive else "exited",
                        **_process(process)})
    counters = dispatcher.counters if dispatcher is not None else {}
    return {
        "app": master.app, "state": master.state, "generation": master.generation,
        "workers_wanted": master.count, "workers": workers,
        "dispatcher": {
            "connected": bool(dispatcher is not None and dispatcher.connected),
            "calls": counters.get("calls", 0),
            "dispatched": dispatched_by_slot(master),
            "refused": dict(counters.get("refused", {})),
            "move_errors": sum(counters.get("move_errors", {}).values()),
            "caller_gone": counters.get("caller_gone", 0),
            "tracked_calls": len(master.assignments),
        },
        "restarts": {slot_label(i): n for i, n in master.counters["restarts"].items()},
        "exits_unexpected": master.counters["exits_unexpected"],
        "cleanups": master.counters["cleanups"],
        "reloads": master.counters["reloads"],
        "reloads_failed": master.counters["reloads_failed"],
    }


def verdict(app: str, public_app_connected: Optional[bool], workers_accepting: int, *,
            dropped: bool = False, replaced: bool = False,
            refusing: Optional[str] = None) -> dict[str, Any]:
    """The readiness rule: {"ready", "public_app_connected", "workers_accepting",
    "accepting" (a worker accepts and the master does not refuse), "reasons"}.

    public_app_connected None: not known (a fleet web server without a master), not part of
    the rule. dropped: the public app's connection was up before (it reconnects); replaced:
    another connection took the app; refusing: the master refuses callers ("draining", ...).
    The reasons say what is missing, in that order; none when ready."""
    reasons = []
    if public_app_connected is False:
        if replaced:
            reasons.append(f"another connection took the public ARI app {app!r} (a second "
                           "master with the same app name on this Asterisk?): this master gets "
                           "no callers")
        elif dropped:
            reasons.append(f"the public ARI app {app!r} is not registered on Asterisk (the "
                           "dispatcher's events connection dropped; it reconnects)")
        else:
            reasons.append(f"the public ARI app {app!r} is not registered on Asterisk yet "
                           "(dispatcher not connected)")
    if refusing:
        reasons.append(f"the master is {refusing}: new callers are refused")
    if workers_accepting <= 0:
        reasons.append("no worker accepts calls (none of the current generation is up, "
                       "connected to ARI and not draining)")
    return {"ready": not reasons, "public_app_connected": public_app_connected,
            "workers_accepting": workers_accepting,
            "accepting": workers_accepting > 0 and not refusing, "reasons": reasons}


def readiness(master: "Master") -> dict[str, Any]:
    """The master's /readyz verdict: its dispatcher's connection and the workers it may send
    callers to (the current generation's healthy ones). No I/O."""
    dispatcher = master.dispatcher
    connected = dispatcher is not None and dispatcher.connected
    return verdict(master.app, connected, sum(1 for p in master.targets() if p.healthy),
                   dropped=dispatcher is not None and dispatcher.was_connected,
                   replaced=dispatcher is not None and dispatcher.replaced,
                   refusing=dispatcher.refusing if dispatcher is not None else None)


def _state(process, current: bool) -> str:
    if process is None or not process.alive:
        return "restarting"
    if process.draining:
        return "draining"
    if process.healthy:
        return "healthy" if current else "starting"
    return "starting" if process.started_at is None else "unhealthy"


def _process(process) -> dict[str, Any]:
    if process is None:
        return {"app": None, "pid": None}
    return {"app": process.app, "pid": process.pid, "web_url": process.web_url,
            "rtp_port": process.rtp_port, "calls_active": process.calls_active,
            "ready": process.ready, "exit": process.exit_description()}


def master_metrics(master: "Master") -> str:
    dispatcher = master.dispatcher
    counters = dispatcher.counters if dispatcher is not None else {}
    out = Families()
    out.family("dispatched_calls", "counter", "Callers the dispatcher moved to a worker, by "
               "worker slot.", [({"worker": label}, n) for label, n in
                                sorted(dispatched_by_slot(master).items())])
    refused = dict(counters.get("refused", {}))
    for reason in ("no_worker", "all_moves_failed", "draining", "stopping"):
        refused.setdefault(reason, 0)
    out.family("dispatch_refused", "counter", "Callers hung up with congestion by the "
               "dispatcher, by reason.", [({"reason": r}, n) for r, n in sorted(refused.items())])
    out.counter("dispatch_move_errors", "Moves that failed and were tried on another worker.",
                sum(counters.get("move_errors", {}).values()))
    out.counter("dispatch_callers_gone", "Callers gone before their move.",
                counters.get("caller_gone", 0))
    restarts = master.counters["restarts"]
    out.family("worker_restarts", "counter", "Worker processes started again after one exited "
               "unexpectedly, by slot.",
               [({"worker": slot_label(i)}, restarts.get(i, 0)) for i in range(master.count)])
    out.counter("worker_cleanups", "Cleanups on Asterisk after a worker that died.",
                master.counters["cleanups"])
    out.gauge("dispatcher_connected", "1 when the dispatcher's events socket (the public app) "
              "is connected.", 1 if dispatcher is not None and dispatcher.connected else 0)
    out.gauge("fleet_generation", "The workers' generation taking calls (a reload adds one).",
              master.generation)
    out.gauge("fleet_tracked_calls", "Callers in the master's table of dispatched calls.",
              len(master.assignments))
    return out.text()
