"""The fleet web server (relay.web.fleet) over real workers: one simulated PBX and model, three
relay workers with their own ARI application and their own internal dashboard (127.0.0.1, an
internal token), and the FleetWebServer the master would run over them. One dashboard shows every
worker's calls, per-call requests reach the right worker, /metrics adds the workers up, a worker
that stops answering is skipped and counted, and nothing is left behind."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests
import websocket
from stack import AGENTS_DIR, API_KEY, Stack, greenlets_alive, wait_for
from web_client import RecordingClient

from relay.config import load_settings
from relay.fleet.endpoints import WorkerEndpoint
from relay.web import WebServer
from relay.web import fleet_merge as merge
from relay.web.fleet import FleetWebServer
from relay.web.fleet_metrics import merge as merge_metrics
from relay.worker import Worker

INTERNAL = "internal-fleet-token-91ab"
TOKEN = "fleet-public-token-5d2e"
APPS = ("relay-w0", "relay-w1", "relay-w2")
HELLO = "Hello, I would like to check the status of my order."
SCRIPT = {
    "phrasebook": [HELLO],
    "greeting": "Hello, this is Acme. How can I help you today?",
    "rules": [{"keywords": ["status"], "say": "Sure. What is your order number?"}],
    "default": "I see.",
}
LONG_CALL = {"steps": [{"pause_ms": 300}, {"say": HELLO},
                       {"wait_agent_done": {"silence_ms": 400, "timeout_ms": 15000}},
                       {"pause_ms": 30000}]}


# ---------------------------------------------------------------------------- without sockets

def test_metrics_texts_are_summed_series_by_series_with_help_and_type_once():
    one = """# HELP relay_calls_total Calls started by this worker.
# TYPE relay_calls_total counter
relay_calls_total 2
# HELP relay_ari_connected 1 while connected.
# TYPE relay_ari_connected gauge
relay_ari_connected 1
# HELP relay_turn_latency_seconds Latency.
# TYPE relay_turn_latency_seconds histogram
relay_turn_latency_seconds_bucket{le="0.5"} 1
relay_turn_latency_seconds_bucket{le="+Inf"} 2
relay_turn_latency_seconds_sum 1.25
relay_turn_latency_seconds_count 2
# HELP relay_tool_calls_total Tool calls.
# TYPE relay_tool_calls_total counter
relay_tool_calls_total{tool="a",result="ok"} 1
"""
    two = """# HELP relay_calls_total Calls started by this worker.
