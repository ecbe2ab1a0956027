"""The call-history API's query parameters: read, checked, and turned into the store's terms.

Owns: the names docs/HISTORY.md gives the filters (`number`, `text`, `agent`, `since`, `until`,
`end_reason`, `min_duration_s`, `max_duration_s`, `direction`) and the paging (`limit`, `after`),
and `since`/`until`/`agent` of the daily figures; each value's form and bounds, with a clear
`HttpError(400)` naming the parameter otherwise (an unknown parameter too: a misspelt filter
must not silently match everything). `since`/`until` are epoch seconds or UTC dates
`YYYY-MM-DD`; a date as `until` means the end of that day. No I/O.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Optional

from relay.history.query import HistoryQuery
from relay.web.http import HttpError

FILTERS = ("number", "text", "agent", "since", "until", "end_reason", "min_duration_s",
           "max_duration_s", "direction")
PAGING = ("limit", "after")
DAILY = ("since", "until", "agent")
DIRECTIONS = ("inbound", "outbound")
LIMIT_DEFAULT, LIMIT_MAX = 50, 200
DAILY_DEFAULT_DAYS = 30
MAX_TEXT = 200
MAX_CURSOR = 512
NUMBER_PUNCTUATION = re.compile(r"[\s+().\-]")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class SearchRequest:
    filters: HistoryQuery
    limit: int
    after: Optional[str]


def _refuse_unknown(params: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown parameter(s): {', '.join(unknown)}; allowed: "
                        f"{', '.join(allowed)}")


def _text(params: dict[str, str], name: str) -> Optional[str]:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise HttpError(400, f"{name} is longer than {MAX_TEXT} characters")
    if any(ord(ch) < 32 for ch in value):
        raise HttpError(400, f"{name} contains control characters")
    return value


def _number(params: dict[str, str]) -> Optional[str]:
    raw = params.get("number", "").strip()
    if not raw:
        return None
    digits = NUMBER_PUNCTUATION.sub("", raw)
    if not digits.isdigit() or not digits.isascii() or len(digits) > 32:
        raise HttpError(400, f"number must be digits (spaces, +, -, dots and brackets allowed), "
                        f"at most 32 of them; got {raw[:40]!r}")
    return digits


def _search_text(params: dict[str, str]) -> Optional[str]:
    value = _text(params, "text")
    if value is not None and value.count('"') % 2:
        raise HttpError(400, 'text has an unclosed quote: a phrase is written "like this"')
    return value


def _moment(params: dict[str, str], name: str, end_of_day: bool) -> Optional[float]:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if DAY.match(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise HttpError(400, f"{name}: {raw!r} is not a date") from None
        if end_of_day:
            day += timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be epoch seconds or a date YYYY-MM-DD (UTC); "
                        f"got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"{name} must be a finite, positive number of epoch seconds")
    return value


def _seconds(params: dict[str, str], name: str) -> Optional[float]:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be a number of seconds; got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, f"{name} must be a finite number of seconds, 0 or more")
    return value


def _ordered(low: Optional[float], high: Optional[float], low_name: str,
             high_name: str) -> None:
    if low is not None and high is not None and low > high:
        raise HttpError(400, f"{low_name} is after {high_name}: nothing could match")


def filters_of(params: dict[str, str]) -> HistoryQuery:
    """The filters among params (other names are the caller's to check)."""
    direction = _text(params, "direction")
    if direction is not None and direction not in DIRECTIONS:
        raise HttpError(400, f"direction must be {' or '.join(DIRECTIONS)}; got {direction!r}")
    since = _moment(params, "since", end_of_day=False)
    until = _moment(params, "until", end_of_day=True)
    _ordered(since, until, "since", "until")
    shortest = _seconds(params, "min_duration_s")
    longest = _seconds(params, "max_duration_s")
    _ordered(shortest, longest, "min_duration_s", "max_duration_s")
    try:        # the store's own checks too (a text with no word to search, say)
        return HistoryQuery(number=_number(params), text=_search_text(params),
                            agent=_text(params, "agent"), since=since, until=until,
                            end_reason=_text(params, "end_reason"), min_duration_s=shortest,
                            max_duration_s=longest, direction=direction)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def search_request(params: dict[str, str]) -> SearchRequest:
    """GET /api/history's parameters: the filters, `limit` (1..200, default 50), `after`."""
    _refuse_unknown(params, FILTERS + PAGING)
    raw_limit = params.get("limit", "").strip()
    limit = LIMIT_DEFAULT
    if raw_limit:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIMIT_MAX:
            raise HttpError(400, f"limit must be a whole number from 1 to {LIMIT_MAX}; "
                            f"got {raw_limit[:20]!r}")
        limit = int(raw_limit)
    after = params.get("after", "").strip() or None
    if after is not None and (len(after) > MAX_CURSOR or not after.isprintable()):
        raise HttpError(400, "after is not a cursor this server gave (use a page's \"next\")")
    return SearchRequest(filters_of(params), limit, after)


def export_filters(params: dict[str, str]) -> HistoryQuery:
    """GET /api/history.csv's parameters: the filters alone (every match is exported)."""
    _refuse_unknown(params, FILTERS)
    return filters_of(params)


def daily_request(params: dict[str, str], now: Optional[float] = None
                  ) -> tuple[float, float, Optional[str]]:
    """GET /api/stats/daily's (since, until, agent); by default the last 30 days."""
    _refuse_unknown(params, DAILY)
    until = _moment(params, "until", end_of_day=True)
    if until is None:
        until = time.time() if now is None else now
    since = _moment(params, "since", end_of_day=False)
    if since is None:
        since = until - DAILY_DEFAULT_DAYS * 86400.0
    _ordered(since, until, "since", "until")
    return since, until, _text(params, "agent")
