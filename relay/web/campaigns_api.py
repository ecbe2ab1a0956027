"""The campaign routes of the dashboard's API, a worker's and the fleet master's alike:

    GET    /api/campaigns                  every campaign, newest first, with its progress
    POST   /api/campaigns                  a new campaign (201): JSON {agent, max_concurrent,
                                           calls_per_s, contacts | csv, ...; "start": true to
                                           start it at once}, or a CSV body (Content-Type
                                           text/csv) with the settings as query parameters
    GET    /api/campaigns/{id}             its settings, progress and recent attempts (404)
    POST   /api/campaigns/{id}/start|pause|resume|stop    a state change (409 when the
                                           campaign's state does not allow it)
    GET    /api/dnc                        the do-not-call list (newest first)
    POST   /api/dnc                        {"numbers": [...], "note": ""} -> {"added": n}
    DELETE /api/dnc/{number}               -> 200 {"removed": true}, 404 when not listed

Owns: those routes, their checks (400 naming what is wrong: relay.campaigns.spec) and how they
reach the campaign store: `store_of()` at each request (None: 503), every store call in gevent's
thread pool. Control is a state change in the database: every worker's engine follows it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Optional
from urllib.parse import unquote

import gevent
import ujson

from relay.campaigns.spec import parse_campaign
from relay.campaigns.store import StateConflict, UnknownCampaign
from relay.web.http import HttpError, Request, Response, allow, json_response

log = logging.getLogger(__name__)

CAMPAIGN_PATH = re.compile(r"^/api/campaigns/([^/]+)(?:/([a-z]+))?/?$")
DNC_PATH = re.compile(r"^/api/dnc/([^/]+)/?$")
ACTIONS = ("start", "pause", "resume", "stop")
NO_STORE = ("campaigns are not available here: they need the call history's database "
            "(history.enabled) and campaigns.enabled")
QUERY_INTS = ("max_concurrent", "ring_timeout_s")
QUERY_TEXTS = ("id", "name", "agent", "timezone", "caller_id")
MAX_DNC_NUMBERS = 10_000


def settings_from_query(query: dict) -> dict:
    """A CSV upload's settings, from its query parameters (400 naming a bad one)."""
    data: dict[str, Any] = {}
    allowed = set(QUERY_INTS) | set(QUERY_TEXTS) | {"calls_per_s", "hours", "retry", "amd",
                                                    "start"}
    unknown = set(query) - allowed
    if unknown:
        raise HttpError(400, f"unknown parameter(s): {', '.join(sorted(unknown))}; allowed: "
                        f"{', '.join(sorted(allowed))}")
    for key in QUERY_TEXTS:
        if key in query:
            data[key] = query[key]
    for key in QUERY_INTS:
        if key in query:
            try:
                data[key] = int(query[key])
            except ValueError:
                raise HttpError(400, f"{key} must be a whole number") from None
    if "calls_per_s" in query:
        try:
            data["calls_per_s"] = float(query["calls_per_s"])
        except ValueError:
            raise HttpError(400, "calls_per_s must be a number") from None
        if data["calls_per_s"] == int(data["calls_per_s"]) and data["calls_per_s"] >= 1:
            data["calls_per_s"] = int(data["calls_per_s"])
    if query.get("hours"):
        start, sep, end = query["hours"].partition("-")
        if not sep:
            raise HttpError(400, "hours must be HH:MM-HH:MM (e.g. 09:00-20:00)")
        data["hours"] = {"start": start.strip(), "end": end.strip()}
    if "retry" in query:
        try:
            data["retry"] = ujson.loads(query["retry"])
        except ValueError:
            raise HttpError(400, "retry must be JSON {outcome: {after_s, max}}") from None
    for key in ("amd", "start"):
        if key in query and query[key] != "":
            value = query[key].lower()
            if value not in ("true", "false", "1", "0"):
                raise HttpError(400, f"{key} must be true or false")
            data[key] = value in ("true", "1")
    return data


