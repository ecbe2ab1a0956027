"""`relay serve --workers N` as a user runs it: a master and its worker processes against the
simulated PBX and model (in this process), over 127.0.0.1. Dispatch across workers, a worker
killed mid-call, a drain on SIGTERM, a reload on SIGHUP, the master's dashboard figures.

Which worker carried a call is read from the PBX: the id of the call's externalMedia channel
starts with that worker's app name."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections import Counter

import pytest
import requests
from ari_gate import EventsGate
from fleet_process import APP, CONGESTION, FleetProcess
from stack import wait_for

HI = "Hi, just checking."
HELLO = "Hello, is anybody there?"
MODEL = {"phrasebook": [HI, HELLO], "default": "Okay.", "greeting": "Hello.",
         "chunk_interval_ms": 2}
# The greeter agent speaks first; the caller answers once it has heard it.
GREETED = {"args": ["agent=greeter"],
           "steps": [{"after_agent": HI, "silence_ms": 300},
                     {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 30000}}]}
GREETED_TURNS = [("assistant", "Hello."), ("caller", HI), ("assistant", "Okay.")]


def talk_after(pause_ms: int) -> dict:
    """A caller who says nothing for pause_ms, then asks and waits for the answer."""
    return {"steps": [{"pause_ms": pause_ms}, {"say": HELLO},
                      {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 30000}}]}


@pytest.fixture
def fleet(tmp_path):
    made: list[FleetProcess] = []

    def make(workers: int, **kwargs) -> FleetProcess:
        f = FleetProcess(tmp_path, workers, MODEL, **kwargs)
        made.append(f)
        return f

    yield make
    for f in made:
        # shown by pytest with a failure (and only then): what relay said at the end
        print(f"--- the end of relay's log ---\n{f.log()[-8000:]}")
        f.close()


def completed(result: dict) -> bool:
    """The caller's script ran to its end, no wait timed out."""
    return result["end_reason"] == "script ended" and not any(
        step.get("timed_out") or step.get("interrupted") for step in result["script"]["log"])


def test_100_calls_spread_over_4_workers_and_all_complete(fleet):
    f = fleet(4)
    f.wait_dispatching()
    ids = f.calls(GREETED, count=100, rate=50)
    results = f.pbx.wait_calls(ids, 180)
    incomplete = [r for r in results if not completed(r)]
    assert not incomplete, incomplete[:2]
    shares = Counter(f.worker_of(i) for i in ids)
    assert len(shares) == 4 and set(shares) == set(f.started()), shares
    assert all(15 <= n <= 35 for n in shares.values()), shares      # each a fair share
    for result in results:      # each worker chose the agent from the args it was moved with
        assert f.transcript(result) == GREETED_TURNS
    f.wait_no_leftovers()
    metrics = requests.get(f.dashboard() + "metrics", timeout=10).text
    for line in ('relay_dispatch_refused_total{reason="no_worker"} 0',
                 'relay_worker_restarts_total{worker="w0"} 0'):
        assert line in metrics, metrics
    dispatched = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("relay_dispatched_calls_total{"))
    assert dispatched == 100
    # every worker wrote its calls to the one history; the master's dashboard reads it
    history = f.dashboard() + "api/history"
    found: dict[str, str] = {}

    def every_call_in_the_history() -> bool:
        found.clear()
        after = None
        while True:
            page = requests.get(history, params={"limit": 200, **({"after": after} if after
                                                                  else {})}, timeout=10).json()
            found.update((row["id"], row["worker"]) for row in page["calls"])
            after = page["next"]
            if after is None:
                return len(found) == 100
    wait_for(every_call_in_the_history, 30, "the 100 calls in the history")
    assert len(set(found.values())) == 4, Counter(found.values())
    assert f.stop(signal.SIGTERM) == 0
    assert f.log().count("exited (exit code 0)") == 4


