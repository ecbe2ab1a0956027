"""The call-history export as CSV: the header row and the rows of a search page, as text.

Owns: the columns (the row of docs/HISTORY.md, times as UTC ISO 8601), the quoting (the csv
module's: commas, quotes and line breaks inside a value stay inside it) and the defusing of
values a spreadsheet would run as a formula (text starting with = + - @, a tab or a carriage
return gets a leading apostrophe, unless it is a plain number such as +15550101). No I/O.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone
from typing import Any, Iterable

COLUMNS = ("id", "started_at", "ended_at", "duration_s", "agent", "direction", "caller_number",
           "caller_name", "end_reason", "barge_ins", "turn_p50_ms", "turn_p95_ms", "cost_usd",
           "has_recording", "worker", "host")
TIME_COLUMNS = ("started_at", "ended_at")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"^[+-]?[\d\s().-]+$")


def _iso(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in TIME_COLUMNS:
        return _iso(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if text.startswith(FORMULA_START) and not PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def _write(rows: Iterable[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def header() -> bytes:
    return _write([list(COLUMNS)])


def rows(calls: Iterable[dict]) -> bytes:
    """The CSV lines of a page's rows (b"" for none)."""
    return _write([[_cell(column, call.get(column)) for column in COLUMNS] for call in calls])
