"""The operations API's outbound routes: placing one call and reading how dials went.

Owns the answers of:

    POST /api/calls     {"endpoint": "PJSIP/+15550101@trunk", "agent": "retail",
                         "caller_id": "\"Shop\" <5550100>", "ring_timeout_s": 30,
                         "variables": {"customer_name": "Alice"}, "amd": true|false|null,
                         "campaign_id": "", "attempt": 1}
                        -> 201 {"dial": {...}} once Asterisk took the originate;
                           400 for a request relay refuses (bad endpoint, unknown agent, a
                           placeholder with no variable...); 502 {"error", "dial"} when
                           Asterisk refused the originate or never answered it (the dial's
                           outcome is then 'failed' with the reason)
    GET  /api/dials     {"pending": [...], "recent": [...]}: the dials under way and the last
                        final outcomes (relay.outbound.DialOutcome.view)

The dialing itself is relay.outbound.Dialer's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.outbound import DialRequest
from relay.outbound.dialer import DialError
from relay.web.http import HttpError, Request, Response, json_response

if TYPE_CHECKING:
    from relay.worker import Worker

FIELDS = {"endpoint", "agent", "caller_id", "ring_timeout_s", "variables", "amd",
          "campaign_id", "attempt"}


def place_call(worker: "Worker", request: Request) -> Response:
    body = request.json_object()
    unknown = set(body) - FIELDS
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: "
                        f"{', '.join(sorted(FIELDS))}")
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise HttpError(400, "endpoint is required: the Asterisk endpoint to dial, e.g. "
                        "PJSIP/+15550101@trunk")
    for name in ("agent", "caller_id", "campaign_id"):
        if not isinstance(body.get(name, ""), str):
            raise HttpError(400, f"{name} must be a string")
    if body.get("amd") is not None and not isinstance(body["amd"], bool):
        raise HttpError(400, "amd must be true, false or null (the agent's setting)")
    try:
        outcome = worker.dialer.dial(DialRequest(
            endpoint=endpoint, agent=body.get("agent", ""), caller_id=body.get("caller_id", ""),
            ring_timeout_s=body.get("ring_timeout_s"), variables=body.get("variables") or {},
            amd=body.get("amd"), campaign_id=body.get("campaign_id", ""),
            attempt=body.get("attempt", 1)))
    except DialError as exc:
        raise HttpError(400, str(exc)) from None
    view = outcome.view()
    if outcome.state == "ended" and outcome.outcome == "failed":
        return json_response({"error": outcome.reason, "dial": view}, 502)
    return json_response({"dial": view}, 201)


def list_dials(worker: "Worker") -> Response:
    dialer = worker.dialer
    return json_response({"pending": dialer.view(), "recent": list(dialer.recent)})