def test_a_killed_worker_is_cleaned_up_after_and_replaced(fleet):
    f = fleet(2, fleet={"restart_backoff_initial_s": 2.0})
    f.wait_dispatching()
    ids = f.calls(talk_after(6000), count=4)
    wait_for(lambda: all(f.bridged(i) for i in ids), 20, "the calls to be bridged")
    apps = {i: f.stasis_app(i) for i in ids}
    # usually two each; a worker whose /readyz answer was late on a loaded machine gets fewer
    assert set(apps.values()) == set(f.started()), apps
    victim = sorted(f.started())[0]
    doomed = [i for i in ids if apps[i] == victim]
    spared = [i for i in ids if apps[i] != victim]
    os.kill(f.started()[victim], signal.SIGKILL)
    # its callers are hung up, its bridges and externalMedia channels removed
    for result in f.pbx.wait_calls(doomed, 15):
        assert result["state"] == "ended" and result["end_reason"] == "hung up", result
    wait_for(lambda: not any(c["id"].startswith(victim + "-") for c in
                             f.pbx.inspect()["channels"]) and not any(
        b["id"].startswith(victim + "-") for b in f.pbx.inspect()["bridges"]),
        10, "the dead worker's channels and bridges to go")
    # a new call goes to the survivor while the slot waits out its backoff
    survivor = next(a for a in f.started() if a != victim)
    [new] = f.calls(talk_after(300))
    # it enters the public app first, then is moved to a worker's: wait for the move
    wait_for(lambda: f.stasis_app(new) not in (None, "", "pub"), 10, "the new call to be moved")
    assert f.stasis_app(new) == survivor
    # the others' calls go on unharmed
    for result in f.pbx.wait_calls(spared + [new], 40):
        assert completed(result), result
    # the slot gets a new worker, which takes calls again
    wait_for(lambda: len(f.started()) == 3, 30, "a new worker in the dead one's slot")
    replacement = next(a for a in f.started() if a not in (victim, survivor))
    assert replacement.startswith("pub-w" + victim.split("-w")[1].split("-")[0] + "-")
    wait_for(lambda: _healthy(f, replacement), 30, "the new worker to be healthy")
    later = f.calls(talk_after(300), count=2)
    results = f.pbx.wait_calls(later, 40)
    assert all(completed(r) for r in results), results
    assert replacement in {f.worker_of(i) for i in later}
    f.wait_no_leftovers()
    log = f.log()
    assert f"worker {victim} (pid {f.started()[victim]}) died: killed by SIGKILL" in log
    assert f"worker {victim}: cleaned up after it: {len(doomed)} caller(s) hung up" in log
    assert f.stop(signal.SIGTERM) == 0


def _healthy(f: FleetProcess, app: str) -> bool:
    status = requests.get(f.dashboard() + "api/calls", timeout=10).json()["master"]
    return any(w["app"] == app and w["state"] == "healthy" for w in status["workers"])


def test_sigterm_drains_live_calls_and_refuses_new_ones(fleet):
    f = fleet(2, args=("--drain-timeout", "30"))     # room for a loaded machine
    f.wait_dispatching()
    live = f.calls(talk_after(2500), count=2)
    wait_for(lambda: all(f.bridged(i) for i in live), 20, "the calls to be bridged")
    f.send(signal.SIGTERM)
    wait_for(lambda: "draining: 2 worker(s)" in f.log(), 10, "the master to begin draining")
    late = f.calls({"steps": [{"pause_ms": 20000}]}, count=2)
    for result in f.pbx.wait_calls(late, 15):
        assert result["cause"] == CONGESTION and result["externals"] == {}, result
    for result in f.pbx.wait_calls(live, 40):
        assert completed(result), result
    assert f.process.wait(40) == 0
    assert f.log().count("exited (exit code 0)") == 2
    assert_no_link_reconnection(f.log(), f.started())
    f.wait_no_leftovers(5)


