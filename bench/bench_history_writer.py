"""The call history's writer under load: 1,000 calls ending within one second, written while
300 live calls are paced, and the pacer's lateness before and during the burst.

    python -m bench history-writer [--calls 300] [--burst 1000] [--rounds 3] [--batch 50]
                                   [--only sqlite|postgresql]

Owns one question of issue #14: is the database off the calls' path? In this process, as in a
worker: relay's Pacer ticks `--calls` CallMedia streams (each playing the model's audio, its
frames built into RTP and sent by relay's MediaSocket to a local sink, sendmmsg batches), and a
HistoryWriter (the worker's: bounded queue, batches written in gevent's thread pool) writes to a
real SQLite file and, when PostgreSQL's binaries are here, to a PostgreSQL server this benchmark
starts. Each round measures the pacer's lateness (now - deadline of every slot run) over a quiet
window, then over a window in which `--burst` records (a realistic call's: 30 transcript
entries, two tools, the figures; built before the window, as building one is the ending call's
own work, database or not) are submitted within one second; rounds alternate so that the
machine's noise falls on both. Printed: lateness p50/p99/max of each window kind, how long the
burst took to be stored, and the rows the store holds at the end (all of them, once).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import gevent

from relay.call_media import CallMedia
from relay.history.service import SWITCH_INTERVAL_S, open_upgraded
from relay.history.store import open_store
from relay.history.writer import HistoryWriter
from relay.media import MediaSocket, Pacer

FRAME = 160
PLAY_S = 600                          # each stream has this much of the model's audio queued
WINDOW_S = 4.0                        # one measuring window (the burst lasts 1 s of it)


class Lateness:
    """Stands in for the pacer's histogram: keeps every slot's lateness (seconds)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def observe(self, value: float) -> None:
        self.samples.append(value)


def quantiles_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p99": None, "max": None, "n": 0}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0
    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1] * 1000.0,
            "n": len(ordered)}


def call_record(n: int, now: float) -> dict:
    """A realistic record (docs/HISTORY.md): ~30 transcript entries, two tools, figures."""
    transcript = []
    for turn in range(14):
        transcript.append({"t": now + turn * 4, "kind": "caller",
                           "text": f"I would like to know where my order {n}-{turn} is, please",
                           "item_id": f"item_c{turn}"})
        transcript.append({"t": now + turn * 4 + 1, "kind": "assistant",
                           "text": "Let me check that for you. Your order ships tomorrow "
                                   "morning and should arrive within two days.",
                           "item_id": f"item_a{turn}"})
    tools = [{"t": now + 3, "name": "order_status", "arguments": {"order": f"A-{n}"},
              "status": "ok", "result": {"status": "shipped"}, "duration_ms": 12.5},
             {"t": now + 9, "name": "transfer", "arguments": {"to": "sales"},
              "status": "error", "error": {"code": "busy"}, "duration_ms": 3.1}]
    transcript += [{"t": t["t"], "kind": "tool", "text": t["name"], **{
        k: v for k, v in t.items() if k not in ("t", "name")}} for t in tools]
    latencies = [480.0 + (n * 7 + i * 13) % 90 for i in range(14)]
    return {
        "id": f"bench-{n:07d}", "worker": "w0", "host": "bench", "agent": "default",
        "direction": "inbound", "caller_number": f"+1555{n:07d}", "caller_name": "Bench",
        "started_at": now - 60, "answered_at": now - 59.9, "ended_at": now, "duration_s": 60.0,
        "end_reason": "caller hung up", "barge_ins": n % 3,
        "turn_latency_ms": {"count": 14, "p50": sorted(latencies)[7],
                            "p95": max(latencies), "max": max(latencies),
                            "values": latencies},
        "quality": {"rtp_in": 3000, "lost": 0, "late": 0, "jitter_ms": 0.4, "rtp_out": 2500},
        "model": {"name": "gpt-realtime", "errors": {}, "reconnects": 0, "sockets": 1,
                  "resumed": 0},
        "usage": {"input_text": 1200, "input_audio": 900, "input_cached_text": 800,
                  "input_cached_audio": 0, "output_text": 300, "output_audio": 1500,
                  "responses": 14},
        "cost_usd": 0.12, "recording_path": "", "transcript": transcript, "tools": tools,
        "outbound": None,
    }


class PacedCalls:
    """`count` streams playing through relay's Pacer and MediaSocket to a local sink."""

    def __init__(self, count: int) -> None:
        self.sink = MediaSocket("127.0.0.1", 0, 0)
        self.socket = MediaSocket("127.0.0.1", 0, 0)
        self.sink.start()          # reads (and drops) what the streams send
        self.socket.start()
        self.pacer = Pacer()
        self.lateness = Lateness()
        self.pacer.lateness = self.lateness      # every slot's lateness, not buckets
        remote = (self.sink.host, self.sink.port)
        send = self.socket.sendto
        self.streams = []
        for _ in range(count):
            media = CallMedia(model_format="audio/pcmu",
                              send_rtp=lambda packet, send=send: send(packet, remote),
                              send_to_model=lambda audio, stamp: None,
                              playout_max_s=PLAY_S + 10)
            media.start(time.monotonic())
            media.add_model_audio("item", bytes([0xFF]) * (FRAME * 50 * PLAY_S))
            self.streams.append(media)
            self.pacer.add(media)

    def start(self) -> None:
        self.pacer.start()

    def stop(self) -> None:
        self.pacer.stop()
        self.socket.close()
        self.sink.close()


