"""The dispatcher (relay/fleet/dispatcher.py) against the simulated PBX's ARI: the choice of
worker, the move with the caller's args, a failed move (404, 500, ApplicationMoveFailed), no
worker to take the call, a draining master, and callers already waiting when it connects.

The "workers" here are ARI applications connected to the simulated PBX that only record the
callers moved to them; a fault-injecting HTTP proxy in front of the PBX answers 500 to the
moves to one of them."""

from __future__ import annotations

from dataclasses import dataclass, field

import gevent
import pytest
import requests
from gevent.pywsgi import WSGIServer
from stack import wait_for

from relay.ari import AriClient, AriEvents
from relay.fleet.assignments import Assignments
from relay.fleet.dispatcher import Dispatcher, _Attempt, least_loaded
from relay.sim.pbx.server import SimPbx

PUBLIC = "public"
CONGESTION = 34
WAIT = {"steps": [{"pause_ms": 30000}]}


@dataclass
class Target:
    """A worker as the dispatcher sees it, with the callers it got (its own ARI app)."""

    app: str
    healthy: bool = True
    calls_active: int = 0
    moves_since_poll: int = 0
    moves_in_flight: int = 0
    got: list = field(default_factory=list)       # StasisStart events in its app
    connect: bool = True                          # False: its app has no events socket
    events: AriEvents | None = None

    @property
    def load(self) -> int:
        return self.calls_active + self.moves_since_poll

    def note_dispatched(self) -> None:
        self.moves_since_poll += 1

    def undo_dispatched(self) -> None:
        self.moves_since_poll -= 1


class FaultyProxy:
    """ARI REST through to the PBX, except moves to `failing_app`: 500."""

    def __init__(self, pbx: SimPbx, failing_app: str) -> None:
        self.pbx, self.failing_app = pbx, failing_app
        self.session = requests.Session()
        self.session.auth = pbx.auth
        self.refused = 0
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)

    def start(self) -> "FaultyProxy":
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _app(self, environ, start_response):
        path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        if path.endswith("/move") and f"app={self.failing_app}" in query.split("&"):
            self.refused += 1
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"message": "Internal Server Error"}']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        answer = self.session.request(environ["REQUEST_METHOD"],
                                      f"http://127.0.0.1:{self.pbx.port}{path}?{query}",
                                      data=body, timeout=5)
        start_response(f"{answer.status_code} X",
                       [("Content-Type", answer.headers.get("Content-Type", "text/plain"))])
        return [answer.content]

    def stop(self) -> None:
        self.server.stop(timeout=1)
        self.session.close()


@pytest.fixture
def pbx(tmp_path):
    sim = SimPbx(recordings_dir=tmp_path / "pbx").start()
    yield sim
    sim.stop()


@pytest.fixture
def fleet(pbx):
    """make(targets, ari_url=None) -> a started Dispatcher for the PBX's app PUBLIC, whose
    targets are connected to the PBX; everything stopped at the end."""
    made: list = []

    def make(targets: list[Target], ari_url: str | None = None) -> Dispatcher:
        for target in targets:
            if target.connect:
                target.events = AriEvents(
                    pbx.events_url(target.app),
                    on_event=lambda e, t=target: t.got.append(e)
                    if e.get("type") == "StasisStart" else None,
                    on_connected=lambda: None, on_disconnected=lambda reason: None)
                target.events.start()
                made.append(target.events)
        for target in targets:
            if target.events is not None:
                wait_for(lambda t=target: t.events.connected, 5, f"{target.app} to connect")
        ari = AriClient(ari_url or f"http://127.0.0.1:{pbx.port}", pbx.user, pbx.password,
                        PUBLIC, timeout=5)
        dispatcher = Dispatcher(ari, pbx.events_url(PUBLIC), lambda: targets, Assignments(1000),
                                reconnect_initial_s=0.05)
        dispatcher.start()
        made.append(dispatcher)
        wait_for(lambda: dispatcher.connected, 5, "the dispatcher to connect")
        return dispatcher

    yield make
    for thing in made:
        thing.stop()


def caller_channel(pbx: SimPbx, call_id: str) -> dict:
    channel_id = pbx.call(call_id)["channel_id"]
    return next((c for c in pbx.inspect()["channels"] if c["id"] == channel_id), {})


def test_least_loaded_skips_the_unhealthy_and_the_excluded_and_breaks_ties_in_turn():
    a, b, c = Target("a", calls_active=3), Target("b", calls_active=1), Target("c", healthy=False)
    assert least_loaded([a, b, c]) is b
    assert least_loaded([a, b, c], exclude={"b"}) is a
    assert least_loaded([c]) is None
    b.calls_active = 3
    assert [least_loaded([a, b], start=n).app for n in range(4)] == ["a", "b", "a", "b"]


