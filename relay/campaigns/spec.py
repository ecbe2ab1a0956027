"""What a campaign is made of, checked: its settings, its contacts (JSON or CSV), its calling
hours in a time zone, its retry policy, and the key a number has on the do-not-call list.

Owns: `parse_campaign(data, agent_of)` -> CampaignSpec (ValueError naming the field, the CSV
line or the contact), `parse_csv(text)`, `CallingHours` (is a moment inside them, in which time
zone, and when they open next), `RetryPolicy` (after an outcome: again when, or done),
`dnc_key(number_or_endpoint)`. No I/O, no clock: callers pass the time.
"""

from __future__ import annotations

import csv
import io
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock_time
from datetime import timezone as dt_timezone
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.outbound.outcomes import OUTCOMES
from relay.variables import MissingVariables, agent_with_variables, check_variables, fill

MAX_CONTACTS = 100_000
MAX_CONCURRENT = 10_000
MAX_RATE = 1000
RETRY_OUTCOMES = tuple(o for o in OUTCOMES if o != "answered") + ("interrupted",)
DEFAULT_RETRY = {"busy": {"after_s": 300, "max": 3}, "no_answer": {"after_s": 1800, "max": 2}}
CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOUR = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
PHONE_CHARS = re.compile(r"^[+\d][\d\s().-]*$")
FIELDS = {"id", "name", "agent", "max_concurrent", "calls_per_s", "hours", "timezone", "retry",
          "ring_timeout_s", "caller_id", "amd", "contacts", "csv"}


def dnc_key(value: str) -> str:
    """The do-not-call key of a number or an endpoint: the resource of TECH/RESOURCE@host (or
    the value itself), its digits when it is a phone number ("+1 (555) 0101" -> "15550101"),
    else lower-cased ("PJSIP/alice@trunk" -> "alice")."""
    text = str(value).strip()
    if "/" in text:
        text = text.split("/", 1)[1]
    text = text.split("@", 1)[0].strip()
    if PHONE_CHARS.match(text) and any(c.isdigit() for c in text):
        return "".join(c for c in text if c.isdigit())
    return text.lower()


def zone(name: str, what: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be an IANA time zone name such as Europe/Paris")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{what} {name!r} is not a known time zone (IANA names such as "
                         f"America/New_York)") from None


@dataclass(frozen=True)
class CallingHours:
    """Dial only from `start` to `end` (local "HH:MM", end excluded; end before start spans
    midnight) in the contact's time zone, else the campaign's. None hours: any time."""

    start: str
    end: str

    @staticmethod
    def parse(raw: Any) -> Optional["CallingHours"]:
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) - {"start", "end"} or len(raw) != 2:
            raise ValueError('hours must be {"start": "HH:MM", "end": "HH:MM"} or null')
        for key in ("start", "end"):
            if not isinstance(raw[key], str) or not HOUR.match(raw[key]):
                raise ValueError(f"hours.{key} must be a time HH:MM (00:00..23:59), "
                                 f"got {raw[key]!r}")
        if raw["start"] == raw["end"]:
            raise ValueError("hours.start and hours.end are the same: no time to call")
        return CallingHours(raw["start"], raw["end"])

    def _times(self) -> tuple[clock_time, clock_time]:
        return (clock_time.fromisoformat(self.start), clock_time.fromisoformat(self.end))

    def open_at(self, epoch: float, tz: ZoneInfo) -> bool:
        local = datetime.fromtimestamp(epoch, tz).time().replace(tzinfo=None)
        start, end = self._times()
        if start < end:
            return start <= local < end
        return local >= start or local < end

    def next_open(self, epoch: float, tz: ZoneInfo) -> float:
        """The next moment (epoch) the hours open, at or after `epoch`."""
        if self.open_at(epoch, tz):
            return epoch
        start, _ = self._times()
        local = datetime.fromtimestamp(epoch, tz)
        for days in range(0, 3):
            day = (local + timedelta(days=days)).date()
            opening = datetime.combine(day, start, tz)
            # a start inside a DST gap: fold to a real instant
            moment = opening.astimezone(dt_timezone.utc).timestamp()
            if moment >= epoch and self.open_at(moment, tz):
                return moment
        return epoch + 3600.0       # unreachable for valid hours; stay safe

    def view(self) -> dict:
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class RetryPolicy:
    """Per outcome: {"after_s": seconds before the next attempt, "max": how many times that
    outcome may be retried}. Answered is never retried; an outcome without a rule is final;
    `interrupted` (a claim whose worker died) follows `failed`'s rule unless given its own."""

    rules: dict = field(default_factory=dict)

    @staticmethod
    def parse(raw: Any) -> "RetryPolicy":
        if raw is None:
            raw = DEFAULT_RETRY
        if not isinstance(raw, dict):
            raise ValueError("retry must be an object {outcome: {after_s, max}}")
        rules = {}
        for outcome, rule in raw.items():
            if outcome not in RETRY_OUTCOMES:
                raise ValueError(f"retry: {outcome!r} is not an outcome that can be retried "
                                 f"({', '.join(RETRY_OUTCOMES)})")
            if not isinstance(rule, dict) or set(rule) != {"after_s", "max"}:
                raise ValueError(f"retry.{outcome} must be {{\"after_s\": seconds, "
                                 f"\"max\": times}}")
            after, times = rule["after_s"], rule["max"]
            if isinstance(after, bool) or not isinstance(after, (int, float)) or \
                    not math.isfinite(after) or not 0 <= after <= 30 * 86400:
                raise ValueError(f"retry.{outcome}.after_s must be 0..2592000 seconds")
            if isinstance(times, bool) or not isinstance(times, int) or not 0 <= times <= 100:
                raise ValueError(f"retry.{outcome}.max must be a whole number 0..100")
            rules[outcome] = {"after_s": float(after), "max": times}
        return RetryPolicy(rules)

    def next_attempt_delay(self, outcome: str, times_so_far: int) -> Optional[float]:
        """Seconds before the next attempt after `outcome`, the contact having had it
        `times_so_far` times (this one included); None: the contact is done."""
        rule = self.rules.get(outcome)
        if rule is None and outcome == "interrupted":
            rule = self.rules.get("failed")
        if rule is None or times_so_far > rule["max"]:
            return None
        return rule["after_s"]


