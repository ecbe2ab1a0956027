"""The simulated PBX's aggregated figures for load tests: window pacing, sequence gaps, turn
latency (relay.sim.pbx.stats), the running RTP totals, and GET /sim/stats over HTTP."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import gevent
import pytest
import requests
from gevent.monkey import get_original

from relay._rtp import build_rtp
from relay.sim.pbx import PbxTiming, RtpCapture, SimPbx
from relay.sim.pbx.caller import AgentActivity
from relay.sim.pbx.stats import WindowStats, summary

FRAME = b"\x10" * 160       # loud u-law: counts as the agent's voice
blocking_sleep = get_original("time", "sleep")


def _capture(packets: list[tuple[float, int, bool]], ssrc: int = 7) -> RtpCapture:
    """A capture of (arrival, seq, marker) packets."""
    cap = RtpCapture(keep_audio=False)
    for t, seq, marker in packets:
        cap.add(t, 0, marker, seq, seq * 160, ssrc, memoryview(FRAME), False)
    return cap


def test_perfect_pacing_has_no_error_and_counts_packets_and_talkspurts():
    cap = _capture([(10.0 + 0.02 * k, 100 + k, k == 0) for k in range(50)]
                   + [(12.0 + 0.02 * k, 150 + k, k == 0) for k in range(10)])
    w = WindowStats(0.0, 100.0)
    w.add_capture(cap)
    r = w.result()
    assert (r["packets"], r["streams"], r["talkspurts"], r["seq_gaps"]) == (60, 1, 2, 0)
    assert r["interarrival_deviation_ms"]["count"] == 58      # not across the pause
    assert r["interarrival_deviation_ms"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert r["lateness_ms"]["count"] == 60
    assert r["lateness_ms"]["max"] == pytest.approx(0.0, abs=1e-6)


def test_a_late_packet_shows_in_both_views_and_a_lost_one_in_the_gaps():
    times = [10.0 + 0.02 * k for k in range(20)]
    times[5] += 0.003                                  # 3 ms late
    packets = [(t, 100 + k, k == 0) for k, t in enumerate(times) if k != 12]    # 112 lost
    w = WindowStats(0.0, 100.0)
    w.add_capture(_capture(packets))
    r = w.result()
    assert r["seq_gaps"] == 1 and r["talkspurts"] == 1
    dev = r["interarrival_deviation_ms"]
    assert dev["count"] == 17                           # 18 steps of 1; the gap is not one
    assert dev["max"] == pytest.approx(3.0, abs=1e-6)
    late = r["lateness_ms"]
    assert late["max"] == pytest.approx(3.0, abs=1e-6)
    assert late["p50"] == pytest.approx(0.0, abs=1e-6)


def test_lateness_is_against_the_best_anchor_so_a_late_first_packet_does_not_shift_all():
    times = [10.0 + 0.02 * k for k in range(10)]
    times[0] += 0.004
    w = WindowStats(0.0, 100.0)
    w.add_capture(_capture([(t, k, k == 0) for k, t in enumerate(times)]))
    late = w.result()["lateness_ms"]
    assert late["max"] == pytest.approx(4.0, abs=1e-6)
    assert late["p50"] == pytest.approx(0.0, abs=1e-6)


def test_window_bounds_duplicates_and_turns():
    cap = _capture([(10.0 + 0.02 * k, 100 + k, k == 0) for k in range(100)]
                   + [(12.0, 199, False)])               # a duplicate
    w = WindowStats(10.5, 11.5)
    w.add_capture(cap)
    w.add_turns([(10.4, 0.6), (11.0, 0.7), (11.6, 0.8)])
    w.add_barge_ins([(10.6, 0.1), (12.0, 0.2)])
    r = w.result()
    assert r["barge_in_heard_ms"]["count"] == 1 and r["barge_in_heard_ms"]["max"] == 100.0
    assert r["packets"] == 50
    assert r["duplicates"] == 0                          # outside the window
    assert r["turn_latency_ms"]["count"] == 1
    assert r["turn_latency_ms"]["p50"] == pytest.approx(700.0)
    w = WindowStats(0.0, 100.0)
    w.add_capture(cap)
    assert w.result()["duplicates"] == 1


def test_summary_of_nothing_is_zeros():
    assert summary([]) == {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0,
                           "p999": 0.0, "max": 0.0}


def test_agent_activity_turn_latency_is_the_first_packet_after_the_callers_speech():
    act = AgentActivity()
    act.caller_speaks(8.0, 10.0)
    act.update(9.98, True)          # the agent still talking over the caller: not the answer
    assert list(act.turns) == []
    act.update(10.25, False)        # any packet after the speech ended is the answer's first
    act.update(10.27, True)
    assert list(act.turns) == [(10.0, pytest.approx(0.25))]
    assert list(act.barge_ins) == []            # the agent was silent when the caller began


def test_agent_activity_barge_in_is_until_the_agents_last_packet():
    act = AgentActivity()
    for k in range(50):                          # the agent talks from 5.0 s
        act.update(5.0 + 0.02 * k, True)
    act.caller_speaks(5.5, 7.0)                  # the caller talks over it at 5.5 s
    assert list(act.barge_ins) == []
    act.update(7.6, True)                        # the agent's answer, after a silence
    assert list(act.barge_ins) == [(5.5, pytest.approx(0.48))]    # last packet at 5.98 s
    act.caller_speaks(8.5, 9.0)                  # silent since 7.6: not a barge-in
    act.update(9.6, True)
    assert len(act.barge_ins) == 1


class _NoEvents:
    def send_event(self, app: str, event: dict) -> None:
        pass

    def replaced(self, app: str, event: dict) -> None:
        pass


def test_stats_over_http_after_a_call_that_was_answered(tmp_path: Path):
    """A caller speaks; a test socket playing the relay answers with paced RTP once the speech
    is over; GET /sim/stats counts both ways, the window's pacing and the turn latency, and
    without audio no WAV is written."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    # The test drives the model directly, step by step: no Stasis entry or hangup delays.
    pbx = SimPbx(user="u", password="p", recordings_dir=tmp_path, keep_audio=False,
                 timing=PbxTiming.instant()).start()
    try:
        pbx.model.register_app("bench", _NoEvents())
        [call_id] = pbx.start_calls({"steps": [{"say": "Hello, can you hear me?"},
                                               {"wait_agent_done": {"silence_ms": 300}}],
                                     "end": "wait", "max_duration_ms": 60000},
                                    app="bench")
        deadline = time.monotonic() + 5
        while pbx.scenario.calls[call_id].channel is None:
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        pbx._op()
        caller = pbx.scenario.calls[call_id].channel
        em = pbx.model.external_media(app="bench", channel_id="em1",
                                      external_host=f"127.0.0.1:{sock.getsockname()[1]}")
        pbx.model.create_bridge("b1")
        pbx.model.add_channels("b1", [caller.id, "em1"])
        pbx._after_op()
        remote = (em.variables["UNICASTRTP_LOCAL_ADDRESS"],
                  int(em.variables["UNICASTRTP_LOCAL_PORT"]))
        heard = 0
        since = time.monotonic()
        while True:                         # the caller's speech, until it stops
            try:
                sock.settimeout(0.3)
                sock.recvfrom(2048)
                heard += 1
            except TimeoutError:
                break
        assert heard > 50
        t0 = time.monotonic()
        for k in range(25):                 # the "agent" answers: 0.5 s of paced RTP
            sock.sendto(build_rtp(0, k == 0, 500 + k, k * 160, 99, FRAME), remote)
            gevent.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))
        gevent.sleep(0.5)
        until = time.monotonic()
        auth = ("u", "p")
        base = f"http://127.0.0.1:{pbx.port}/sim/stats"
        light = requests.get(base, auth=auth, timeout=10).json()
        assert light["rtp"]["rx_datagrams"] == 25
        assert light["rtp"]["tx_packets"] >= heard
        assert light["live"] == {"channels": 2, "bridges": 1, "endpoints": 1}
        assert light["calls"] == {"active": 1}
        assert "window" not in light
        full = requests.get(base, params={"since": since, "until": until}, auth=auth,
                            timeout=10).json()
        window = full["window"]
        assert (window["packets"], window["seq_gaps"], window["talkspurts"]) == (25, 0, 1)
        assert window["interarrival_deviation_ms"]["count"] == 24
        assert window["turn_latency_ms"]["count"] == 1
        assert 0 < window["turn_latency_ms"]["p50"] < 1000
        result = pbx.call(call_id)
        assert len(result["agent"]["turn_latency_ms"]) == 1
        bad = requests.get(base, params={"since": "soon"}, auth=auth, timeout=10)
        assert bad.status_code == 400
        assert requests.get(base, params={"until": 1}, auth=auth, timeout=10).status_code == 400
        pbx.hangup_call(call_id)
        pbx._op()
        pbx.model.hangup("em1")
        pbx.model.destroy_bridge("b1")
        pbx._after_op()
        assert pbx.stats()["live"] == {"channels": 0, "bridges": 0, "endpoints": 0}
        assert pbx.stats()["rtp"]["rx_datagrams"] == 25          # kept after the close
        assert pbx.scenario.calls[call_id].externals["em1"]["wav"] is None
        assert not list(tmp_path.glob("*.wav"))
    finally:
        pbx.stop()
        sock.close()