def test_callers_spread_evenly_and_keep_their_args(pbx, fleet):
    targets = [Target(f"w{i}") for i in range(3)]
    targets[0].calls_active = 2          # busier at the last poll: gets two fewer
    dispatcher = fleet(targets)
    script = {"args": ["agent=greeter", "vip"], **WAIT}
    ids = pbx.start_calls(script, count=31, app=PUBLIC)
    wait_for(lambda: sum(len(t.got) for t in targets) == 31
             and sum(dispatcher.counters["dispatched"].values()) == 31, 10,
             "every caller to be moved")
    assert [len(t.got) for t in targets] == [9, 11, 11]
    assert all(e["args"] == ["agent=greeter", "vip"] for t in targets for e in t.got)
    assert dispatcher.counters["dispatched"] == {"w0": 9, "w1": 11, "w2": 11}
    assert dispatcher.counters["refused"] == {}
    moved = {e["channel"]["id"]: t.app for t in targets for e in t.got}
    assert all(dispatcher.assignments.get(cid) == app for cid, app in moved.items())
    for call_id in ids:
        assert caller_channel(pbx, call_id)["stasis_app"] in {"w0", "w1", "w2"}
        pbx.hangup_call(call_id)


def test_a_move_refused_with_500_goes_to_the_next_worker(pbx, fleet):
    proxy = FaultyProxy(pbx, failing_app="w0").start()
    try:
        targets = [Target("w0"), Target("w1", calls_active=5)]
        dispatcher = fleet(targets, ari_url=proxy.url)
        call_id = pbx.start_call(WAIT, app=PUBLIC)
        # the event can reach w1 before the move's answer reaches the dispatcher
        wait_for(lambda: targets[1].got and dispatcher.counters["dispatched"], 10,
                 "the caller to reach w1")
        assert proxy.refused == 1 and targets[0].got == []
        assert dispatcher.counters["move_errors"] == {"w0": 1}
        assert dispatcher.counters["dispatched"] == {"w1": 1}
        assert targets[0].load == 0                  # the failed move no longer counts
        assert caller_channel(pbx, call_id)["stasis_app"] == "w1"
        pbx.hangup_call(call_id)
    finally:
        proxy.stop()


def test_a_caller_gone_before_its_move_is_left_alone(pbx, fleet):
    targets = [Target("w0")]
    dispatcher = fleet(targets)
    dispatcher._dispatch("no-such-channel", _Attempt([]))      # the move answers 404
    assert dispatcher.counters["caller_gone"] == 1
    assert dispatcher.counters["refused"] == {} and dispatcher.counters["move_errors"] == {}
    assert targets[0].load == 0


def test_an_app_without_connection_makes_asterisk_fail_the_move_then_the_next_one_gets_it(
        pbx, fleet):
    ghost = Target("ghost", connect=False)       # healthy for the master, but not connected
    targets = [ghost, Target("w1", calls_active=5)]
    dispatcher = fleet(targets)
    call_id = pbx.start_call(WAIT, app=PUBLIC)
    wait_for(lambda: targets[1].got and dispatcher.counters["dispatched"], 10,
             "the caller to reach w1")
    assert dispatcher.counters["move_errors"] == {"ghost": 1}
    assert dispatcher.counters["dispatched"] == {"w1": 1}
    assert ghost.load == 0
    assert caller_channel(pbx, call_id)["stasis_app"] == "w1"
    pbx.hangup_call(call_id)


def test_no_healthy_worker_hangs_up_with_congestion(pbx, fleet):
    targets = [Target("w0", healthy=False), Target("w1", healthy=False)]
    dispatcher = fleet(targets)
    [result] = pbx.wait_calls([pbx.start_call(WAIT, app=PUBLIC)], 10)
    assert result["cause"] == CONGESTION
    assert dispatcher.counters["refused"] == {"no_worker": 1}
    assert all(t.got == [] for t in targets)


def test_every_move_failing_hangs_up_with_congestion(pbx, fleet):
    dispatcher = fleet([Target("ghost", connect=False)])
    [result] = pbx.wait_calls([pbx.start_call(WAIT, app=PUBLIC)], 10)
    assert result["cause"] == CONGESTION
    assert dispatcher.counters["refused"] == {"all_moves_failed": 1}
    assert pbx.inspect()["channels"] == []