@dataclass(frozen=True)
class Contact:
    endpoint: str
    variables: dict
    timezone: str = ""


@dataclass(frozen=True)
class CampaignSpec:
    id: str
    name: str
    agent: str
    max_concurrent: int
    rate_count: int         # at most this many new dials ...
    rate_window_s: float    # ... in any window of this many seconds
    hours: Optional[CallingHours]
    timezone: str
    retry: RetryPolicy
    ring_timeout_s: Optional[int]
    caller_id: str
    amd: Optional[bool]
    contacts: list[Contact]

    def settings(self) -> dict:
        """What the campaigns.settings column keeps."""
        return {"hours": None if self.hours is None else self.hours.view(),
                "timezone": self.timezone, "retry": self.retry.rules,
                "ring_timeout_s": self.ring_timeout_s, "caller_id": self.caller_id,
                "amd": self.amd}


def rate_limit(calls_per_s: Any) -> tuple[int, float]:
    """calls_per_s -> (count, window): 5 -> 5 in any 1 s; 0.5 -> 1 in any 2 s."""
    if isinstance(calls_per_s, bool) or not isinstance(calls_per_s, (int, float)) or \
            not math.isfinite(calls_per_s) or not 0 < calls_per_s <= MAX_RATE:
        raise ValueError(f"calls_per_s must be a number above 0 and at most {MAX_RATE}")
    if calls_per_s >= 1:
        if calls_per_s != int(calls_per_s):
            raise ValueError("calls_per_s of 1 or more must be a whole number (below 1: a "
                             "fraction such as 0.5, one call every 2 s)")
        return int(calls_per_s), 1.0
    return 1, 1.0 / calls_per_s