@pytest.mark.parametrize("how, args", [
    (signal.SIGTERM, ("--drain-timeout", "0.5")),    # a drain whose deadline passes
    (signal.SIGINT, ()),                              # a fast stop: the calls end at once
])
def test_live_calls_are_ended_cleanly_by_a_short_drain_or_sigint(fleet, how, args):
    f = fleet(2, args=args)
    f.wait_dispatching()
    live = f.calls({"steps": [{"pause_ms": 60000}]}, count=3)
    wait_for(lambda: all(f.bridged(i) for i in live), 20, "the calls to be bridged")
    f.send(how)
    assert f.process.wait(40) == 0
    for result in f.pbx.wait_calls(live, 10):
        assert result["state"] == "ended" and result["end_reason"] == "hung up", result
    f.wait_no_leftovers(5)
    assert f.log().count("relay shutting down") == 3


def test_sighup_starts_new_workers_while_an_old_call_finishes(fleet):
    f = fleet(1)
    f.wait_dispatching()
    [old] = f.calls(talk_after(5000))
    wait_for(lambda: f.bridged(old), 20, "the first call to be bridged")
    [first_app] = f.started()
    f.write_config(agent="greeter")         # the new generation's active agent
    f.send(signal.SIGHUP)
    wait_for(lambda: "takes the calls" in f.log(), 30, "the new generation")
    [second_app] = [a for a in f.started() if a != first_app]
    [new] = f.calls({"steps": GREETED["steps"]})
    [result] = f.pbx.wait_calls([new], 40)
    assert completed(result) and f.worker_of(new) == second_app
    assert f.transcript(result) == GREETED_TURNS     # the reloaded settings' agent
    [result] = f.pbx.wait_calls([old], 40)
    assert completed(result) and f.worker_of(old) == first_app
    exited = f"worker {first_app} (pid {f.started()[first_app]}) exited (exit code 0)"
    wait_for(lambda: exited in f.log(), 20, "the old worker to exit")
    f.wait_no_leftovers()
    assert_no_link_reconnection(f.log(), [first_app])     # the retired worker's link
    assert f.stop(signal.SIGTERM) == 0


def test_workers_drain_by_themselves_when_the_master_is_killed(fleet):
    f = fleet(2)
    f.wait_dispatching()
    live = f.calls(talk_after(2000), count=2)
    wait_for(lambda: all(f.bridged(i) for i in live), 20, "the calls to be bridged")
    pids = list(f.started().values())
    f.process.kill()
    f.process.wait(10)
    for result in f.pbx.wait_calls(live, 40):
        assert completed(result), result

    def exited(pid: int) -> bool:       # gone, or a zombie its new parent has not reaped
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (ProcessLookupError, FileNotFoundError):
            return True
    wait_for(lambda: all(exited(p) for p in pids), 30, "the orphaned workers to exit")
    f.wait_no_leftovers(5)
    # Each worker drained with the calls it carried: usually one each, but a worker whose
    # /readyz answer was late on a loaded machine is passed over, and the other takes both.
    carried = Counter(f.worker_of(i) for i in live)
    drained = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"\[(\S+)\] relay: draining: (\d+) call\(s\) live", f.log())}
    assert drained == {app: carried[app] for app in f.started()}     # the fixture shows the log


