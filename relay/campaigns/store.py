"""Campaign state in the history's database (migration 0005): campaigns, contacts, attempts,
the engines alive, the do-not-call list.

Owns: every read and write of those tables, each one transaction through the history store's
own connection and transaction plumbing (`Store._read()` / `Store._write()`: SQLite's BEGIN
IMMEDIATE, PostgreSQL's per-thread connection), and the rules that must hold whoever calls:

- an attempt is dialled once: `claim()` inserts the (campaign, contact, attempt) row — its
  primary key — in the transaction that checks the campaign is running, the attempts in flight
  (< max_concurrent) and the pace (< rate_count attempts originated in the last rate_window_s,
  an attempt not yet marked originated counting as just now). Claimers are serialised on the
  campaign: SQLite's BEGIN IMMEDIATE write lock, PostgreSQL's SELECT ... FOR UPDATE of the
  campaign row; `now` is read once the lock is held.
- an attempt is closed once (`finish`, `recover`: UPDATE ... WHERE ended_at IS NULL); the
  retry policy then says when the contact's next attempt may be claimed, or that it is done.
- an attempt whose engine died (no heartbeat for engine_timeout_s) or that is older than
  stale_after_s is closed as `interrupted`, never dialled again as the same attempt.

Everything here blocks: call it from gevent's thread pool, never on the hub. Errors:
ValueError for a request that cannot be (unknown campaign, a state change not allowed),
`relay.history.store.StoreError` / `StoreUnavailable` from the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from relay.campaigns.spec import CallingHours, CampaignSpec, RetryPolicy, dnc_key, zone

CONTACT_STATES = ("waiting", "dialling", "done", "not_dialled", "dnc")
CAMPAIGN_STATES = ("draft", "running", "paused", "stopped", "completed")
TRANSITIONS = {      # action -> (states it may start from, state it leads to)
    "start": (("draft",), "running"),
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "stop": (("draft", "running", "paused"), "stopped"),
}
LOOKAHEAD = 100      # contacts looked at beyond the free slots (out of hours, on the DNC list)
RECENT_ATTEMPTS = 50


class UnknownCampaign(ValueError):
    """No campaign of that id."""


class StateConflict(ValueError):
    """A state change the campaign's current state does not allow."""


@dataclass(frozen=True)
class Claim:
    """One attempt this engine now owns and must dial once."""

    campaign_id: str
    seq: int
    attempt: int
    endpoint: str
    variables: dict
    agent: str
    ring_timeout_s: Optional[int]
    caller_id: str
    amd: Optional[bool]