def measure(target: str, calls: int, burst: int, rounds: int, batch_max: int) -> dict:
    sys.setswitchinterval(SWITCH_INTERVAL_S)         # as relay.history.service.History does
    writer = HistoryWriter(lambda: open_upgraded(target), Path(tempfile.mkdtemp()) / "spool",
                           queue_max=max(10_000, 2 * burst), batch_max=batch_max)
    writer.start()
    writer.submit(call_record(9_999_999, time.time()))           # opens and upgrades the store
    while writer.stats()["written"] < 1:
        gevent.sleep(0.05)
    paced = PacedCalls(calls)
    paced.start()
    gevent.sleep(1.0)                                            # the wheel settles
    quiet: list[float] = []
    busy: list[float] = []
    stored_in: list[float] = []
    n = 0
    for _ in range(rounds):
        paced.lateness.samples = []
        gevent.sleep(WINDOW_S)
        quiet.extend(paced.lateness.samples)

        # the records are built before the window: building one is the ending call's work on
        # the hub, with or without a database; what is measured is what the database adds
        records = [call_record(n + i, time.time()) for i in range(burst)]
        n += burst
        gevent.sleep(0.5)           # the slots the building delayed are run before the window
        paced.lateness.samples = []
        written = writer.stats()["written"]
        started = time.monotonic()
        for i, one in enumerate(records):        # `burst` calls end within one second
            writer.submit(one)
            if i % max(1, burst // 50) == 0:
                gevent.sleep(1.0 / 50)
        while writer.stats()["written"] < written + burst and \
                time.monotonic() - started < 60:
            gevent.sleep(0.01)
        stored_in.append(time.monotonic() - started)
        rest = WINDOW_S - (time.monotonic() - started)
        if rest > 0:
            gevent.sleep(rest)
        busy.extend(paced.lateness.samples)
    paced.stop()
    writer.stop(30)
    stats = writer.stats()
    store = open_store(target)
    try:
        held, after = 0, None
        while True:
            page = store.search(None, 200, after)
            held += len(page["calls"])
            after = page["next"]
            if after is None:
                break
    finally:
        store.close()
    return {"quiet": quantiles_ms(quiet), "burst": quantiles_ms(busy),
            "stored_in_s": stored_in, "written": stats["written"], "held": held,
            "expected": n + 1, "spooled": stats["spooled"]}


def _postgres(tmp: Path) -> tuple[Optional[Any], Optional[str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from pg_server import PgServer, find_bin_dir
    except ImportError:
        return None, None
    bin_dir, _ = find_bin_dir()
    if bin_dir is None:
        return None, None
    server = PgServer(bin_dir)
    server.start()
    return server, server.create_database()


def _line(name: str, result: dict) -> str:
    q, b = result["quiet"], result["burst"]

    def fmt(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.2f}"
    stored = ", ".join(f"{s:.2f}" for s in result["stored_in_s"])
    return (f"{name:11} pacer lateness quiet p50/p99/max {fmt(q['p50'])}/{fmt(q['p99'])}/"
            f"{fmt(q['max'])} ms ({q['n']} slots) | burst {fmt(b['p50'])}/{fmt(b['p99'])}/"
            f"{fmt(b['max'])} ms ({b['n']} slots) | each burst stored in {stored} s | "
            f"rows {result['held']} of {result['expected']}, spooled {result['spooled']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench history-writer")
    parser.add_argument("--calls", type=int, default=300, help="live calls paced meanwhile")
    parser.add_argument("--burst", type=int, default=1000,
                        help="calls ending within one second, each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50,
                        help="records per store write (history.batch_max)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-writer-"))
    server = None
    failed = False
    try:
        targets = []
        if args.only in (None, "sqlite"):
            targets.append(("SQLite", str(tmp / "relay.db")))
        if args.only in (None, "postgresql"):
            server, url = _postgres(tmp)
            if url:
                targets.append(("PostgreSQL", url))
            else:
                print("PostgreSQL: no server binaries here, skipped")
        print(f"history writer: {args.burst} calls ending within 1 s, while {args.calls} calls "
              f"are paced; {args.rounds} rounds of quiet/burst windows of {WINDOW_S:g} s; "
              f"batches of {args.batch}")
        for name, target in targets:
            result = measure(target, args.calls, args.burst, args.rounds, args.batch)
            print(_line(name, result))
            failed |= result["held"] != result["expected"]
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0