def test_a_crash_loop_backs_off_and_callers_are_refused_meanwhile(fleet):
    # The only RTP port the workers may bind is taken: each worker exits at start.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        f = fleet(1, fleet={"start_timeout_s": 1.0, "restart_backoff_initial_s": 0.2,
                            "restart_backoff_max_s": 0.8},
                  extra_env={"RTP_PORT_MIN": port, "RTP_PORT_MAX": port})
        f.wait_dispatching()                 # once the start timeout has passed
        [call] = f.calls({"steps": [{"pause_ms": 20000}]})
        [result] = f.pbx.wait_calls([call], 10)
        assert result["cause"] == CONGESTION
        wait_for(lambda: "a new worker in 0.8 s (failure 4 in a row)" in f.log(), 60,
                 "the backoff to reach its maximum")
        log = f.log()
        delays = ["0.2 s (failure 1", "0.4 s (failure 2", "0.8 s (failure 3"]
        assert all(d in log for d in delays), log[-3000:]
        assert "no free UDP port for RTP" in log
        metrics = requests.get(f.dashboard() + "metrics", timeout=10).text
        refused = [line for line in metrics.splitlines() if "refused" in line]
        assert 'relay_dispatch_refused_total{reason="no_worker"} 1' in refused, refused
        assert f.stop(signal.SIGTERM) == 0


def test_a_hung_worker_gets_no_calls_then_is_killed_and_replaced(fleet):
    f = fleet(2, fleet={"unresponsive_kill_s": 2.0})
    f.wait_dispatching()
    [stuck] = f.calls({"steps": [{"pause_ms": 60000}]})
    wait_for(lambda: f.bridged(stuck), 20, "the call to be bridged")
    hung = f.stasis_app(stuck)
    os.kill(f.started()[hung], signal.SIGSTOP)
    wait_for(lambda: not _healthy(f, hung), 10, "the master to see it is not healthy")
    others = f.calls(talk_after(300), count=3)
    for result in f.pbx.wait_calls(others, 40):
        assert completed(result) and f.worker_of(result["id"]) != hung, result
    [result] = f.pbx.wait_calls([stuck], 30)      # killed, then cleaned up after
    assert result["state"] == "ended"
    log = f.log()
    assert f"worker {hung}: no answer to its health checks for 2 s; killing it" in log
    assert f"worker {hung}: cleaned up after it: 1 caller(s) hung up" in log
    wait_for(lambda: len(f.started()) == 3, 30, "a new worker in its slot")
    f.wait_no_leftovers()
    assert f.stop(signal.SIGTERM) == 0


def test_a_lone_relay_serve_drains_on_sigterm_too(fleet):
    f = fleet(0)                      # no master: the process is the worker, app "pub" itself
    f.wait_dispatching()
    [live] = f.calls(talk_after(2000))
    wait_for(lambda: f.bridged(live), 20, "the call to be bridged")
    f.send(signal.SIGTERM)
    wait_for(lambda: "draining: 1 call(s) live" in f.log(), 10, "the drain to begin")
    [late] = f.calls({"steps": [{"pause_ms": 20000}]})
    [refused] = f.pbx.wait_calls([late], 15)
    assert refused["cause"] == CONGESTION and refused["externals"] == {}
    [result] = f.pbx.wait_calls([live], 30)
    assert completed(result) and f.worker_of(live) == "pub"
    assert f.process.wait(30) == 0
    f.wait_no_leftovers(5)


EXPECTED_CLOSE = re.compile(r"fleet: event link to worker (\S+) closed .* as expected")


def _readyz(f: FleetProcess) -> requests.Response:
    return requests.get(f.dashboard() + "readyz", timeout=10)


