"""The call-history routes of the dashboard's API, a worker's and the fleet's alike:

    GET  /api/history                 a page of ended calls, newest first: the filters of
                                      docs/HISTORY.md as parameters, `limit`, `after` ->
                                      {"calls": [row...], "next": cursor or null}
    GET  /api/history.csv             every call the same filters match, as CSV (an attachment),
                                      streamed page by page through the keyset cursor
    GET  /api/history/{id}            the whole record of one call (404 unknown)
    GET  /api/history/{id}/recording  its WAV (also HEAD), with byte ranges (206, 416); 404 when
                                      the call has none or the file is gone
    GET  /api/stats/daily             per day (UTC) and agent: calls, minutes, turn latency,
                                      barge-ins, cost; `since`, `until`, `agent` (last 30 days)

Owns: those routes and how they reach the store. The store comes from `store_of()` at each
request (None: 503, no history store configured); every store call runs in gevent's thread pool
(the store blocks), never on the hub. A store that fails answers 503 with the reason's kind,
logged with its traceback; a bad parameter 400 (relay.web.history_params). Authorisation is the
server's, before any route is reached.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterator, Optional

import gevent

from relay.history.query import HistoryQuery
from relay.web import history_csv
from relay.web.history_files import recording_response
from relay.web.history_params import daily_request, export_filters, search_request
from relay.web.http import HttpError, Request, Response, allow, json_response

log = logging.getLogger(__name__)

CALL_PATH = re.compile(r"^/api/history/([^/]+)(?:/(recording))?/?$")
EXPORT_PAGE = 200
NO_STORE = ("the call history is not available here: no history store is configured on this "
            "server")


class HistoryApi:
    """handle(request) -> Response, or None when the path is not the history's."""

    def __init__(self, store_of: Callable[[], Any]) -> None:
        self.store_of = store_of

    def handle(self, request: Request) -> Optional[Response]:
        path = request.path
        if path in ("/api/history", "/api/history/"):
            allow(request, "GET")
            return self._search(request)
        if path == "/api/history.csv":
            allow(request, "GET")
            return self._export(request)
        if path in ("/api/stats/daily", "/api/stats/daily/"):
            allow(request, "GET")
            return self._daily(request)
        match = CALL_PATH.match(path)
        if match is None:
            return None
        call_id, part = match.group(1), match.group(2)
        if part is None:
            allow(request, "GET")
            return self._call(call_id)
        allow(request, "GET", "HEAD")
        return self._recording(call_id, request)

    # the store, off the hub
    def _ask(self, what: str, method: str, *args: Any) -> Any:
        store = self.store_of()
        if store is None:
            raise HttpError(503, NO_STORE)
        try:
            return gevent.get_hub().threadpool.apply(getattr(store, method), args)
        except HttpError:
            raise
        except Exception as exc:
            log.exception("history: %s failed", what)
            raise HttpError(503, f"the call history could not be read ({type(exc).__name__}; "
                            "see relay's log)") from None

    def _page(self, query: HistoryQuery, limit: int, after: Optional[str]) -> dict:
        store = self.store_of()
        if store is None:
            raise HttpError(503, NO_STORE)
        try:
            page = gevent.get_hub().threadpool.apply(store.search, (query, limit, after))
        except ValueError as exc:
            if after is None:
                log.exception("history: the search failed")
                raise HttpError(503, f"the call history could not be searched ({exc})") from None
            raise HttpError(400, "after is not a cursor this server gave (use a page's "
                            "\"next\")") from None
        except Exception as exc:
            log.exception("history: the search failed")
            raise HttpError(503, f"the call history could not be searched "
                            f"({type(exc).__name__}; see relay's log)") from None
        if not isinstance(page, dict) or not isinstance(page.get("calls"), list):
            log.error("history: the store answered a page of the wrong shape: %r", type(page))
            raise HttpError(503, "the call history answered something that is not a page")
        return page

    # the routes
    def _search(self, request: Request) -> Response:
        asked = search_request(request.query)
        page = self._page(asked.filters, asked.limit, asked.after)
        return json_response({"calls": page["calls"], "next": page.get("next")})

    def _export(self, request: Request) -> Response:
        filters = export_filters(request.query)
        first = self._page(filters, EXPORT_PAGE, None)     # a failing store: a clean 503
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        headers = [("Content-Disposition", f'attachment; filename="calls-{stamp}.csv"')]
        return Response(200, b"", "text/csv; charset=utf-8", headers,
                        stream=self._export_chunks(filters, first))

    def _export_chunks(self, filters: HistoryQuery, page: dict) -> Iterator[bytes]:
        yield history_csv.header()
        seen = 0
        while True:
            seen += len(page["calls"])
            if page["calls"]:
                yield history_csv.rows(page["calls"])
            cursor = page.get("next")
            if not cursor:
                return
            try:
                page = self._page(filters, EXPORT_PAGE, cursor)
            except HttpError as exc:
                raise RuntimeError(f"the CSV export stopped after {seen} calls: "
                                   f"{exc.message}") from None

    def _call(self, call_id: str) -> Response:
        record = self._ask(f"reading call {call_id!r}", "get", call_id)
        if record is None:
            raise HttpError(404, f"no call {call_id!r} in the history")
        return json_response(record)

    def _recording(self, call_id: str, request: Request) -> Response:
        record = self._ask(f"reading call {call_id!r}", "get", call_id)
        if record is None:
            raise HttpError(404, f"no call {call_id!r} in the history")
        path = record.get("recording_path") or ""
        if not isinstance(path, str) or not path:
            raise HttpError(404, f"call {call_id!r} was not recorded")
        return recording_response(path, request.header("Range"),
                                  f"the recording of call {call_id!r}")

    def _daily(self, request: Request) -> Response:
        since, until, agent = daily_request(request.query)
        rows = self._ask("the daily figures", "daily_stats", since, until, agent)
        if not isinstance(rows, list):
            log.error("history: daily_stats answered %r, not a list", type(rows))
            raise HttpError(503, "the call history answered something that is not a list")
        return json_response({"since": since, "until": until, "agent": agent, "days": rows})