class CampaignsApi:
    """handle(request) -> Response, or None when the path is not the campaigns'."""

    def __init__(self, store_of: Callable[[], Any], agent_of: Callable[[str], Any]) -> None:
        self.store_of = store_of
        self.agent_of = agent_of        # key -> AgentConfig (KeyError: unknown)

    def handle(self, request: Request) -> Optional[Response]:
        path = request.path
        if path in ("/api/campaigns", "/api/campaigns/"):
            allow(request, "GET", "POST")
            if request.method == "POST":
                return self._create(request)
            return json_response({"campaigns": self._ask("listing campaigns",
                                                         "list_campaigns")})
        if path in ("/api/dnc", "/api/dnc/"):
            allow(request, "GET", "POST")
            if request.method == "POST":
                return self._dnc_add(request)
            return json_response({"numbers": self._ask("reading the do-not-call list",
                                                       "dnc_list")})
        match = DNC_PATH.match(path)
        if match:
            allow(request, "DELETE")
            number = unquote(match.group(1))
            if not self._ask("removing a do-not-call number", "dnc_remove", number):
                raise HttpError(404, f"{number!r} is not on the do-not-call list")
            return json_response({"removed": True, "number": number})
        match = CAMPAIGN_PATH.match(path)
        if match is None:
            return None
        campaign_id, action = match.group(1), match.group(2)
        if action is None:
            allow(request, "GET")
            return json_response(self._ask(f"reading campaign {campaign_id!r}", "get",
                                           campaign_id))
        if action not in ACTIONS:
            raise HttpError(404, f"no such endpoint: {path} (actions: {', '.join(ACTIONS)})")
        allow(request, "POST")
        return json_response(self._ask(f"{action} of campaign {campaign_id!r}", "control",
                                       campaign_id, action))

    # the store, off the hub
    def _ask(self, what: str, method: str, *args: Any) -> Any:
        store = self.store_of()
        if store is None:
            raise HttpError(503, NO_STORE)
        try:
            return gevent.get_hub().threadpool.apply(getattr(store, method), args)
        except UnknownCampaign as exc:
            raise HttpError(404, str(exc)) from None
        except StateConflict as exc:
            raise HttpError(409, str(exc)) from None
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        except Exception as exc:
            log.exception("campaigns: %s failed", what)
            raise HttpError(503, f"the campaigns' database could not be used "
                            f"({type(exc).__name__}; see relay's log)") from None

    def _create(self, request: Request) -> Response:
        content_type = request.header("Content-Type").split(";")[0].strip().lower()
        if content_type == "text/csv":
            data = settings_from_query(request.query)
            try:
                data["csv"] = request.body().decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, "the CSV must be UTF-8 text") from None
        else:
            data = request.json_object()
        start = data.pop("start", False)
        if not isinstance(start, bool):
            raise HttpError(400, "start must be true or false")
        try:
            spec = parse_campaign(data, self.agent_of)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        view = self._ask("creating a campaign", "create", spec)
        if start:
            view = self._ask(f"starting campaign {spec.id!r}", "control", spec.id, "start")
        return json_response(view, 201)

    def _dnc_add(self, request: Request) -> Response:
        body = request.json_object()
        unknown = set(body) - {"numbers", "note"}
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: "
                            "numbers, note")
        numbers = body.get("numbers")
        if not isinstance(numbers, list) or not numbers or len(numbers) > MAX_DNC_NUMBERS or \
                not all(isinstance(n, str) and n.strip() and len(n) <= 256 for n in numbers):
            raise HttpError(400, f"numbers must be a list of 1..{MAX_DNC_NUMBERS} non-empty "
                            "strings (numbers or endpoints)")
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > 500:
            raise HttpError(400, "note must be a string of at most 500 characters")
        added = self._ask("adding do-not-call numbers", "dnc_add", numbers, note)
        return json_response({"added": added}, 201)
