"""Metrics micro-benchmarks: the cost of one observation into the pacer's lateness histogram
(relay.metrics.Histogram, observed about a thousand times a second per worker) against
prometheus_client's own `Histogram.observe` with the same buckets, in its ordinary
(in-process) mode and in its multiprocess mode (mmap files, the mode a fleet could have used
instead of the master's merge), measured in the same run; one scrape of a worker (its
collector's families through prometheus_client's `generate_latest`) and the master's merge of
four such scrapes, reported only.

"frame" here is one observation (or one scrape); bytes are 0 (one scrape: its text's size).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from itertools import cycle
from types import SimpleNamespace

import prometheus_client
from prometheus_client import values as prometheus_values

from bench.harness import Row, time_per_call_ns
from relay.metrics import (
    AUDIO_LATENCY_BUCKETS_S,
    BARGE_IN_BUCKETS_S,
    PACER_LATENESS_BUCKETS_S,
    TURN_LATENCY_BUCKETS_S,
    Histogram,
    exposition,
    registry_for,
)
from relay.web.fleet_metrics import merge

CALLS = 200_000
SCRAPES = 200

# pacer lateness as a loaded worker sees it: mostly tens of µs, a few ms now and then
_random = random.Random(13)
LATENESS = [_random.choice((0.00003, 0.00008, 0.0002, 0.0004, 0.0009, 0.0015, 0.004))
            for _ in range(4096)]


def _observer(observe):
    values = cycle(LATENESS)
    return lambda: observe(next(values))


def _prometheus_histogram(value_class=None):
    """A prometheus_client Histogram with the pacer's buckets, in no registry; value_class:
    prometheus_client's multiprocess values instead of its in-process ones."""
    saved = prometheus_values.ValueClass
    if value_class is not None:
        prometheus_values.ValueClass = value_class
    try:
        return prometheus_client.Histogram("bench_pacer_lateness_seconds", "Pacer lateness.",
                                           buckets=PACER_LATENESS_BUCKETS_S, registry=None)
    finally:
        prometheus_values.ValueClass = saved


class _Pacer(list):
    late_ticks = tick_errors = skipped_slots = 0

    def __init__(self) -> None:
        super().__init__()
        self.lateness = Histogram(PACER_LATENESS_BUCKETS_S)
        for value in LATENESS:
            self.lateness.observe(value)


def _worker() -> SimpleNamespace:
    """What a worker's collector reads, with every family present."""
    counters = {"calls_total": 100, "calls_ended": 99, "calls_failed": 1, "ari_events": 5000,
                "ari_reconnects": 0, "model_errors": {"rate_limit_exceeded": 2},
                "tool_calls": {"ok": 40}, "fallback_transcriptions": {"openai": {"ok": 3}},
                "setup_failures": {}, "leftovers_removed": {"bridge": 0, "channel": 0},
                "waiting_callers": {"taken_over": 0, "hung_up": 0}, "watchdog": {},
                "model_bad_events": 0}
    bounds = {"turn_latency_seconds": TURN_LATENCY_BUCKETS_S,
              "barge_in_reaction_seconds": BARGE_IN_BUCKETS_S,
              "caller_audio_latency_seconds": AUDIO_LATENCY_BUCKETS_S,
              "model_audio_latency_seconds": AUDIO_LATENCY_BUCKETS_S}
    histograms = {name: Histogram(b) for name, b in bounds.items()}
    for histogram in histograms.values():
        for value in LATENESS[:500]:
            histogram.observe(value * 100)
    return SimpleNamespace(
        counters=counters, calls={}, events=SimpleNamespace(connected=True), accepting=True,
        histograms=histograms, audio_totals={"rtp_in": 10**6, "rtp_out": 10**6},
        media=SimpleNamespace(received=10**6, from_strangers=0, send_errors=0),
        pacer=_Pacer(), janitor=None,
        model_breaker=SimpleNamespace(state="closed", opened_total=0, failures_total=0))


def run() -> list[Row]:
    relay_ns = time_per_call_ns(_observer(Histogram(PACER_LATENESS_BUCKETS_S).observe), CALLS)
    plain = _prometheus_histogram()
    plain_ns = time_per_call_ns(_observer(plain.observe), CALLS)
    folder = tempfile.mkdtemp(prefix="relay-bench-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        shared = _prometheus_histogram(prometheus_values.MultiProcessValue())
        shared_ns = time_per_call_ns(_observer(shared.observe), CALLS // 4)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)

    registry = registry_for(_worker(), lambda: {"clients": 1, "dropped": 0, "messages": 10})
    size = len(exposition(registry))
    scrape_ns = time_per_call_ns(lambda: exposition(registry), SCRAPES)
    texts = [exposition(registry).decode()] * 4
    merge_ns = time_per_call_ns(lambda: merge(texts), SCRAPES)
    return [
        Row("Histogram.observe (pacer)", relay_ns, 0, "prometheus_client observe", plain_ns,
            min_speedup=1.0),
        Row("Histogram.observe (pacer)", relay_ns, 0, "prom. multiprocess observe", shared_ns),
        Row("worker scrape (generate_latest)", scrape_ns, size, "", None),
        Row("fleet merge of 4 worker scrapes", merge_ns, 4 * size, "", None),
    ]


if __name__ == "__main__":
    for row in run():
        print(row.as_dict())
