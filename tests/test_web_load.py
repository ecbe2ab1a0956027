"""Dashboard clients never slow a call: 100 live calls with the agent speaking, run twice on one
worker — without and with 10 event-WebSocket clients, one of which never reads — and the pacing
of the RTP the simulated PBX receives is compared between the two runs (a ratio, measured in
the same test: this machine is shared and noisy)."""

from __future__ import annotations

import socket
import time

import gevent
import pytest
import websocket
from stack import APP, Stack, wait_for

from relay.web import WebServer

CALLS = 100
READERS = 9
GREETING = ("Thank you for calling Acme. All our agents are helping other callers, "
            "so please stay on the line.")                  # about 5.5 s of audio
HI = "Hi, I will wait."
SCRIPT = {"phrasebook": [HI], "greeting": GREETING,
          "default": "Thank you, please hold on.",
          "chunk_interval_ms": 5}
CALLER = {"steps": [{"after_agent": HI, "silence_ms": 300},
                    {"wait_agent_done": {"silence_ms": 400, "timeout_ms": 30000}}]}
WARM_UP = {"steps": [{"wait_agent_start": {"after_ms": 500}}, {"hangup": True}]}
FRAME_MS = 20.0
PAUSE_MS = 200.0           # a longer gap is a pause between talkspurts, not a pacing error


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def gap_errors(stack: Stack, call_ids: list[str]) -> list[float]:
    """|inter-arrival gap - 20 ms| of every packet within a talkspurt, all calls pooled."""
    errors: list[float] = []
    for call_id in call_ids:
        capture = stack.pbx.capture(call_id)
        times, markers = capture.times, capture.marker
        for i in range(1, len(times)):
            gap = (times[i] - times[i - 1]) * 1000.0
            if not markers[i] and gap < PAUSE_MS:
                errors.append(abs(gap - FRAME_MS))
    return errors


def run_calls(stack: Stack, count: int, script: dict = CALLER) -> list[float]:
    ids = stack.pbx.start_calls(script, count=count, app=APP, rate=200)
    results = stack.wait_calls(ids, 90)
    assert all(r["state"] == "ended" for r in results)
    return gap_errors(stack, ids)


class Reader:
    """A dashboard client that reads everything (counting, without parsing)."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=30, skip_utf8_validation=True)
        self.messages = 0
        self.ended_calls = 0
        self.transcripts = 0
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                self.messages += 1
                head = text[:40]
                if head.startswith('{"type":"transcript"'):
                    self.transcripts += 1
                elif head.startswith('{"type":"call"') and '"state":"ended"' in text:
                    self.ended_calls += 1
        except (websocket.WebSocketException, OSError):
            pass

    def close(self) -> None:
        self.greenlet.kill()
        self.ws.close()


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path, model_script=SCRIPT, settings={
        "agent.active": "greeter", "web.port": 0, "web.stats_interval_s": 0.5})
    web = WebServer(s.worker).start()
    s.web = web
    yield s
    web.stop()
    s.stop()


def test_ten_dashboard_clients_one_stalled_do_not_change_the_pacing_of_100_calls(stack):
    web = stack.web
    url = web.url.replace("http://", "ws://") + "ws"
    run_calls(stack, 20, WARM_UP)                          # warm-up, not measured
    without = run_calls(stack, CALLS)

    stalled = websocket.create_connection(
        url, timeout=30, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    readers = [Reader(url) for _ in range(READERS)]
    wait_for(lambda: len(web.hub.clients) == READERS + 1, 5, "the clients to connect")
    started = time.monotonic()
    try:
        with_clients = run_calls(stack, CALLS)
        wait_for(lambda: all(r.ended_calls >= CALLS for r in readers), 10,
                 "every reader to see every call end")
        wait_for(lambda: web.hub.dropped >= 1, 5, "the stalled client to be dropped")
    finally:
        for reader in readers:
            reader.close()
        stalled.close()

    p50 = (percentile(without, 0.5), percentile(with_clients, 0.5))
    p99 = (percentile(without, 0.99), percentile(with_clients, 0.99))
    print(f"\npacing of outgoing RTP, |gap - 20 ms| over {len(without)} / {len(with_clients)} "
          f"gaps: p50 {p50[0]:.2f} / {p50[1]:.2f} ms, p99 {p99[0]:.2f} / {p99[1]:.2f} ms "
          f"(without / with {READERS + 1} clients); messages per reader "
          f"{[r.messages for r in readers]} in {time.monotonic() - started:.1f} s; relay's "
          f"pacer lateness (both runs) {stack.worker.pacer.lateness.snapshot()}")
    assert len(without) > CALLS * 200 and len(with_clients) > CALLS * 200
    assert p99[1] <= 1.5 * p99[0] + 1.0, "the dashboard clients changed the audio pacing"
    # the stalled client was dropped, the others got every event
    assert web.hub.dropped == 1
    assert all(r.ended_calls == CALLS and r.transcripts >= 3 * CALLS for r in readers)
    assert all(r.messages > CALLS for r in readers)
    wait_for(lambda: not web.hub.clients, 5, "the clients to be gone")