def test_readyz_is_ready_only_while_the_public_app_is_registered_on_the_pbx(fleet):
    # The gate keeps the public app's events socket (the dispatcher's) out of the PBX until let
    # in: the workers come up and are healthy meanwhile, which is when /readyz used to say 200
    # although Stasis(pub) would fail for want of the app.
    f = fleet(2, ari={"reconnect_max_s": 0.5},
              ari_proxy=lambda pbx: EventsGate(pbx.port, APP).start())
    gate = f.ari_proxy
    wait_for(lambda: "master: dispatching app 'pub'" in f.log() and gate.refused >= 1, 60,
             "the workers to be up and the dispatcher to be kept out")

    def workers_up_app_missing():
        answer = _readyz(f)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["ready"] is False and body["public_app_connected"] is False, body
        return body if body["workers_accepting"] == 2 else None
    body = wait_for(workers_up_app_missing, 20, "both workers to accept calls")
    assert body["reasons"] == ["the public ARI app 'pub' is not registered on Asterisk yet "
                               "(dispatcher not connected)"]
    assert not f.pbx.model.app_active(APP)

    gate.let_in()

    def ready():
        answer = _readyz(f)
        if answer.status_code != 200:
            assert answer.status_code == 503, answer.text
            return None
        assert f.pbx.model.app_active(APP)      # a caller sent now finds the app
        return answer.json()
    body = wait_for(ready, 30, "/readyz to say ready")
    assert body["ready"] is True and body["public_app_connected"] is True, body
    assert body["workers_accepting"] >= 1 and body["reasons"] == []
    [call] = f.calls(talk_after(300))
    [result] = f.pbx.wait_calls([call], 40)
    assert completed(result), result

    # the public app's events socket drops (an Asterisk restart) and cannot come back yet
    gate.shut()
    not_ready = wait_for(lambda: (a := _readyz(f)).status_code == 503 and a.json(), 20,
                         "/readyz to say not ready")
    assert not_ready["public_app_connected"] is False, not_ready
    assert not_ready["reasons"][0] == ("the public ARI app 'pub' is not registered on Asterisk "
                                       "(the dispatcher's events connection dropped; it "
                                       "reconnects)"), not_ready
    wait_for(lambda: not f.pbx.model.app_active(APP), 10, "the PBX to drop the public app")
    gate.let_in()
    wait_for(lambda: _readyz(f).status_code == 200, 30, "/readyz to say ready again")
    assert f.pbx.model.app_active(APP)
    assert f.stop(signal.SIGTERM) == 0


def _links(f: FleetProcess) -> float:
    metrics = requests.get(f.dashboard() + "metrics", timeout=10).text
    [line] = [line for line in metrics.splitlines()
              if line.startswith("relay_fleet_links_connected ")]
    return float(line.split()[1])


def assert_no_link_reconnection(log: str, apps) -> None:
    """The master did not warn about, nor try to reopen, an event link to a worker it had told
    to stop; each such close was logged once at most."""
    assert "; reconnecting" not in log and "cannot open the event link" not in log, \
        [line for line in log.splitlines() if "event link" in line]
    closes = Counter(m.group(1) for m in EXPECTED_CLOSE.finditer(log))
    assert set(closes) <= set(apps) and all(n == 1 for n in closes.values()), closes


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_a_fleet_does_not_reconnect_its_event_links(fleet, how):
    f = fleet(2)
    f.wait_dispatching()
    wait_for(lambda: _links(f) == 2, 20, "the master's event links to both workers")
    f.send(how)
    assert f.process.wait(40) == 0
    log = f.log()
    assert_no_link_reconnection(log, f.started())
    assert "master: stopped" in log


def test_the_master_places_outbound_calls_through_a_worker_and_lists_every_dial(fleet):
    f = fleet(2)
    f.wait_dispatching()
    f.pbx.register_endpoint("bob", {"answer": "busy"})
    api = f.dashboard()
    placed = requests.post(api + "api/calls", json={"endpoint": "PJSIP/bob"}, timeout=10)
    assert placed.status_code == 201, placed.text
    channel = placed.json()["dial"]["channel_id"]

    def outcome() -> dict:
        dials = requests.get(api + "api/dials", timeout=10).json()
        return next((d for d in dials["recent"] if d["channel_id"] == channel), {})
    wait_for(lambda: outcome().get("outcome") == "busy", 20, "the busy outcome")
    assert outcome()["worker"] in f.started() and outcome()["cause"] == 17
    refused = requests.post(api + "api/calls", json={"endpoint": "bob"}, timeout=10)
    assert refused.status_code == 400 and "TECH/RESOURCE" in refused.json()["error"]
    assert f.stop(signal.SIGTERM) == 0
