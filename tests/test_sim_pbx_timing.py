"""The simulated PBX is as unkind as Asterisk by default: Stasis entry after the REST answer,
commands (move, continue, DELETE's teardown) after their 204, REST answers and events racing.

First the model alone (sans-IO, time passed in), then the same over real sockets with ranges
chosen so that the order is certain (never a wall-clock threshold in an assertion)."""

from __future__ import annotations

import argparse
import random
import socket
from pathlib import Path

import gevent
import pytest
from ari_swagger import AriSpec

from relay.sim.pbx import PbxTiming, SimPbx
from relay.sim.pbx.cli import add_arguments, timing_from_args
from relay.sim.pbx.model import AriError, NullMedia, Pbx
from relay.sim.pbx.testing import AriClient, EventStream

USER, PASSWORD = "relay", "pw"
T0 = 100.0


@pytest.fixture(scope="module")
def spec(reference_dir: Path) -> AriSpec:
    return AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")


class Conn:
    """Stands for an events WebSocket."""


def model(**timing) -> Pbx:
    """A model whose delays are fixed (low == high), everything else instant."""
    pbx = Pbx(NullMedia(), wall=lambda: 1795000000.25, now=T0,
              timing=PbxTiming.instant(**timing), timing_rng=random.Random(1))
    pbx.register_app("voicebot", Conn())
    return pbx


def caller(pbx: Pbx):
    return pbx.inbound_call("voicebot", call_id="c1", caller=("Ann", "100"), channel_id="c1")


def seen(pbx: Pbx, cid: str | None = None) -> list[str]:
    """Types of the events in the outbox (about channel `cid`), then empties it."""
    out = [e["type"] for _, e, _ in pbx.outbox
           if cid is None or cid in {e[k]["id"] for k in ("channel", "peer") if k in e}]
    pbx.outbox.clear()
    return out


def status_of(fn, *args, **kw) -> int:
    with pytest.raises(AriError) as err:
        fn(*args, **kw)
    return err.value.status


# ---------------------------------------------------------------------- PbxTiming
def test_realistic_is_the_default_everywhere():
    realistic = PbxTiming.realistic()
    assert Pbx().timing == realistic
    assert SimPbx().timing == realistic
    assert realistic.stasis_entry_ms[1] > 0 and realistic.rest_latency_ms[1] > 0
    assert realistic.event_latency_ms[1] > 0 and realistic.command_ms[1] > 0
    assert realistic.keep_alive_ms == (15000.0, 15000.0)         # http.conf's default
    assert SimPbx().http_session_limit == 100                     # likewise
    assert PbxTiming.instant().is_instant and not realistic.is_instant


def test_timing_from_names_dicts_and_overrides():
    t = PbxTiming.from_dict({"base": "instant", "rest_latency_ms": [1, 2]})
    assert t.rest_latency_ms == (1.0, 2.0) and t.stasis_entry_ms == (0.0, 0.0)
    assert PbxTiming.from_dict({"event_latency_ms": 5}).event_latency_ms == (5.0, 5.0)
    assert PbxTiming.from_dict({}) == PbxTiming.realistic()
    assert t.replace(command_ms=(3, 4)).command_ms == (3.0, 4.0)
    assert PbxTiming.from_dict(t.as_dict() | {"base": "instant"}) == t
    for bad in ({"rest_latency_ms": [3, 1]}, {"rest_latency_ms": [-1, 1]},
                {"rest_latency_ms": "fast"}, {"base": "kind"}, {"jitter": [1, 2]},
                {"event_latency_ms": [1, float("nan")]}):
        with pytest.raises(ValueError):
            PbxTiming.from_dict(bad)


