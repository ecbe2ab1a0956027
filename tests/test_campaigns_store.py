"""The campaign store (relay.campaigns.store) on SQLite and PostgreSQL, and the campaign spec
(relay.campaigns.spec): claims, the concurrency and the pace enforced by the database under
concurrent claimers (OS threads, each with its own store and connections, as separate worker
processes would), the do-not-call list, calling hours in the contact's time zone, the retry
policy, recovery of a dead engine's claims, state changes, and every refusal."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from gevent.threadpool import ThreadPool

from relay.campaigns.spec import CallingHours, RetryPolicy, dnc_key, parse_campaign, parse_csv
from relay.campaigns.store import CampaignStore, StateConflict, UnknownCampaign
from relay.config import load_settings
from relay.history.service import open_upgraded

SETTINGS = load_settings(env={}, overrides={"agent.configs_dir": "tests/agents",
                                             "agent.active": "default"})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def opened(target):
    stores = []

    def make(clock=time.time) -> CampaignStore:
        store = CampaignStore(open_upgraded(target), clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.db.close()


def spec(count: int = 3, **fields):
    data = {"agent": "default", "max_concurrent": 10, "calls_per_s": 100, "retry": {},
            "contacts": [{"endpoint": f"PJSIP/+1555{n:04d}@trunk"} for n in range(count)]}
    data.update(fields)
    return parse_campaign(data, SETTINGS.agent)


def started(store: CampaignStore, campaign) -> str:
    store.create(campaign)
    store.control(campaign.id, "start")
    return campaign.id


# --- claims under concurrent claimers ---------------------------------------------------------

def test_concurrent_claimers_never_exceed_the_concurrency_nor_claim_an_attempt_twice(opened):
    campaign = spec(120, max_concurrent=7, calls_per_s=1000,
                    retry={"busy": {"after_s": 0, "max": 1}})
    started(opened(), campaign)
    claimers = [opened() for _ in range(6)]
    in_flight: set = set()
    peak = [0]
    claimed: list = []
    lock = threading.Lock()
    done = threading.Event()

    def claimer(store: CampaignStore, name: str) -> None:
        while not done.is_set():
            got = store.claim(campaign.id, name, 3)
            with lock:
                for c in got:
                    in_flight.add((c.seq, c.attempt))
                    claimed.append((c.seq, c.attempt))
                peak[0] = max(peak[0], len(in_flight))
            for c in got:
                store.mark_originated(c.campaign_id, c.seq, c.attempt, time.time() - 5)
                with lock:      # out of the set before the database hears of the end
                    in_flight.discard((c.seq, c.attempt))
                store.finish(c.campaign_id, c.seq, c.attempt, "busy" if c.seq % 2 else
                             "answered")
            if not got and store.get(campaign.id)["state"] == "completed":
                done.set()

    pool = ThreadPool(6)
    try:
        jobs = [pool.spawn(claimer, store, f"w{n}") for n, store in enumerate(claimers)]
        gevent.joinall(jobs, timeout=120, raise_error=True)
    finally:
        done.set()
        pool.kill()
    assert done.is_set()
    assert len(claimed) == len(set(claimed)) == 120 + 60     # odd contacts: busy, once again
    assert 1 <= peak[0] <= 7
    per_contact = Counter(seq for seq, _ in claimed)
    assert all(per_contact[seq] == (2 if seq % 2 else 1) for seq in range(1, 121))
    view = claimers[0].get(campaign.id)
    assert view["progress"]["final"] == {"answered": 60, "busy": 60}


def test_concurrent_claimers_keep_the_pace_counted_from_the_originate(opened):
    campaign = spec(400, max_concurrent=1000, calls_per_s=5)
    started(opened(), campaign)
    claimers = [opened() for _ in range(4)]
    stop_at = time.monotonic() + 2.5

    def claimer(store: CampaignStore, name: str) -> None:
        while time.monotonic() < stop_at:
            for c in store.claim(campaign.id, name, 10):
                store.mark_originated(c.campaign_id, c.seq, c.attempt, time.time())
            time.sleep(0.005)

    pool = ThreadPool(4)
    try:
        gevent.joinall([pool.spawn(claimer, s, f"w{n}") for n, s in enumerate(claimers)],
                       timeout=60, raise_error=True)
    finally:
        pool.kill()
    attempts = claimers[0].attempts(campaign.id)
    originated = sorted(a["originated_at"] for a in attempts)
    assert len(originated) >= 10
    for i in range(len(originated) - 5):
        assert originated[i + 5] - originated[i] > 1.0
    for a in attempts:      # dialled after it was claimed
        assert a["originated_at"] >= a["claimed_at"]


def test_the_pace_counts_an_attempt_not_yet_originated_as_just_now(opened):
    clock = Clock(1_000_000.0)
    store = opened(clock)
    cid = started(store, spec(20, calls_per_s=5))
    first = store.claim(cid, "w", 100)
    assert len(first) == 5
    clock.now += 10
    assert store.claim(cid, "w", 100) == []       # never marked originated: still recent
    for c in first:
        store.mark_originated(cid, c.seq, c.attempt, clock.now)
    clock.now += 0.9
    assert store.claim(cid, "w", 100) == []
    clock.now += 0.2
    assert len(store.claim(cid, "w", 100)) == 5
    slow = spec(5, id="slow", calls_per_s=0.5)        # one call every 2 s
    started(store, slow)
    one = store.claim("slow", "w", 10)
    assert len(one) == 1
    store.mark_originated("slow", one[0].seq, 1, clock.now)
    clock.now += 1.5
    assert store.claim("slow", "w", 10) == []
    clock.now += 1.0
    assert len(store.claim("slow", "w", 10)) == 1


def test_max_concurrent_counts_attempts_until_their_outcome(opened):
    clock = Clock(1_000_000.0)
    store = opened(clock)
    cid = started(store, spec(10, max_concurrent=3))
    claims = store.claim(cid, "w", 100)
    assert [c.seq for c in claims] == [1, 2, 3]
    for c in claims:
        store.mark_originated(cid, c.seq, c.attempt, clock.now - 100)
    assert store.claim(cid, "w", 100) == []
    assert store.finish(cid, 2, 1, "answered") is True
    assert [c.seq for c in store.claim(cid, "w", 100)] == [4]
    assert store.claim(cid, "w", 0) == []


# --- do not call, hours, retries ----------------------------------------------------------------

def test_do_not_call_is_checked_at_dial_time(opened):
    store = opened()
    cid = started(store, spec(3))
    assert store.dnc_add(["+1 (555) 0001", "PJSIP/+15550002@other"], "asked") == 2
    assert store.dnc_add(["15550001"]) == 0         # the same number, written differently
    claims = store.claim(cid, "w", 10)
    assert [c.endpoint for c in claims] == ["PJSIP/+15550000@trunk"]
    listed = store.dnc_list()
    assert {n["key"] for n in listed} == {"15550001", "15550002"}
    assert store.dnc_remove("+15550002") is True and store.dnc_remove("+15550002") is False
    store.finish(cid, claims[0].seq, 1, "answered")
    view = store.get(cid)
    assert view["progress"]["dnc"] == 2 and view["state"] == "completed"
    with pytest.raises(ValueError, match="no number"):
        store.dnc_add(["PJSIP/@x"])


def test_dnc_keys():
    assert dnc_key("PJSIP/+1 (555) 010-1@trunk") == "15550101"
    assert dnc_key("+15550101") == "15550101"
    assert dnc_key("PJSIP/Alice@host") == "alice"
    assert dnc_key("alice") == "alice"


def test_calling_hours_follow_the_contacts_time_zone(opened):
    new_york, tokyo = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")
    ten_in_new_york = datetime(2026, 3, 2, 10, 0, tzinfo=new_york).timestamp()
    clock = Clock(ten_in_new_york)
    store = opened(clock)
    campaign = parse_campaign({
        "agent": "default", "max_concurrent": 5, "calls_per_s": 5, "retry": {},
        "hours": {"start": "09:00", "end": "17:00"}, "timezone": "America/New_York",
        "contacts": [{"endpoint": "PJSIP/ny"}, {"endpoint": "PJSIP/tokyo",
                                                "timezone": "Asia/Tokyo"}]}, SETTINGS.agent)
    cid = started(store, campaign)
    assert [c.endpoint for c in store.claim(cid, "w", 10)] == ["PJSIP/ny"]   # midnight in Tokyo
    opening = datetime(2026, 3, 3, 9, 0, tzinfo=tokyo).timestamp()
    clock.now = opening - 60
    assert store.claim(cid, "w", 10) == []
    clock.now = opening
    assert [c.endpoint for c in store.claim(cid, "w", 10)] == ["PJSIP/tokyo"]


def test_calling_hours_over_midnight_and_next_opening():
    hours = CallingHours.parse({"start": "22:00", "end": "02:00"})
    utc = ZoneInfo("UTC")
    at = datetime(2026, 1, 1, 23, 30, tzinfo=utc).timestamp()
    assert hours.open_at(at, utc) and hours.next_open(at, utc) == at
    noon = datetime(2026, 1, 1, 12, 0, tzinfo=utc).timestamp()
    assert not hours.open_at(noon, utc)
    assert hours.next_open(noon, utc) == datetime(2026, 1, 1, 22, 0, tzinfo=utc).timestamp()
    assert CallingHours.parse(None) is None


def test_retry_policy_per_outcome(opened):
    clock = Clock(1_000_000.0)
    store = opened(clock)
    cid = started(store, spec(1, retry={"busy": {"after_s": 300, "max": 2}}))
    outcomes = []
    for expected_attempt in (1, 2, 3):
        (claim,) = store.claim(cid, "w", 10)
        assert claim.attempt == expected_attempt
        store.mark_originated(cid, 1, claim.attempt, clock.now)
        store.finish(cid, 1, claim.attempt, "busy", "User busy")
        outcomes.append("busy")
        clock.now += 299
        assert store.claim(cid, "w", 10) == []
        clock.now += 2
    assert store.claim(cid, "w", 10) == []
    view = store.get(cid)
    assert view["state"] == "completed" and view["progress"]["final"] == {"busy": 1}
    assert view["progress"]["outcomes"] == {"busy": 3}
    assert [a["attempt"] for a in view["recent_attempts"]] == [3, 2, 1]


def test_retry_policy_rules():
    policy = RetryPolicy.parse({"busy": {"after_s": 5, "max": 3}, "failed": {"after_s": 1,
                                                                            "max": 1}})
    assert policy.next_attempt_delay("busy", 3) == 5.0
    assert policy.next_attempt_delay("busy", 4) is None
    assert policy.next_attempt_delay("no_answer", 1) is None
    assert policy.next_attempt_delay("interrupted", 1) == 1.0      # failed's rule
    assert RetryPolicy.parse(None).next_attempt_delay("busy", 1) == 300.0


# --- a dead engine, a stopped engine ----------------------------------------------------------

def test_a_dead_engines_claims_are_closed_interrupted_and_retried_as_new_attempts(opened):
    clock = Clock(1_000_000.0)
    dead, alive = opened(clock), opened(clock)
    cid = started(dead, spec(2, retry={"interrupted": {"after_s": 0, "max": 1}}))
    dead.heartbeat("dead")
    claims = dead.claim(cid, "dead", 10)
    dead.mark_originated(cid, claims[0].seq, 1, clock.now)
    alive.heartbeat("alive")
    assert alive.recover(3600, 20) == 0             # its heartbeat is fresh
    clock.now += 30
    alive.heartbeat("alive")
    assert alive.recover(3600, 20) == 2
    again = alive.claim(cid, "alive", 10)
    assert sorted((c.seq, c.attempt) for c in again) == [(1, 2), (2, 2)]
    assert dead.finish(cid, 1, 1, "answered") is False      # its late outcome is ignored
    outcomes = {(a["contact"], a["attempt"]): a["outcome"] for a in alive.attempts(cid)}
    assert outcomes == {(1, 1): "interrupted", (2, 1): "interrupted", (1, 2): "",
                        (2, 2): ""}


def test_a_claim_older_than_any_call_is_recovered_even_with_a_heartbeat(opened):
    clock = Clock(1_000_000.0)
    store = opened(clock)
    cid = started(store, spec(1))
    store.heartbeat("w")
    store.claim(cid, "w", 10)
    clock.now += 100
    store.heartbeat("w")
    assert store.recover(stale_after_s=50, engine_timeout_s=20) == 1
    assert store.get(cid)["progress"]["final"] == {"interrupted": 1}


def test_a_stopping_engine_closes_its_own_open_attempts(opened):
    store = opened()
    cid = started(store, spec(3))
    store.heartbeat("me")
    store.claim(cid, "me", 2)
    assert store.recover(0, 0, worker="me") == 2
    assert store.recover(0, 0, worker="me") == 0


# --- states -------------------------------------------------------------------------------------

def test_state_changes(opened):
    store = opened()
    c = spec(4)
    view = store.create(c)
    assert view["state"] == "draft" and view["progress"]["waiting"] == 4
    assert view["calls_per_s"] == 100 and view["max_concurrent"] == 10
    assert store.claim(c.id, "w", 10) == []          # a draft is not dialled
    with pytest.raises(ValueError, match="exists already"):
        store.create(c)
    with pytest.raises(StateConflict, match="draft: cannot pause"):
        store.control(c.id, "pause")
    store.control(c.id, "start")
    assert len(store.claim(c.id, "w", 1)) == 1
    assert store.control(c.id, "pause")["state"] == "paused"
    assert store.claim(c.id, "w", 10) == []
    assert store.control(c.id, "resume")["state"] == "running"
    stopped = store.control(c.id, "stop")
    assert stopped["progress"]["not_dialled"] == 3 and stopped["progress"]["dialling"] == 1
    assert store.finish(c.id, 1, 1, "busy") is True
    assert store.get(c.id)["progress"]["done"] == 1
    with pytest.raises(UnknownCampaign):
        store.control("nope", "start")
    with pytest.raises(UnknownCampaign):
        store.get("nope")
    with pytest.raises(ValueError, match="unknown action"):
        store.control(c.id, "explode")
    assert [v["id"] for v in store.list_campaigns()] == [c.id]
    assert store.running() == []


# --- the spec's refusals --------------------------------------------------------------------

@pytest.mark.parametrize("fields, error", [
    ({"agent": "nobody"}, "unknown agent 'nobody'"),
    ({"agent": None}, "agent is required"),
    ({"max_concurrent": 0}, "max_concurrent must be"),
    ({"calls_per_s": 2.5}, "whole number"),
    ({"calls_per_s": 0}, "calls_per_s must be"),
    ({"timezone": "Mars/Olympus"}, "not a known time zone"),
    ({"hours": {"start": "9", "end": "17:00"}}, "hours.start must be a time"),
    ({"hours": {"start": "09:00", "end": "09:00"}}, "the same"),
    ({"retry": {"answered": {"after_s": 1, "max": 1}}}, "not an outcome that can be retried"),
    ({"retry": {"busy": {"after_s": -1, "max": 1}}}, "after_s"),
    ({"retry": {"busy": {"after_s": 1}}}, "retry.busy must be"),
    ({"contacts": []}, "non-empty list"),
    ({"contacts": [{"endpoint": "alice"}]}, r"contacts\[0\]: endpoint must be TECH/RESOURCE"),
    ({"contacts": [{"endpoint": "PJSIP/a", "timezone": "Nowhere/x"}]}, "not a known time zone"),
    ({"contacts": [{"endpoint": "PJSIP/a", "variables": {"bad name": 1}}]}, r"contacts\[0\]"),
    ({"csv": "endpoint\nPJSIP/a\n"}, "either"),
    ({"frequency": 3}, "unknown field"),
    ({"id": "has space"}, "id must be"),
    ({"ring_timeout_s": 0}, "ring_timeout_s"),
    ({"amd": "yes"}, "amd must be"),
])
def test_bad_campaigns_are_refused_naming_the_problem(fields, error):
    data = {"agent": "default", "max_concurrent": 5, "calls_per_s": 5,
            "contacts": [{"endpoint": "PJSIP/a"}]}
    data.update(fields)
    with pytest.raises(ValueError, match=error):
        parse_campaign(data, SETTINGS.agent)


def test_a_placeholder_with_no_variable_refuses_the_campaign(tmp_path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "greeter.json").write_text('{"name": "G", "instructions": "Hello {name}."}')
    settings = load_settings(env={}, overrides={"agent.configs_dir": str(agents),
                                                 "agent.active": "greeter"})
    with pytest.raises(ValueError, match="CSV line 3: .*name"):
        parse_campaign({"agent": "greeter", "max_concurrent": 1, "calls_per_s": 1,
                        "csv": "endpoint,name\nPJSIP/a,Ann\nPJSIP/b,\n"}, settings.agent)


def test_csv_contacts():
    rows = parse_csv("\ufeffendpoint,timezone,name,order\r\nPJSIP/a,Europe/Paris,Ann,A-1\r\n"
                     "\r\nPJSIP/b,,Bob,\r\n")
    assert rows == [{"endpoint": "PJSIP/a", "line": 2, "timezone": "Europe/Paris",
                     "variables": {"name": "Ann", "order": "A-1"}},
                    {"endpoint": "PJSIP/b", "line": 4, "variables": {"name": "Bob"}}]
    for text, error in [("", "empty"), ("name\nAnn\n", "'endpoint' column"),
                        ("endpoint,name\nPJSIP/a\n", "line 2 has 1 cells"),
                        ("endpoint,endpoint\n", "repeated")]:
        with pytest.raises(ValueError, match=error):
            parse_csv(text)


# --- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error", [
    ({"campaigns.poll_s": 0}, "campaigns.poll_s"),
    ({"campaigns.heartbeat_s": 5.0, "campaigns.engine_timeout_s": 10.0},
     "campaigns.engine_timeout_s"),
    ({"campaigns.recover_every_s": 0}, "campaigns.recover_every_s"),
    ({"campaigns.stale_after_s": 60.0}, "longer than the longest dial"),
])
def test_bad_campaign_settings_are_refused(overrides, error):
    from relay.config import ConfigError
    with pytest.raises(ConfigError, match=error):
        load_settings(env={}, overrides=overrides)


def test_campaigns_can_be_switched_off_by_the_environment():
    assert load_settings(env={"CAMPAIGNS_ENABLED": "false"}).get("campaigns.enabled") is False
