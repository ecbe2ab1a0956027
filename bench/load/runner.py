"""One measured run of the load benchmark: N calls through relay, or through the floor.

Owns the run's timeline. Every part is its own process: the simulated PBX (`relay sim-pbx
--no-audio`), the simulated model (`relay sim-model`) and one relay worker (`relay serve`,
configured by environment only, its dashboard on a free 127.0.0.1 port for /metrics; started
through bench.load.relay_serve, which adds a record of garbage-collector pauses) — or, for
the floor, the simulated PBX and bench.load.floor. Then:

1. idle: relay's resident memory once it is ready, before any call;
2. ramp: N calls started by the PBX at `rate` per second, each running the scenario's caller
   script; wait until all N have their media up;
3. settle a few seconds, then the steady window (`window_s`, all N calls live): CPU time of
   every process and of the machine, RTP counts at the PBX, relay's metrics before and after,
   relay's memory each second;
4. the callers hang up (twice as fast as they called), relay cleans up; then the checks: what
   is left on the PBX, loss both ways over the whole run, and the window's pacing, sequence gaps
   and turn latency as the PBX saw them (GET /sim/stats, asked once the calls are over).
Every process is stopped on every path. With two CPUs or more, relay (or the floor) runs alone
on one and the simulators on the others (sched_setaffinity), so the load generators do not take
the CPU from the process measured; the machine's other users still may (`runqueue_wait_share`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.load import prom, scenario
from bench.load.procs import (
    Proc,
    cpu_split,
    free_port,
    get_json,
    http,
    machine_cpu,
    post_json,
)

PBX_AUTH = ("bench", "bench-load-pw")
API_KEY = "sk-bench-load"
RELAY_APP, FLOOR_APP = "bench", "floor"
POLL_S = 0.5
LIVE_STATES = ("scheduled", "ringing", "answering", "active")
GC_LINE = "bench-gc "
HANGUP_RATE_FACTOR = 2        # callers hang up twice as fast as they called
END_WAIT_S = 90.0             # for every call to end after the hangups
CLEANUP_WAIT_S = 20.0         # then for relay to delete its channels and bridges


@dataclass
class Options:
    rate: float = 25.0           # calls started per second
    window_s: float = 25.0       # the steady measurement window
    settle_s: float = 3.0        # after the last call is up, before the window
    idle_s: float = 1.0          # relay ready -> its idle memory is read
    slack_s: float = 20.0        # calls last this much longer than the ramp, settle and window
    out_dir: Path = Path("bench/out/load")
    python: str = sys.executable
    pin: bool = True             # relay (or the floor) on a CPU of its own, the simulators on
                                 # the others (procs.cpu_split)

    def duration_s(self, calls: int) -> float:
        """How long each call lasts: the ramp (twice: set-up may lag behind the rate), settle,
        window and some slack."""
        return 2 * calls / self.rate + self.settle_s + self.window_s + self.slack_s


class Run:
    """The processes of one run, stopped together."""

    def __init__(self, opts: Options, label: str) -> None:
        self.opts = opts
        self.label = label
        self.logs = opts.out_dir / "logs"
        self.procs: dict[str, Proc] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-load-{label}-"))
        self.load_before = os.getloadavg()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> dict[str, Optional[int]]:
        codes = {}
        for name in ("relay", "floor", "sim_model", "sim_pbx"):     # clients first
            proc = self.procs.pop(name, None)
            if proc is not None:
                codes[name] = proc.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return codes

    def _proc(self, name: str, argv: list[str], env: Optional[dict] = None) -> Proc:
        tested, generators = cpu_split() if self.opts.pin else (None, None)
        cpus = tested if name in ("relay", "floor") else generators
        proc = Proc(name, argv, self.logs / f"{self.label}-{name}.log", env, cpus)
        self.procs[name] = proc
        return proc

    def start_pbx(self) -> str:
        proc = self._proc("sim_pbx", [
            self.opts.python, "-m", "relay", "sim-pbx", "--port", "0", "--user", PBX_AUTH[0],
            "--password", PBX_AUTH[1], "--no-audio", "--seed", "1",
            "--recordings-dir", str(self.tmp / "pbx")])
        match = proc.wait_for_line(r"sim-pbx: ARI at (http://[\d.]+:\d+)/ari")
        return match.group(1)

    def start_model(self) -> str:
        script = self.tmp / "model-script.json"
        script.write_text(json.dumps(scenario.MODEL_SCRIPT))
        proc = self._proc("sim_model", [
            self.opts.python, "-m", "relay", "sim-model", "--port", "0", "--api-key", API_KEY,
            "--script", str(script)])
        return proc.wait_for_line(r"sim-model listening on (ws://\S+)").group(1)

    def agent_file(self) -> Path:
        """The benchmark's agent config, as relay (and the floor's model leg) read it."""
        agents = self.tmp / "agents"
        path = agents / f"{scenario.AGENT_KEY}.json"
        if not path.exists():
            agents.mkdir(exist_ok=True)
            path.write_text(json.dumps(scenario.AGENT))
        return path

    def start_relay(self, pbx_url: str, model_url: str) -> str:
        agents = self.agent_file().parent
        web_port = free_port()
        # Only the settings below: none of this shell's relay settings (RECORD_CALLS,
        # RELAY_WORKERS, ...) may change what is measured.
        from relay.config import ENV_VARS

        env = {k: v for k, v in os.environ.items()
               if k not in ENV_VARS and not k.startswith(("RELAY_", "OPENAI_"))}
        env.update(
            ARI_URL=pbx_url, ARI_USERNAME=PBX_AUTH[0], ARI_PASSWORD=PBX_AUTH[1],
            ARI_APP_NAME=RELAY_APP, OPENAI_API_KEY=API_KEY, OPENAI_REALTIME_URL=model_url,
            REALTIME_MODEL="gpt-realtime", AGENT_CONFIGS_DIR=str(agents),
            ACTIVE_AGENT_CONFIG_KEY=scenario.AGENT_KEY, RTP_PORT_MIN="0", RTP_PORT_MAX="0",
            TRANSCRIPTS_DIR=str(self.tmp / "transcripts"), WEB_HOST="127.0.0.1",
            # each call's record is written, as in production, to a throw-away history
            HISTORY_SQLITE_PATH=str(self.tmp / "relay.db"),
            HISTORY_SPOOL_PATH=str(self.tmp / "history-spool.jsonl"),
            WEB_PORT=str(web_port), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
        proc = self._proc("relay", [self.opts.python, "-m", "bench.load.relay_serve",
                                    "--stop-timeout", "10"], env)
        web = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", web + "/readyz", timeout=2)[0] == 200:
                    return web
            except OSError:
                pass
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"relay did not get ready: {proc.tail()}")
            time.sleep(0.1)

    def start_floor(self, pbx_url: str, reply_ms: int, model_url: Optional[str] = None) -> None:
        """The floor; with model_url, each call's model leg too (relay's URL, key and agent)."""
        model = [] if model_url is None else [
            "--model-url", model_url, "--model", "gpt-realtime", "--api-key", API_KEY,
            "--agent", str(self.agent_file())]
        proc = self._proc("floor", [
            self.opts.python, "-m", "bench.load.floor", "--ari-url", pbx_url,
            "--user", PBX_AUTH[0], "--password", PBX_AUTH[1], "--app", FLOOR_APP,
            "--reply-ms", str(reply_ms), "--silence-ms", str(scenario.VAD_SILENCE_MS), *model])
        proc.wait_for_line(r"floor: ready")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if not proc.alive():
                raise RuntimeError(f"{name} exited: {proc.tail()}")

    def gc_pauses(self) -> Optional[dict]:
        """relay's garbage-collector totals so far (bench.load.relay_serve prints them on
        SIGUSR1); None when relay is not running or does not answer within 2 s."""
        proc = self.procs.get("relay")
        if proc is None or not proc.alive():
            return None
        before = proc.log.read_text(errors="replace").count(GC_LINE)
        proc.popen.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            text = proc.log.read_text(errors="replace")
            if text.count(GC_LINE) > before:
                line = text[text.rindex(GC_LINE):].split("\n", 1)[0]
                return json.loads(line[len(GC_LINE):])
            time.sleep(0.01)
        return None

    def cpu(self) -> dict[str, float]:
        """CPU seconds of each process and of the machine, and each process's wait for a CPU
        (`NAME_wait`), and the kernel's part of each process's CPU time (`NAME_sys`)."""
        out = {}
        for name, proc in self.procs.items():
            user, system = proc.cpu_times()
            out[name], out[f"{name}_sys"] = user + system, system
        out.update({f"{name}_wait": proc.runqueue_wait_seconds()
                    for name, proc in self.procs.items()})
        out["machine"] = machine_cpu()[0]
        return out


def _pbx_stats(pbx_url: str, **window: float) -> dict:
    return get_json(pbx_url + "/sim/stats", auth=PBX_AUTH, timeout=120, **window)


def _scrape(web: Optional[str]) -> Optional[prom.Scrape]:
    if web is None:
        return None
    status, body = http("GET", web + "/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"relay /metrics: {status}")
    return prom.Scrape.parse(body.decode())


def _live_calls(stats: dict) -> int:
    return sum(n for state, n in stats["calls"].items() if state in LIVE_STATES)


def measure(run: Run, calls: int, pbx_url: str, app: str, main: str,
            web: Optional[str] = None) -> dict[str, Any]:
    """Drive one run (the processes are up) and return its figures."""
    opts = run.opts
    main_proc = run.procs[main]
    time.sleep(opts.idle_s)
    idle_rss = main_proc.rss_kb()
    m_idle = _scrape(web)
    duration = opts.duration_s(calls)
    started = time.monotonic()
    scripts = scenario.caller_scripts(duration)
    ids: list[str] = []
    for k, script in enumerate(scripts):      # interleaved: call i runs script i % len
        count = len(range(k, calls, len(scripts)))
        if count:
            ids += post_json(pbx_url + "/sim/calls", {
                "script": script, "count": count, "rate": opts.rate / len(scripts),
                "delay_s": k / opts.rate, "app": app}, auth=PBX_AUTH)["call_ids"]
    deadline = started + 2 * calls / opts.rate + 30
    while True:                                  # the ramp: until every call has its media
        stats = _pbx_stats(pbx_url)
        up = min(stats["live"]["endpoints"], stats["calls"].get("active", 0))
        if up >= calls:
            break
        run.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {up} of {calls} calls up after "
                               f"{time.monotonic() - started:.0f} s: {stats['calls']}")
        time.sleep(POLL_S)
    ramp_s = time.monotonic() - started
    time.sleep(opts.settle_s)

    m0 = _scrape(web)                            # the window: nothing else asked of relay
    p0 = _pbx_stats(pbx_url)
    g0 = run.gc_pauses()
    c0, t0 = run.cpu(), time.monotonic()
    rss = []
    while time.monotonic() < t0 + opts.window_s:
        time.sleep(min(1.0, max(0.0, t0 + opts.window_s - time.monotonic())))
        rss.append(main_proc.rss_kb())
    c1, t1 = run.cpu(), time.monotonic()
    g1 = run.gc_pauses()
    p1 = _pbx_stats(pbx_url)
    m1 = _scrape(web)
    window_s = t1 - t0
    complete = p1["calls"].get("active", 0) >= calls and p1["live"]["endpoints"] >= calls

    _hang_up(pbx_url, ids, HANGUP_RATE_FACTOR * opts.rate)
    end_deadline = time.monotonic() + END_WAIT_S
    cleanup_deadline = None
    while True:                                  # relay cleans up after its calls
        end = _pbx_stats(pbx_url)
        now = time.monotonic()
        if _live_calls(end) == 0:
            if end["live"]["channels"] == 0 and end["live"]["bridges"] == 0:
                break
            cleanup_deadline = cleanup_deadline or now + CLEANUP_WAIT_S
            if now > cleanup_deadline:
                break                            # leftovers: reported, and a failure
        elif now > end_deadline:
            break
        time.sleep(POLL_S)
    ended_rss = main_proc.rss_kb()
    calls_left = _live_calls(end)
    analysed = _pbx_stats(pbx_url, since=t0, until=t1)
    m_end = _scrape(web)

    shares = {name: (c1[name] - c0[name]) / window_s for name in c0}
    cpu = {k: v for k, v in shares.items() if not k.endswith(("_wait", "_sys"))}
    waits = {k[:-5]: v for k, v in shares.items() if k.endswith("_wait")}
    kernel = {name: shares[f"{name}_sys"] / share if share else 0.0
              for name, share in cpu.items() if f"{name}_sys" in shares}
    packets_in = p1["rtp"]["tx_packets"] - p0["rtp"]["tx_packets"]
    packets_out = p1["rtp"]["rx_datagrams"] - p0["rtp"]["rx_datagrams"]
    main_cpu_s = c1[main] - c0[main]
    totals = analysed["rtp"]
    window = analysed["window"]
    result: dict[str, Any] = {
        "target": main, "calls": calls, "rate": opts.rate, "ramp_s": round(ramp_s, 1),
        "window_s": round(window_s, 2), "window_complete": complete,
        "cores": os.cpu_count(), "load_average_before": run.load_before,
        "cpus": {name: sorted(proc.cpus) if proc.cpus else None
                 for name, proc in run.procs.items()},
        "cpu_share": {k: round(v, 4) for k, v in cpu.items()},
        # the share of the window each process's hub thread was runnable but not running
        "runqueue_wait_share": {k: round(v, 4) for k, v in waits.items()},
        # the part of each process's CPU time spent in the kernel on its behalf
        "kernel_share_of_cpu": {k: round(v, 3) for k, v in kernel.items()},
        "cpu_per_call_pct": 100.0 * cpu[main] / calls,
        "packets": {"in": packets_in, "out": packets_out,
                    "in_per_call_s": packets_in / window_s / calls,
                    "out_per_call_s": packets_out / window_s / calls},
        "cpu_per_packet_us": main_cpu_s * 1e6 / max(1, packets_in + packets_out),
        "rss_kb": {"idle": idle_rss, "steady": max(rss) if rss else 0, "after": ended_rss,
                   "per_call": (max(rss) - idle_rss) / calls if rss else None},
        "pacing_at_pbx_ms": {"interarrival_deviation": window["interarrival_deviation_ms"],
                             "lateness": window["lateness_ms"]},
        "turn_latency_at_pbx_ms": window["turn_latency_ms"],
        "barge_in_heard_at_pbx_ms": window["barge_in_heard_ms"],
        "window_at_pbx": {k: window[k] for k in ("packets", "streams", "talkspurts",
                                                 "seq_gaps", "duplicates", "reordered")},
        "pbx": {"totals": totals, "calls": analysed["calls"], "calls_left": calls_left,
                "pacer": analysed["pacer"]},
        "leftovers": {"channels": end["live"]["channels"], "bridges": end["live"]["bridges"]},
    }
    if web is not None:
        result["relay"] = _relay_figures(web, m_idle, m0, m1, m_end, totals, window)
        result["relay"]["gc_in_window"] = _gc_delta(g0, g1)
    return result


def _gc_delta(g0: Optional[dict], g1: Optional[dict]) -> Optional[dict]:
    """relay's collections in the window: count and seconds per generation, the pauses over
    each length (ms), and the longest pause so far (the longest of the run, not only of the
    window)."""
    if g0 is None or g1 is None:
        return None
    return {"count": [b - a for a, b in zip(g0["count"], g1["count"])],
            "seconds": [b - a for a, b in zip(g0["seconds"], g1["seconds"])],
            "over_ms": {k: g1["over_ms"][k] - g0["over_ms"].get(k, 0) for k in g1["over_ms"]},
            "longest_ms_so_far": g1["longest_ms"]}


def _hang_up(pbx_url: str, ids: list[str], rate: float) -> None:
    """The callers hang up, `rate` per second (a caller already gone is no error); their
    scripts would end the calls anyway, later (Options.duration_s), should this fail."""
    start = time.monotonic()
    for i, call_id in enumerate(ids):
        http("DELETE", f"{pbx_url}/sim/calls/{call_id}", auth=PBX_AUTH)
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))


def _relay_figures(web: str, m_idle: prom.Scrape, m0: prom.Scrape, m1: prom.Scrape,
                   m_end: prom.Scrape, totals: dict, window: dict) -> dict:
    def value(name: str) -> Optional[float]:
        return m_end.value(name)

    received = value("relay_rtp_datagrams_total")
    sent = value("relay_rtp_sent_packets_total")
    windowed = {}
    for key, name in (("caller_audio_latency_ms", "relay_caller_audio_latency_seconds"),
                      ("model_audio_latency_ms", "relay_model_audio_latency_seconds"),
                      ("pacer_lateness_ms", "relay_pacer_lateness_seconds"),
                      ("barge_in_reaction_ms", "relay_barge_in_reaction_seconds"),
                      ("turn_latency_ms", "relay_turn_latency_seconds")):
        windowed[key] = prom.quantiles_ms(prom.histogram_delta(m1, m0, name))
    whole_run = prom.quantiles_ms(prom.histogram_delta(m_end, m_idle,
                                                       "relay_barge_in_reaction_seconds"))
    # from the window's end to the last call cleaned up: the callers hang up, 2x the ramp's rate
    hangups = prom.histogram_delta(m_end, m1, "relay_pacer_lateness_seconds")
    api = get_json(web + "/api/calls", timeout=30)
    return {
        "loss": {
            "caller_to_relay": None if received is None
            else totals["tx_packets"] - int(received),
            "relay_to_caller": None if sent is None else int(sent) - totals["rx_datagrams"],
            "relay_seq_gaps": value("relay_rtp_lost_packets_total"),
            "relay_late": value("relay_rtp_late_packets_total"),
            "pbx_seq_gaps_in_window": window["seq_gaps"],
            "send_errors": value("relay_rtp_send_errors_total"),
            "stranger_datagrams": value("relay_rtp_stranger_datagrams_total"),
            "relay_socket_overflows": value("relay_rtp_socket_overflows_total"),
        },
        "window": windowed,
        "barge_in_reaction_ms_whole_run": whole_run,
        "hangups": {
            "pacer_lateness_ms": prom.quantiles_ms(hangups),
            "pacer_late_over_5ms": None if hangups is None else hangups.share_over(0.005),
        },
        "calls_total": value("relay_calls_total"),
        "calls_failed": value("relay_calls_failed_total"),
        "model_errors": value("relay_model_errors_total"),
        "tool_calls": value("relay_tool_calls_total"),
        "pacer_late_ticks_in_window": prom.delta(m1, m0, "relay_pacer_late_ticks_total"),
        "worker": api.get("worker"),
    }


def udp_receive_buffer_errors() -> Optional[int]:
    """The kernel's count of UDP datagrams dropped for a full receive buffer, every socket of
    this network namespace together (/proc/net/snmp): where a lost packet went when neither side
    saw it."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                 if line.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def _kernel_drops(before: Optional[int]) -> Optional[int]:
    after = udp_receive_buffer_errors()
    return None if before is None or after is None else after - before


