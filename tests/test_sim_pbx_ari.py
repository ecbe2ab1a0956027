"""The simulated PBX over real sockets: ARI REST, the events WebSocket, against the Swagger files
and the real Asterisk's event-trace.json. Every response and every event is validated."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import websocket
from ari_swagger import AriSpec

from relay.sim.pbx import SimPbx
from relay.sim.pbx.testing import AriClient, EventStream

USER, PASSWORD = "relay", "s3cret"


@pytest.fixture(scope="module")
def spec(reference_dir: Path) -> AriSpec:
    return AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")


@pytest.fixture(scope="module")
def trace(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / "asterisk" / "event-trace.json").read_text())


class Sim:
    """A started SimPbx, a validating ARI client and validated event streams."""

    def __init__(self, pbx: SimPbx, spec: AriSpec) -> None:
        self.pbx = pbx
        self.spec = spec
        self.ari = AriClient(pbx.base_url, USER, PASSWORD, check=self._check)
        self.streams: list[EventStream] = []

    def _check(self, method: str, path: str, status: int, body: object) -> None:
        problems = self.spec.validate_response(method, path, status, body)
        assert not problems, problems

    def events(self, app: str, subscribe_all: bool = False) -> EventStream:
        stream = EventStream(self.pbx.events_url(app, subscribe_all))
        self.streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        self.ari.close()
        problems = [p for s in self.streams for e in s.events for p in self.spec.validate_event(e)]
        assert not problems, problems[:10]


@pytest.fixture
def sim(spec: AriSpec, tmp_path: Path):
    pbx = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path, seed=7)
    pbx.start()
    s = Sim(pbx, spec)
    try:
        yield s
    finally:
        try:
            s.close()
        finally:
            pbx.stop()


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _resource(event: dict) -> str:
    """The resource an event is about: channel, Dial peer, bridge, playback or recording."""
    for key in ("channel", "peer"):
        if key in event:
            return event[key]["id"]
    if "bridge" in event:
        return event["bridge"]["id"]
    if "playback" in event:
        return event["playback"]["id"]
    if "recording" in event:
        return event["recording"]["name"]
    return ""


# ---------------------------------------------------------------------- replaying the trace
def test_replays_event_trace_originate_external_media_bridge_hangup(sim: Sim, trace: list[dict]):
    """Events 0-67 of event-trace.json: originate Local/s@playtone into the app, externalMedia,
    a mixing bridge with both, snoops, recordings, a channel and a bridge playback, hangups.

    Compared: the sequence of event types (all of them, noise included: ChannelVarset,
    ChannelConnectedLine, Dial, ChannelStateChange...) of every event NOT about the Local ;2 half
    (caller-a-2), whose dialplan (Wait, Playback, PlayTones) runs on its own clock and so
    interleaves by timing; ;2's own sequence is compared separately, without ChannelCallerId
    (the connected-line update that crosses the Local pair lands between its dialplan steps by
    timing). The trace's script deleted the bridge while em-a was still being torn down, so its
    BridgeDestroyed raced in before em-a's last events; this test deletes the bridge after
    em-a is gone, and BridgeDestroyed is moved to the end of the trace's sequence to match.
    """
    expected_all = [{k: v for k, v in e.items() if k != "_received_at_s"} for e in trace[:68]]
    # The trace's dialplan, with a shorter wait and prompt: Wait, Playback, PlayTones, Wait(120).
    sim.pbx.register_dialplan("playtone", {"steps": [{"pause_ms": 100}, {"sound": "beep"},
                                                     {"tone": 440}, {"pause_ms": 120000}],
                                           "end": "wait"})
    ev = sim.events("voicebot")
    ari = sim.ari
    rtp = _udp()
    try:
        status, ch = ari.post("/channels", endpoint="Local/s@playtone", app="voicebot",
                              appArgs="incoming,test-a", channelId="caller-a",
                              otherChannelId="caller-a-2", callerId="Test Caller <5551234>")
        assert status == 200 and ch["state"] == "Down"
        start = ev.wait_type("StasisStart", channel="caller-a")
        assert start["args"] == ["incoming", "test-a"]
        status, br = ari.post("/bridges", type="mixing", bridgeId="br-a", name="voicebot-bridge")
        assert status == 200 and br["technology"] == "simple_bridge"
        status, em = ari.post("/channels/externalMedia", app="voicebot", channelId="em-a",
                              external_host=f"127.0.0.1:{rtp.getsockname()[1]}", format="ulaw",
                              encapsulation="rtp", transport="udp", direction="both",
                              data="em-for-caller-a")
        assert status == 200
        assert em["channelvars"]["UNICASTRTP_LOCAL_ADDRESS"] == "127.0.0.1"
        assert ev.wait_type("StasisStart", channel="em-a")["args"] == ["em-for-caller-a"]
        assert ari.post("/bridges/br-a/addChannel", channel="caller-a,em-a")[0] == 204
        ev.wait_type("ChannelConnectedLine", channel="caller-a")
        assert ari.post("/channels/caller-a/snoop", spy="in", app="voicebot",
                        snoopId="snoop-caller", appArgs="snoop")[0] == 200
        assert ev.wait_type("StasisStart", channel="snoop-caller")["args"] == ["snoop"]
        assert ari.post("/channels/em-a/snoop", spy="in", app="voicebot",
                        snoopId="snoop-em")[0] == 200
        assert ev.wait_type("StasisStart", channel="snoop-em")["args"] == []
        for target, name in (("/channels/snoop-caller", "snoop_caller"),
                             ("/channels/snoop-em", "snoop_em"), ("/bridges/br-a", "bridge_rec")):
            status, rec = ari.post(target + "/record", name=name, format="wav")
            assert status == 201 and rec["state"] == "queued"
            ev.wait_type("RecordingStarted", recording=name)
        for name in ("snoop_caller", "snoop_em", "bridge_rec"):
            assert ari.post(f"/recordings/live/{name}/stop")[0] == 204
            finished = ev.wait_type("RecordingFinished", recording=name)
            assert finished["recording"]["state"] == "done"
        status, pb = ari.post("/channels/caller-a/play", media="sound:beep", playbackId="pb-chan")
        assert status == 201 and pb["state"] == "queued"
        ev.wait_type("PlaybackFinished", playback="pb-chan")
        assert ari.post("/bridges/br-a/play", media="sound:beep", playbackId="pb-bridge")[0] == 201
        ev.wait_type("PlaybackFinished", playback="pb-bridge")
        ev.wait_type("ChannelVarset", channel="em-a")      # the Announcer left
        # As in the trace, ;2's dialplan has reached its final Wait(120) before the hangup.
        ev.wait_for(lambda e: e["type"] == "ChannelDialplan" and e["dialplan_app"] == "Wait"
                    and e["dialplan_app_data"] == "120", since=0)
        assert ari.delete("/channels/caller-a")[0] == 204
        ev.wait_type("ChannelDestroyed", channel="caller-a-2")
        assert ari.delete("/channels/em-a")[0] == 204
        ev.wait_type("ChannelDestroyed", channel="em-a")
        assert ari.delete("/bridges/br-a")[0] == 204
        ev.wait_type("BridgeDestroyed", bridge="br-a")
    finally:
        rtp.close()
    got = ev.events

    def main_sequence(events: list[dict]) -> list[str]:
        return [e["type"] for e in events if _resource(e) != "caller-a-2"]

    expected = main_sequence(expected_all)
    i = expected.index("BridgeDestroyed")
    expected.append(expected.pop(i))
    assert main_sequence(got) == expected

    def half_two(events: list[dict]) -> list[str]:
        return [e["type"] for e in events
                if _resource(e) == "caller-a-2" and e["type"] != "ChannelCallerId"]

    assert half_two(got) == half_two(expected_all)
    # The connected line crossed the Local pair: ;2's caller became em-a's (empty) caller id.
    ids = [e for e in got if e["type"] == "ChannelCallerId" and _resource(e) == "caller-a-2"]
    assert ids[0]["channel"]["caller"]["number"] == "5551234"
    assert ids[-1]["channel"]["caller"] == {"name": "", "number": ""}
    # Same shapes as the real thing: hangup causes, channel names, dialplan locations.
    by_key = {(e["type"], _resource(e)): e for e in got}
    hangup = by_key[("ChannelHangupRequest", "caller-a")]
    assert (hangup["cause"], hangup["soft"]) == (32, True)
    destroyed = by_key[("ChannelDestroyed", "caller-a")]
    assert (destroyed["cause"], destroyed["cause_txt"]) == (16, "Normal Clearing")
    assert destroyed["channel"]["dialplan"]["app_name"] == "AppDial2"
    assert by_key[("StasisStart", "caller-a")]["channel"]["name"].startswith("Local/s@playtone-")
    assert by_key[("StasisStart", "em-a")]["channel"]["name"].startswith("UnicastRTP/127.0.0.1:")
    assert by_key[("StasisStart", "snoop-caller")]["channel"]["name"].startswith(
        "Snoop/caller-a-")
    for e in got:
        assert e["application"] == "voicebot" and e["asterisk_id"]


def test_replays_event_trace_dtmf_caller(sim: Sim, trace: list[dict]):
    """Events 91-110 of event-trace.json: Local/s@dtmfcaller (Answer, Wait, SendDTMF 123#) in
    the app, four ChannelDtmfReceived ~350 ms apart, then DELETE. Compared: every event type,
    in order, with no filtering (the Wait is shortened here; the order does not depend on it)."""
    expected = [e["type"] for e in trace[91:111]]
    sim.pbx.register_dialplan("dtmfcaller", {"steps": [{"pause_ms": 100}, {"dtmf": "123#"}],
                                             "end": "wait"})
    ev = sim.events("voicebot")
    assert sim.ari.post("/channels", endpoint="Local/s@dtmfcaller", app="voicebot",
                        channelId="dc-1")[0] == 200
    digits = [ev.wait_type("ChannelDtmfReceived", channel="dc-1", timeout=5)
              for _ in range(4)]
    assert [d["digit"] for d in digits] == ["1", "2", "3", "#"]
    assert all(d["duration_ms"] == 100 for d in digits)
    assert sim.ari.delete("/channels/dc-1")[0] == 204
    ev.wait_type("ChannelDestroyed", channel="dc-1;2")
    assert [e["type"] for e in ev.events] == expected
    real = [e["channel"]["id"] if "channel" in e else e["peer"]["id"] for e in trace[91:111]]
    got = [_resource(e) for e in ev.events]
    assert got == real


# ---------------------------------------------------------------------- REST errors
def test_auth_basic_api_key_and_401(sim: Sim):
    url = sim.pbx.base_url + "/asterisk/info"
    assert requests.get(url, auth=(USER, PASSWORD), timeout=5).status_code == 200
    assert requests.get(url, params={"api_key": f"{USER}:{PASSWORD}"}, timeout=5).ok
    for kwargs in ({}, {"auth": (USER, "wrong")}, {"params": {"api_key": "relay:nope"}}):
        r = requests.get(url, timeout=5, **kwargs)
        assert r.status_code == 401
        assert r.json() == {"message": "Authentication required"}
        assert sim.spec.validate_response("GET", "/asterisk/info", 401, r.json()) == []
    with pytest.raises(websocket.WebSocketBadStatusException):
        EventStream(sim.pbx.events_url("voicebot").replace(PASSWORD, "bad"), timeout=2)
    r = requests.get(sim.pbx.base_url + "/events", params={"api_key": f"{USER}:{PASSWORD}"},
                     timeout=5)
    assert r.status_code == 400 and "app" in r.json()["message"]


def test_unknown_ids_answer_404(sim: Sim):
    ari = sim.ari
    for method, path in (("GET", "/channels/nope"), ("DELETE", "/channels/nope"),
                         ("POST", "/channels/nope/answer"), ("POST", "/channels/nope/continue"),
                         ("GET", "/bridges/nope"), ("DELETE", "/bridges/nope"),
                         ("GET", "/playbacks/nope"), ("DELETE", "/playbacks/nope"),
                         ("GET", "/recordings/live/nope"),
                         ("POST", "/recordings/live/nope/stop"),
                         ("GET", "/applications/nope")):
        status, body = ari.request(method, path)
        assert status == 404, (method, path)
        assert isinstance(body["message"], str) and body["message"]
    assert ari.post("/channels/nope/play", media="sound:beep")[0] == 404
    assert ari.post("/channels/nope/snoop", app="voicebot", spy="in")[0] == 404
    assert ari.post("/bridges/nope/addChannel", channel="x")[0] == 404
    assert ari.post("/channels/nope/move", app="other")[0] == 404
    assert ari.get("/channels/nope/variable", variable="X")[0] == 404


def test_bad_or_missing_parameters_answer_400(sim: Sim):
    ari = sim.ari
    ev = sim.events("voicebot")
    assert ari.post("/channels")[0] == 400                                  # no endpoint
    assert ari.post("/channels", endpoint="Local/s@x")[0] == 400            # no app nor exten
    assert ari.post("/channels", endpoint="Local/s@x", app="a", extension="1")[0] == 400
    assert ari.post("/channels", endpoint="nonsense", app="voicebot")[0] == 400
    assert ari.post("/channels", endpoint="Local/s@x", app="voicebot", timeout="soon")[0] == 400
    assert ari.post("/channels/externalMedia", app="voicebot", format="ulaw")[0] == 400
    assert ari.post("/channels/externalMedia", app="voicebot", format="ulaw",
                    external_host="no-port")[0] == 400
    assert ari.post("/channels/externalMedia", external_host="127.0.0.1:9",
                    format="ulaw")[0] == 400
    assert ari.post("/bridges", type="sideways")[0] == 500          # as Asterisk: cannot create
    status, _ = ari.post("/channels", endpoint="Local/s@silent", app="voicebot", channelId="c1")
    assert status == 200
    ev.wait_type("StasisStart", channel="c1")
    assert ari.delete("/channels/c1", reason="because")[0] == 400
    assert ari.delete("/channels/c1", reason="busy", reason_code="17")[0] == 400
    assert ari.post("/channels/c1/dtmf")[0] == 400
    assert ari.get("/channels/c1/variable")[0] == 400
    assert ari.post("/channels/c1/snoop", app="voicebot", spy="sideways")[0] == 400
    assert ari.post("/channels/c1/snoop", spy="in")[0] == 400
    assert ari.post("/channels/c1/play")[0] == 400
    assert ari.post("/channels/c1/record", name="r1")[0] == 400
    assert ari.post("/bridges", bridgeId="b1")[0] == 200
    assert ari.post("/bridges/b1/addChannel")[0] == 400
    assert ari.post("/bridges/b1/addChannel", channel="ghost")[0] == 400
    assert ari.post("/bridges/b1/record", name="r", format="wav", ifExists="maybe")[0] == 400
    assert ari.post("/bridges/b1/record", name="r", format="mp9")[0] == 422
    assert ari.post("/bridges/b1/removeChannel", channel="c1")[0] == 422
    assert ari.get("/channels/c1/variable", variable="NOT_SET")[0] == 404
    # A body works like the query string, `variables` included.
    status, _ = ari.post("/channels/c1/variable", json_body={"variable": "COLOR", "value": "blue"})
    assert status == 204
    assert ari.get("/channels/c1/variable", variable="COLOR") == (200, {"value": "blue"})
    status, _ = ari.post("/channels", json_body={"endpoint": "Local/s@silent", "app": "voicebot",
                                                 "channelId": "c2", "variables": {"V": "1"}})
    assert status == 200
    ev.wait_type("StasisStart", channel="c2")
    assert ari.get("/channels/c2/variable", variable="V") == (200, {"value": "1"})
    r = requests.post(sim.pbx.base_url + "/channels", data="{not json", auth=(USER, PASSWORD),
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "message" in r.json()


def test_wrong_state_answers_409_and_422(sim: Sim):
    ari = sim.ari
    ev = sim.events("voicebot")
    # Originated to an extension, not an app: never in Stasis.
    assert ari.post("/channels", endpoint="Local/s@silent", extension="s", context="silent",
                    channelId="out1")[0] == 200
    assert ari.post("/channels/out1/answer")[0] == 409
    assert ari.post("/channels/out1/play", media="sound:beep")[0] == 409
    assert ari.post("/channels/out1/move", app="voicebot")[0] == 409
    assert ari.post("/bridges", bridgeId="b1")[0] == 200
    assert ari.post("/bridges/b1/addChannel", channel="out1")[0] == 422
    assert ari.post("/bridges", bridgeId="b1")[0] == 409                   # same id
    assert ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                    channelId="out1")[0] == 409
    assert ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                    channelId="c1")[0] == 200
    ev.wait_type("StasisStart", channel="c1")
    assert ari.post("/channels/c1/play/p1", media="tone:440")[0] == 201
    assert ari.post("/channels/c1/play/p1", media="sound:beep")[0] == 409   # same playback id
    assert ari.post("/bridges/b1/addChannel", channel="c1")[0] == 204
    assert ari.post("/channels/c1/record", name="r", format="wav")[0] == 409  # bridged
    assert ari.post("/bridges/b1/record", name="br", format="wav")[0] == 201
    assert ari.post("/bridges/b1/record", name="br", format="wav")[0] == 409  # in progress
    assert ari.post("/recordings/live/br/stop")[0] == 204
    assert ev.wait_type("RecordingFinished", recording="br")["recording"]["state"] == "done"
    assert ari.post("/bridges/b1/record", name="br", format="wav")[0] == 409  # exists, fail
    assert ari.post("/bridges/b1/record", name="br", format="wav",
                    ifExists="overwrite")[0] == 201
    assert ari.delete("/recordings/live/br")[0] == 204
    assert ev.wait_type("RecordingFinished", recording="br")["recording"]["state"] == "canceled"
    assert ari.get("/recordings/stored/br") == (200, {"name": "br", "format": "wav"})
    assert ari.delete("/playbacks/p1")[0] == 204
    assert ev.wait_type("PlaybackFinished", playback="p1")["playback"]["state"] == "done"


def test_resources_get_list_info_applications(sim: Sim):
    ari = sim.ari
    ev = sim.events("voicebot")
    assert ari.post("/channels", endpoint="Local/100@silent", app="voicebot", channelId="c1",
                    callerId='"Ann" <123>')[0] == 200
    ev.wait_type("StasisStart", channel="c1")
    status, ch = ari.get("/channels/c1")
    assert status == 200 and ch["state"] == "Up" and ch["caller"] == {"name": "Ann",
                                                                      "number": "123"}
    assert {c["id"] for c in ari.get("/channels")[1]} == {"c1", "c1;2"}
    assert ari.post("/bridges/b1", type="mixing,dtmf_events", name="n")[0] == 200
    assert ari.post("/bridges/b1/addChannel", channel="c1")[0] == 204
    status, br = ari.get("/bridges/b1")
    assert br["channels"] == ["c1"] and br["name"] == "n"
    assert [b["id"] for b in ari.get("/bridges")[1]] == ["b1"]
    status, info = ari.get("/asterisk/info")
    assert info["system"]["version"].startswith("22.")
    assert set(ari.get("/asterisk/info", only="status")[1]) == {"status"}
    assert ari.get("/asterisk/ping")[1]["ping"] == "pong"
    status, apps = ari.get("/applications")
    assert [a["name"] for a in apps] == ["voicebot"]
    status, app = ari.get("/applications/voicebot")
    assert set(app["channel_ids"]) == {"c1", "c1;2"} and app["bridge_ids"] == ["b1"]
    assert ari.post("/channels/c1/answer")[0] == 204
    assert ari.post("/channels/c1/dtmf", dtmf="12#")[0] == 204
    assert ari.post("/channels/c1/mute", direction="in")[0] == 204
    assert ari.delete("/channels/c1/mute")[0] == 204
    assert ari.post("/channels/c1/hold")[0] == 204
    assert ari.get("/channels/c1/variable", variable="CALLERID(num)") == (200, {"value": "123"})
    assert ari.get("/channels/c1/variables", variables="CALLERID(name),BRIDGEPEER")[0] == 404
    assert ari.get("/channels/c1/rtp_statistics")[0] == 404
    assert ari.get("/endpoints")[0] == 501
    assert ari.request("PUT", "/channels/c1")[0] == 405


# ---------------------------------------------------------------------- the events WebSocket
def test_second_connection_replaces_the_first(sim: Sim):
    first = sim.events("voicebot")
    sim.ari.post("/channels", endpoint="Local/s@silent", app="voicebot", channelId="c1")
    first.wait_type("StasisStart", channel="c1")
    second = sim.events("voicebot")
    replaced = first.wait_type("ApplicationReplaced")
    assert replaced["application"] == "voicebot"
    seen = len(first.events)
    sim.ari.post("/channels/c1/dtmf", dtmf="1")
    sim.ari.delete("/channels/c1")
    second.wait_type("ChannelDestroyed", channel="c1;2")
    assert len(first.events) == seen          # nothing more after ApplicationReplaced
    assert [e["type"] for e in second.events][:1] == ["ChannelHangupRequest"]


def test_one_socket_several_apps_and_subscribe_all(sim: Sim):
    both = sim.events("app-a,app-b")
    everything = sim.events("watcher", subscribe_all=True)
    for app, cid in (("app-a", "a1"), ("app-b", "b1")):
        sim.ari.post("/channels", endpoint="Local/s@silent", app=app, channelId=cid)
        assert both.wait_type("StasisStart", channel=cid)["application"] == app
    sim.ari.post("/bridges", bridgeId="lone")
    created = everything.wait_type("BridgeCreated", bridge="lone")
    assert created["application"] == "watcher"
    assert not [e for e in both.events if e["type"] == "BridgeCreated"]
    # The watcher hears about every channel, but StasisStart goes to the app concerned only.
    assert {_resource(e) for e in everything.events} >= {"a1", "a1;2", "b1", "b1;2"}
    assert not [e for e in everything.events if e["type"] == "StasisStart"]


def test_channels_stay_in_stasis_when_the_socket_closes(sim: Sim):
    ev = sim.events("voicebot")
    sim.ari.post("/channels", endpoint="Local/s@silent", app="voicebot", channelId="c1")
    ev.wait_type("StasisStart", channel="c1")
    ev.close()
    assert sim.ari.get("/channels/c1")[0] == 200
    # A new connection for the app hears about the channel again.
    again = sim.events("voicebot")
    sim.ari.delete("/channels/c1")
    again.wait_type("StasisEnd", channel="c1")
    again.wait_type("ChannelDestroyed", channel="c1")


def test_move_between_apps(sim: Sim):
    a = sim.events("dispatcher")
    b = sim.events("worker-1")
    call = sim.pbx.start_call({"caller": {"number": "555"}, "steps": [{"wait_hangup": 5000}]},
                              app="dispatcher")
    cid = a.wait_type("StasisStart")["channel"]["id"]
    assert sim.ari.post(f"/channels/{cid}/move", app="worker-1", appArgs="call,7")[0] == 204
    a.wait_type("StasisEnd", channel=cid)
    start = b.wait_type("StasisStart", channel=cid)
    assert start["args"] == ["call", "7"]
    # Moving to an app nobody serves fails: the channel stays where it is.
    assert sim.ari.post(f"/channels/{cid}/move", app="nobody")[0] == 204
    failed = b.wait_type("ApplicationMoveFailed", channel=cid)
    assert failed["destination"] == "nobody"
    assert sim.ari.delete(f"/channels/{cid}")[0] == 204
    b.wait_type("ChannelDestroyed", channel=cid)
    assert not [e for e in a.events if e["type"] in ("ChannelHangupRequest",
                                                     "ChannelDestroyed")]
    assert sim.pbx.wait_calls([call], timeout=5)[0]["state"] == "ended"


def test_call_to_an_unregistered_app_fails(sim: Sim):
    call = sim.pbx.start_call({"steps": [{"say": "hello"}]}, app="nobody-home")
    result = sim.pbx.wait_calls([call], timeout=5)[0]
    assert result["state"] == "failed" and "not registered" in result["end_reason"]
    assert sim.ari.get("/channels")[1] == []


# ---------------------------------------------------------------------- cleanup, inspection
def test_cleanup_is_not_automatic(sim: Sim):
    """The caller hangs up: externalMedia, its snoop and the bridge stay until deleted."""
    ev = sim.events("voicebot")
    rtp = _udp()
    try:
        call = sim.pbx.start_call({"caller": {"name": "Bob", "number": "200"},
                                   "steps": [{"pause_ms": 200}, {"hangup": True}]},
                                  app="voicebot")
        cid = ev.wait_type("StasisStart")["channel"]["id"]
        sim.ari.post("/bridges", bridgeId="b1")
        sim.ari.post("/channels/externalMedia", app="voicebot", channelId="em1", format="ulaw",
                     external_host=f"127.0.0.1:{rtp.getsockname()[1]}")
        ev.wait_type("StasisStart", channel="em1")      # it enters after the answer
        assert sim.ari.post("/bridges/b1/addChannel", channel=f"{cid},em1")[0] == 204
        sim.ari.post("/channels/em1/snoop", app="voicebot", spy="both", snoopId="sn1")
        ev.wait_type("StasisStart", channel="sn1")
        hangup = ev.wait_type("ChannelHangupRequest", channel=cid)
        assert hangup["cause"] == 16 and "soft" not in hangup
        destroyed = ev.wait_type("ChannelDestroyed", channel=cid)
        assert destroyed["cause_txt"] == "Normal Clearing"
        result = sim.pbx.wait_calls([call], timeout=5)[0]
        assert result["end_reason"] == "script hangup" and result["cause"] == 16
        seq = [e["type"] for e in ev.events if _resource(e) == cid]
        assert seq[-6:] == ["ChannelHangupRequest", "ChannelVarset", "ChannelLeftBridge",
                            "StasisEnd", "ChannelVarset", "ChannelDestroyed"]
        assert {c["id"] for c in sim.ari.get("/channels")[1]} == {"em1", "sn1"}
        assert sim.ari.get("/bridges/b1")[1]["channels"] == ["em1"]
        inspect = requests.get(f"http://127.0.0.1:{sim.pbx.port}/sim/inspect",
                               auth=(USER, PASSWORD), timeout=5).json()
        assert {c["id"] for c in inspect["channels"]} == {"em1", "sn1"}
        assert [b["id"] for b in inspect["bridges"]] == ["b1"]
        assert [r["channel_id"] for r in inspect["rtp"]] == ["em1"]
        assert inspect["calls"][0]["state"] == "ended"
        sim.ari.delete("/channels/em1")
        ev.wait_type("StasisEnd", channel="sn1")       # its snoop ends with it
        sim.ari.delete("/bridges/b1")
        ev.wait_type("BridgeDestroyed", bridge="b1")
        inspect = sim.pbx.inspect()
        assert inspect["channels"] == [] and inspect["bridges"] == [] and inspect["rtp"] == []
        assert Path(sim.pbx.call(call)["externals"]["em1"]["wav"]).exists()
    finally:
        rtp.close()


def test_scenario_control_over_http(sim: Sim):
    ev = sim.events("voicebot")
    base = f"http://127.0.0.1:{sim.pbx.port}/sim"
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    assert s.post(base + "/calls", json={"script": {"steps": [{"florp": 1}]}},
                  timeout=5).status_code == 400
    assert s.post(base + "/calls", json={}, timeout=5).status_code == 400
    r = s.post(base + "/calls", json={"script": {"caller": {"number": "42"},
                                                 "steps": [{"dtmf": "9"}, {"hangup": True}]},
                                      "count": 3, "rate": 50, "app": "voicebot"}, timeout=5)
    assert r.status_code == 200
    ids = r.json()["call_ids"]
    assert len(ids) == 3
    r = s.post(base + "/calls/wait", json={"call_ids": ids, "timeout_s": 10}, timeout=15)
    body = r.json()
    assert body["done"] is True
    assert [c["state"] for c in body["calls"]] == ["ended"] * 3
    assert all(c["script"]["done"] for c in body["calls"])
    dtmf = [e for e in ev.events if e["type"] == "ChannelDtmfReceived"]
    assert [e["digit"] for e in dtmf] == ["9"] * 3
    assert s.get(base + f"/calls/{ids[0]}", timeout=5).json()["id"] == ids[0]
    assert s.get(base + "/calls/none", timeout=5).status_code == 404
    assert s.get(base + "/inspect", auth=("x", "y"), timeout=5).status_code == 401
    s.close()


def test_cli_runs_until_sigterm_and_stops_cleanly(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "relay", "sim-pbx", "--port", "0",
                             "--user", USER, "--password", PASSWORD,
                             "--recordings-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=root)
    try:
        line = proc.stdout.readline()
        assert line.startswith("sim-pbx: ARI at http://127.0.0.1:"), line
        base = line.split()[3]
        r = requests.get(base + "/asterisk/info", auth=(USER, PASSWORD), timeout=5)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