def test_datagrams_queued_when_the_channel_goes_are_still_received(tmp_path: Path):
    """The hangup of an externalMedia channel can be handled before its socket's io watcher
    runs: what already arrived counts as received, not lost (the hangup applied at once: no
    teardown delay)."""
    pbx = SimPbx(user="u", password="p", recordings_dir=tmp_path, keep_audio=False,
                 timing=PbxTiming.instant()).start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # As in Asterisk, a channel originated into an app with no events connection is hung up.
        pbx.model.register_app("bench", _NoEvents())
        pbx._op()
        em = pbx.model.external_media(app="bench", channel_id="em1",
                                      external_host="127.0.0.1:9")
        pbx._after_op()
        remote = (em.variables["UNICASTRTP_LOCAL_ADDRESS"],
                  int(em.variables["UNICASTRTP_LOCAL_PORT"]))
        for k in range(5):      # sent without yielding: nothing has read them yet
            sender.sendto(build_rtp(0, k == 0, k, k * 160, 5, FRAME), remote)
        blocking_sleep(0.05)    # the hub does not run meanwhile
        pbx._op()
        pbx.model.hangup("em1")
        pbx._after_op()
        assert pbx.stats()["rtp"]["rx_datagrams"] == 5
    finally:
        sender.close()
        pbx.stop()