class CampaignStore:
    """Campaign operations over a history store (`relay.history.store.Store`, upgraded)."""

    def __init__(self, db: Any, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._lock_campaign = " FOR UPDATE" if db.dialect == "postgresql" else ""

    def close(self) -> None:
        """Close the database under it."""
        self.db.close()

    def _sql(self, sql: str) -> str:
        return self.db._sql(sql)

    def _json_out(self, value: Any) -> Any:
        return self.db._json_out(value)

    # --- campaigns ---------------------------------------------------------------------
    def create(self, spec: CampaignSpec) -> dict:
        """Store a new campaign (state draft) with its contacts; ValueError if the id is
        taken."""
        now = self.clock()
        with self.db._write() as cur:
            cur.execute(self._sql("SELECT 1 FROM campaigns WHERE id = ?"), [spec.id])
            if cur.fetchone() is not None:
                raise ValueError(f"a campaign {spec.id!r} exists already")
            cur.execute(self._sql(
                "INSERT INTO campaigns (id, name, agent, state, max_concurrent, rate_count, "
                "rate_window_s, settings, created_at, updated_at) "
                "VALUES (?, ?, ?, 'draft', ?, ?, ?, ?, ?, ?)"),
                [spec.id, spec.name, spec.agent, spec.max_concurrent, spec.rate_count,
                 spec.rate_window_s, self.db._json_in(spec.settings()), now, now])
            cur.executemany(self._sql(
                "INSERT INTO campaign_contacts (campaign_id, seq, endpoint, dnc_key, timezone, "
                "variables) VALUES (?, ?, ?, ?, ?, ?)"),
                [(spec.id, n, c.endpoint, dnc_key(c.endpoint), c.timezone,
                  self.db._json_in(c.variables)) for n, c in enumerate(spec.contacts, 1)])
        return self.get(spec.id)

    def control(self, campaign_id: str, action: str) -> dict:
        """start | pause | resume | stop: a state change any process may make; every engine
        follows it at its next poll. Stop marks the contacts still waiting as not dialled
        (those already dialled once: done). StateConflict when not allowed now."""
        if action not in TRANSITIONS:
            raise ValueError(f"unknown action {action!r}; use {', '.join(TRANSITIONS)}")
        allowed, target = TRANSITIONS[action]
        with self.db._write() as cur:
            state = self._campaign_state(cur, campaign_id)
            if state not in allowed:
                raise StateConflict(f"campaign {campaign_id!r} is {state}: cannot {action} it")
            now = self.clock()
            cur.execute(self._sql("UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?"),
                        [target, now, campaign_id])
            if action == "stop":
                cur.execute(self._sql(
                    "UPDATE campaign_contacts SET state = CASE WHEN attempts = 0 THEN "
                    "'not_dialled' ELSE 'done' END WHERE campaign_id = ? AND state = 'waiting'"),
                    [campaign_id])
        return self.get(campaign_id)

    def _campaign_state(self, cur, campaign_id: str) -> str:
        cur.execute(self._sql("SELECT state FROM campaigns WHERE id = ?" + self._lock_campaign),
                    [campaign_id])
        row = cur.fetchone()
        if row is None:
            raise UnknownCampaign(f"no campaign {campaign_id!r}")
        return row[0]

    def running(self) -> list[str]:
        """The ids of the running campaigns, oldest first."""
        with self.db._read() as cur:
            cur.execute("SELECT id FROM campaigns WHERE state = 'running' ORDER BY created_at, id")
            return [r[0] for r in cur.fetchall()]

    def _progress(self, cur, campaign_id: str) -> dict:
        cur.execute(self._sql("SELECT state, count(*) FROM campaign_contacts "
                              "WHERE campaign_id = ? GROUP BY state"), [campaign_id])
        contacts = dict.fromkeys(CONTACT_STATES, 0)
        contacts.update({s: int(n) for s, n in cur.fetchall()})
        cur.execute(self._sql("SELECT outcome, count(*) FROM campaign_attempts "
                              "WHERE campaign_id = ? AND ended_at IS NOT NULL GROUP BY outcome"),
                    [campaign_id])
        outcomes = {o: int(n) for o, n in cur.fetchall()}
        cur.execute(self._sql("SELECT last_outcome, count(*) FROM campaign_contacts "
                              "WHERE campaign_id = ? AND state = 'done' GROUP BY last_outcome"),
                    [campaign_id])
        final = {o: int(n) for o, n in cur.fetchall()}
        total = sum(contacts.values())
        return {"contacts": total, **contacts,
                "completed": contacts["done"] + contacts["not_dialled"] + contacts["dnc"],
                "attempts": sum(outcomes.values()) + contacts["dialling"],
                "outcomes": outcomes, "final": final}

    def _view(self, cur, row: tuple) -> dict:
        (cid, name, agent, state, concurrent, rate_count, window, settings, created,
         updated) = row
        settings = self._json_out(settings) or {}
        return {"id": cid, "name": name, "agent": agent, "state": state,
                "max_concurrent": int(concurrent),
                "calls_per_s": rate_count / window, "rate": {"count": int(rate_count),
                                                             "window_s": float(window)},
                **settings, "created_at": created, "updated_at": updated,
                "progress": self._progress(cur, cid)}

    CAMPAIGN_COLUMNS = ("id, name, agent, state, max_concurrent, rate_count, rate_window_s, "
                        "settings, created_at, updated_at")

    def list_campaigns(self) -> list[dict]:
        """Every campaign, newest first, with its progress."""
        with self.db._read() as cur:
            cur.execute(f"SELECT {self.CAMPAIGN_COLUMNS} FROM campaigns "
                        f"ORDER BY created_at DESC, id")
            rows = cur.fetchall()
            return [self._view(cur, row) for row in rows]

    def get(self, campaign_id: str, recent: int = RECENT_ATTEMPTS) -> dict:
        """A campaign's settings, progress and its most recent attempts (UnknownCampaign)."""
        with self.db._read() as cur:
            cur.execute(self._sql(f"SELECT {self.CAMPAIGN_COLUMNS} FROM campaigns "
                                  f"WHERE id = ?"), [campaign_id])
            row = cur.fetchone()
            if row is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r}")
            view = self._view(cur, row)
            cur.execute(self._sql(
                "SELECT a.seq, a.attempt, c.endpoint, a.worker, a.claimed_at, a.originated_at, "
                "a.ended_at, a.outcome, a.reason, a.channel_id FROM campaign_attempts a "
                "JOIN campaign_contacts c ON c.campaign_id = a.campaign_id AND c.seq = a.seq "
                "WHERE a.campaign_id = ? ORDER BY a.claimed_at DESC, a.seq DESC LIMIT ?"),
                [campaign_id, recent])
            keys = ("contact", "attempt", "endpoint", "worker", "claimed_at", "originated_at",
                    "ended_at", "outcome", "reason", "channel_id")
            view["recent_attempts"] = [dict(zip(keys, r)) for r in cur.fetchall()]
        return view

    def attempts(self, campaign_id: str) -> list[dict]:
        """Every attempt of a campaign in claim order (tests, exports)."""
        with self.db._read() as cur:
            cur.execute(self._sql(
                "SELECT a.seq, a.attempt, c.endpoint, a.worker, a.claimed_at, a.originated_at, "
                "a.ended_at, a.outcome, a.channel_id, a.reason FROM campaign_attempts a "
                "JOIN campaign_contacts c "
                "ON c.campaign_id = a.campaign_id AND c.seq = a.seq WHERE a.campaign_id = ? "
                "ORDER BY a.claimed_at, a.seq, a.attempt"), [campaign_id])
            keys = ("contact", "attempt", "endpoint", "worker", "claimed_at", "originated_at",
                    "ended_at", "outcome", "channel_id", "reason")
            return [dict(zip(keys, r)) for r in cur.fetchall()]

    # --- the engines' side -------------------------------------------------------------
    def claim(self, campaign_id: str, worker: str, limit: int) -> list[Claim]:
        """Claim up to `limit` attempts that may be dialled now (module docstring): running,
        under max_concurrent and the pace, contacts due, inside their calling hours, not on
        the do-not-call list (those are marked `dnc`, never dialled)."""
        if limit <= 0:
            return []
        with self.db._write() as cur:
            cur.execute(self._sql(
                "SELECT state, max_concurrent, rate_count, rate_window_s, settings, agent "
                "FROM campaigns WHERE id = ?" + self._lock_campaign), [campaign_id])
            row = cur.fetchone()
            if row is None or row[0] != "running":
                return []
            now = self.clock()          # once the campaign's lock is ours
            _, concurrent, rate_count, window, settings, agent = row
            settings = self._json_out(settings) or {}
            cur.execute(self._sql("SELECT count(*) FROM campaign_attempts "
                                  "WHERE campaign_id = ? AND ended_at IS NULL"), [campaign_id])
            in_flight = int(cur.fetchone()[0])
            cur.execute(self._sql("SELECT count(*) FROM campaign_attempts WHERE campaign_id = ? "
                                  "AND (originated_at IS NULL OR originated_at > ?)"),
                        [campaign_id, now - window])
            recent = int(cur.fetchone()[0])
            slots = min(limit, int(concurrent) - in_flight, int(rate_count) - recent)
            if slots <= 0:
                return []
            cur.execute(self._sql(
                "SELECT seq, endpoint, dnc_key, timezone, variables, attempts "
                "FROM campaign_contacts WHERE campaign_id = ? AND state = 'waiting' "
                "AND next_at <= ? ORDER BY next_at, seq LIMIT ?"),
                [campaign_id, now, slots + LOOKAHEAD])
            candidates = cur.fetchall()
            if not candidates:
                self._complete_if_done(cur, campaign_id, now)
                return []
            keys = sorted({c[2] for c in candidates})
            cur.execute(self._sql("SELECT dnc_key FROM dnc_numbers WHERE dnc_key IN (" +
                                  ", ".join("?" for _ in keys) + ")"), keys)
            blocked = {r[0] for r in cur.fetchall()}
            hours = CallingHours.parse(settings.get("hours"))
            default_tz = settings.get("timezone") or "UTC"
            claims: list[Claim] = []
            marked_dnc = False
            for seq, endpoint, key, tz_name, variables, attempts in candidates:
                if len(claims) >= slots:
                    break
                if key in blocked:
                    cur.execute(self._sql("UPDATE campaign_contacts SET state = 'dnc', "
                                          "last_outcome = 'dnc' WHERE campaign_id = ? AND "
                                          "seq = ?"), [campaign_id, seq])
                    marked_dnc = True
                    continue
                if hours is not None:
                    tz = zone(tz_name or default_tz)
                    if not hours.open_at(now, tz):
                        cur.execute(self._sql("UPDATE campaign_contacts SET next_at = ? "
                                              "WHERE campaign_id = ? AND seq = ?"),
                                    [hours.next_open(now, tz), campaign_id, seq])
                        continue
                attempt = int(attempts) + 1
                cur.execute(self._sql("INSERT INTO campaign_attempts (campaign_id, seq, attempt, "
                                      "worker, claimed_at) VALUES (?, ?, ?, ?, ?)"),
                            [campaign_id, seq, attempt, worker, now])
                cur.execute(self._sql("UPDATE campaign_contacts SET state = 'dialling', "
                                      "attempts = ? WHERE campaign_id = ? AND seq = ?"),
                            [attempt, campaign_id, seq])
                claims.append(Claim(campaign_id, int(seq), attempt, endpoint,
                                    self._json_out(variables) or {}, agent,
                                    settings.get("ring_timeout_s"),
                                    settings.get("caller_id") or "", settings.get("amd")))
            if marked_dnc and not claims:
                self._complete_if_done(cur, campaign_id, now)
            return claims

    def mark_originated(self, campaign_id: str, seq: int, attempt: int, at: float,
                        channel_id: str = "") -> None:
        """The originate of an attempt was answered by Asterisk by `at` (the pace counts it
        from then)."""
        with self.db._write() as cur:
            cur.execute(self._sql(
                "UPDATE campaign_attempts SET originated_at = coalesce(originated_at, ?), "
                "channel_id = ? WHERE campaign_id = ? AND seq = ? AND attempt = ?"),
                [at, channel_id, campaign_id, seq, attempt])

    def finish(self, campaign_id: str, seq: int, attempt: int, outcome: str,
               reason: str = "", channel_id: str = "") -> bool:
        """An attempt's outcome; False when it was closed already (recovered meanwhile)."""
        with self.db._write() as cur:
            return self._close(cur, campaign_id, seq, attempt, outcome, reason, self.clock(),
                               channel_id)

    def _close(self, cur, campaign_id: str, seq: int, attempt: int, outcome: str, reason: str,
               now: float, channel_id: str = "") -> bool:
        state = self._campaign_state(cur, campaign_id)
        cur.execute(self._sql(
            "UPDATE campaign_attempts SET ended_at = ?, outcome = ?, reason = ?, "
            "originated_at = coalesce(originated_at, ?), "
            "channel_id = CASE WHEN channel_id = '' THEN ? ELSE channel_id END "
            "WHERE campaign_id = ? AND seq = ? AND attempt = ? AND ended_at IS NULL"),
            [now, outcome, reason[:500], now, channel_id, campaign_id, seq, attempt])
        if cur.rowcount != 1:
            return False
        cur.execute(self._sql("SELECT count(*) FROM campaign_attempts WHERE campaign_id = ? "
                              "AND seq = ? AND outcome = ?"), [campaign_id, seq, outcome])
        times = int(cur.fetchone()[0])
        cur.execute(self._sql("SELECT settings FROM campaigns WHERE id = ?"), [campaign_id])
        settings = self._json_out(cur.fetchone()[0]) or {}
        delay = None if outcome == "answered" else \
            RetryPolicy.parse(settings.get("retry") or {}).next_attempt_delay(outcome, times)
        if delay is None or state in ("stopped", "completed"):
            cur.execute(self._sql("UPDATE campaign_contacts SET state = 'done', "
                                  "last_outcome = ? WHERE campaign_id = ? AND seq = ?"),
                        [outcome, campaign_id, seq])
            self._complete_if_done(cur, campaign_id, now)
        else:
            cur.execute(self._sql("UPDATE campaign_contacts SET state = 'waiting', "
                                  "last_outcome = ?, next_at = ? WHERE campaign_id = ? AND "
                                  "seq = ?"), [outcome, now + delay, campaign_id, seq])
        return True

    def _complete_if_done(self, cur, campaign_id: str, now: float) -> None:
        cur.execute(self._sql("SELECT count(*) FROM campaign_contacts WHERE campaign_id = ? "
                              "AND state IN ('waiting', 'dialling')"), [campaign_id])
        if int(cur.fetchone()[0]) == 0:
            cur.execute(self._sql("UPDATE campaigns SET state = 'completed', updated_at = ? "
                                  "WHERE id = ? AND state = 'running'"), [now, campaign_id])

    def heartbeat(self, worker: str) -> None:
        """This engine is alive (its claims are not to be recovered)."""
        with self.db._write() as cur:
            cur.execute(self._sql(
                "INSERT INTO campaign_engines (worker, seen_at) VALUES (?, ?) "
                "ON CONFLICT (worker) DO UPDATE SET seen_at = excluded.seen_at"),
                [worker, self.clock()])

    def recover(self, stale_after_s: float, engine_timeout_s: float,
                worker: Optional[str] = None) -> int:
        """Close as `interrupted` the attempts still open whose engine has no heartbeat
        within engine_timeout_s, or claimed more than stale_after_s ago (or, with `worker`,
        every open attempt of that engine: it stopped); the retry policy decides what follows.
        The number closed."""
        with self.db._write() as cur:
            now = self.clock()
            if worker is not None:
                cur.execute(self._sql("SELECT campaign_id, seq, attempt FROM campaign_attempts "
                                      "WHERE worker = ? AND ended_at IS NULL"), [worker])
            else:
                cur.execute(self._sql(
                    "SELECT a.campaign_id, a.seq, a.attempt FROM campaign_attempts a "
                    "WHERE a.ended_at IS NULL AND (a.claimed_at < ? OR NOT EXISTS "
                    "(SELECT 1 FROM campaign_engines e WHERE e.worker = a.worker "
                    "AND e.seen_at > ?))"), [now - stale_after_s, now - engine_timeout_s])
            stale = sorted(cur.fetchall())      # campaign rows locked in one order
            closed = 0
            for campaign_id, seq, attempt in stale:
                why = ("its engine stopped before the outcome was known" if worker is not None
                       else "its engine stopped answering (or it outlived any call)")
                closed += self._close(cur, campaign_id, seq, attempt, "interrupted", why, now)
            if worker is not None:
                cur.execute(self._sql("DELETE FROM campaign_engines WHERE worker = ?"), [worker])
            else:
                cur.execute(self._sql("DELETE FROM campaign_engines WHERE seen_at < ?"),
                            [now - max(engine_timeout_s * 10, 3600.0)])
            return closed

    # --- do not call ---------------------------------------------------------------------
    def dnc_add(self, numbers: list[str], note: str = "") -> int:
        """Add numbers (or endpoints) to the do-not-call list; how many were new."""
        keys = {}
        for number in numbers:
            key = dnc_key(number)
            if not key:
                raise ValueError(f"{number!r} has no number to block")
            keys[key] = number
        now = self.clock()
        with self.db._write() as cur:
            added = 0
            for key, number in keys.items():
                cur.execute(self._sql("INSERT INTO dnc_numbers (dnc_key, number, note, added_at) "
                                      "VALUES (?, ?, ?, ?) ON CONFLICT (dnc_key) DO NOTHING"),
                            [key, number, note, now])
                added += max(0, cur.rowcount)
            return added

    def dnc_remove(self, number: str) -> bool:
        with self.db._write() as cur:
            cur.execute(self._sql("DELETE FROM dnc_numbers WHERE dnc_key = ?"), [dnc_key(number)])
            return cur.rowcount > 0

    def dnc_list(self, limit: int = 1000) -> list[dict]:
        with self.db._read() as cur:
            cur.execute(self._sql("SELECT number, dnc_key, note, added_at FROM dnc_numbers "
                                  "ORDER BY added_at DESC, dnc_key LIMIT ?"), [limit])
            return [dict(zip(("number", "key", "note", "added_at"), r)) for r in cur.fetchall()]
