"""Fault injection in the simulated PBX: each kind in-process (pbx.faults.add / SimPbx helpers)
and over HTTP (/sim/faults), with `times` counting. Matching and mangling alone first (no
sockets), then over real sockets."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest
import requests
import websocket

from relay.sim.pbx import Fault, PbxTiming, SimPbx
from relay.sim.pbx.faults import Faults
from relay.sim.pbx.testing import AriClient, EventStream

USER, PASSWORD = "relay", "pw"


# ---------------------------------------------------------------------- matching (no sockets)
def test_fault_validation():
    for bad in ({"kind": "explode"}, {}, {"kind": "late"}, {"kind": "slow_answer"},
                {"kind": "respond", "status": 99},
                {"kind": "respond", "times": -1}, {"kind": "respond", "path": "("},
                {"kind": "mangle_event"}, {"kind": "inject_event"},
                {"kind": "respond", "fired": 3}, {"kind": "respond", "colour": "red"},
                {"kind": "drop_event", "channel": 5}):
        with pytest.raises(ValueError):
            Fault.from_dict(bad)
    with pytest.raises(ValueError):           # immediate kinds need a running SimPbx
        Faults().add(kind="drop_events_connection", app="x")


def test_request_matching_and_times():
    faults = Faults()
    once = faults.add(kind="respond", method="post", path=r"^/bridges/[^/]+/addChannel$",
                      status=503)
    always = faults.add({"kind": "after", "method": "*", "path": "^/bridges/[^/]+$",
                         "times": 0})
    assert faults.match_request("GET", "/bridges/b1/addChannel") is None      # method
    assert faults.match_request("POST", "/bridges/b1/addChannel") is once
    assert faults.match_request("POST", "/bridges/b1/addChannel") is None     # used up
    for _ in range(5):
        assert faults.match_request("DELETE", "/bridges/b1") is always
    listed = {f["id"]: f for f in faults.list()}
    assert (listed[once.id]["fired"], listed[once.id]["active"]) == (1, False)
    assert (listed[always.id]["fired"], listed[always.id]["active"]) == (5, True)
    assert faults.match_request("GET", "/events", events=True) is None        # after: never
    assert faults.remove(always.id) and not faults.remove(always.id)
    assert [f["id"] for f in faults.list()] == [once.id]


def test_event_drop_and_mangle_matching():
    faults = Faults()
    faults.add(kind="drop_event", event_type="StasisStart", app="a", channel="^em-", times=2)
    faults.add(kind="mangle_event", event_type="StasisStart",
               set={"channel": "garbage", "args": None})
    faults.add(kind="mangle_event", event_type="Dial", channel="^x$",
               set={"peer.name": "renamed"}, times=0)
    start = {"type": "StasisStart", "args": ["a"], "channel": {"id": "em-1", "name": "n"}}
    assert faults.on_event("a", start) is None
    assert faults.on_event("b", start) == {"type": "StasisStart", "args": None,
                                           "channel": "garbage"}
    assert start["channel"] == {"id": "em-1", "name": "n"}           # the original untouched
    assert faults.on_event("a", start) is None                         # second drop
    assert faults.on_event("a", start) is start                        # mangle used up
    dial = {"type": "Dial", "peer": {"id": "x", "name": "old"}}
    assert faults.on_event("a", dial)["peer"] == {"id": "x", "name": "renamed"}
    assert dial["peer"]["name"] == "old"
    other = {"type": "Dial", "peer": {"id": "y", "name": "old"}}
    assert faults.on_event("a", other) is other


# ---------------------------------------------------------------------- over the sockets
class Sim:
    def __init__(self, tmp_path: Path, timing: PbxTiming) -> None:
        self.pbx = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path, seed=5,
                          timing=timing).start()
        self.ari = AriClient(self.pbx.base_url, USER, PASSWORD)
        self.http = requests.Session()
        self.http.auth = (USER, PASSWORD)
        self.sim_url = f"http://127.0.0.1:{self.pbx.port}/sim"
        self.streams: list[EventStream] = []

    def events(self, app: str = "voicebot") -> EventStream:
        stream = EventStream(self.pbx.events_url(app))
        self.streams.append(stream)
        return stream

    def fault(self, **fields) -> dict:
        r = self.http.post(self.sim_url + "/faults", json=fields, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def faults(self) -> dict[int, dict]:
        return {f["id"]: f for f in self.http.get(self.sim_url + "/faults",
                                                  timeout=5).json()["faults"]}

    def caller(self, ev: EventStream, cid: str = "c1") -> None:
        assert self.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                             channelId=cid)[0] == 200
        ev.wait_type("StasisStart", channel=cid)

    def close(self) -> None:
        for s in self.streams:
            s.close()
        self.ari.close()
        self.http.close()
        self.pbx.stop()


@pytest.fixture
def sim(tmp_path: Path):
    s = Sim(tmp_path, PbxTiming.realistic())
    try:
        yield s
    finally:
        s.close()


def test_respond_does_not_apply_and_counts(sim: Sim):
    f = sim.pbx.faults.add(kind="respond", method="POST", path="^/bridges$", status=503,
                           message="busy", times=2)
    for _ in range(2):
        assert sim.ari.post("/bridges", bridgeId="b1") == (503, {"message": "busy"})
        assert sim.ari.get("/bridges") == (200, [])
    assert sim.ari.post("/bridges", bridgeId="b1")[0] == 200
    assert (f.fired, f.active) == (2, False)
    # Over HTTP, for ever (times 0), on another path.
    g = sim.fault(kind="respond", method="GET", path="^/asterisk/ping$", status=500, times=0)
    for _ in range(3):
        assert sim.ari.get("/asterisk/ping")[0] == 500
    assert sim.faults()[g["id"]]["fired"] == 3 and sim.faults()[g["id"]]["active"]
    assert sim.faults()[f.id]["fired"] == 2
    assert sim.http.delete(f"{sim.sim_url}/faults/{g['id']}", timeout=5).status_code == 204
    assert sim.ari.get("/asterisk/ping")[0] == 200
    assert sim.http.delete(f"{sim.sim_url}/faults/{g['id']}", timeout=5).status_code == 404
    assert sim.http.delete(sim.sim_url + "/faults", timeout=5).status_code == 204
    assert sim.faults() == {}


def test_late_applies_after_the_client_gave_up(sim: Sim):
    """externalMedia held 1 s; the client gives up at 0.2 s and deletes it (404: not there
    yet); then it is created all the same, and enters the app."""
    ev = sim.events()
    sim.caller(ev)
    sim.fault(kind="late", method="POST", path="^/channels/externalMedia$", delay_s=1.0)
    impatient = AriClient(sim.pbx.base_url, USER, PASSWORD, timeout=0.2)
    try:
        with pytest.raises(requests.exceptions.Timeout):
            impatient.post("/channels/externalMedia", app="voicebot", channelId="em1",
                           format="ulaw", external_host="127.0.0.1:9")
    finally:
        impatient.close()
    assert sim.ari.delete("/channels/em1")[0] == 404
    ev.wait_type("StasisStart", channel="em1")
    assert sim.ari.get("/channels/em1")[0] == 200
    assert sim.pbx.inspect()["faults"][0]["fired"] == 1


def test_after_applies_then_answers_an_error(sim: Sim):
    assert sim.ari.post("/bridges", bridgeId="b1")[0] == 200
    f = sim.pbx.add_fault(kind="after", method="DELETE", path="^/bridges/[^/]+$",
                          status=500, message="Internal Server Error")
    assert sim.ari.delete("/bridges/b1") == (500, {"message": "Internal Server Error"})
    assert sim.ari.get("/bridges/b1")[0] == 404           # it happened all the same
    assert sim.ari.delete("/bridges/b1")[0] == 404         # and twice is 404
    assert f.fired == 1


def test_slow_answer_sends_the_events_before_the_answer(sim: Sim):
    """A loaded Asterisk: the hangup's ChannelDestroyed is read before the DELETE's 204."""
    ev = sim.events()
    sim.caller(ev)
    f = sim.fault(kind="slow_answer", method="DELETE", path="^/channels/c1$", delay_s=0.5)
    assert f["delay_s"] == 0.5 and f["active"]
    answered = gevent.spawn(sim.ari.delete, "/channels/c1")
    ev.wait_type("ChannelDestroyed", channel="c1")
    assert not answered.ready()                            # the event came first
    assert answered.get(timeout=5)[0] == 204
    assert sim.faults()[f["id"]]["fired"] == 1


def test_drop_event_in_process_and_over_http(sim: Sim):
    ev = sim.events()
    sim.caller(ev)
    f = sim.pbx.faults.add(kind="drop_event", event_type="StasisStart", app="voicebot",
                           channel="^em-")
    g = sim.fault(kind="drop_event", event_type="ChannelVarset", channel="^c1$", times=0)
    assert sim.ari.post("/channels/externalMedia", app="voicebot", channelId="em-1",
                        format="ulaw", external_host="127.0.0.1:9")[0] == 200
    while sim.pbx.model.channels["em-1"].stasis_app is None:     # it entered...
        gevent.sleep(0.005)
    assert sim.ari.post("/channels/c1/variable", variable="X", value="1")[0] == 204
    # ... a marker behind it on the same connection (events keep their order per connection)
    assert sim.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                        channelId="m1")[0] == 200
    ev.wait_type("StasisStart", channel="m1")
    types = [(e["type"], e.get("channel", {}).get("id")) for e in ev.events]
    assert ("StasisStart", "em-1") not in types            # ... but the app never heard it
    assert ("ChannelStateChange", "em-1") in types
    assert ("ChannelVarset", "c1") not in types[types.index(("StasisStart", "c1")) + 1:]
    assert f.fired == 1 and not f.active
    assert sim.faults()[g["id"]]["fired"] >= 1


def test_mangle_event_makes_a_stasis_start_channel_a_string(sim: Sim):
    ev = sim.events()
    sim.fault(kind="mangle_event", event_type="StasisStart", channel="^c2$",
              set={"channel": "garbage"})
    assert sim.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                        channelId="c2")[0] == 200
    start = ev.wait_for(lambda e: e["type"] == "StasisStart")
    assert start["channel"] == "garbage" and start["application"] == "voicebot"
    assert sim.pbx.model.channels["c2"].stasis_app == "voicebot"     # the model is unchanged


def test_inject_event_dict_and_raw_text_keep_the_connection_order(sim: Sim):
    ev = sim.events()
    sim.caller(ev)
    assert sim.pbx.inject_event("voicebot", {"type": "Bogus", "x": 1}) == 1
    r = sim.http.post(sim.sim_url + "/faults", json={"kind": "inject_event", "app": "voicebot",
                                                    "event": '{"type": "Half'}, timeout=5)
    assert r.status_code == 200 and r.json()["fired"] == 1
    ev.wait_for(lambda e: e.get("type") == "Bogus")
    assert ev.events[-1] == {"type": "Bogus", "x": 1}        # as given: no application added
    gevent.sleep(0.1)
    assert ev.closed         # the test stream cannot parse the raw frame: it stops reading
    assert sim.pbx.inject_event("nobody", {"type": "Bogus"}) == 0
    r = sim.http.post(sim.sim_url + "/faults", json={"kind": "inject_event", "app": "nobody",
                                                    "event": {}}, timeout=5)
    assert r.status_code == 404
    listed = list(sim.faults().values())
    assert [(f["kind"], f["app"], f["fired"], f["active"]) for f in listed] == [
        ("inject_event", "voicebot", 1, False), ("inject_event", "voicebot", 1, False),
        ("inject_event", "nobody", 0, False)]
    # (the in-process one that reached nobody is listed with fired 0; the HTTP one, answered
    # 404, is not kept)


@pytest.mark.parametrize("abrupt", [False, True])
def test_drop_events_connection_then_reconnect(sim: Sim, abrupt: bool):
    ev = sim.events()
    sim.caller(ev)
    if abrupt:
        assert sim.pbx.drop_events_connection("voicebot", abrupt=True) == 1
    else:
        assert sim.fault(kind="drop_events_connection", app="voicebot")["fired"] == 1
    for _ in range(500):
        if ev.closed and not sim.pbx.model.app_active("voicebot"):
            break
        gevent.sleep(0.01)
    assert ev.closed and not sim.pbx.model.app_active("voicebot")
    assert sim.ari.get("/channels/c1")[0] == 200             # its channels stay in Stasis
    again = sim.events()
    assert sim.ari.delete("/channels/c1")[0] == 204
    again.wait_type("StasisEnd", channel="c1")


def test_respond_and_late_on_the_events_websocket(sim: Sim):
    sim.fault(kind="respond", method="GET", path="^/events$", status=503,
              message="Service Unavailable")
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        EventStream(sim.pbx.events_url("voicebot"), timeout=2)
    assert err.value.status_code == 503
    assert not sim.pbx.model.app_active("voicebot")
    sim.pbx.add_fault(kind="late", path="^/events$", delay_s=0.5)
    with pytest.raises((websocket.WebSocketTimeoutException, TimeoutError, OSError)):
        EventStream(sim.pbx.events_url("voicebot"), timeout=0.1)
    gevent.sleep(0.6)     # the late handshake, answered to nobody, registers nothing
    assert not sim.pbx.model.app_active("voicebot")
    ev = sim.events()                                         # used up: connects
    sim.caller(ev)


def test_bad_faults_over_http_answer_400(sim: Sim):
    for body in ({"kind": "explode"}, {"kind": "late", "delay_s": -1}, [1], {"path": "x"}):
        r = sim.http.post(sim.sim_url + "/faults", json=body, timeout=5)
        assert r.status_code == 400 and r.json()["message"], body


def test_timing_over_http(sim: Sim):
    r = sim.http.get(sim.sim_url + "/timing", timeout=5)
    assert r.json() == PbxTiming.realistic().as_dict()
    r = sim.http.put(sim.sim_url + "/timing", json={"base": "instant",
                                                    "rest_latency_ms": [1, 2]}, timeout=5)
    assert r.status_code == 200 and r.json()["rest_latency_ms"] == [1.0, 2.0]
    assert sim.pbx.timing == PbxTiming.instant(rest_latency_ms=(1, 2))
    assert sim.http.put(sim.sim_url + "/timing", json={"rest_latency_ms": [2, 1]},
                        timeout=5).status_code == 400
    assert sim.http.get(sim.sim_url + "/inspect", timeout=5).json()["timing"] == \
        sim.pbx.timing.as_dict()