def test_cli_timing_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert timing_from_args(parser.parse_args([])) == PbxTiming.realistic()
    assert timing_from_args(parser.parse_args(["--timing", "instant"])).is_instant
    t = timing_from_args(parser.parse_args(["--timing", "instant", "--stasis-entry-ms", "5,9",
                                            "--rest-latency-ms", "2"]))
    assert t.stasis_entry_ms == (5.0, 9.0) and t.rest_latency_ms == (2.0, 2.0)
    assert t.event_latency_ms == (0.0, 0.0)
    args = parser.parse_args(["--keep-alive-ms", "0", "--http-session-limit", "0"])
    assert timing_from_args(args).keep_alive_ms == (0.0, 0.0) and args.http_session_limit == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--event-latency-ms", "9,1"])


# ---------------------------------------------------------------------- the model (sans-IO)
def test_external_media_enters_stasis_after_the_answer():
    pbx = model(stasis_entry_ms=(5, 5))
    caller(pbx)
    pbx.create_bridge("b1")
    pbx.outbox.clear()
    em = pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1",
                            data="x")
    # Created and answered at once; not in the app yet.
    assert seen(pbx, "em1") == ["Dial", "ChannelStateChange", "Dial"]
    assert em.state == "Up" and em.stasis_app is None
    assert status_of(pbx.add_channels, "b1", ["c1", "em1"]) == 422
    assert pbx.bridges["b1"].channels == []           # nothing added: the check comes first
    assert status_of(pbx.answer, "em1") == 409
    pbx.advance(T0 + 0.0049)
    assert seen(pbx) == [] and em.stasis_app is None
    pbx.advance(T0 + 0.005)
    assert seen(pbx, "em1") == ["ChannelVarset", "StasisStart"]
    assert em.stasis_app == "voicebot"
    pbx.add_channels("b1", ["c1", "em1"])
    assert [c.id for c in pbx.bridges["b1"].channels] == ["c1", "em1"]


def test_snoop_enters_stasis_after_the_answer():
    pbx = model(stasis_entry_ms=(3, 3))
    ch = caller(pbx)
    pbx.outbox.clear()
    sn = pbx.snoop(ch.id, app="voicebot", spy="in", app_args="s", snoop_id="sn")
    assert seen(pbx) == [] and sn.stasis_app is None
    pbx.create_bridge("b1")
    assert status_of(pbx.add_channels, "b1", ["sn"]) == 422
    pbx.advance(T0 + 0.003)
    assert seen(pbx, "sn") == ["StasisStart"]        # no STASISSTATUS for a snoop (trace)
    assert sn.stasis_app == "voicebot"
    pbx.add_channels("b1", ["sn"])


def test_hung_up_before_entry_never_enters():
    pbx = model(stasis_entry_ms=(5, 5))
    ch = caller(pbx)
    pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1")
    sn = pbx.snoop(ch.id, app="voicebot", spy="in", snoop_id="sn")
    pbx.outbox.clear()
    pbx.hangup("em1")                     # DELETE works on a channel not in Stasis yet
    assert "em1" not in pbx.channels and "em1" not in pbx.media.plans
    assert seen(pbx, "em1") == ["ChannelHangupRequest", "ChannelDestroyed"]
    pbx.caller_hangup(ch)                 # the snoop's target goes: the snoop with it
    assert "sn" not in pbx.channels and sn.destroyed
    pbx.outbox.clear()
    pbx.advance(T0 + 1.0)
    assert "StasisStart" not in seen(pbx)
    assert status_of(pbx.hangup, "em1") == 404


def test_originated_into_an_app_with_no_connection_is_hung_up():
    pbx = model(stasis_entry_ms=(2, 2))
    pbx.register_app("gone", Conn())
    pbx.unregister_app("gone", pbx.apps["gone"].connection)
    pbx.external_media(app="gone", external_host="127.0.0.1:4000", channel_id="em1")
    pbx.originate("Local/s@silent", app="gone", channel_id="L")
    pbx.advance(T0)
    assert "L" not in pbx.channels and "L;2" not in pbx.channels     # Stasis() failed
    assert "em1" in pbx.channels
    pbx.advance(T0 + 0.002)
    assert pbx.channels == {}
    assert not [e for _, e, _ in pbx.outbox if e["type"] == "StasisStart"]
    failed = [e["value"] for _, e, _ in pbx.outbox
              if e["type"] == "ChannelVarset" and e["variable"] == "STASISSTATUS"]
    assert failed == ["FAILED", "FAILED"]


