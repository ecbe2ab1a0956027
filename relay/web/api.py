"""The operations API: REST routes over a worker's calls and agents, health and metrics.

Owns: the routes, their methods (405 with Allow otherwise) and their answers:

    GET  /api/calls                 live calls (summaries) and the last ended ones
    POST /api/calls                 place one outbound call (relay/web/dials.py)
    GET  /api/dials                 outbound dials under way and recent outcomes (dials.py)
    GET  /api/calls/{id}            one call with its transcript and live config (404 unknown)
    POST /api/calls/{id}/config     {"instructions", "voice", "turn_detection", "tools"} ->
                                    Call.apply_config (one session.update); 400 with the reason
    POST /api/calls/{id}/hangup     ends the call (202)
    GET  /api/agents                the agents, the active one marked
    GET  /healthz                   the process answers (no token needed)
    GET  /readyz                    200 when ARI is connected and calls are accepted, else 503
    GET  /metrics                   Prometheus text format
    GET  /api/history               ended calls from the history store: a page, newest first
                                    (number, text, agent, since, until, end_reason,
                                    min_duration_s, max_duration_s, direction, limit, after)
    GET  /api/history.csv           every call the same filters match, as CSV (streamed)
    GET  /api/history/{id}          one ended call's whole record (404 unknown)
    GET  /api/history/{id}/recording  its WAV, with byte ranges (206/416; also HEAD)
    GET  /api/stats/daily           per day and agent: calls, minutes, latency, barge-ins, cost
                                    (since, until, agent)

    GET|POST /api/campaigns, GET /api/campaigns/{id}, POST /api/campaigns/{id}/start|pause|
    resume|stop, GET|POST /api/dnc, DELETE /api/dnc/{number}: relay.web.campaigns_api's, over
    `worker.campaign_store` (503 when None)

The history routes are relay.web.history_api's, over `worker.history_store` (503 when it is
None or absent). Authorisation, the page and the WebSocket are the server's business, not this
module's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Optional

from relay import metrics
from relay.web import dials, views
from relay.web.campaigns_api import CampaignsApi
from relay.web.history_api import HistoryApi
from relay.web.http import HttpError, Request, Response, allow, json_response

if TYPE_CHECKING:
    from relay.worker import Worker

CALL_PATH = re.compile(r"^/api/calls/([^/]+)(?:/([a-z]+))?/?$")
METRICS_TYPE = metrics.CONTENT_TYPE        # the text format 0.0.4


class Api:
    """handle(request) -> Response, or None when the path is not the API's."""

    def __init__(self, worker: "Worker",
                 web_stats: Optional[Callable[[], dict]] = None) -> None:
        self.worker = worker
        self.web_stats = web_stats
        self.registry = metrics.registry_for(worker, web_stats)    # this worker's own
        self.history = HistoryApi(lambda: getattr(worker, "history_store", None))
        self.campaigns = CampaignsApi(lambda: getattr(worker, "campaign_store", None),
                                      worker.settings.agent)

    def handle(self, request: Request) -> Optional[Response]:
        path = request.path
        if path == "/healthz":
            allow(request, "GET", "HEAD")
            return json_response({"ok": True})
        if path == "/readyz":
            return self._ready(request)
        if path == "/metrics":
            allow(request, "GET", "HEAD")
            return Response(200, metrics.exposition(self.registry), METRICS_TYPE)
        if path in ("/api/calls", "/api/calls/"):
            allow(request, "GET", "POST")
            if request.method == "POST":
                return dials.place_call(self.worker, request)
            return json_response({"calls": [c.summary() for c in self.worker.calls.values()],
                                  "finished": views.finished_calls(self.worker),
                                  "worker": views.worker_status(self.worker)})
        if path in ("/api/dials", "/api/dials/"):
            allow(request, "GET")
            return dials.list_dials(self.worker)
        if path in ("/api/agents", "/api/agents/"):
            allow(request, "GET")
            active = self.worker.settings.get("agent.active")
            agents = [views.agent_view(agent, key == active)
                      for key, agent in sorted(self.worker.settings.agents.items())]
            return json_response({"active": active, "agents": agents})
        match = CALL_PATH.match(path)
        if match:
            call_id, action = match.group(1), match.group(2)
            if action is None:
                allow(request, "GET")
                return self._call(call_id)
            if action == "config":
                allow(request, "POST")
                return self._config(call_id, request)
            if action == "hangup":
                allow(request, "POST")
                return self._hangup(call_id, request)
        answer = self.history.handle(request) or self.campaigns.handle(request)
        if answer is not None:
            return answer
        if path.startswith("/api/"):
            raise HttpError(404, f"no such endpoint: {path}")
        return None

    def _ready(self, request: Request) -> Response:
        allow(request, "GET", "HEAD")
        worker = self.worker
        body = {"ready": bool(worker.ready), "ari_connected": bool(worker.events.connected),
                "accepting": bool(worker.accepting), "calls_active": len(worker.calls)}
        return json_response(body, 200 if body["ready"] else 503)

    def _live_call(self, call_id: str):
        call = self.worker.find_call(call_id)
        if call is None:
            ended = any(s.get("id") == call_id for s in self.worker.finished)
            raise HttpError(404, f"call {call_id!r} has ended" if ended
                            else f"no call {call_id!r}")
        return call

    def _call(self, call_id: str) -> Response:
        call = self.worker.find_call(call_id)
        if call is not None:
            return json_response(views.call_detail(call))
        for summary in reversed(self.worker.finished):
            if summary.get("id") == call_id:
                return json_response(views.finished_detail(summary))
        raise HttpError(404, f"no call {call_id!r}")

    def _config(self, call_id: str, request: Request) -> Response:
        call = self._live_call(call_id)
        changes = request.json_object()
        try:
            sent = call.apply_config(changes)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        return json_response({"ok": True, "sent": sent, "config": views.call_config(call)})

    def _hangup(self, call_id: str, request: Request) -> Response:
        call = self._live_call(call_id)
        body = request.json_object(empty_ok=True)
        unknown = set(body) - {"reason"}
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; "
                            "allowed: reason")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise HttpError(400, "reason must be a string of at most 200 characters")
        call.hangup("hung up by the operator" + (f": {reason.strip()}" if reason.strip()
                                                  else ""))
        return json_response({"ok": True, "call": call.summary()}, 202)