# TYPE relay_calls_total counter
relay_calls_total 3 1700000000000
# HELP relay_ari_connected 1 while connected.
# TYPE relay_ari_connected gauge
relay_ari_connected 0
# HELP relay_turn_latency_seconds Latency.
# TYPE relay_turn_latency_seconds histogram
relay_turn_latency_seconds_bucket{le="0.5"} 0
relay_turn_latency_seconds_bucket{le="+Inf"} 1
relay_turn_latency_seconds_sum 0.5
relay_turn_latency_seconds_count 1
# TYPE relay_tool_calls_total counter
relay_tool_calls_total{result="ok", tool="a"} 4
relay_tool_calls_total{tool="b",result="error"} 1
this line is not a sample
relay_broken{le="1"} not-a-number
"""
    text = merge_metrics([one, two])
    samples = check_exposition(text)
    assert samples["relay_calls_total"] == 5
    assert samples["relay_ari_connected"] == 1
    assert samples['relay_turn_latency_seconds_bucket{le="0.5"}'] == 1
    assert samples['relay_turn_latency_seconds_bucket{le="+Inf"}'] == 3
    assert samples["relay_turn_latency_seconds_sum"] == 1.75
    assert samples["relay_turn_latency_seconds_count"] == 3
    assert samples['relay_tool_calls_total{tool="a",result="ok"}'] == 5       # labels in any order
    assert samples['relay_tool_calls_total{tool="b",result="error"}'] == 1
    assert text.count("# TYPE relay_calls_total counter") == 1
    assert "1700000000000" not in text and "relay_broken" not in text


def test_the_merged_status_sums_counters_and_keeps_the_worst_quantiles():
    a = {"ready": True, "ari_connected": True, "accepting": True, "calls_active": 2,
         "agent": "default",
         "counters": {"calls_total": 5, "model_errors": {"x": 1},
                      "fallback_transcriptions": {"openai": {"ok": 2}}},
         "pacing": {"streams": 2, "late_ticks": 1, "lateness_p50_ms": 0.1,
                    "lateness_p99_ms": 0.5, "lateness_mean_ms": 0.2},
         "turn_latency": {"count": 3, "mean_ms": 400.0, "p50_ms": 400.0, "p99_ms": 500.0}}
    b = {"ready": False, "ari_connected": False, "accepting": False, "calls_active": 1,
         "agent": "default",
         "counters": {"calls_total": 7, "model_errors": {"x": 2, "y": 1},
                      "fallback_transcriptions": {"openai": {"ok": 1, "failed": 1}}},
         "pacing": {"streams": 1, "late_ticks": 4, "lateness_p50_ms": 0.2,
                    "lateness_p99_ms": 2.0, "lateness_mean_ms": None},
         "turn_latency": {"count": 1, "mean_ms": 800.0, "p50_ms": 1000.0, "p99_ms": 1000.0},
         "barge_in_reaction": {"count": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None}}
    status = merge.worker_status([a, b])
    assert status["ready"] and status["accepting"] and not status["ari_connected"]
    assert status["calls_active"] == 3 and status["agent"] == "default"
    assert status["counters"] == {"calls_total": 12, "model_errors": {"x": 3, "y": 1},
                                  "fallback_transcriptions": {"openai": {"ok": 3, "failed": 1}}}
    assert status["pacing"] == {"streams": 3, "late_ticks": 5, "lateness_p50_ms": 0.2,
                                "lateness_p99_ms": 2.0, "lateness_mean_ms": 0.2}
    assert status["turn_latency"] == {"count": 4, "mean_ms": 500.0, "p50_ms": 1000.0,
                                      "p99_ms": 1000.0}
    assert status["barge_in_reaction"]["p99_ms"] is None
    assert merge.worker_status([])["ready"] is False
    ended = [{"id": "a", "started_at": 10.0, "duration_s": 5.0},
             {"id": "b", "started_at": 12.0, "duration_s": 1.0},
             {"id": "c", "started_at": 1.0, "duration_s": 30.0}]
    assert [c["id"] for c in merge.finished_calls(ended, 2)] == ["c", "a"]


# ---------------------------------------------------------------------------- helpers

SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|'
                         r'\\.)*",?)*\})? (\S+)$')


def check_exposition(text: str) -> dict[str, float]:
    """Prometheus text format 0.0.4, strictly: every family has one HELP (when given) and one
    TYPE before its samples, a family's samples are together, every line parses. Returns the
    samples by name+labels (labels as written)."""
    assert text.endswith("\n")
    kinds: dict[str, str] = {}
    helped: set[str] = set()
    finished_families: set[str] = set()
    current: Optional[str] = None
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"two HELP lines for {name}"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in kinds, f"two TYPE lines for {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            kinds[name] = kind
            if current is not None:
                finished_families.add(current)
            current = name
            continue
        match = SAMPLE_LINE.match(line)
        assert match, f"not a sample line: {line!r}"
        base = match.group(1)
        assert current is not None and base in (
            current, current + "_bucket", current + "_sum", current + "_count"), \
            f"sample {line!r} outside its family (current {current})"
        assert current not in finished_families
        key = base + (match.group(2) or "")
        assert key not in samples, f"two samples {key}"
        value = match.group(3)
        samples[key] = math.inf if value == "+Inf" else float(value)
    return samples


def _tcp_table() -> dict[int, tuple[int, int, bool]]:
    """This host's TCP sockets by inode: (local port, remote port, listening)."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            table[int(fields[9])] = (local, remote, fields[3] == "0A")
    return table


def sockets_on(fleet_port: int, worker_ports: set[int]) -> list[tuple[int, int]]:
    """This process's TCP sockets of the fleet server's traffic: its listening socket and the
    connections it accepted, the connections to and from the workers' web servers (not their
    listening sockets). (local port, remote port) each. (The test's own clients of the fleet
    are not counted: requests keeps a redirect's connection until it is collected.)"""
    table = _tcp_table()
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            continue
        entry = table.get(int(target[len("socket:["):-1]))
        if entry is None:
            continue
        local, remote, listening = entry
        if local == fleet_port or remote in worker_ports or (
                local in worker_ports and not listening):
            found.append((local, remote))
    return found


class Member:
    """One relay worker of the fleet with its internal dashboard."""

    def __init__(self, app: str, worker: Worker, web: WebServer, index: int) -> None:
        self.app, self.worker, self.web, self.index = app, worker, web, index
        self.listed = True
        self.healthy: Optional[bool] = None      # None: the worker's own readiness
        self.draining = False                    # the master told it to drain or stop

    def endpoint(self) -> WorkerEndpoint:
        healthy = self.worker.ready if self.healthy is None else self.healthy
        return WorkerEndpoint(name=self.app, index=self.index, pid=os.getpid(),
                              web_url=self.web.url.rstrip("/"), healthy=healthy,
                              calls_active=len(self.worker.calls), draining=self.draining)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.web.url.rstrip("/") + path, timeout=10,
                            headers={"Authorization": f"Bearer {INTERNAL}"})