def test_delete_tears_down_after_its_hangup_request():
    pbx = model(command_ms=(2, 2))
    ch = caller(pbx)
    pbx.create_bridge("b1")
    pbx.add_channels("b1", ["c1"])
    pbx.outbox.clear()
    pbx.hangup("c1")
    assert seen(pbx) == ["ChannelHangupRequest"]
    # Until the channel's thread notices: still listed, bridged, in Stasis; DELETE again: 204.
    assert pbx.get_channel("c1") is ch and ch.bridge is not None and ch.stasis_app
    pbx.hangup("c1")
    assert seen(pbx) == []
    pbx.advance(T0 + 0.002)
    assert seen(pbx) == ["ChannelLeftBridge", "StasisEnd", "ChannelVarset", "ChannelDestroyed"]
    assert status_of(pbx.hangup, "c1") == 404


def test_move_and_continue_run_after_their_answer_in_order():
    pbx = model()
    pbx.timing = PbxTiming.instant(command_ms=(0.1, 5))     # random, yet FIFO per channel
    pbx.register_app("worker", Conn())
    ch = caller(pbx)
    pbx.outbox.clear()
    pbx.move("c1", "worker", "a")
    pbx.move("c1", "voicebot", "b")
    pbx.move("c1", "worker", "c")
    pbx.continue_in_dialplan("c1")
    assert seen(pbx) == [] and ch.stasis_app == "voicebot"
    pbx.advance(T0 + 1.0)
    starts = [(to, e["args"]) for to, e, _ in pbx.outbox if e["type"] == "StasisStart"]
    assert starts == [(("worker",), ["a"]), (("voicebot",), ["b"]), (("worker",), ["c"])]
    assert [e["type"] for _, e, _ in pbx.outbox if e["type"].startswith("Stasis")][-1] == \
        "StasisEnd"
    assert ch.stasis_app is None


def test_a_command_on_a_channel_gone_meanwhile_does_nothing():
    pbx = model(command_ms=(2, 2))
    pbx.register_app("worker", Conn())
    ch = caller(pbx)
    pbx.move("c1", "worker")
    pbx.caller_hangup(ch)
    pbx.outbox.clear()
    pbx.advance(T0 + 1.0)
    assert seen(pbx) == []


def test_instant_timing_is_synchronous():
    pbx = model()
    caller(pbx)
    em = pbx.external_media(app="voicebot", external_host="127.0.0.1:4000", channel_id="em1")
    assert em.stasis_app == "voicebot"
    pbx.hangup("em1")
    assert "em1" not in pbx.channels and pbx.next_deadline() is None


# ---------------------------------------------------------------------- over the sockets
class Client:
    def __init__(self, pbx: SimPbx, spec: AriSpec) -> None:
        self.pbx = pbx
        self.spec = spec
        self.ari = AriClient(pbx.base_url, USER, PASSWORD, check=self._check)
        self.ev = EventStream(pbx.events_url("voicebot"))

    def _check(self, method: str, path: str, status: int, body: object) -> None:
        problems = self.spec.validate_response(method, path, status, body)
        assert not problems, problems

    def types(self, cid: str) -> list[str]:
        return [e["type"] for e in list(self.ev.events)
                if cid in {e[k]["id"] for k in ("channel", "peer") if k in e}]

    def close(self) -> None:
        self.ev.close()
        self.ari.close()
        problems = [p for e in self.ev.events for p in self.spec.validate_event(e)]
        assert not problems, problems[:10]


@pytest.fixture
def make(spec: AriSpec, tmp_path: Path):
    made = []

    def start(timing: PbxTiming) -> Client:
        pbx = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path, seed=11,
                     timing=timing).start()
        client = Client(pbx, spec)
        made.append(client)
        return client

    yield start
    for c in made:
        try:
            c.close()
        finally:
            c.pbx.stop()


