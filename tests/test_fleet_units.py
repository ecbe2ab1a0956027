"""The small pieces of relay.fleet without processes: the call table, the master-worker line,
worker app names, the master's status and metrics before it runs, the master's /readyz rule."""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace
from typing import Optional

import gevent
import pytest
from stack import AGENTS_DIR

from relay.config import load_settings
from relay.fleet import status
from relay.fleet.assignments import Assignments
from relay.fleet.link import ENV_FD, MAX_LINE, LineSocket, LinkPair, WorkerLink
from relay.fleet.master import Master, Slot
from relay.fleet.process import worker_app_name
from relay.web.fleet_api import FleetApi
from relay.web.http import Request
from relay.worker import resource_prefix


def test_the_call_table_is_bounded_and_pruned_only_up_to_its_mark():
    table = Assignments(max_entries=100)
    for n in range(150):
        table.record(f"c{n}", f"w{n % 2}")
    assert len(table) == 100 and table.evicted == 50
    assert "c49" not in table and table.get("c149") == "w1"
    mark = table.mark()
    table.record("late", "w0")            # recorded after Asterisk was asked: kept
    assert table.evicted == 51            # (c50 made room for it)
    assert table.prune(alive=["c100", "c101"], mark=mark) == 97
    assert sorted(table.of_worker("w0")) == ["c100", "late"]
    assert table.counts() == {"w0": 2, "w1": 1}
    assert table.drop_worker("w0") == 2 and len(table) == 1


def test_worker_names_and_resource_prefixes_never_overlap():
    names = [worker_app_name("relay", 1, n) for n in (1, 10, 11)]
    assert names == ["relay-w1-1", "relay-w1-10", "relay-w1-11"]
    assert not f"{resource_prefix(names[1])}br-x".startswith(resource_prefix(names[0]))
    assert f"{resource_prefix('relay')}br-x" == "relay-br-x"


def test_the_master_worker_line_carries_settings_and_reports_and_ends_on_close():
    pair = LinkPair()
    env = {ENV_FD: str(os.dup(pair.child_fd))}
    pair.child_started()
    worker = WorkerLink.from_environ(env)
    assert WorkerLink.from_environ({}) is None
    pair.master.send({"overrides": {"ari.app": "relay-w0-1"}})
    assert worker.overrides(timeout=5) == {"ari.app": "relay-w0-1"}
    worker.report_started("relay-w0-1", "http://127.0.0.1:1/", 40000)
    assert pair.master.read(timeout=5) == {"started": {
        "app": "relay-w0-1", "pid": os.getpid(), "web_url": "http://127.0.0.1:1/",
        "rtp_port": 40000}}
    gone = []
    worker.watch(lambda: gone.append(True))
    pair.close()                            # the master is gone
    with gevent.Timeout(5):
        while not gone:
            gevent.sleep(0.01)
    worker.close()


def test_a_line_that_is_not_json_is_skipped_and_an_endless_one_ends_the_link():
    a, b = socket.socketpair()
    line = LineSocket(b)
    a.sendall(b"not json\n[1, 2]\n{\"ok\": 1}\n")
    assert line.read(timeout=5) == {"ok": 1}
    a.sendall(b"x" * (MAX_LINE + 10))
    assert line.read(timeout=5) is None
    a.close()
    line.close()


@pytest.fixture
def master(tmp_path):
    settings = load_settings(env={}, overrides={
        "agent.configs_dir": str(AGENTS_DIR), "call.transcripts_dir": str(tmp_path)})
    made = Master(settings, 3)
    yield made
    made.ari.close()
    made.poller.stop()


def test_the_masters_figures_before_any_worker_runs(master):
    state = status.master_status(master)
    assert state["app"] == "relay" and state["workers_wanted"] == 3
    assert state["dispatcher"]["connected"] is False
    assert state["dispatcher"]["dispatched"] == {"w0": 0, "w1": 0, "w2": 0}
    text = status.master_metrics(master)
    for line in ('relay_dispatched_calls_total{worker="w2"} 0',
                 'relay_dispatch_refused_total{reason="no_worker"} 0',
                 'relay_worker_restarts_total{worker="w1"} 0',
                 "relay_dispatcher_connected 0", "relay_fleet_generation 0"):
        assert line in text, text
    assert text.count("# TYPE relay_dispatched_calls_total counter") == 1


# ------------------------------------------------------------------ the master's readiness

NOT_REGISTERED = ("the public ARI app 'relay' is not registered on Asterisk yet (dispatcher not "
                  "connected)")