class System:
    """PBX + model + three workers, each with its internal dashboard, and their fleet server."""

    def __init__(self, tmp_path: Path, token: str = "", internal: str = INTERNAL) -> None:
        self.tmp_path = tmp_path
        self.stack = Stack(tmp_path, model_script=SCRIPT, settings=self._overrides(APPS[0]))
        self.members: list[Member] = []
        for index, app in enumerate(APPS):
            if index == 0:
                worker = self.stack.worker
            else:
                worker = Worker(load_settings(env={}, overrides=self._overrides(app)))
                worker.start()
                wait_for(lambda w=worker: w.ready, 5, f"worker {app} to connect to ARI")
            web = WebServer(worker, port=0).start()
            self.members.append(Member(app, worker, web, index))
        self.greenlets_before = set(map(id, greenlets_alive()))
        self.settings = load_settings(env={}, overrides={
            "web.port": 0, "web.token": token, "web.stats_interval_s": 0.2,
            "agent.configs_dir": str(AGENTS_DIR), "agent.active": "default",
            "openai.api_key": API_KEY})
        self.master = {"dispatched": 0}
        self.fleet = FleetWebServer(
            self.settings, self.endpoints, internal, master_status=lambda: dict(self.master),
            master_metrics=lambda: ("# HELP relay_dispatcher_calls_total Calls dispatched.\n"
                                    "# TYPE relay_dispatcher_calls_total counter\n"
                                    f"relay_dispatcher_calls_total {self.master['dispatched']}\n"),
            port=0, request_timeout_s=2.0, link_backoff_initial_s=0.05, link_backoff_max_s=0.5,
            sync_interval_s=0.1).start()
        self.http = RecordingClient(self.fleet.url, token, timeout=15)
        self.base, self.headers, self.bodies = self.http.base, self.http.headers, self.http.bodies
        self.request, self.get, self.post_json = self.http, self.http.get, self.http.post_json

    def _overrides(self, app: str) -> dict:
        overrides = {"ari.app": app, "web.port": 0, "web.token": INTERNAL,
                     "web.stats_interval_s": 0.2,
                     "call.transcripts_dir": str(self.tmp_path / "transcripts" / app)}
        if hasattr(self, "stack"):     # the other workers: what Stack gave the first one
            stack = self.stack
            overrides.update({
                "ari.url": f"http://127.0.0.1:{stack.pbx.port}", "ari.username": stack.pbx.user,
                "ari.password": stack.pbx.password, "ari.reconnect_initial_s": 0.05,
                "openai.realtime_url": stack.model.url, "openai.api_key": API_KEY,
                "openai.model": "gpt-realtime", "agent.configs_dir": str(AGENTS_DIR),
                "agent.active": "default", "rtp.port_min": 0, "rtp.port_max": 0})
        return overrides

    def new_greenlets(self) -> list:
        """Greenlets alive now that were not before the fleet server started, less the
        simulators' connection handlers (the workers' pooled ARI and model connections)."""
        simulators = {self.stack.pbx.port, self.stack.model.port}

        def simulator_handler(g) -> bool:
            server = getattr(g.args[0], "__self__", None) if g.args else None
            return getattr(server, "server_port", None) in simulators
        return [(getattr(g, "_run", g), g.args) for g in greenlets_alive()
                if id(g) not in self.greenlets_before and not simulator_handler(g)]

    def endpoints(self) -> list[WorkerEndpoint]:
        return [m.endpoint() for m in self.members if m.listed]

    def member(self, app: str) -> Member:
        return next(m for m in self.members if m.app == app)

    # the fleet server's event socket (requests: self.request / get / post_json)
    def connect_ws(self, **kwargs) -> "Browser":
        url = self.base.replace("http://", "ws://") + "/ws"
        if "header" not in kwargs and self.headers:
            kwargs["header"] = [f"Authorization: {self.headers['Authorization']}"]
        return Browser(websocket.create_connection(url, timeout=10, **kwargs))

    # calls
    def start_call(self, app: str, script=LONG_CALL):
        """A call into app's Stasis; its relay Call once it is active."""
        member = self.member(app)
        pbx_id = self.stack.pbx.start_call(script, app=app)

        def find():
            ids = {self.stack.pbx.call(pbx_id).get("channel_id"), pbx_id}
            return next((c for c in list(member.worker.calls.values()) if c.id in ids), None)
        call = wait_for(find, 10, f"{app} to pick up the call")
        wait_for(lambda: call.state == "active", 10, "the call to be set up")
        return pbx_id, call

    def stop(self) -> None:
        """End the calls, stop the fleet server and check that it left no socket and no
        greenlet behind (the workers still running), then stop everything else (with the
        stack's own checks: no PBX channel, no greenlet at all)."""
        try:
            for member in self.members:
                for call in list(member.worker.calls.values()):
                    call.hangup("test over")
            for member in self.members:
                wait_for(lambda w=member.worker: not w.calls, 10, "the calls to end")
            fleet_port = self.fleet.port
            self.fleet.stop()
            worker_ports = {m.web.port for m in self.members}
            try:
                wait_for(lambda: not sockets_on(fleet_port, worker_ports), 10,
                         "the fleet server's sockets to close")
            except AssertionError as error:
                raise AssertionError(f"{error}: {sockets_on(fleet_port, worker_ports)} (fleet "
                                     f"{fleet_port}, workers {worker_ports})") from None
            try:
                wait_for(lambda: not self.new_greenlets(), 10, "the fleet's greenlets to end")
            except AssertionError as error:
                raise AssertionError(f"{error}: {self.new_greenlets()}") from None
        finally:
            for member in reversed(self.members):
                member.web.stop()
                if member.worker is not self.stack.worker:
                    member.worker.stop(5)
            self.stack.stop()