def test_external_media_and_snoop_stasis_start_after_the_answer_422_then_204(make):
    # An entry delay far longer than a request on loopback: the order is certain.
    c = make(PbxTiming.instant(stasis_entry_ms=(1000, 1000)))
    ari = c.ari
    assert ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                    channelId="c1")[0] == 200
    c.ev.wait_type("StasisStart", channel="c1")
    assert ari.post("/bridges", bridgeId="b1")[0] == 200
    status, em = ari.post("/channels/externalMedia", app="voicebot", channelId="em1",
                          format="ulaw", external_host="127.0.0.1:9")
    assert status == 200 and em["state"] == "Up"
    assert "StasisStart" not in c.types("em1")
    status, sn = ari.post("/channels/c1/snoop", app="voicebot", spy="in", snoopId="sn1")
    assert status == 200
    assert ari.post("/bridges/b1/addChannel", channel="c1,em1") == (
        422, {"message": "Channel not in Stasis application"})
    assert ari.post("/bridges/b1/addChannel", channel="sn1")[0] == 422
    assert ari.post("/channels/em1/answer")[0] == 409
    assert ari.get("/channels/em1")[0] == 200           # it exists all the same
    c.ev.wait_type("StasisStart", channel="em1")
    c.ev.wait_type("StasisStart", channel="sn1")        # created after em1, same delay
    assert c.types("em1") == ["Dial", "ChannelStateChange", "Dial", "ChannelVarset",
                              "StasisStart"]
    assert ari.post("/bridges/b1/addChannel", channel="c1,em1")[0] == 204
    c.ev.wait_type("ChannelEnteredBridge", channel="em1")


def test_hangup_before_entry_over_http(make):
    c = make(PbxTiming.instant(stasis_entry_ms=(500, 500)))
    status, _ = c.ari.post("/channels/externalMedia", app="voicebot", channelId="em1",
                           format="ulaw", external_host="127.0.0.1:9")
    assert status == 200
    assert c.ari.delete("/channels/em1")[0] == 204
    c.ev.wait_type("ChannelDestroyed", channel="em1")
    assert c.ari.get("/channels/em1")[0] == 404
    # Past the time it would have entered (its timer has run), a marker: the events of one
    # connection keep their order, so a StasisStart would have come before it.
    while c.pbx.model.next_deadline() is not None:
        gevent.sleep(0.05)
    assert c.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                      channelId="m1")[0] == 200
    c.ev.wait_type("StasisStart", channel="m1")
    assert c.types("em1") == ["Dial", "ChannelStateChange", "Dial", "ChannelHangupRequest",
                              "ChannelDestroyed"]


def test_events_of_one_connection_keep_their_order_under_latency(make):
    c = make(PbxTiming.instant(event_latency_ms=(0, 30)))
    assert c.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                      channelId="c1")[0] == 200
    c.ev.wait_type("StasisStart", channel="c1")
    for i in range(60):
        assert c.ari.post("/channels/c1/variable", variable="N", value=str(i))[0] == 204
    c.ev.wait_for(lambda e: e.get("variable") == "N" and e["value"] == "59")
    values = [int(e["value"]) for e in c.ev.events if e.get("variable") == "N"]
    assert values == list(range(60))


def test_a_rest_answer_can_come_after_its_events_or_before(make):
    # The answer held 300 ms, the event at once: the event is there before the answer.
    c = make(PbxTiming.instant(rest_latency_ms=(300, 300)))
    assert c.ari.post("/bridges", bridgeId="b1")[0] == 200
    watcher = EventStream(c.pbx.events_url("watcher", subscribe_all=True))
    try:
        assert c.ari.post("/bridges", bridgeId="b2")[0] == 200
        assert [e["bridge"]["id"] for e in watcher.events if e["type"] == "BridgeCreated"] \
            == ["b2"]
        # The other way round: events 300 ms late, the answer at once.
        c.pbx.set_timing(PbxTiming.instant(event_latency_ms=(300, 300)))
        assert c.ari.delete("/bridges/b2")[0] == 204
        assert not [e for e in watcher.events if e["type"] == "BridgeDestroyed"]
        watcher.wait_type("BridgeDestroyed", bridge="b2")
    finally:
        watcher.close()