DROPPED = ("the public ARI app 'relay' is not registered on Asterisk (the dispatcher's events "
           "connection dropped; it reconnects)")
NO_WORKER = ("no worker accepts calls (none of the current generation is up, connected to ARI "
             "and not draining)")


class _Dispatcher:
    """What the readiness reads of a relay.fleet.dispatcher.Dispatcher."""

    def __init__(self, connected: bool, was_connected: bool = True, replaced: bool = False,
                 refusing: Optional[str] = None) -> None:
        self.connected, self.was_connected = connected, was_connected
        self.replaced, self.refusing = replaced, refusing


def _worker(healthy: bool) -> SimpleNamespace:
    return SimpleNamespace(alive=True, healthy=healthy)


def _readyz(master: Master) -> tuple[int, dict]:
    """The fleet web API's answer to GET /readyz, with the master's readiness (as the master
    wires it) and its list of workers."""
    fleet = SimpleNamespace(endpoints=lambda: [])
    api = FleetApi(master.settings, fleet, http=None,      # /readyz asks no worker
                   readiness=lambda: status.readiness(master))
    response = api.handle(Request({"REQUEST_METHOD": "GET", "PATH_INFO": "/readyz"}, 1024))
    return response.status, json.loads(response.body)


def _with_workers(master: Master, *healthy: bool) -> None:
    master.slots = [Slot(i, 1, process=_worker(h)) for i, h in enumerate(healthy)]


def test_readyz_waits_for_the_public_app_to_be_registered(master):
    _with_workers(master, True, True)
    code, body = _readyz(master)                   # no dispatcher yet (workers starting)
    assert code == 503 and body["ready"] is False
    assert body["public_app_connected"] is False and body["workers_accepting"] == 2
    assert body["reasons"] == [NOT_REGISTERED]
    master.dispatcher = _Dispatcher(connected=False, was_connected=False)   # connecting
    assert _readyz(master) == (503, body)


def test_readyz_is_ready_with_the_public_app_and_a_worker_accepting(master):
    _with_workers(master, False, True)
    master.dispatcher = _Dispatcher(connected=True)
    code, body = _readyz(master)
    assert code == 200 and body["ready"] is True and body["reasons"] == []
    assert body["public_app_connected"] is True and body["workers_accepting"] == 1
    assert body["accepting"] is True and body["ari_connected"] is True


def test_readyz_says_no_worker_accepts_calls(master):
    master.dispatcher = _Dispatcher(connected=True)
    for healthy in ((), (False, False)):
        _with_workers(master, *healthy)
        code, body = _readyz(master)
        assert code == 503 and body["workers_accepting"] == 0
        assert body["public_app_connected"] is True and body["reasons"] == [NO_WORKER]
    master.slots[0].process.alive = False          # a dead worker does not count, healthy or not
    master.slots[0].process.healthy = True
    assert _readyz(master)[0] == 503


def test_readyz_says_every_reason_at_once(master):
    _with_workers(master, False)
    code, body = _readyz(master)
    assert code == 503 and body["reasons"] == [NOT_REGISTERED, NO_WORKER]


def test_readyz_turns_503_when_the_public_apps_connection_drops_or_is_taken(master):
    _with_workers(master, True)
    master.dispatcher = _Dispatcher(connected=True)
    assert _readyz(master)[0] == 200
    master.dispatcher.connected = False           # an Asterisk restart: it reconnects
    code, body = _readyz(master)
    assert code == 503 and body["reasons"] == [DROPPED]
    master.dispatcher.connected = True
    assert _readyz(master)[0] == 200
    master.dispatcher.connected, master.dispatcher.replaced = False, True
    code, body = _readyz(master)
    assert code == 503 and body["public_app_connected"] is False
    assert body["reasons"] == ["another connection took the public ARI app 'relay' (a second "
                               "master with the same app name on this Asterisk?): this master "
                               "gets no callers"]


def test_readyz_is_503_once_the_master_refuses_callers(master):
    _with_workers(master, True)
    master.dispatcher = _Dispatcher(connected=True, refusing="draining")
    code, body = _readyz(master)
    assert code == 503 and body["accepting"] is False
    assert body["reasons"] == ["the master is draining: new callers are refused"]


def test_the_readiness_rule_without_a_master_is_about_the_workers_alone():
    assert status.verdict("relay", None, 1) == {
        "ready": True, "public_app_connected": None, "workers_accepting": 1, "accepting": True,
        "reasons": []}
    assert status.verdict("relay", None, 0)["reasons"] == [NO_WORKER]