def run_relay(calls: int, opts: Options) -> dict[str, Any]:
    """N calls through one relay worker; the PBX and the model in their own processes."""
    drops_before = udp_receive_buffer_errors()
    with Run(opts, f"relay-{calls}") as run:
        pbx_url = run.start_pbx()
        model_url = run.start_model()
        web = run.start_relay(pbx_url, model_url)
        result = measure(run, calls, pbx_url, RELAY_APP, "relay", web)
        codes = run.stop()
    result["exit_codes"] = codes
    loss = result.get("relay", {}).get("loss")
    if loss is not None:
        loss["udp_receive_buffer_errors"] = _kernel_drops(drops_before)
    return result


_FLOOR_COUNTS = re.compile(r"floor: stopped \(received (\d+), sent (\d+), strangers (\d+), "
                           r"send errors (\d+)\)")
_FLOOR_LEGS = re.compile(r"floor: model legs (\d+) \(failed (\d+)\), appends (\d+), write "
                         r"errors (\d+), audio deltas (\d+)")


def run_floor(calls: int, opts: Options, model_leg: bool = True) -> dict[str, Any]:
    """The same callers and PBX, the floor process in relay's place; with model_leg (the
    benchmark's "floor"), the simulated model too, each call's audio appended to it."""
    drops_before = udp_receive_buffer_errors()
    with Run(opts, f"{'floor' if model_leg else 'udp-floor'}-{calls}") as run:
        pbx_url = run.start_pbx()
        model_url = run.start_model() if model_leg else None
        run.start_floor(pbx_url, scenario.mean_reply_ms(), model_url)
        result = measure(run, calls, pbx_url, FLOOR_APP, "floor")
        floor_log = run.procs["floor"].log
        codes = run.stop()
    result["exit_codes"] = codes
    result["model_leg"] = model_leg
    text = floor_log.read_text(errors="replace")
    legs = _FLOOR_LEGS.search(text)
    if legs:
        result["model_legs"] = dict(zip(("calls", "failed", "appends", "write_errors",
                                         "audio_deltas"), map(int, legs.groups())))
    match = _FLOOR_COUNTS.search(text)
    totals = result["pbx"]["totals"]
    if match:
        received, sent = int(match.group(1)), int(match.group(2))
        result["floor"] = {"loss": {"caller_to_floor": totals["tx_packets"] - received,
                                    "floor_to_caller": sent - totals["rx_datagrams"],
                                    "pbx_seq_gaps_in_window":
                                        result["window_at_pbx"]["seq_gaps"],
                                    "udp_receive_buffer_errors": _kernel_drops(drops_before)},
                           "strangers": int(match.group(3)),
                           "send_errors": int(match.group(4))}
    return result
