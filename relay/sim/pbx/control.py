"""The simulator's own HTTP API under /sim: scenarios and inspection (same credentials as ARI).

    GET    /sim/inspect                    live channels, bridges, recordings, apps, calls, RTP
    POST   /sim/calls                      {"script": {...}, "count": 1, "rate": null,
                                            "app": "voicebot", "delay_s": 0} -> {"call_ids": []}
    GET    /sim/calls                      results of every call
    GET    /sim/calls/{id}                 one call's result
    DELETE /sim/calls/{id}                 the caller hangs up now
    POST   /sim/calls/wait                 {"call_ids": [...] or absent for all, "timeout_s": 30}
                                           -> {"done": bool, "calls": [...]} (waits, bounded)
    POST   /sim/calls/{id}/wav             write the call's WAV now -> {"wav": [paths]}
    POST   /sim/dialplans/{context}        {"script": {...}}: what Local/x@context ;2 halves run
    POST   /sim/endpoints/{name}           {"script": {...}}: what originated PJSIP/name runs
                                           once answered, or {"callee": {"answer": "busy"|
                                           "no_answer"|"reject"|"machine"|..., "ring_ms",
                                           "script", "amd"}} (relay.sim.pbx.callees)
    GET    /sim/stats                      totals (RTP counts, live channels/bridges, calls by
                                           state); with ?since=T&until=T (monotonic seconds,
                                           the machine's clock) also the window's pacing,
                                           sequence gaps, turn latency and barge-ins as the
                                           callers heard them (relay.sim.pbx.stats)
    GET    /sim/faults                     {"faults": [{id, kind, times, fired, active, ...}]}
    POST   /sim/faults                     a fault (relay.sim.pbx.faults), e.g. {"kind":
                                           "respond", "method": "POST", "path":
                                           "^/bridges/[^/]+/addChannel$", "status": 503,
                                           "times": 2} -> the fault with its id; the immediate
                                           kinds (inject_event, drop_events_connection) are
                                           performed now (404 when no events WebSocket serves
                                           the app)
    DELETE /sim/faults                     remove every fault
    DELETE /sim/faults/{id}                remove one
    GET    /sim/timing                     the delays in use (relay.sim.pbx.timing)
    PUT    /sim/timing                     {"base": "realistic"|"instant", "rest_latency_ms":
                                           [low, high], ...} -> the delays now in use

The /sim routes themselves have no latency and meet no faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.sim.pbx.ari import Params, Response, Router
from relay.sim.pbx.model import AriError

if TYPE_CHECKING:
    from relay.sim.pbx.server import SimPbx

MAX_WAIT_S = 600.0


class ControlApi:
    def __init__(self, sim: SimPbx) -> None:
        self.sim = sim
        r = self.router = Router()
        r.add("GET", "/sim/inspect", self.inspect)
        r.add("GET", "/sim/calls", self.list_calls)
        r.add("POST", "/sim/calls", self.start_calls)
        r.add("POST", "/sim/calls/wait", self.wait_calls)
        r.add("GET", "/sim/calls/{callId}", self.get_call)
        r.add("DELETE", "/sim/calls/{callId}", self.hangup_call)
        r.add("POST", "/sim/calls/{callId}/wav", self.write_wav)
        r.add("POST", "/sim/dialplans/{context}", self.dialplan)
        r.add("POST", "/sim/endpoints/{name}", self.endpoint)
        r.add("GET", "/sim/stats", self.stats)
        r.add("GET", "/sim/faults", self.list_faults)
        r.add("POST", "/sim/faults", self.add_fault)
        r.add("DELETE", "/sim/faults", self.clear_faults)
        r.add("DELETE", "/sim/faults/{faultId}", self.remove_fault)
        r.add("GET", "/sim/timing", self.get_timing)
        r.add("PUT", "/sim/timing", self.set_timing)

    def handle(self, method: str, path: str, params: Params) -> Response:
        try:
            return self.router.dispatch(method, path, params)
        except AriError as exc:
            return exc.status, {"message": exc.message}
        except ValueError as exc:
            return 400, {"message": str(exc)}

    def inspect(self, p: Params) -> Response:
        return 200, self.sim.inspect()

    def list_calls(self, p: Params) -> Response:
        return 200, self.sim.calls()

    def _script(self, p: Params) -> Any:
        script = p.body.get("script")
        if script is None:
            raise AriError(400, "script is required (an object with steps)")
        return script

    def start_calls(self, p: Params) -> Response:
        rate = p.raw("rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))):
            raise AriError(400, "rate must be a number of calls per second")
        delay = p.raw("delay_s") or 0.0
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise AriError(400, "delay_s must be a non-negative number")
        ids = self.sim.start_calls(self._script(p), count=p.int("count", 1, 1, 100_000),
                                   app=p.str("app", default="voicebot"), rate=rate,
                                   delay=float(delay))
        return 200, {"call_ids": ids}

    def wait_calls(self, p: Params) -> Response:
        ids = p.body.get("call_ids")
        if ids is not None and (not isinstance(ids, list) or
                                not all(isinstance(i, str) for i in ids)):
            raise AriError(400, "call_ids must be a list of call ids")
        timeout = p.raw("timeout_s")
        timeout = 30.0 if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise AriError(400, "timeout_s must be a non-negative number")
        done = self.sim.wait_ended(ids, timeout=min(float(timeout), MAX_WAIT_S))
        return 200, {"done": done, "calls": self.sim.calls(ids)}

    def get_call(self, p: Params, callId: str) -> Response:
        return 200, self.sim.call(callId)

    def hangup_call(self, p: Params, callId: str) -> Response:
        self.sim.hangup_call(callId)
        return 204, None

    def write_wav(self, p: Params, callId: str) -> Response:
        return 200, {"wav": [str(x) for x in self.sim.write_wavs(callId)]}

    def dialplan(self, p: Params, context: str) -> Response:
        self.sim.register_dialplan(context, self._script(p))
        return 204, None

    def endpoint(self, p: Params, name: str) -> Response:
        callee = p.body.get("callee")
        self.sim.register_endpoint(name, self._script(p) if callee is None else callee)
        return 204, None

    def list_faults(self, p: Params) -> Response:
        return 200, {"faults": self.sim.faults.list()}

    def add_fault(self, p: Params) -> Response:
        fault = self.sim.faults.add(dict(p.body))
        if fault.kind in ("inject_event", "drop_events_connection") and not fault.fired:
            self.sim.faults.remove(fault.id)
            raise AriError(404, f"no events WebSocket serves application '{fault.app}'")
        return 200, fault.as_dict()

    def clear_faults(self, p: Params) -> Response:
        self.sim.faults.clear()
        return 204, None

    def remove_fault(self, p: Params, faultId: str) -> Response:
        if not faultId.isdigit() or not self.sim.faults.remove(int(faultId)):
            raise AriError(404, f"no fault {faultId}")
        return 204, None

    def get_timing(self, p: Params) -> Response:
        return 200, self.sim.timing.as_dict()

    def set_timing(self, p: Params) -> Response:
        return 200, self.sim.set_timing(dict(p.body)).as_dict()

    def stats(self, p: Params) -> Response:
        since, until = _seconds(p, "since"), _seconds(p, "until")
        if until is not None and since is None:
            raise AriError(400, "until needs since")
        return 200, self.sim.stats(since, until)


def _seconds(p: Params, name: str) -> float | None:
    value = p.raw(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AriError(400, f"{name} must be a number of seconds, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise AriError(400, f"{name} must be a finite number of seconds")
    return number
