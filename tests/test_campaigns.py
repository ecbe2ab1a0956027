"""Campaigns end to end (relay.campaigns): a worker's engine dials a campaign's contacts into
the simulated PBX, whose callees answer, are busy, never answer, reject, fail or are machines.
Checked on the PBX's side, from its originate log (time received, channel, live originated
channels at that moment): every attempt dialled once, the pace (5 a second) and the
concurrency (20) never exceeded, retries as the policy says, a pause holding new calls while
the live ones end, a restart in the middle resuming without dialling any attempt twice, the
do-not-call list honoured at dial time."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import gevent
import pytest
from stack import Stack, wait_for

from relay.campaigns.spec import parse_campaign

CONCURRENT = 20
PER_SECOND = 5
RING_TIMEOUT_S = 8
SCRIPT = {"greeting": "Hello {name}.", "default": "I see."}
GREETED_THEN_HANGS_UP = {"steps": [{"wait_agent_done": {"silence_ms": 300, "timeout_ms": 8000}},
                                   {"hangup": True}]}
# contact i behaves as KINDS[i % 10]
KINDS = ["answer", "answer", "answer", "no_answer", "no_answer", "no_answer", "busy",
         "machine", "reject", "failure"]
RETRY = {"busy": {"after_s": 1, "max": 2}, "interrupted": {"after_s": 1, "max": 5}}
FINAL = {"answer": "answered", "no_answer": "no_answer", "busy": "busy", "machine": "machine",
         "reject": "rejected", "failure": "failed"}
AGENT = {"name": "Campaign caller", "instructions": "You call {name} about an appointment.",
         "greeting": {"instructions": "Greet {name}."}, "audio_format": "audio/pcmu",
         "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
         "outbound": {"amd": True, "on_machine": "hangup"}}


def callee(kind: str) -> dict:
    if kind == "answer":
        return {"answer": "answer", "ring_ms": [200, 600], "script": GREETED_THEN_HANGS_UP}
    if kind == "machine":
        return {"answer": "machine", "ring_ms": [200, 600],
                "script": {"steps": [{"say": "Leave a message."}, {"tone": 1000, "ms": 300},
                                     {"wait_hangup": {"timeout_ms": 20000}}]}}
    return {"answer": kind}


def contacts(count: int) -> list[dict]:
    return [{"endpoint": f"PJSIP/c{i:03d}", "variables": {"name": f"Person {i}"}}
            for i in range(count)]


@pytest.fixture
def stacks(tmp_path: Path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "caller.json").write_text(json.dumps(AGENT))
    made: list[Stack] = []

    def make(count: int) -> Stack:
        s = Stack(tmp_path, model_script=SCRIPT, settings={
            "agent.configs_dir": str(agents), "agent.active": "caller",
            "campaigns.poll_s": 0.05, "campaigns.heartbeat_s": 0.5,
            "campaigns.engine_timeout_s": 5.0})
        for i in range(count):
            s.pbx.register_endpoint(f"c{i:03d}", callee(KINDS[i % 10]))
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            if not s.worker._stopping:
                s.stop(check=False)


def blocking(fn, *args):
    return gevent.get_hub().threadpool.apply(fn, args)


def create(s: Stack, count: int, **fields) -> str:
    spec = parse_campaign({"agent": "caller", "max_concurrent": CONCURRENT,
                           "calls_per_s": PER_SECOND, "ring_timeout_s": RING_TIMEOUT_S,
                           "retry": RETRY, "contacts": contacts(count), **fields},
                          s.settings.agent)
    blocking(s.worker.campaign_store.create, spec)
    return spec.id


def check_pace_and_concurrency(originates: list[dict]) -> None:
    """On the PBX's side: never more than PER_SECOND originates in any window shorter than a
    second, never more than CONCURRENT originated channels alive at once."""
    times = sorted(o["at"] for o in originates)
    for i in range(len(times) - PER_SECOND):
        assert times[i + PER_SECOND] - times[i] >= 1.0, \
            f"{PER_SECOND + 1} originates within {times[i + PER_SECOND] - times[i]:.3f} s"
    assert max(o["live"] for o in originates) <= CONCURRENT


def test_two_hundred_contacts_paced_paused_restarted_each_attempt_dialled_once(stacks):
    count = 200
    first = stacks(count)
    campaign = create(first, count)
    store = first.worker.campaign_store
    blocked = ["PJSIP/c000", "PJSIP/c010"]       # answerers on the do-not-call list
    blocking(store.dnc_add, blocked, "asked not to be called")
    blocking(store.control, campaign, "start")
    pbx1 = first.pbx.model

    # a pause: no originate once it is committed and the claims made before it are dialled;
    # the live calls end by themselves
    wait_for(lambda: len(pbx1.originates) >= 60, 60, "60 dials")
    blocking(store.control, campaign, "pause")
    wait_for(lambda: not first.worker.dialer.pending and
             blocking(store.get, campaign)["progress"]["dialling"] == 0, 30,
             "the live dials to end and their outcomes to be written")
    at_pause = len(pbx1.originates)
    assert blocking(store.get, campaign)["state"] == "paused"
    gevent.sleep(1.0)
    assert len(pbx1.originates) == at_pause, "a paused campaign dialled"
    blocking(store.control, campaign, "resume")

    # a restart in the middle: this worker stops (its live dials cut), a new one (a new
    # process, the same database) takes over
    wait_for(lambda: len(pbx1.originates) >= at_pause + 60, 60, "60 more dials")
    restart_at = time.time()
    first.stop(check=False)
    second = stacks(count)
    wait_for(lambda: blocking(second.worker.campaign_store.get, campaign)["state"] ==
             "completed", 180, "the campaign to complete")
    originates = pbx1.originates + second.pbx.model.originates
    check_pace_and_concurrency(pbx1.originates)
    check_pace_and_concurrency(second.pbx.model.originates)
    check_pace_and_concurrency(originates)

    attempts = blocking(second.worker.campaign_store.attempts, campaign)
    by_channel = {a["channel_id"]: a for a in attempts if a.get("channel_id")}
    pbx_channels = [o["channel_id"] for o in originates]
    # each originate is one attempt's, each attempt dialled at most once
    assert len(set(pbx_channels)) == len(pbx_channels)
    assert set(pbx_channels) == set(by_channel), "originates and attempts differ"
    per_contact = defaultdict(list)
    for a in attempts:
        per_contact[a["endpoint"]].append(a)
    dialled = Counter(o["endpoint"] for o in originates)
    for i in range(count):
        endpoint = f"PJSIP/c{i:03d}"
        tries = sorted(per_contact[endpoint], key=lambda a: a["attempt"])
        if endpoint in blocked:
            assert tries == [] and dialled[endpoint] == 0
            continue
        assert [a["attempt"] for a in tries] == list(range(1, len(tries) + 1))
        assert dialled[endpoint] == sum(1 for a in tries if a["channel_id"])
        outcomes = [a["outcome"] for a in tries]
        kind = KINDS[i % 10]
        # the dialer's rule (docs/OUTBOUND.md): a channel gone during AMD is "answered" with
        # AMD status HANGUP; seen once in a few runs for a machine on this loaded machine
        real = ["machine" if a["outcome"] == "answered" and kind == "machine" and
                "during answering-machine detection" in a["reason"] else a["outcome"]
                for a in tries if a["outcome"] != "interrupted"]
        if kind == "busy":       # busy: again after a second, twice
            assert real == ["busy"] * 3, (endpoint, outcomes)
        else:
            assert real == [FINAL[kind]], (endpoint, tries, restart_at)
        if real != [o for o in outcomes if o != "interrupted"]:
            print(f"{endpoint}: a machine's channel went during AMD: {tries}")
    view = blocking(second.worker.campaign_store.get, campaign)
    progress = view["progress"]
    assert progress["dnc"] == 2 and progress["done"] == count - 2
    assert progress["waiting"] == progress["dialling"] == 0
    assert progress["final"]["answered"] == 60 - 2 and progress["final"]["busy"] == 20
    print(f"dials {len(originates)}, attempts {len(attempts)}, peak live "
          f"{max(o['live'] for o in originates)}, interrupted "
          f"{progress['outcomes'].get('interrupted', 0)}, first worker {len(pbx1.originates)}")
    second.stop()


def test_stop_marks_the_waiting_contacts_not_dialled_and_live_calls_end(stacks):
    s = stacks(30)
    campaign = create(s, 30)
    store = s.worker.campaign_store
    blocking(store.control, campaign, "start")
    wait_for(lambda: len(s.pbx.model.originates) >= 5, 30, "5 dials")
    view = blocking(store.control, campaign, "stop")
    assert view["state"] == "stopped"
    wait_for(lambda: not s.worker.dialer.pending and
             blocking(store.get, campaign)["progress"]["dialling"] == 0, 30,
             "the live dials to end and their outcomes to be written")
    dialled = len(s.pbx.model.originates)
    gevent.sleep(0.5)
    assert len(s.pbx.model.originates) == dialled
    progress = blocking(store.get, campaign)["progress"]
    assert progress["not_dialled"] == 30 - dialled
    assert progress["done"] == dialled and progress["dialling"] == 0
    with pytest.raises(ValueError, match="stopped: cannot resume"):
        blocking(store.control, campaign, "resume")
    s.stop()


def test_a_contact_added_to_the_do_not_call_list_after_the_upload_is_never_dialled(stacks):
    s = stacks(10)
    campaign = create(s, 10, max_concurrent=2, calls_per_s=1)
    store = s.worker.campaign_store
    blocking(store.control, campaign, "start")
    wait_for(lambda: len(s.pbx.model.originates) >= 1, 30, "a first dial")
    blocking(store.dnc_add, ["c009"], "")       # the name without the technology
    wait_for(lambda: blocking(store.get, campaign)["state"] == "completed", 90, "the end")
    assert "PJSIP/c009" not in {o["endpoint"] for o in s.pbx.model.originates}
    assert blocking(store.get, campaign)["progress"]["dnc"] == 1
    s.stop()


def test_a_dial_relay_refuses_closes_the_attempt_failed_and_the_worker_goes_on(stacks):
    s = stacks(0)
    spec = parse_campaign({"agent": "caller", "max_concurrent": 5, "calls_per_s": 5,
                           "retry": {},
                           "contacts": [{"endpoint": "PJSIP/c000", "variables": {"name": "A"}},
                                        {"endpoint": "Bogus/x", "variables": {"name": "B"}}]},
                          s.settings.agent)
    store = s.worker.campaign_store
    blocking(store.create, spec)
    s.pbx.register_endpoint("c000", callee("busy"))
    blocking(store.control, spec.id, "start")
    wait_for(lambda: blocking(store.get, spec.id)["state"] == "completed", 30, "the end")
    attempts = {a["endpoint"]: a for a in blocking(store.attempts, spec.id)}
    assert attempts["PJSIP/c000"]["outcome"] == "busy"
    assert attempts["Bogus/x"]["outcome"] == "failed"       # Asterisk: Allocation failed
    assert s.worker.campaigns.counters["errors"] == 0
    s.stop()


def test_a_dead_engines_claim_is_never_dialled_as_such_but_retried_as_a_new_attempt(stacks):
    s = stacks(4)
    spec = parse_campaign({"agent": "caller", "max_concurrent": 4, "calls_per_s": 5,
                           "retry": RETRY, "contacts": contacts(4)}, s.settings.agent)
    store = s.worker.campaign_store

    def start_and_die() -> list:
        store.create(spec)
        store.control(spec.id, "start")
        return store.claim(spec.id, "a-worker-that-crashed", 1)   # never heartbeats

    (ghost,) = blocking(start_and_die)
    wait_for(lambda: blocking(store.get, spec.id)["state"] == "completed", 60, "the end")
    tries = [a for a in blocking(store.attempts, spec.id) if a["contact"] == ghost.seq]
    assert [(a["attempt"], a["outcome"]) for a in tries][0] == (1, "interrupted")
    assert tries[0]["channel_id"] == "" and len(tries) >= 2
    dialled = [o for o in s.pbx.model.originates if o["endpoint"] == ghost.endpoint]
    assert len(dialled) == len(tries) - 1            # every attempt but the dead one's
    assert s.worker.campaigns.counters["recovered"] >= 1
    s.stop()


def test_a_dial_relay_refuses_before_asterisk_is_closed_failed_with_the_reason(stacks):
    s = stacks(1)
    valid = parse_campaign({"agent": "caller", "max_concurrent": 1, "calls_per_s": 5,
                            "retry": {}, "contacts": contacts(1)}, s.settings.agent)
    ghost_agent = type(valid)(**{**vars(valid), "agent": "deleted-since"})
    store = s.worker.campaign_store
    blocking(store.create, ghost_agent)
    blocking(store.control, valid.id, "start")
    wait_for(lambda: blocking(store.get, valid.id)["state"] == "completed", 30, "the end")
    (attempt,) = blocking(store.get, valid.id)["recent_attempts"]
    assert attempt["outcome"] == "failed"
    assert "relay refused the dial" in attempt["reason"] and "deleted-since" in attempt["reason"]
    assert s.pbx.model.originates == [] and s.worker.campaigns.counters["refused"] == 1
    s.stop()


class Flaky:
    """The engine's store, failing `method` the first `times` calls (the database away)."""

    def __init__(self, store, method: str, times: int) -> None:
        self.store, self.method, self.left = store, method, times

    def __getattr__(self, name):
        real = getattr(self.store, name)
        if name != self.method:
            return real

        def call(*args):
            if self.left > 0:
                self.left -= 1
                from relay.history.store import StoreUnavailable
                raise StoreUnavailable("history database: unable to open (test)")
            return real(*args)
        return call


@pytest.mark.parametrize("method", ["running", "claim", "finish", "mark_originated"])
def test_the_database_away_for_a_while_delays_the_campaign_and_nothing_else(stacks, method):
    s = stacks(6)
    campaign = create(s, 6, retry={})
    engine = s.worker.campaigns
    engine.store = Flaky(engine.store, method, 3)
    blocking(s.worker.campaign_store.control, campaign, "start")
    wait_for(lambda: blocking(s.worker.campaign_store.get, campaign)["state"] == "completed",
             60, "the end")
    assert engine.store.left == 0
    attempts = blocking(s.worker.campaign_store.attempts, campaign)
    assert len(attempts) == 6 and all(a["outcome"] != "interrupted" for a in attempts)
    assert len(s.pbx.model.originates) == 6
    if method in ("running", "claim"):
        assert engine.counters["errors"] >= 1       # a poll failed, the next one went on
    s.stop()