def test_a_draining_master_refuses_new_callers(pbx, fleet):
    targets = [Target("w0")]
    dispatcher = fleet(targets)
    dispatcher.refuse_all("draining")
    [result] = pbx.wait_calls([pbx.start_call(WAIT, app=PUBLIC)], 10)
    assert result["cause"] == CONGESTION
    assert dispatcher.counters["refused"] == {"draining": 1}
    assert targets[0].got == []


def test_callers_waiting_in_the_public_app_are_dispatched_on_connection(pbx, fleet):
    # A previous master took the callers into the public app and died before moving them.
    previous = AriEvents(pbx.events_url(PUBLIC), on_event=lambda e: None,
                         on_connected=lambda: None, on_disconnected=lambda reason: None)
    previous.start()
    wait_for(lambda: previous.connected, 5, "the previous master to connect")
    ids = pbx.start_calls({"args": ["agent=greeter"], **WAIT}, count=2, app=PUBLIC)
    wait_for(lambda: all(caller_channel(pbx, i).get("stasis_app") == PUBLIC for i in ids), 5,
             "the callers to wait in the public app")
    previous.stop()
    targets = [Target("w0")]
    dispatcher = fleet(targets)
    wait_for(lambda: len(targets[0].got) == 2, 10, "the waiting callers to be moved")
    assert all(e["args"] == ["agent=greeter"] for e in targets[0].got)
    assert dispatcher.counters["calls"] == 2
    for call_id in ids:
        pbx.hangup_call(call_id)


def test_a_caller_both_heard_arriving_and_listed_at_connection_is_moved_once(pbx, fleet):
    # The listing of the public app made as the socket connected (and the caller's details,
    # read before its move) can come back after the caller's own StasisStart was handled:
    # moved on, it must not be moved again (a second move ends its call in the worker).
    targets = [Target("w0")]
    dispatcher = fleet(targets)
    [call_id] = pbx.start_calls(WAIT, count=1, app=PUBLIC)
    wait_for(lambda: len(targets[0].got) == 1, 10, "the caller to be moved")
    channel_id = pbx.call(call_id)["channel_id"]
    moved = dispatcher.ari.get_channel(channel_id)
    as_listed = {**moved, "dialplan": {**moved["dialplan"], "app_data": PUBLIC}}
    request = dispatcher.ari.request
    dispatcher.ari.request = lambda method, path, *args, **kwargs: (
        {"channel_ids": [channel_id]} if path == f"/applications/{PUBLIC}" else
        request(method, path, *args, **kwargs))
    dispatcher.ari.get_channel = lambda cid: as_listed if cid == channel_id else {}
    dispatcher._adopt_waiting()          # what _on_connected spawned, answered late
    gevent.sleep(0.3)
    assert len(targets[0].got) == 1 and dispatcher.counters["calls"] == 1
    assert caller_channel(pbx, call_id).get("stasis_app") == "w0"
    pbx.hangup_call(call_id)


def test_a_second_connection_for_the_public_app_is_reported(pbx, fleet):
    dispatcher = fleet([Target("w0")])
    usurper = AriEvents(pbx.events_url(PUBLIC), on_event=lambda e: None,
                        on_connected=lambda: None, on_disconnected=lambda reason: None)
    usurper.start()
    try:
        wait_for(lambda: dispatcher.replaced, 5, "ApplicationReplaced")
        assert not dispatcher.connected
    finally:
        usurper.stop()


def test_a_refused_caller_still_listed_before_its_teardown_is_not_refused_twice(pbx, fleet):
    # Asterisk answers the DELETE before the channel is torn down: a listing of the public app
    # made meanwhile (the one the connection spawned, answered late) still shows the caller.
    dispatcher = fleet([Target("w0", healthy=False)])
    pbx.set_timing({"command_ms": [300, 300]})          # a slow teardown after the 204
    [call_id] = pbx.start_calls(WAIT, count=1, app=PUBLIC)
    wait_for(lambda: dispatcher.counters["refused"].get("no_worker") == 1, 10, "the refusal")
    channel_id = pbx.call(call_id)["channel_id"]
    assert caller_channel(pbx, call_id)          # still there, being torn down
    listed = dispatcher.ari.get_channel(channel_id)
    request = dispatcher.ari.request
    dispatcher.ari.request = lambda method, path, *args, **kwargs: (
        {"channel_ids": [channel_id]} if path == f"/applications/{PUBLIC}" else
        request(method, path, *args, **kwargs))
    dispatcher.ari.get_channel = lambda cid: listed if cid == channel_id else {}
    dispatcher._adopt_waiting()
    pbx.wait_calls([call_id], 10)
    gevent.sleep(0.1)
    assert dispatcher.counters["refused"] == {"no_worker": 1}
    assert dispatcher.counters["calls"] == 1