class Browser:
    """A dashboard's event socket, every message kept."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self.texts: list[str] = []

    def until(self, predicate: Callable[[dict], bool], what: str, timeout: float = 15) -> dict:
        """The first message (already received or next) for which predicate is true."""
        for message in self.messages:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.ws.recv()
            self.texts.append(text)
            message = json.loads(text)
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no message: {what}")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def system(tmp_path):
    made: list[System] = []

    def make(**kwargs) -> System:
        made.append(System(tmp_path, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def worker_of(message: dict) -> Optional[str]:
    if message.get("type") == "call":
        return message["call"].get("worker")
    return message.get("worker")


# ---------------------------------------------------------------------------- the fleet

def test_one_dashboard_shows_and_drives_the_calls_of_every_worker(system):
    s = system()
    browser = s.connect_ws()
    first = browser.until(lambda m: m["type"] == "snapshot", "the snapshot")
    assert first["calls"] == [] and first["worker"]["calls_active"] == 0
    wait_for(lambda: s.fleet.fleet.linked() == 3, 10, "the three event links")

    calls = {app: s.start_call(app)[1] for app in APPS}
    owner = {call.id: app for app, call in calls.items()}

    # the call list: every worker's call, each marked with its worker
    listed = s.get("/api/calls").json()
    assert {c["id"]: c["worker"] for c in listed["calls"]} == owner
    assert [w["name"] for w in listed["workers"]] == list(APPS)
    assert all(w["reachable"] and w["healthy"] for w in listed["workers"])
    assert listed["unreachable"] == [] and listed["master"] == {"dispatched": 0}
    assert listed["worker"]["calls_active"] == 3 and listed["worker"]["ari_connected"] is True
    assert listed["worker"]["counters"]["calls_total"] == 3

    # the event socket relays each worker's calls and transcripts, marked with the worker
    for app, call in calls.items():
        browser.until(lambda m, i=call.id: m["type"] == "call" and m["call"]["id"] == i,
                      f"the call message of {app}")
        entry = browser.until(
            lambda m, i=call.id: m["type"] == "transcript" and m["call_id"] == i
            and m["entry"]["kind"] == "caller", f"{app}'s caller transcript")
        assert entry["worker"] == app and entry["entry"]["text"] == HELLO
    assert all(worker_of(m) == owner[m["call"]["id"]] for m in browser.messages
               if m["type"] == "call")
    stats = browser.until(lambda m: m["type"] == "stats" and len(m["calls"]) == 3
                          and m["worker"]["calls_active"] == 3, "stats of the three calls")
    assert {c["id"]: c["worker"] for c in stats["calls"]} == owner
    assert stats["worker"]["counters"]["calls_total"] == 3 and len(stats["workers"]) == 3
    # a dashboard opened now gets all of it in its snapshot
    late = s.connect_ws()
    snapshot = late.until(lambda m: m["type"] == "snapshot", "the snapshot")
    assert {c["id"]: c["worker"] for c in snapshot["calls"]} == owner
    assert {worker_of(m) for m in snapshot["recent"]} == set(APPS)
    late.close()

    # one call's detail, config and hang-up: the answer of the worker that carries it
    w1 = calls["relay-w1"]
    mine = s.get(f"/api/calls/{w1.id}")
    theirs = s.member("relay-w1").get(f"/api/calls/{w1.id}")
    assert mine.status_code == 200
    # the call goes on between the two requests: compare what cannot change meanwhile
    stable = ("id", "caller", "caller_name", "agent", "started_at", "setup_ms", "config", "live")
    assert {k: mine.json()[k] for k in stable} == {k: theirs.json()[k] for k in stable}
    assert set(mine.json()) == set(theirs.json())
    changed = s.post_json(f"/api/calls/{w1.id}/config", {"instructions": "Answer in one word."})
    assert changed.status_code == 200 and changed.json()["sent"] == {
        "instructions": "Answer in one word."}
    wait_for(lambda: [x.config.get("instructions") for x in s.stack.model.sessions].count(
        "Answer in one word.") == 1, 5, "the session.update to reach the model")
    assert w1.session.session["instructions"] == "Answer in one word."
    assert calls["relay-w0"].session.session["instructions"] == "You are a test agent."
    refused = s.post_json(f"/api/calls/{w1.id}/config", {"voice": "robot"})
    assert refused.status_code == 400 and "voice must be one of" in refused.json()["error"]
    form = s.request("POST", f"/api/calls/{w1.id}/config", data="instructions=x")
    assert form.status_code == 415                  # the worker's own judgement, passed on
    hung = s.post_json(f"/api/calls/{calls['relay-w2'].id}/hangup", {"reason": "fleet test"})
    assert hung.status_code == 202
    wait_for(lambda: calls["relay-w2"].state == "ended", 10, "w2's call to end")
    assert calls["relay-w2"].end_reason == "hung up by the operator: fleet test"
    assert calls["relay-w0"].state == calls["relay-w1"].state == "active"
    ended = browser.until(lambda m: m["type"] == "call" and m["call"]["state"] == "ended",
                          "the end of w2's call")
    assert ended["call"]["worker"] == "relay-w2"
    again = s.post_json(f"/api/calls/{calls['relay-w2'].id}/hangup", {})
    assert again.status_code == 404 and "has ended" in again.json()["error"]

    # unknown calls, and a call whose owner the fleet has to ask around for
    for method, path in (("GET", "/api/calls/no-such-call"),
                         ("POST", "/api/calls/no-such-call/hangup")):
        unknown = s.request(method, path)
        assert unknown.status_code == 404 and "no call" in unknown.json()["error"]
    s.fleet.fleet.owners.clear()
    found = s.get(f"/api/calls/{calls['relay-w2'].id}")
    assert found.status_code == 200 and found.json()["live"] is False
    assert s.fleet.fleet.owners[calls["relay-w2"].id] == "relay-w2"
    for method, path, allowed in (("DELETE", f"/api/calls/{w1.id}", "GET"),
                                  ("GET", f"/api/calls/{w1.id}/hangup", "POST"),
                                  ("PUT", "/api/calls", "GET, POST"),
                                  ("POST", "/metrics", "GET, HEAD")):
        wrong = s.request(method, path)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == allowed

    # health, agents, the page
    assert s.get("/healthz").json() == {"ok": True}
    ready = s.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers_healthy"] == 3
    agents = s.get("/api/agents").json()
    assert agents["active"] == "default" and {a["key"] for a in agents["agents"]} == {
        "default", "greeter", "alaw"}
    assert s.get("/").status_code == 200 and s.get("/static/app.js").status_code == 200
    assert s.get("/ws").status_code == 426

    for call in (calls["relay-w0"], calls["relay-w1"]):
        call.hangup("test over")
    for call in calls.values():
        wait_for(lambda c=call: c.state == "ended", 10, "the calls to end")
    s.master["dispatched"] = 3

    # the counters add up: the fleet's figures are the sum of the workers' own
    def consistent():
        own = [m.get("/api/calls").json()["worker"]["counters"] for m in s.members]
        fleet = s.get("/api/calls").json()["worker"]["counters"]
        again = [m.get("/api/calls").json()["worker"]["counters"] for m in s.members]
        if own != again:
            return False        # a worker's figures moved meanwhile: look again
        assert fleet["calls_total"] == 3
        return all(fleet[key] == sum(o[key] for o in own) for key in (
            "calls_total", "calls_ended", "calls_failed", "ari_events", "ari_reconnects"))
    wait_for(consistent, 10, "the counters to add up")
    summed = ("relay_calls_total", "relay_calls_ended_total", "relay_ari_events_total",
              "relay_rtp_sent_packets_total", "relay_rtp_received_packets_total",
              "relay_turn_latency_seconds_count", "relay_turn_latency_seconds_sum",
              'relay_turn_latency_seconds_bucket{le="+Inf"}',
              'relay_turn_latency_seconds_bucket{le="1.0"}', "relay_ari_connected")

    def metrics_add_up():
        own = [check_exposition(m.get("/metrics").text) for m in s.members]
        response = s.get("/metrics")
        again = [check_exposition(m.get("/metrics").text) for m in s.members]
        if [{k: o[k] for k in summed} for o in own] != [{k: o[k] for k in summed}
                                                         for o in again]:
            return False
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        fleet = check_exposition(response.text)
        for key in summed:
            assert math.isclose(fleet[key], sum(o[key] for o in own)), key
        return fleet
    fleet = wait_for(metrics_add_up, 10, "the metrics to add up")
    assert fleet["relay_calls_total"] == 3 and fleet["relay_ari_connected"] == 3
    assert fleet['relay_workers{state="healthy"}'] == 3
    assert fleet['relay_workers{state="unhealthy"}'] == 0
    assert all(fleet[f'relay_worker_up{{worker="{app}"}}'] == 1 for app in APPS)
    assert fleet["relay_fleet_scrape_errors_total"] == 0
    assert fleet["relay_dispatcher_calls_total"] == 3
    assert fleet["relay_dashboard_clients"] == 1        # the browser here, not the links
    browser.close()


def test_a_worker_that_stops_answering_is_skipped_and_counted(system):
    s = system()
    browser = s.connect_ws()
    wait_for(lambda: s.fleet.fleet.linked() == 3, 10, "the three event links")
    calls = {app: s.start_call(app)[1] for app in APPS}
    browser.until(lambda m: m["type"] == "stats" and len(m["calls"]) == 3, "the three calls")

    # w2 stops (its calls end with it) while the master still lists it, as unhealthy: the
    # dashboards get a snapshot without its calls as soon as its event link drops
    gone = s.member("relay-w2")
    gone.healthy = False
    browser.messages.clear()
    gone.web.stop()
    gone.worker.stop(5)
    wait_for(lambda: not gone.worker.calls, 10, "w2's call to end")
    lost = browser.until(lambda m: m["type"] == "snapshot" and len(m["calls"]) == 2,
                         "a snapshot without w2's call")
    assert {c["worker"] for c in lost["calls"]} == {"relay-w0", "relay-w1"}
    assert {w["name"]: w["linked"] for w in lost["workers"]} == {
        "relay-w0": True, "relay-w1": True, "relay-w2": False}

    listed = s.get("/api/calls").json()
    assert listed["unreachable"] == ["relay-w2"]
    assert {c["id"] for c in listed["calls"]} == {calls["relay-w0"].id, calls["relay-w1"].id}
    status = {w["name"]: w for w in listed["workers"]}
    assert status["relay-w2"]["reachable"] is False and status["relay-w2"]["error"]
    assert listed["worker"]["calls_active"] == 2
    fleet = check_exposition(s.get("/metrics").text)
    assert fleet['relay_worker_up{worker="relay-w2"}'] == 0
    assert fleet['relay_worker_up{worker="relay-w0"}'] == 1
    assert fleet["relay_fleet_scrape_errors_total"] == 1
    assert fleet["relay_calls_total"] == 2                  # w0's and w1's
    assert fleet['relay_workers{state="healthy"}'] == 2
    assert fleet['relay_workers{state="unhealthy"}'] == 1
    assert check_exposition(s.get("/metrics").text)["relay_fleet_scrape_errors_total"] == 2
    # the call w2 carried: its owner does not answer
    lost = s.get(f"/api/calls/{calls['relay-w2'].id}")
    assert lost.status_code == 502
    assert "relay-w2" in lost.json()["error"] and "did not answer" in lost.json()["error"]
    # an unknown call cannot be ruled out while a listed worker is silent
    unknown = s.get("/api/calls/no-such-call")
    assert unknown.status_code == 502 and "relay-w2" in unknown.json()["error"]
    # the others still answer
    assert s.get(f"/api/calls/{calls['relay-w0'].id}").json()["live"] is True
    assert s.get("/readyz").status_code == 200

    # the master drops it: the dashboards get a snapshot without it
    browser.messages.clear()
    gone.listed = False
    resync = browser.until(lambda m: m["type"] == "snapshot" and len(m["workers"]) == 2,
                           "a snapshot without w2")
    assert {c["worker"] for c in resync["calls"]} == {"relay-w0", "relay-w1"}
    forgotten = s.get(f"/api/calls/{calls['relay-w2'].id}")
    assert forgotten.status_code == 404 and "no longer running" in forgotten.json()["error"]
    assert s.get("/api/calls").json()["unreachable"] == []
    wait_for(lambda: "relay-w2" not in s.fleet.fleet.links, 5, "w2's link to close")

    for member in s.members[:2]:
        member.healthy = False
    not_ready = s.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["workers_healthy"] == 0
    browser.close()


def test_the_token_guards_the_fleet_and_the_internal_token_never_leaves_it(system):
    s = system(token=TOKEN)
    pbx_id, call = s.start_call("relay-w1")
    browser = s.connect_ws()
    snapshot = browser.until(lambda m: m["type"] == "snapshot", "the snapshot")
    wait_for(lambda: s.fleet.fleet.linked() == 3, 10, "the three event links")
    anonymous = {"Authorization": ""}
    assert s.get("/healthz", headers=anonymous).status_code == 200
    for path in ("/readyz", "/metrics", "/api/calls", f"/api/calls/{call.id}", "/api/agents",
                 "/static/app.js", "/ws"):
        for headers in (anonymous, {"Authorization": "Bearer wrong-token-123"},
                        {"Authorization": f"Bearer {INTERNAL}"}):      # not the fleet's token
            assert s.get(path, headers=headers).status_code == 401, path
        assert s.get(path).status_code in (200, 426), path
    assert s.request("POST", f"/api/calls/{call.id}/hangup",
                     headers=anonymous).status_code == 401
    page = s.get("/", headers=anonymous)
    assert page.status_code == 303 and page.headers["Location"] == "/login"
    login = s.request("POST", "/login", data={"token": TOKEN}, headers=anonymous)
    cookie = login.headers["Set-Cookie"].split(";")[0]
    with_cookie = {"Authorization": "", "Cookie": cookie}
    assert s.get("/api/calls", headers=with_cookie).status_code == 200
    evil = dict(with_cookie, Origin="http://evil.example")
    assert s.request("POST", f"/api/calls/{call.id}/hangup", headers=evil).status_code == 403
    url = s.base.replace("http://", "ws://") + "/ws"
    for kwargs in ({}, {"header": [f"Authorization: Bearer {INTERNAL}"]},
                   {"cookie": cookie, "origin": "http://evil.example"}):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=5, **kwargs)
        assert refused.value.status_code in (401, 403)
    # the workers' own servers want the internal token
    assert requests.get(s.members[0].web.url + "api/calls", timeout=5).status_code == 401

    # nothing the fleet says contains the internal token (nor the model's key)
    s.post_json(f"/api/calls/{call.id}/config", {"instructions": "Be brief."})
    for path in ("/api/calls", f"/api/calls/{call.id}", "/api/agents", "/metrics", "/readyz"):
        assert s.get(path).status_code == 200, path
    call.hangup("test over")
    browser.until(lambda m: m["type"] == "call" and m["call"]["state"] == "ended", "the end")
    everything = b"\n".join(s.bodies).decode("utf-8", "replace") + "\n".join(browser.texts)
    everything += json.dumps(snapshot)
    assert len(s.bodies) > 40
    for secret in (INTERNAL, API_KEY, s.stack.pbx.password):
        assert secret not in everything, f"a secret ({secret[:4]}...) reached a client"
    browser.close()


def test_a_fleet_with_the_wrong_internal_token_says_so_and_shows_nothing(system):
    s = system(internal="not-the-internal-token")
    listed = s.get("/api/calls").json()
    assert listed["unreachable"] == list(APPS) and listed["calls"] == []
    assert all("internal token" in w["error"] for w in listed["workers"])
    fleet = check_exposition(s.get("/metrics").text)
    assert fleet["relay_fleet_scrape_errors_total"] == 3
    assert "relay_calls_total" not in fleet
    wait_for(lambda: all(link.failures >= 1 for link in s.fleet.fleet.links.values()), 5,
             "the event links to be refused")
    assert s.fleet.fleet.linked() == 0
    browser = s.connect_ws()
    snapshot = browser.until(lambda m: m["type"] == "snapshot", "the snapshot")
    assert snapshot["calls"] == [] and not any(w["linked"] for w in snapshot["workers"])
    browser.close()


def test_stopping_the_fleet_closes_its_dashboards_and_its_links(system):
    s = system()
    browser = s.connect_ws()
    browser.until(lambda m: m["type"] == "snapshot", "the snapshot")
    wait_for(lambda: s.fleet.fleet.linked() == 3, 10, "the three event links")
    pbx_id, call = s.start_call("relay-w0")
    assert s.get("/metrics").status_code == 200
    assert s.get(f"/api/calls/{call.id}").status_code == 200
    workers_hubs = [m.web.hub for m in s.members]
    assert all(len(hub.clients) == 1 for hub in workers_hubs)     # the fleet's links
    s.fleet.stop()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:             # the close frame, then nothing: bounded by the 10 s timeout
            if browser.ws.recv() == "":
                raise ConnectionError("closed")
    wait_for(lambda: all(not hub.clients for hub in workers_hubs), 10,
             "the workers to see the links close")
    assert call.state == "active"       # the calls do not depend on the dashboard
    browser.close()
    # the leak checks (sockets and greenlets of the fleet server) run when the system stops


def test_a_draining_workers_link_closes_quietly_and_a_running_ones_comes_back(system, caplog):
    s = system()
    wait_for(lambda: s.fleet.fleet.linked() == 3, 10, "the three event links")
    caplog.set_level(logging.INFO, logger="relay.web.fleet_links")
    links = s.fleet.fleet.links

    # w2 drains (as the master tells it), then its server closes, as a worker's does at its exit
    leaving = s.member("relay-w2")
    leaving.draining = True
    leaving.web.stop()
    wait_for(lambda: links["relay-w2"].idle, 10, "w2's link to be given up")
    assert links["relay-w2"].connections == 1 and not links["relay-w2"].synced
    # w1, running, drops its link (as it does with a dashboard that does not keep up): a fault
    s.member("relay-w1").web.hub.clients[0].drop("test")
    wait_for(lambda: links["relay-w1"].connections == 2 and links["relay-w1"].synced, 10,
             "w1's link to come back")

    def said(worker: str, level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == level and f"worker {worker} " in r.getMessage()]
    assert said("relay-w2", logging.WARNING) == []
    assert said("relay-w2", logging.INFO) == [
        "fleet: event link to worker relay-w2 closed (1001 relay is stopping) as expected: it "
        "is draining or stopping; not reopened"]
    [warning] = said("relay-w1", logging.WARNING)
    assert "closed" in warning and warning.endswith("; reconnecting")
    assert len(said("relay-w1", logging.INFO)) == 1      # "... is back"

    # once the master is stopping its workers, a running worker's link closing is expected too
    s.fleet.expect_workers_to_stop()
    s.member("relay-w0").web.stop()
    wait_for(lambda: links["relay-w0"].idle, 10, "w0's link to be given up")
    assert said("relay-w0", logging.WARNING) == []
    assert links["relay-w0"].ended == "the master is stopping its workers"


# ---------------------------------------------------------------------------- the page

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def test_the_unchanged_page_drives_calls_on_two_workers(system, tmp_path):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (see tests/test_dashboard_browser.py)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = system(token=TOKEN)
    calls = {app: s.start_call(app)[1] for app in APPS[:2]}
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        wait = WebDriverWait(driver, 20, poll_frequency=0.05)

        def text(css: str) -> str:
            try:
                return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
            except Exception:       # an element replaced while read: read again
                return ""
        driver.get(f"{s.fleet.url}?token={TOKEN}")
        assert driver.current_url == s.fleet.url
        wait.until(lambda d: "live" in d.find_element(By.ID, "link-state").text)
        wait.until(lambda d: "3/3 workers" in text("#chip-workers"))
        for app, call in calls.items():
            item = f'#live-calls li[data-id="{call.id}"]'
            wait.until(lambda d, i=item, a=app: a in text(i))
        wait.until(lambda d: "2 live" in text("#chip-calls"))

        # w1's call: its transcript (the detail forwarded, then live events), a change
        w1 = calls["relay-w1"]
        driver.find_element(By.CSS_SELECTOR, f'#live-calls li[data-id="{w1.id}"]').click()
        wait.until(lambda d: HELLO in text("#transcript .msg.caller"))
        textarea = driver.find_element(By.ID, "cfg-instructions")
        textarea.clear()
        textarea.send_keys("You are the fleet's agent.")
        driver.find_element(By.ID, "cfg-apply").click()
        wait.until(lambda d: "Sent to the model: instructions" in text("#cfg-result"))
        assert w1.session.session["instructions"] == "You are the fleet's agent."
        assert calls["relay-w0"].session.session["instructions"] == "You are a test agent."

        # hang it up from the page: it moves to the ended list, the other call goes on
        driver.find_element(By.ID, "hangup").click()
        driver.find_element(By.ID, "hangup").click()
        wait_for(lambda: w1.state == "ended", 10, "w1's call to end")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                             f'#ended-calls li[data-id="{w1.id}"]'))
        assert calls["relay-w0"].state == "active"
        severe = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()