def test_default_timing_races_and_inspect_shows_it(make):
    c = make(PbxTiming.realistic())
    inspect = c.pbx.inspect()
    assert inspect["timing"] == PbxTiming.realistic().as_dict()
    assert c.ari.post("/channels", endpoint="Local/s@silent", app="voicebot",
                      channelId="c1")[0] == 200
    c.ev.wait_type("StasisStart", channel="c1")
    assert c.ari.post("/bridges", bridgeId="b1")[0] == 200
    assert c.ari.post("/channels/externalMedia", app="voicebot", channelId="em1",
                      format="ulaw", external_host="127.0.0.1:9")[0] == 200
    # Whatever the race gave, retrying the 422 a few times gets the channel bridged.
    for _ in range(100):
        status, _ = c.ari.post("/bridges/b1/addChannel", channel="em1")
        if status == 204:
            break
        assert status == 422
        gevent.sleep(0.005)
    assert status == 204


def test_a_second_add_channel_makes_the_channel_leave_and_enter_again():
    pbx = model()
    caller(pbx)
    pbx.create_bridge("b1")
    pbx.add_channels("b1", ["c1"])
    pbx.outbox.clear()
    pbx.add_channels("b1", ["c1"])            # a retry after an error answer, say
    assert seen(pbx, "c1") == ["ChannelLeftBridge", "ChannelEnteredBridge"]
    assert [c.id for c in pbx.bridges["b1"].channels] == ["c1"]


# ---------------------------------------------------------------------- Asterisk's HTTP server
def _raw_request(sock, path: str = "/ari/asterisk/ping") -> bytes:
    sock.sendall(f"GET {path}?api_key={USER}:{PASSWORD} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed before the answer"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(4096)
    return head.split(b"\r\n")[0]


def test_an_idle_keep_alive_connection_is_closed(make):
    c = make(PbxTiming.instant(keep_alive_ms=(200, 200)))
    sock = socket.create_connection(("127.0.0.1", c.pbx.port), timeout=5)
    try:
        assert _raw_request(sock) == b"HTTP/1.1 200 OK"
        assert _raw_request(sock) == b"HTTP/1.1 200 OK"      # kept alive while busy
        assert sock.recv(1) == b""                            # then closed when idle
    finally:
        sock.close()


def test_http_session_limit_closes_one_connection_too_many(tmp_path: Path):
    pbx = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path,
                 timing=PbxTiming.instant(), http_session_limit=3).start()
    socks = []
    ev = None
    try:
        ev = EventStream(pbx.events_url("voicebot"))          # a WebSocket holds a session
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", pbx.port), timeout=5)
            assert _raw_request(s) == b"HTTP/1.1 200 OK"      # kept alive: holds one too
            socks.append(s)
        extra = socket.create_connection(("127.0.0.1", pbx.port), timeout=5)
        try:
            extra.sendall(b"GET /ari/asterisk/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = extra.recv(4096)
            except ConnectionResetError:
                got = b""
            assert got == b""                                 # closed, unanswered
        finally:
            extra.close()
        assert pbx.inspect()["http_sessions"] == {"open": 3, "limit": 3, "refused": 1}
        socks.pop().close()
        for _ in range(200):
            if pbx.http_sessions < 3:
                break
            gevent.sleep(0.01)
        s = socket.create_connection(("127.0.0.1", pbx.port), timeout=5)
        socks.append(s)
        assert _raw_request(s) == b"HTTP/1.1 200 OK"
    finally:
        for s in socks:
            s.close()
        if ev is not None:
            ev.close()
        pbx.stop()
