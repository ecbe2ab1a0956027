"""The simulated PBX's RTP over real UDP on 127.0.0.1: a test-side socket plays the relay."""

from __future__ import annotations

import itertools
import socket
import time
import wave
from pathlib import Path

import gevent
import pytest
from ari_swagger import AriSpec

from relay._g711 import (
    alaw_dbov,
    alaw_decode,
    alaw_encode,
    alaw_to_ulaw,
    ulaw_dbov,
    ulaw_decode,
    ulaw_to_alaw,
)
from relay._rtp import build_rtp, parse_rtp_header
from relay.sim._sim_rtp import VOICE_DBOV
from relay.sim.pbx import SimPbx, pacing_stats
from relay.sim.pbx.sounds import prompt_ulaw
from relay.sim.pbx.testing import AriClient, EventStream
from relay.sim.speech import utterance_pcm, utterance_ulaw

USER, PASSWORD = "relay", "pw"


@pytest.fixture(scope="module")
def spec(reference_dir: Path) -> AriSpec:
    return AriSpec.load(reference_dir / "asterisk" / "ari-api-docs")


class Relay:
    """What relay would do, by hand: the app's events, ARI calls, one UDP socket for RTP."""

    def __init__(self, pbx: SimPbx, spec: AriSpec) -> None:
        self.pbx = pbx
        self.spec = spec
        self.ari = AriClient(pbx.base_url, USER, PASSWORD, check=self._check)
        self.ev = EventStream(pbx.events_url("voicebot"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.media_addr: tuple[str, int] = ("", 0)
        self.last_voiced_sent_at = 0.0

    def _check(self, method: str, path: str, status: int, body: object) -> None:
        problems = self.spec.validate_response(method, path, status, body)
        assert not problems, problems

    def attach(self, call_id: str, answer: bool = True, fmt: str = "ulaw") -> str:
        """StasisStart -> externalMedia + bridge with both (+ answer); the caller's channel id."""
        start = self.ev.wait_type("StasisStart")
        cid = start["channel"]["id"]
        assert start["channel"]["state"] == ("Ring" if answer else "Up")
        assert self.ari.post("/bridges", bridgeId=f"br-{call_id}")[0] == 200
        status, em = self.ari.post("/channels/externalMedia", app="voicebot",
                                   channelId=f"em-{call_id}", format=fmt,
                                   external_host=f"127.0.0.1:{self.port}")
        assert status == 200
        vars_ = em["channelvars"]
        self.media_addr = (vars_["UNICASTRTP_LOCAL_ADDRESS"], int(vars_["UNICASTRTP_LOCAL_PORT"]))
        # As Asterisk, the channel enters the app after the 200 answer: bridge it once it has.
        self.ev.wait_type("StasisStart", channel=f"em-{call_id}")
        assert self.ari.post(f"/bridges/br-{call_id}/addChannel",
                             channel=f"{cid},em-{call_id}")[0] == 204
        if answer:
            assert self.ari.post(f"/channels/{cid}/answer")[0] == 204
        return cid

    def receive(self, count: int, timeout: float = 5.0) -> list[tuple[float, bytes, tuple]]:
        """`count` RTP packets: (arrival, datagram, parsed header)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"received {len(out)} of {count} packets"
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                raise AssertionError(f"received {len(out)} of {count} packets") from None
            assert addr == self.media_addr        # sent FROM the announced address
            out.append((time.monotonic(), data, parse_rtp_header(data)))
        return out

    def nothing_for(self, seconds: float) -> bool:
        """True when no packet arrives within `seconds` (checking an absence takes time)."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recvfrom(2048)
        except TimeoutError:
            return True
        return False

    def send_paced(self, audio: bytes, ssrc: int = 0x1234, seq: int = 100, ts: int = 0,
                   sock: socket.socket | None = None, pt: int = 0) -> list[bytes]:
        """Send `audio` as 20 ms RTP packets, paced; returns the packets (and keeps when the
        last one the PBX will count as voice went out, in `last_voiced_sent_at`)."""
        sent = []
        t0 = time.monotonic()
        for i in range(0, len(audio), 160):
            pkt = build_rtp(pt, i == 0, (seq + i // 160) & 0xFFFF, ts + i, ssrc, audio[i:i + 160])
            (sock or self.sock).sendto(pkt, self.media_addr)
            if (alaw_dbov if pt == 8 else ulaw_dbov)(audio[i:i + 160]) > VOICE_DBOV:
                self.last_voiced_sent_at = time.monotonic()
            sent.append(pkt)
            gevent.sleep(max(0.0, t0 + (i // 160 + 1) * 0.02 - time.monotonic()))
        return sent

    def close(self) -> None:
        self.ev.close()
        self.ari.close()
        self.sock.close()
        problems = [p for e in self.ev.events for p in self.spec.validate_event(e)]
        assert not problems, problems[:10]


@pytest.fixture
def pbx(tmp_path: Path):
    sim = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path, seed=3)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def relay(pbx: SimPbx, spec: AriSpec):
    r = Relay(pbx, spec)
    try:
        yield r
    finally:
        r.close()


def _talkspurts(packets: list) -> list[list]:
    spurts: list[list] = []
    for p in packets:
        if not spurts or p[2][1]:          # marker: a new talkspurt
            spurts.append([])
        spurts[-1].append(p)
    return spurts


def test_caller_speech_arrives_as_paced_rtp_with_asterisk_headers(relay: Relay, pbx: SimPbx):
    first, second = "Hello, I need help", "Thank you"
    call = pbx.start_call({"caller": {"name": "Ann", "number": "100"}, "answer": False,
                           "steps": [{"say": first}, {"pause_ms": 600}, {"say": second},
                                     {"wait_hangup": 10000}]}, app="voicebot")
    relay.attach(call)
    a, b = utterance_ulaw(first), utterance_ulaw(second)
    packets = relay.receive(len(a) // 160 + len(b) // 160)
    headers = [p[2] for p in packets]
    # Version 2, no padding/extension/CSRC, PT 0, 160-byte payloads, one SSRC.
    assert all(p[1][0] == 0x80 and len(p[1]) == 172 for p in packets)
    assert {h[0] for h in headers} == {0} and len({h[4] for h in headers}) == 1
    assert all(h[5:] == (12, 160) for h in headers)
    # Sequence +1 throughout; first timestamp 160, +160 per packet, no marker on the first.
    seqs = [h[2] for h in headers]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    assert headers[0][3] == 160 and not headers[0][1]
    spurts = _talkspurts(packets)
    assert [len(s) for s in spurts] == [len(a) // 160, len(b) // 160]
    # The payloads are the caller's utterances, bit-exact.
    assert b"".join(p[1][12:] for p in spurts[0]) == a
    assert b"".join(p[1][12:] for p in spurts[1]) == b
    ts = [h[3] for h in headers]
    n1 = len(spurts[0])
    assert all(y - x == 160 for x, y in itertools.pairwise(ts[:n1]))
    # Two-party bridge: nothing during the pause; then marker and a timestamp jump by the gap.
    jump = ts[n1] - ts[n1 - 1]
    assert jump % 160 == 0
    assert jump >= 0.6 * 8000                      # the wall-clock pause, not one packet
    # Paced, not burst: arrivals about 20 ms apart (a burst would put the median near 0).
    stats = pacing_stats([p[0] for p in spurts[0]])
    assert stats["p50_ms"] >= 15
    pbx.hangup_call(call)
    result = pbx.wait_calls([call], timeout=5)[0]
    assert [s["kind"] for s in result["script"]["log"]][:3] == ["say", "pause", "say"]
    em = result["externals"][f"em-{call}"]
    assert em["tx_packets"] == len(packets) and em["tx_markers"] == 1


def test_relay_audio_is_captured_with_arrival_times_and_written_as_wav(relay: Relay,
                                                                         pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [{"wait_hangup": 10000}]}, app="voicebot")
    cid = relay.attach(call)
    agent = utterance_ulaw("Your order ships tomorrow", "assistant")[:160 * 30]
    t_before = time.monotonic()
    sent = relay.send_paced(agent[:160 * 20], ts=0)
    # A pause of 10 frames in the RTP timestamps, then the rest (from another port: accepted).
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        sent += relay.send_paced(agent[160 * 20:], seq=120, ts=160 * 30, sock=other)
    finally:
        other.close()
    relay.sock.sendto(b"\x80\x00junk", relay.media_addr)       # malformed: counted, dropped
    relay.ari.post(f"/channels/{cid}/dtmf", dtmf="5")
    capture = pbx.capture(call)
    deadline = time.monotonic() + 5
    while capture.malformed < 1 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    packets = capture.packets()
    assert len(packets) == len(sent) == 30
    assert [p["seq"] for p in packets] == [100 + i for i in range(20)] + \
        [120 + i for i in range(10)]
    assert all(p["ssrc"] == 0x1234 and p["pt"] == 0 and p["len"] == 160 for p in packets)
    assert packets[0]["marker"] and packets[20]["marker"]
    assert [p["foreign"] for p in packets] == [False] * 20 + [True] * 10
    assert all(t_before <= p["t"] for p in packets)
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(packets))
    stats = capture.stats()
    assert stats["packets"] == 30 and stats["foreign"] == 10 and stats["malformed"] == 1
    pacing = stats["pacing"]
    assert pacing["intervals"] == 29 and pacing["mean_ms"] > 0 and pacing["stdev_ms"] >= 0
    assert pacing["p50_ms"] <= pacing["p95_ms"] <= pacing["max_ms"]
    # The WAV: 8 kHz mono PCM16, the agent's audio placed by RTP timestamp, silence between.
    path = pbx.write_wavs(call)[0]
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        pcm = w.readframes(w.getnframes())
    assert len(pcm) == 2 * 160 * 40
    assert pcm[:2 * 3200] == ulaw_decode(agent[:3200])
    assert pcm[2 * 3200:2 * 4800] == b"\x00" * 2 * 1600
    assert pcm[2 * 4800:] == ulaw_decode(agent[3200:])
    pbx.hangup_call(call)
    result = pbx.wait_calls([call], timeout=5)[0]
    assert result["dtmf_heard"][0]["digits"] == "5"
    assert result["agent"]["voiced_packets"] > 0
    relay.ari.delete(f"/channels/em-{call}")
    relay.ari.delete(f"/bridges/br-{call}")
    info = pbx.call(call)["externals"][f"em-{call}"]
    assert info["rx"]["packets"] == 30 and Path(info["wav"]) == path


def test_an_alaw_external_media_channel_is_transcoded_at_its_edge(relay: Relay, pbx: SimPbx):
    """format=alaw: the caller's u-law leaves as A-law with payload type 8; relay's A-law is
    captured as it came, heard as the agent's voice and written to the WAV decoded."""
    said = "Hello, I need help"
    call = pbx.start_call({"answer": False, "steps": [{"say": said}, {"wait_hangup": 10000}]},
                          app="voicebot")
    relay.attach(call, fmt="alaw")
    caller = utterance_ulaw(said)
    packets = relay.receive(len(caller) // 160)
    assert {p[2][0] for p in packets} == {8}
    assert b"".join(p[1][12:] for p in packets) == ulaw_to_alaw(caller)
    agent = alaw_encode(utterance_pcm("Your order ships tomorrow", "assistant"))[:160 * 20]
    relay.send_paced(agent, pt=8)
    capture = pbx.capture(call)
    deadline = time.monotonic() + 5
    while len(capture) < 20 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert [p["pt"] for p in capture.packets()] == [8] * 20
    assert b"".join(p["payload"] for p in capture.packets()) == agent
    assert capture.pcm() == alaw_decode(agent)
    pbx.hangup_call(call)
    result = pbx.wait_calls([call], timeout=5)[0]
    assert result["agent"]["voiced_packets"] > 0


def test_the_formats_not_modelled_are_refused_with_501(relay: Relay, pbx: SimPbx):
    for fmt in ("slin16", "g722"):
        status, body = relay.ari.post("/channels/externalMedia", app="voicebot", format=fmt,
                                      external_host=f"127.0.0.1:{relay.port}")
        assert status == 501 and "ulaw or alaw" in body["message"]


def test_caller_waits_for_the_agent_to_finish_then_speaks(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [
        {"say": "hi"}, {"after_agent": "thanks", "silence_ms": 300}, {"hangup": True}]},
        app="voicebot")
    relay.attach(call)
    hi, thanks = utterance_ulaw("hi"), utterance_ulaw("thanks")
    relay.receive(len(hi) // 160)
    assert relay.nothing_for(0.1)            # the caller waits: it does not talk first
    relay.send_paced(utterance_ulaw("How can I help", "assistant")[:160 * 15])
    reply = relay.receive(len(thanks) // 160)
    assert reply[0][2][1]                    # a new talkspurt
    # Not before 300 ms of silence after the agent's last voiced packet reached the PBX.
    assert reply[0][0] - relay.last_voiced_sent_at >= 0.3
    assert b"".join(p[1][12:] for p in reply) == thanks
    result = pbx.wait_calls([call], timeout=5)[0]
    log = result["script"]["log"]
    assert [e["kind"] for e in log] == ["say", "wait_agent_done", "say", "hangup"]
    assert "timed_out" not in log[1]
    assert result["end_reason"] == "script hangup"


def test_caller_barges_in_while_the_agent_speaks(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [
        {"barge_in": "wait stop", "after_ms": 200}, {"wait_hangup": 10000}]}, app="voicebot")
    relay.attach(call)
    sender = gevent.spawn(relay.send_paced, utterance_ulaw("Let me tell you about our offers "
                                                           "this week", "assistant"))
    try:
        started = time.monotonic()
        barge = relay.receive(1)
        assert barge[0][0] - started >= 0.2 - 0.025
        assert not sender.dead                # the agent is still talking
    finally:
        sender.kill()
    pbx.hangup_call(call)
    log = pbx.wait_calls([call], timeout=5)[0]["script"]["log"]
    assert [e["kind"] for e in log[:2]] == ["wait_agent_start", "say"]


def test_prompt_ends_with_a_short_packet(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [{"sound": "beep"}, {"wait_hangup": 5000}]},
                          app="voicebot")
    relay.attach(call)
    prompt = prompt_ulaw("beep")
    tail = len(prompt) % 160
    assert tail
    packets = relay.receive(len(prompt) // 160 + 1)
    assert [len(p[1]) - 12 for p in packets[-2:]] == [160, tail]
    assert packets[-1][2][3] - packets[-2][2][3] == tail       # timestamp + its own length
    assert b"".join(p[1][12:] for p in packets) == prompt
    pbx.hangup_call(call)


def test_softmix_sends_continuous_packets_even_in_silence(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [{"wait_hangup": 10000}]}, app="voicebot")
    relay.attach(call)
    assert relay.nothing_for(0.15)          # silent caller, two-party bridge: no RTP
    # A bridge recording adds a third participant: softmix, continuous silence.
    assert relay.ari.post(f"/bridges/br-{call}/record", name="r1", format="wav")[0] == 201
    silence = relay.receive(10)
    assert all(p[1][12:] == b"\xff" * 160 for p in silence)
    assert all((y[2][2] - x[2][2]) & 0xFFFF == 1 for x, y in itertools.pairwise(silence))
    assert relay.ari.get(f"/bridges/br-{call}")[1]["technology"] == "softmix"
    relay.ari.post("/recordings/live/r1/stop")
    relay.ev.wait_type("RecordingFinished", recording="r1")
    relay.sock.settimeout(0.5)
    while not relay.nothing_for(0.1):       # drain what was in flight
        pass
    # A bridge playback is mixed into what externalMedia receives (softmix again).
    relay.ari.post(f"/bridges/br-{call}/play", media="sound:beep", playbackId="pb1")
    prompt = prompt_ulaw("beep")
    frames = relay.receive(len(prompt) // 160 + 1)
    payload = b"".join(p[1][12:] for p in frames)
    assert payload[:len(prompt)] == prompt and set(payload[len(prompt):]) <= {0xFF}
    relay.ev.wait_type("PlaybackFinished", playback="pb1")
    pbx.hangup_call(call)


def test_channel_playback_pauses_the_callers_media(relay: Relay, pbx: SimPbx):
    text = "This is a rather long sentence that keeps going for a while"
    call = pbx.start_call({"answer": False, "steps": [{"say": text}, {"wait_hangup": 10000}]},
                          app="voicebot")
    cid = relay.attach(call)
    relay.receive(5)
    assert relay.ari.post(f"/channels/{cid}/play", media="sound:beep")[0] == 201
    relay.ev.wait_type("PlaybackStarted")
    relay.ev.wait_type("PlaybackFinished")
    packets = relay.receive(5)
    resumed = [i for i, p in enumerate(packets) if p[2][1]]
    assert resumed, "no marker: the caller's media was not paused"
    i = resumed[0]
    jump = packets[i][2][3] - packets[i - 1][2][3] if i else None
    assert jump is None or jump >= len(prompt_ulaw("beep")) // 160 * 160
    result = pbx.call(call)
    assert result["playbacks_heard"][0]["media"] == "sound:beep"
    pbx.hangup_call(call)


def test_stop_closes_every_socket_and_greenlet(tmp_path: Path):
    pbx = SimPbx(user=USER, password=PASSWORD, recordings_dir=tmp_path).start()
    port = pbx.port
    ari = AriClient(pbx.base_url, USER, PASSWORD)
    ev = EventStream(pbx.events_url("voicebot"))
    call = pbx.start_call({"steps": [{"say": "hello"}]}, app="voicebot")
    ev.wait_type("StasisStart")
    status, _ = ari.post("/channels/externalMedia", app="voicebot", format="ulaw",
                         external_host="127.0.0.1:9", channelId="em1")
    assert status == 200
    endpoint = pbx.media.endpoints["em1"]
    pbx.stop()
    ari.close()
    assert endpoint.sock.fileno() == -1
    assert pbx.media._greenlet is None and pbx._clock is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    ev._reader.join(timeout=2)              # the server closed the events WebSocket
    assert ev.closed
    ev.close()
    assert pbx.call(call)["state"] in ("active", "ended")


def test_a_caller_running_echo_sends_back_what_the_relay_sends(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [{"echo": True}]}, app="voicebot")
    relay.attach(call)                      # answered: the script (Echo()) starts
    assert relay.nothing_for(0.1)           # nothing heard, nothing echoed (two-party bridge)
    agent = utterance_ulaw("Your order ships tomorrow", "assistant")[:160 * 25]
    relay.send_paced(agent, ts=0)
    packets = relay.receive(25)
    assert b"".join(p[1][12:] for p in packets) == agent      # the same audio, bit-exact
    assert all(h[0] == 0 and h[5:] == (12, 160) for h in (p[2] for p in packets))
    assert relay.nothing_for(0.1)           # it stops when the relay does
    result = pbx.call(call)
    assert result["script"]["current"] == {"kind": "echo"}
    assert result["externals"][f"em-{call}"]["tx_packets"] == 25
    pbx.hangup_call(call)


def test_echo_of_a_timed_step_ends_and_alaw_comes_back_as_alaw(relay: Relay, pbx: SimPbx):
    call = pbx.start_call({"answer": False, "steps": [{"echo": {"ms": 1500}},
                                                      {"wait_hangup": 10000}]},
                          app="voicebot")
    relay.attach(call, fmt="alaw")
    agent = alaw_encode(utterance_pcm("One moment please", "assistant"))[:160 * 10]
    relay.send_paced(agent, pt=8)
    packets = relay.receive(10)
    assert {p[2][0] for p in packets} == {8}
    # through the bridge's u-law and back out transcoded at the edge, as Asterisk does
    assert b"".join(p[1][12:] for p in packets) == ulaw_to_alaw(alaw_to_ulaw(agent))
    while pbx.call(call)["script"]["current"]["kind"] == "echo":
        gevent.sleep(0.05)
    relay.send_paced(agent[:160 * 5], pt=8, seq=500, ts=16000)
    assert relay.nothing_for(0.15)          # Echo() is over: the relay's audio is not sent back
    pbx.hangup_call(call)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])   # batched; a name: per socket
def test_media_engine_sends_paced_rtp_and_records_what_comes_back(host: str):
    """The engine alone, both I/O paths: frames go out from the endpoint's own socket; what
    comes back is recorded with its arrival time, a stranger's packet counted as foreign."""
    from relay._rtp import build_rtp, parse_rtp_header
    from relay.sim.pbx.media import MediaEngine
    from relay.sim.pbx.sounds import Source

    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    engine = MediaEngine()
    try:
        local = engine.open_external("em1", host, far.getsockname()[1])
        ep = engine.endpoints["em1"]
        assert (ep.packed_remote is not None) == (host == "127.0.0.1")
        source = Source("tone")
        source.play(b"\x10" * 160 * 5, engine.tick(time.monotonic()))
        engine.set_plan("em1", [source], softmix=False)
        engine.start()
        far.settimeout(2)
        seqs = []
        for _ in range(5):
            data, addr = far.recvfrom(2048)
            assert addr == local
            pt, _, seq, _, _, off, plen = parse_rtp_header(data)
            assert (pt, data[off:off + plen]) == (0, b"\x10" * 160)
            seqs.append(seq)
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
        before = time.monotonic()
        far.sendto(build_rtp(0, False, 7, 160, 42, b"\x55" * 160), local)
        stranger.sendto(build_rtp(0, False, 8, 320, 42, b"\x55" * 160), local)
        far.sendto(b"\x80junk", local)
        deadline = time.monotonic() + 5
        while ep.received < 3 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        cap = ep.capture
        # a host name never equals the address a packet comes from: all foreign (as always was)
        named = host != "127.0.0.1"
        assert (ep.received, cap.malformed, cap.foreign_count, len(cap)) == (3, 1, 1 + named, 2)
        assert cap.foreign_sources == {stranger.getsockname()} | (
            {far.getsockname()} if named else set())
        assert all(before <= t <= time.monotonic() for t in cap.times)
        assert [p["foreign"] for p in cap.packets()] == [named, True]
        assert ep.packets_sent == 5 and ep.send_errors == 0 and ep.octets_sent == 800
    finally:
        engine.stop()
        far.close()
        stranger.close()
    assert ep.closed and ep.sock.fileno() == -1


def test_a_failure_handling_one_endpoints_rtp_spares_the_others(caplog):
    from relay._rtp import build_rtp
    from relay.sim.pbx.media import MediaEngine, SocketSet

    if SocketSet is None:
        pytest.skip("batched receiving is Linux's")

    from relay.sim.pbx.caller import AgentActivity

    class BrokenActivity(AgentActivity):
        def update(self, now, voiced):
            raise RuntimeError("simulator bug")

    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    engine = MediaEngine()
    try:
        first = engine.open_external("em1", "127.0.0.1", far.getsockname()[1])
        second = engine.open_external("em2", "127.0.0.1", far.getsockname()[1])
        engine.endpoints["em1"].activity = BrokenActivity()
        for i in range(3):
            for local in (first, second):
                far.sendto(build_rtp(0, False, i, 160 * i, 1, b"\xff" * 160), local)
        deadline = time.monotonic() + 5
        while engine.endpoints["em2"].received < 3 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert len(engine.endpoints["em2"].capture) == 3
        assert len(engine.endpoints["em1"].capture) == 3     # recorded before the failure
        assert engine.rx_failures == 3
        assert sum("handling RTP for em1 failed" in r.message for r in caplog.records) == 1
    finally:
        engine.stop()
        far.close()


def test_the_compiled_per_packet_code_uses_the_pacers_frame():
    from relay.sim import _sim_rtp
    from relay.sim.pbx import sounds

    assert _sim_rtp.FRAME_TICKS == sounds.FRAME_TICKS
    assert _sim_rtp.FRAME_SAMPLES == sounds.FRAME_BYTES
