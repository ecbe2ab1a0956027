"""The operations API of the fleet: the single-worker routes, answered for all the workers.

Owns the same routes, methods (405 with Allow) and JSON shapes as relay.web.api, answered from
the workers' internal APIs (relay.web.fleet_http):

    GET  /api/calls               every worker's live and ended calls (each with "worker"), the
                                  merged "worker" status (relay.web.fleet_merge), "workers" (the
                                  master's list, each marked reachable or not), "unreachable"
                                  (names), and "master" (the master's own figures, if given)
    GET  /api/calls/{id}          forwarded to the worker carrying the call, whose answer is
    POST /api/calls/{id}/config   passed on as it is (status and body); the owner comes from
    POST /api/calls/{id}/hangup   the event links or earlier lists, else every worker is asked;
                                  404 when none has the call, 502 when the owner (or, for an
                                  unknown call, any worker) does not answer
    POST /api/calls               an outbound call, placed by the healthy worker carrying the
                                  fewest calls (its answer passed on); 503 when none takes calls
    GET  /api/dials               every worker's dials (each with "worker"), "unreachable"
    GET  /api/agents              a healthy worker's answer, else the master's own settings
    GET  /healthz                 the master answers
    GET  /readyz                  the master's readiness (relay.fleet.status.readiness): 200
                                  when the public ARI app is registered on Asterisk (the
                                  dispatcher is connected) and a worker accepts calls, else
                                  503 with the reasons; without a master, 200 when a listed
                                  worker is healthy and not draining
    GET  /metrics                 the workers' expositions summed (relay.web.fleet_metrics),
                                  with the fleet's own families; a worker that does not answer
                                  is left out and counted (relay_fleet_scrape_errors_total)
    GET  /api/history...          the call history (relay.web.history_api), read by the master
    GET  /api/stats/daily         itself from the store the workers write (`history_store()`;
                                  503 without one)
    /api/campaigns..., /api/dnc   the campaigns (relay.web.campaigns_api) in the same database
                                  (`campaign_store()`): the master creates, starts and pauses
                                  them; every worker's engine follows

Every worker the master lists is asked, healthy or not (a draining worker, or one whose ARI
events socket dropped, still carries calls); one that does not answer is skipped. Authorisation,
the page and the WebSocket are the server's business.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional, Union
from urllib.parse import quote

import ujson

from relay.config import Settings
from relay.fleet.status import verdict
from relay.metrics import Families, dashboard_figures
from relay.web import fleet_merge as merge
from relay.web import views
from relay.web.api import CALL_PATH, METRICS_TYPE, allow
from relay.web.campaigns_api import CampaignsApi
from relay.web.fleet_http import WorkerAnswer, WorkerHttp, WorkerUnreachable
from relay.web.fleet_metrics import MetricsMerger
from relay.web.history_api import HistoryApi
from relay.web.http import HttpError, Request, Response, json_response

if TYPE_CHECKING:
    from relay.fleet.endpoints import WorkerEndpoint
    from relay.web.fleet_links import Fleet

log = logging.getLogger(__name__)

WORKER_DASHBOARD_FAMILIES = ("relay_dashboard_",)   # a worker's: about the fleet's own links
AGENTS_TRIES = 2


def _json(answer: Union[WorkerAnswer, WorkerUnreachable]) -> Optional[dict]:
    """A 200 answer's JSON object, else None."""
    if not isinstance(answer, WorkerAnswer) or answer.status != 200:
        return None
    try:
        value = ujson.loads(answer.body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _why(answer: Union[WorkerAnswer, WorkerUnreachable]) -> str:
    if isinstance(answer, WorkerUnreachable):
        return answer.reason
    return f"it answered {answer.status}" if answer.status != 200 else "its answer is not JSON"


def _passed_on(answer: WorkerAnswer) -> Response:
    return Response(answer.status, answer.body, answer.content_type)


class FleetApi:
    """handle(request) -> Response, or None when the path is not the API's."""

    def __init__(self, settings: Settings, fleet: "Fleet", http: WorkerHttp, *,
                 web_stats: Optional[Callable[[], dict]] = None,
                 master_status: Optional[Callable[[], dict]] = None,
                 master_metrics: Optional[Callable[[], str]] = None,
                 readiness: Optional[Callable[[], dict]] = None,
                 history_store: Optional[Callable[[], object]] = None,
                 campaign_store: Optional[Callable[[], object]] = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.http = http
        self.web_stats = web_stats
        self.master_status = master_status
        self.master_metrics = master_metrics
        self.readiness = readiness
        self.scrape_errors = 0
        self.forward_errors = 0
        self.bad_metric_lines = 0
        self._silent: set[str] = set()      # workers whose last scrape failed (logged once)
        self.history = HistoryApi(history_store or (lambda: None))
        self.campaigns = CampaignsApi(campaign_store or (lambda: None), settings.agent)

    def handle(self, request: Request) -> Optional[Response]:
        path = request.path
        if path == "/healthz":
            allow(request, "GET", "HEAD")
            return json_response({"ok": True})
        if path == "/readyz":
            allow(request, "GET", "HEAD")
            return self._ready()
        if path == "/metrics":
            allow(request, "GET", "HEAD")
            return Response(200, self.metrics_text().encode("utf-8"), METRICS_TYPE)
        if path in ("/api/calls", "/api/calls/"):
            allow(request, "GET", "POST")
            if request.method == "POST":
                return self._place_call(request)
            return json_response(self.calls())
        if path in ("/api/dials", "/api/dials/"):
            allow(request, "GET")
            return json_response(self._dials())
        if path in ("/api/agents", "/api/agents/"):
            allow(request, "GET")
            return self._agents()
        match = CALL_PATH.match(path)
        if match:
            call_id, action = match.group(1), match.group(2)
            if action is None:
                allow(request, "GET")
                return self._forward(request, call_id, None)
            if action in ("config", "hangup"):
                allow(request, "POST")
                return self._forward(request, call_id, action)
        answer = self.history.handle(request) or self.campaigns.handle(request)
        if answer is not None:
            return answer
        if path.startswith("/api/"):
            raise HttpError(404, f"no such endpoint: {path}")
        return None

    # health
    def _ready(self) -> Response:
        endpoints = self.fleet.endpoints()
        healthy = [ep for ep in endpoints if ep.healthy]
        if self.readiness is not None:
            try:
                body = dict(self.readiness())
            except Exception:
                log.exception("fleet: the master's readiness failed")
                body = {"ready": False, "reasons": ["the master's readiness could not be "
                                                    "read (see its log)"]}
        else:       # no master: the workers alone
            body = verdict(self.settings.get("ari.app"), None,
                           sum(1 for ep in healthy if not ep.draining))
        ready = body.get("ready") is True
        connected = body.get("public_app_connected")
        body.update(ready=ready, ari_connected=bool(healthy if connected is None else connected),
                    calls_active=sum(ep.calls_active for ep in endpoints),
                    workers=len(endpoints), workers_healthy=len(healthy))
        return json_response(body, 200 if ready else 503)

    # the calls of every worker
    def calls(self) -> dict:
        endpoints = self.fleet.endpoints()
        answers = self.http.gather(endpoints, "GET", "/api/calls")
        calls: list[dict] = []
        finished: list[dict] = []
        statuses: list[dict] = []
        workers, unreachable = [], []
        for endpoint in endpoints:
            body = _json(answers[endpoint.name])
            entry = self._worker_entry(endpoint)
            if body is None:
                entry.update(reachable=False, error=_why(answers[endpoint.name]))
                unreachable.append(endpoint.name)
                workers.append(entry)
                continue
            entry["reachable"] = True
            workers.append(entry)
            for call in body.get("calls") or []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    calls.append(merge.tag(call, endpoint.name))
                    self.fleet.learn(call["id"], endpoint.name)
            for call in body.get("finished") or []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    finished.append(merge.tag(call, endpoint.name))
                    self.fleet.learn(call["id"], endpoint.name)
            if isinstance(body.get("worker"), dict):
                statuses.append(body["worker"])
        result = {"calls": merge.live_calls(calls), "finished": merge.finished_calls(finished),
                  "worker": merge.worker_status(statuses, self.settings.get("agent.active")),
                  "workers": workers, "unreachable": unreachable}
        if self.master_status is not None:
            result["master"] = self._master_status()
        return result

    def _worker_entry(self, endpoint: "WorkerEndpoint") -> dict:
        return {"name": endpoint.name, "index": endpoint.index, "pid": endpoint.pid,
                "healthy": endpoint.healthy, "draining": endpoint.draining,
                "calls_active": endpoint.calls_active}

    def _master_status(self) -> Optional[dict]:
        assert self.master_status is not None
        try:
            return self.master_status()
        except Exception:
            log.exception("fleet: the master's status failed")
            return None

    # one call: forwarded to its worker
    def _forward(self, request: Request, call_id: str, action: Optional[str]) -> Response:
        call_path = f"/api/calls/{quote(call_id, safe='')}"
        path = call_path + (f"/{action}" if action else "")
        body = request.body() if request.method == "POST" else None
        content_type = request.header("Content-Type")
        endpoints = {ep.name: ep for ep in self.fleet.endpoints()}
        owner = self.fleet.owner_of(call_id)
        if owner in endpoints:
            return self._ask_owner(endpoints[owner], request.method, path, body, content_type,
                                   call_id)
        # not known (or its worker is gone): ask every worker whether it has the call
        answers = self.http.gather(list(endpoints.values()), "GET", call_path)
        for name, answer in answers.items():
            if isinstance(answer, WorkerAnswer) and answer.status == 200:
                self.fleet.learn(call_id, name)
                if action is None:
                    return _passed_on(answer)
                return self._ask_owner(endpoints[name], request.method, path, body,
                                       content_type, call_id)
        silent = {name: _why(a) for name, a in answers.items()
                  if not (isinstance(a, WorkerAnswer) and a.status == 404)}
        if silent:
            self.forward_errors += 1
            raise HttpError(502, f"call {call_id!r} was not found on the workers that answered; "
                            "no answer from " + "; ".join(f"worker {name}: {why}"
                                                         for name, why in silent.items()))
        if owner is not None:
            raise HttpError(404, f"call {call_id!r} was carried by worker {owner}, which is no "
                            "longer running")
        first = next(iter(answers.values()), None)
        if isinstance(first, WorkerAnswer):     # every worker said 404: pass one on
            return _passed_on(first)
        raise HttpError(404, f"no call {call_id!r} (no worker is running)")

    def _ask_owner(self, endpoint: "WorkerEndpoint", method: str, path: str,
                   body: Optional[bytes], content_type: str, call_id: str) -> Response:
        try:
            answer = self.http.request(endpoint, method, path, body, content_type)
        except WorkerUnreachable as exc:
            self.forward_errors += 1
            raise HttpError(502, f"call {call_id!r} is carried by worker {endpoint.name}, "
                            f"which did not answer: {exc.reason}") from None
        return _passed_on(answer)

    # outbound: placed by one worker, listed from all
    def _place_call(self, request: Request) -> Response:
        """POST /api/calls: to the healthy worker with the fewest calls (the one answer passed
        on: 201, 400 refused, 502 Asterisk refused); 503 when no worker takes calls."""
        candidates = sorted((ep for ep in self.fleet.endpoints()
                             if ep.healthy and not ep.draining),
                            key=lambda ep: (ep.calls_active, ep.index))
        if not candidates:
            raise HttpError(503, "no worker takes calls now (starting, draining or unhealthy)")
        body = request.body()
        endpoint = candidates[0]
        try:
            answer = self.http.request(endpoint, "POST", "/api/calls", body,
                                       request.header("Content-Type"))
        except WorkerUnreachable as exc:
            self.forward_errors += 1
            raise HttpError(502, f"worker {endpoint.name} did not answer the dial (it may or "
                            f"may not have been placed: see /api/dials): {exc.reason}") from None
        return _passed_on(answer)

    def _dials(self) -> dict:
        """GET /api/dials of every worker, merged (each dial with its "worker")."""
        pending: list[dict] = []
        recent: list[dict] = []
        answers = self.http.gather(list(self.fleet.endpoints()), "GET", "/api/dials")
        for name, answer in sorted(answers.items()):
            body = _json(answer)
            if body is None:
                continue
            pending += [dict(d, worker=name) for d in body.get("pending", [])]
            recent += [dict(d, worker=name) for d in body.get("recent", [])]
        recent.sort(key=lambda d: d.get("ended_at") or 0.0)
        return {"pending": pending, "recent": recent[-200:],
                "unreachable": sorted(n for n, a in answers.items() if _json(a) is None)}

    # agents
    def _agents(self) -> Response:
        healthy = [ep for ep in self.fleet.endpoints() if ep.healthy]
        for endpoint in healthy[:AGENTS_TRIES]:
            try:
                answer = self.http.request(endpoint, "GET", "/api/agents")
            except WorkerUnreachable:
                continue
            if answer.status == 200:
                return _passed_on(answer)
        active = self.settings.get("agent.active")
        agents = [views.agent_view(agent, key == active)
                  for key, agent in sorted(self.settings.agents.items())]
        return json_response({"active": active, "agents": agents})

    # metrics
    def metrics_text(self) -> str:
        endpoints = self.fleet.endpoints()
        answers = self.http.gather(endpoints, "GET", "/metrics")
        merger = MetricsMerger()
        up: list[tuple[dict, float]] = []
        for endpoint in endpoints:
            answer = answers[endpoint.name]
            ok = isinstance(answer, WorkerAnswer) and answer.status == 200
            if ok:
                merger.add(answer.body.decode("utf-8", "replace"),
                           skip=WORKER_DASHBOARD_FAMILIES)
                if endpoint.name in self._silent:
                    self._silent.discard(endpoint.name)
                    log.info("fleet: worker %s answers /metrics again", endpoint.name)
            else:
                self.scrape_errors += 1
                if endpoint.name not in self._silent:
                    self._silent.add(endpoint.name)
                    log.warning("fleet: worker %s left out of /metrics: %s", endpoint.name,
                                _why(answer))
            up.append(({"worker": endpoint.name}, 1 if ok else 0))
        self._silent &= {ep.name for ep in endpoints}
        merger.add(self._own_metrics(endpoints, up))
        if self.master_metrics is not None:
            try:
                merger.add(self.master_metrics())
            except Exception:
                log.exception("fleet: the master's metrics failed")
        self.bad_metric_lines += merger.bad_lines
        return merger.text()

    def _own_metrics(self, endpoints: list["WorkerEndpoint"],
                     up: list[tuple[dict, float]]) -> str:
        out = Families()
        states = {"healthy": 0, "unhealthy": 0, "draining": 0}
        for endpoint in endpoints:
            state = ("draining" if endpoint.draining
                     else "healthy" if endpoint.healthy else "unhealthy")
            states[state] += 1
        out.family("workers", "gauge", "Worker processes the master lists, by state (draining "
                   "first, then healthy or not).",
                   [({"state": state}, n) for state, n in states.items()])
        out.family("worker_up", "gauge", "1 when the worker answered this scrape, else 0.", up)
        out.counter("fleet_scrape_errors", "Worker scrapes that got no answer (the worker was "
                    "left out of that scrape).", self.scrape_errors)
        out.counter("fleet_forward_errors", "API requests for a call that no worker answered.",
                    self.forward_errors)
        out.counter("fleet_metrics_bad_lines", "Lines of the workers' expositions that could "
                    "not be read (skipped).", self.bad_metric_lines)
        out.gauge("fleet_links_connected", "Workers whose event link to the fleet dashboard "
                  "is open and synced.", self.fleet.linked())
        dashboard_figures(out, self.web_stats() if self.web_stats else {})
        return out.text()