def parse_csv(text: str) -> list[dict]:
    """Contacts from CSV text: a header row naming `endpoint` (required), `timezone`
    (optional) and any other columns, which are the contact's variables (empty cells are
    left out). ValueError naming the line."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the CSV is empty")
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ValueError(f"the CSV has no header row ({exc})") from None
    if "endpoint" not in header:
        raise ValueError(f"the CSV header must have an 'endpoint' column, got {header}")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise ValueError(f"the CSV header has an empty or repeated column: {header}")
    contacts = []
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"CSV line {line} has {len(row)} cells, the header "
                                 f"{len(header)}")
            values = dict(zip(header, (cell.strip() for cell in row)))
            contact: dict[str, Any] = {"endpoint": values.pop("endpoint"), "line": line}
            tz = values.pop("timezone", "")
            if tz:
                contact["timezone"] = tz
            contact["variables"] = {k: v for k, v in values.items() if v != ""}
            contacts.append(contact)
    except csv.Error as exc:
        raise ValueError(f"CSV line {reader.line_num}: {exc}") from None
    return contacts


def _contact(raw: Any, where: str, check_agent: Callable[[dict], None]) -> Contact:
    if not isinstance(raw, dict) or set(raw) - {"endpoint", "variables", "timezone", "line"}:
        raise ValueError(f"{where} must be an object {{endpoint, variables, timezone}}")
    endpoint = raw.get("endpoint")
    if not isinstance(endpoint, str) or "/" not in endpoint.strip("/") or \
            any(c in endpoint for c in "\r\n\0,") or len(endpoint) > 256:
        raise ValueError(f"{where}: endpoint must be TECH/RESOURCE (e.g. "
                         f"PJSIP/+15550101@trunk), got {endpoint!r}")
    try:
        variables = check_variables(raw.get("variables") or {})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    tz = raw.get("timezone") or ""
    if tz:
        zone(tz, f"{where}: timezone")
    try:
        check_agent(variables)
    except (MissingVariables, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Contact(endpoint.strip(), variables, tz.strip() if isinstance(tz, str) else "")


def parse_campaign(data: Any, agent_of: Callable[[str], Any], now_id: Optional[str] = None
                   ) -> CampaignSpec:
    """A new campaign from the API's JSON (contacts given as "contacts" or as "csv" text);
    `agent_of(key)` gives the AgentConfig (KeyError: unknown). ValueError naming what is
    wrong; nothing is stored here."""
    if not isinstance(data, dict):
        raise ValueError("a campaign must be a JSON object")
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}; allowed: "
                         f"{', '.join(sorted(FIELDS))}")
    campaign_id = data.get("id") or now_id or uuid.uuid4().hex[:12]
    if not isinstance(campaign_id, str) or not CAMPAIGN_ID.match(campaign_id):
        raise ValueError("id must be 1..64 letters, digits, '.', '_' or '-'")
    name = data.get("name") or campaign_id
    if not isinstance(name, str) or len(name) > 200:
        raise ValueError("name must be a string of at most 200 characters")
    agent_key = data.get("agent")
    if not isinstance(agent_key, str) or not agent_key:
        raise ValueError("agent is required: the key of one of relay's agents")
    try:
        agent = agent_of(agent_key)
    except KeyError:
        raise ValueError(f"unknown agent {agent_key!r}") from None
    concurrent = data.get("max_concurrent")
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or \
            not 1 <= concurrent <= MAX_CONCURRENT:
        raise ValueError(f"max_concurrent must be a whole number 1..{MAX_CONCURRENT}")
    rate_count, rate_window = rate_limit(data.get("calls_per_s"))
    hours = CallingHours.parse(data.get("hours"))
    tz_name = data.get("timezone") or "UTC"
    zone(tz_name)
    retry = RetryPolicy.parse(data.get("retry"))
    ring = data.get("ring_timeout_s")
    if ring is not None and (isinstance(ring, bool) or not isinstance(ring, int)
                             or not 1 <= ring <= 600):
        raise ValueError("ring_timeout_s must be a whole number of seconds 1..600")
    caller_id = data.get("caller_id") or ""
    if not isinstance(caller_id, str) or len(caller_id) > 200 or \
            any(c in caller_id for c in "\r\n\0"):
        raise ValueError("caller_id must be a single-line string of at most 200 characters")
    amd = data.get("amd")
    if amd is not None and not isinstance(amd, bool):
        raise ValueError("amd must be true, false or null (the agent's setting)")
    if ("contacts" in data) == ("csv" in data):
        raise ValueError("give the contacts as either \"contacts\" (a list) or \"csv\" (text)")
    raw_contacts = parse_csv(data["csv"]) if "csv" in data else data["contacts"]
    if not isinstance(raw_contacts, list) or not raw_contacts:
        raise ValueError("contacts must be a non-empty list")
    if len(raw_contacts) > MAX_CONTACTS:
        raise ValueError(f"at most {MAX_CONTACTS} contacts, got {len(raw_contacts)}")

    def check_agent(variables: dict) -> None:
        agent_with_variables(agent, variables)      # a placeholder with no variable refuses
        fill(agent.outbound.machine_message, variables,
             f"agent {agent.key!r} outbound.machine_message")

    contacts = []
    for n, raw in enumerate(raw_contacts):
        where = f"CSV line {raw['line']}" if isinstance(raw, dict) and "line" in raw \
            else f"contacts[{n}]"
        contacts.append(_contact(raw, where, check_agent))
    return CampaignSpec(campaign_id, name, agent.key, concurrent, rate_count, rate_window,
                        hours, tz_name, retry, ring, caller_id, amd, contacts)
