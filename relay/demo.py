"""`relay demo` (make demo): relay between the simulated PBX and the simulated model.

Owns: the demo scenario. It starts the simulated Asterisk, the simulated Realtime model and one
relay worker in this process, configured exactly as for real services (only the addresses
differ), places a handful of calls with scripted callers and one outbound call (relay.outbound:
the `reminder` agent dials a simulated callee, answering-machine detection says HUMAN, the
conversation runs), then prints per call what was said by whom, the turn latencies and the
audio quality, and stops everything cleanly.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from relay.config import PACKAGE_ROOT, load_settings
from relay.redact import install_log_redaction
from relay.worker import Worker

API_KEY = "sk-demo-key"
APP = "relay-demo"

ORDER = "Hi, I would like to know where my order is."
NUMBER = "The order number is four two seven."
THANKS = "Great, thank you very much. Goodbye."
HOURS = "What are your opening hours?"
STOP = "Okay, okay, thanks, that is enough."
SALES = "I would like to buy a new phone."

MODEL_SCRIPT: dict[str, Any] = {
    "phrasebook": [ORDER, NUMBER, THANKS, HOURS, STOP, SALES],
    "greeting": "Hello, thank you for calling Acme. How can I help you today?",
    "rules": [
        {"keywords": ["order is"], "say": "Of course. What is your order number?"},
        {"keywords": ["number"], "say": "Thank you. Order four two seven left our warehouse "
                                        "yesterday and arrives tomorrow."},
        {"keywords": ["goodbye"], "say": "You are welcome. Have a nice day, goodbye!"},
        {"keywords": ["opening hours"],
         "say": "We are open from eight in the morning to six in the evening on weekdays, from "
                "nine to one on Saturdays, and we are closed on Sundays and public holidays, "
                "except in December when we also open on Sunday afternoons."},
        {"keywords": ["enough"], "say": "Sure. Anything else?"},
        {"match": "pressed the keys: 1", "say": "You chose sales. What would you like to buy?"},
        {"keywords": ["phone"], "say": "Our sales team will call you back today."},
    ],
    "default": "I see. Could you tell me more?",
}

CALLS: list[tuple[str, dict]] = [
    ("order status", {"caller": {"name": "Alice", "number": "+15550101"}, "steps": [
        {"after_agent": ORDER, "silence_ms": 500},
        {"after_agent": NUMBER, "silence_ms": 500},
        {"after_agent": THANKS, "silence_ms": 500},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 20000}}]}),
    ("interrupts the agent", {"caller": {"name": "Bob", "number": "+15550102"}, "steps": [
        {"after_agent": HOURS, "silence_ms": 500},
        {"barge_in": STOP, "after_ms": 2500},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 20000}}]}),
    ("presses a key", {"caller": {"name": "Carol", "number": "+15550103"}, "steps": [
        {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 20000}},
        {"dtmf": "1#"},
        {"after_agent": SALES, "silence_ms": 500},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 20000}}]}),
    ("says nothing", {"caller": {"name": "Dave", "number": "+15550104"}, "steps": [
        {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 20000}},
        {"pause_ms": 3000}, {"hangup": True}]}),
]

OUTBOUND_ENDPOINT = "PJSIP/+15550199"
OUTBOUND_VARIABLES = {"customer_name": "Erin", "appointment_time": "tomorrow at ten"}
OUTBOUND_CALLEE = {"answer": "answer", "ring_ms": [800, 1500], "script": {
    "caller": {"name": "Erin", "number": "+15550199"}, "steps": [
        {"pause_ms": 300}, {"say": "Hello?"},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 20000}},
        {"after_agent": THANKS, "silence_ms": 500},
        {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 20000}}]}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(PACKAGE_ROOT / "var" / "demo"),
                        help="where recordings and transcripts go (default var/demo)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--web-port", type=int, default=8080,
                        help="the dashboard's port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--linger", type=float, default=0.0,
                        help="seconds to keep everything running after the calls, to look at "
                             "the dashboard")


def run(args: argparse.Namespace) -> int:
    from relay.sim.model import SimModel
    from relay.sim.pbx.server import SimPbx

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()     # the worker registers its secrets when it is made
    out = Path(args.out)
    print("relay demo: starting the simulated PBX, the simulated model and a relay worker")
    _prepare_speech()
    pbx = SimPbx(recordings_dir=out / "recordings").start()
    model = SimModel(api_key=API_KEY, script=MODEL_SCRIPT).start()
    settings = load_settings(env={}, overrides={
        "ari.url": f"http://127.0.0.1:{pbx.port}", "ari.username": pbx.user,
        "ari.password": pbx.password, "ari.app": APP,
        "openai.realtime_url": model.url, "openai.api_key": API_KEY,
        "rtp.port_min": 0, "rtp.port_max": 0,
        "call.transcripts_dir": str(out / "transcripts"),
        # relay's own recording of each call (both voices), played by the History tab
        "call.record": True, "call.recordings_dir": str(out / "calls"),
    })
    worker = Worker(settings)
    worker.start()
    web = _start_dashboard(worker, args.web_port)
    try:
        _wait(lambda: worker.ready, 10)
        print(f"  PBX  {pbx.base_url}\n  model {model.url}\n  relay RTP on "
              f"{worker.media.host}:{worker.media.port}, agent {settings.get('agent.active')!r}")
        print(f"  dashboard {web.url if web else '(port busy: not started)'}\n")
        ids = []
        for label, script in CALLS:
            ids.append((label, pbx.start_call(script, app=APP)))
            time.sleep(0.3)
        dialled = _dial_out(worker, pbx)
        print(f"placed {len(ids)} calls and dialled {OUTBOUND_ENDPOINT}; they last about 20 "
              "seconds...\n")
        results = {r["id"]: r for r in pbx.wait_calls([i for _, i in ids], 90)}
        _wait(lambda: dialled, 60)
        _wait(lambda: not worker.calls, 15)
        for label, call_id in ids:
            _print_call(label, results[call_id], worker, pbx, call_id)
        _print_dial(dialled[0], worker)
        live = pbx.inspect()
        print(f"left in the PBX after the calls: {len(live['channels'])} channels, "
              f"{len(live['bridges'])} bridges")
        print(f"recordings (what each caller heard): {out / 'recordings'}")
        print(f"transcripts: {out / 'transcripts'}")
        if args.linger > 0 and web is not None:
            print(f"the dashboard stays up for {args.linger:g} s: {web.url}")
            time.sleep(args.linger)
    finally:
        if web is not None:
            web.stop()
        worker.stop(5)
        model.stop()
        pbx.stop()
    _print_history(settings)
    print("stopped cleanly")
    return 0


def _print_history(settings: Any) -> None:
    """Where the demo's calls are kept (relay.history): the same database `relay serve`'s
    dashboard reads, in its History tab."""
    if not settings.get("history.enabled"):
        return
    from relay.history.query import HistoryQuery
    from relay.history.service import database_target, open_upgraded

    target = database_target(settings.tree)
    store = open_upgraded(target)
    try:
        page = store.search(HistoryQuery(since=time.time() - 600), 200, None)
    finally:
        store.close()
    total = len(page["calls"])
    print(f"call history: {total} call(s) of the last 10 minutes in {target}; the dashboard's "
          "History tab lists them (here with --linger, or under `relay serve`)")


def _dial_out(worker: Worker, pbx: Any) -> list:
    """One outbound call (relay.outbound) to a simulated callee who answers; the list gets
    its final outcome."""
    from relay.outbound import DialRequest

    pbx.register_endpoint(OUTBOUND_ENDPOINT.split("/", 1)[1], OUTBOUND_CALLEE)
    dialled: list = []
    worker.dialer.dial(DialRequest(endpoint=OUTBOUND_ENDPOINT, agent="reminder",
                                   caller_id='"Acme Clinic" <+15550100>',
                                   variables=OUTBOUND_VARIABLES), on_outcome=dialled.append)
    return dialled


def _print_dial(outcome: Any, worker: Worker) -> None:
    amd = outcome.amd or {}
    print(f"== outbound call to {outcome.endpoint} (agent {outcome.agent}, variables "
          f"{outcome.variables})")
    print(f"   outcome {outcome.outcome}, answering-machine detection: "
          f"{amd.get('status', 'off')} {amd.get('cause', '')}".rstrip())
    summary = next((s for s in worker.finished if s["id"] == outcome.channel_id), None)
    for speaker, text in (summary or {}).get("transcript", []):
        print(f"   {speaker:>9}: {text}")
    print(f"   ended: {outcome.reason}\n")


def _start_dashboard(worker: Worker, port: int):
    """The dashboard on 127.0.0.1, to watch the calls live; None when the port is taken."""
    from relay.web import WebServer

    try:
        return WebServer(worker, host="127.0.0.1", port=port).start()
    except OSError:
        return None


def _prepare_speech() -> None:
    """Synthesise every scripted sentence once, before the calls: all three parts share this
    process here, and the simulators' pure-Python synthesis would otherwise stall the relay's
    pacer while it runs (against real services it runs elsewhere)."""
    from relay.sim.speech import utterance_pcm, utterance_ulaw

    for text in MODEL_SCRIPT["phrasebook"] + ["Hello?"]:
        utterance_ulaw(text)
    replies = [MODEL_SCRIPT["greeting"], MODEL_SCRIPT["default"]]
    replies += [rule["say"] for rule in MODEL_SCRIPT["rules"]]
    for text in replies:
        utterance_pcm(text, voice="assistant")


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo did not get there in time")
        time.sleep(0.02)


def _print_call(label: str, result: dict, worker: Worker, pbx: Any, call_id: str) -> None:
    summary = next((s for s in worker.finished if s["id"] == result["channel_id"]), None)
    print(f"== call {call_id} ({label}), caller {result['channel_name']}")
    if summary is None:
        print("   relay never saw this call\n")
        return
    for speaker, text in summary["transcript"]:
        print(f"   {speaker:>9}: {text}")
    latencies = summary["turn_latency_ms"]
    if latencies:
        print("   turn latency (end of turn detected -> agent audio out): "
              + ", ".join(f"{x:.0f} ms" for x in latencies))
    audio = summary["audio"]
    print(f"   caller->model: {audio['rtp_in']} RTP packets, lost {audio['lost']}, "
          f"late {audio['late']}, silence filled {audio['silence_filled_ms']} ms")
    try:
        capture = pbx.capture(call_id)
        gaps = _paced_gaps(capture.times)
    except KeyError:
        gaps = []
    if gaps:
        errors = sorted(abs(g - 20.0) for g in gaps)
        p50, p99 = errors[len(errors) // 2], errors[min(len(errors) - 1, int(len(errors) * .99))]
        print(f"   model->caller: {audio['rtp_out']} RTP packets in {audio['talkspurts']} "
              f"talkspurts, pacing error p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
              f"max {errors[-1]:.2f} ms (measured at the PBX)")
    if summary["barge_ins"]:
        print(f"   barge-ins: {summary['barge_ins']}")
    print(f"   setup {summary['setup_ms']} ms, ended: {summary['end_reason']}\n")


def _paced_gaps(times) -> list[float]:
    """Inter-arrival gaps in ms within talkspurts (gaps over 200 ms are pauses)."""
    gaps = [(b - a) * 1000.0 for a, b in zip(times, times[1:])]
    return [g for g in gaps if g <= 200.0]
