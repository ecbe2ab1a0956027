"""Metrics: the histogram relay observes into, and a worker's metrics for prometheus_client.

Owns: `Histogram` (fixed bucket bounds; `observe()` is one bisect and three additions, cheap
enough for the pacer's once-a-millisecond loop: bench/bench_metrics.py measures it against
prometheus_client's own `Histogram.observe`), the bucket bounds relay uses, `Families` (the
metric families of one scrape, built with prometheus_client's `CounterMetricFamily`,
`GaugeMetricFamily` and `HistogramMetricFamily`), `WorkerCollector` (a prometheus_client
collector that reads a worker's counters, histograms and socket/pacer figures at scrape time:
the hot paths keep updating plain dicts and fields, nothing is copied between scrapes) and
`registry_for()` (one `CollectorRegistry` per worker, never the process-wide default one: tests
run several workers in one process). The text is prometheus_client's `generate_latest` (text
format 0.0.4). No I/O, no imports of the rest of relay (so media.py can use it).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4        # "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds, in seconds (Prometheus base units).
TURN_LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BARGE_IN_BUCKETS_S = (0.0, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
AUDIO_LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                           0.075, 0.1, 0.2, 0.5)
PACER_LATENESS_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                            0.2, 0.5)
GC_PAUSE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)

# the per-call audio figures a worker adds up as calls end (CallMedia.stats() keys)
AUDIO_TOTALS = ("rtp_in", "rtp_out", "lost", "late", "duplicate", "malformed")


class Histogram:
    """Counts of observations per bucket (value <= bound), plus their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        self.counts = [0] * (len(self.bounds) + 1)      # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it), ending with (+inf, count)."""
        total, out = 0, []
        for bound, n in zip(self.bounds + (math.inf,), self.counts):
            total += n
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> Optional[float]:
        """The upper bound of the bucket holding quantile q (None when empty; inf past the
        last bound): a coarse figure for the dashboard."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, total in self.cumulative():
            if total >= rank:
                return bound
        return math.inf

    def snapshot(self) -> dict:
        """A JSON-able summary: count, mean and coarse p50/p99 (seconds)."""
        def finite(x: Optional[float]) -> Optional[float]:
            return None if x is None or math.isinf(x) else x
        return {"count": self.count, "mean": self.sum / self.count if self.count else None,
                "p50": finite(self.quantile(0.5)), "p99": finite(self.quantile(0.99))}


class Families(Collector):
    """The metric families of one scrape, in order, as prometheus_client metric families; a
    collector itself, so `text()` is `generate_latest` over them. Names get relay's prefix;
    counters are named without `_total` (prometheus_client adds it to the samples and to the
    HELP and TYPE lines)."""

    def __init__(self, prefix: str = "relay_") -> None:
        self.prefix = prefix
        self.items: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.items)

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, Any], float]]) -> None:
        """One counter or gauge family, a sample per (labels, value)."""
        samples = list(samples)
        names = list(samples[0][0]) if samples else []
        maker = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        metric = maker(self.prefix + name, help_text, labels=names)
        for labels, value in samples:
            metric.add_metric([str(labels[n]) for n in names], float(value))
        self.items.append(metric)

    def counter(self, name: str, help_text: str, value: float) -> None:
        self.items.append(CounterMetricFamily(self.prefix + name, help_text, value=float(value)))

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.items.append(GaugeMetricFamily(self.prefix + name, help_text, value=float(value)))

    def labelled_counter(self, name: str, help_text: str, label: str,
                         values: Mapping[str, Any], outer_label: str = "") -> None:
        """A counter per key of values ({key: n}); a nested {outer: {key: n}} gets the outer
        key as outer_label too."""
        samples: list[tuple[Mapping[str, Any], float]] = []
        for key, value in sorted(values.items()):
            if isinstance(value, Mapping):
                samples += [({outer_label or "group": key, label: inner}, n)
                            for inner, n in sorted(value.items())]
            else:
                samples.append(({label: key}, value))
        self.family(name, "counter", help_text, samples)

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        buckets = [(floatToGoString(bound), total) for bound, total in histogram.cumulative()]
        self.items.append(HistogramMetricFamily(self.prefix + name, help_text, buckets=buckets,
                                                sum_value=float(histogram.sum)))

    def text(self) -> str:
        return generate_latest(self).decode("utf-8")


def asterisk_agreement(out: Families, counters: Mapping[str, Any], janitor: Any) -> None:
    """Setup failures, bad events, reconciliations and the janitor's removals."""
    out.labelled_counter("call_setup_failures", "Calls hung up because a step of their setup "
                         "failed, by step.", "step", counters.get("setup_failures", {}))
    out.counter("ari_add_channel_retries", "addChannel answered 422 (the media channel not "
                "in the app yet) and asked again.", counters.get("add_channel_retries", 0))
    out.counter("ari_bad_events", "ARI events of an unexpected shape, ignored.",
                counters.get("ari_bad_events", 0))
    out.counter("ari_reconciliations", "Reconciliations with Asterisk completed (start, "
                "reconnection, periodic sweep).", counters.get("reconciliations", 0))
    out.counter("ari_reconcile_failures", "Reconciliation attempts that failed (retried).",
                counters.get("reconcile_failures", 0))
    out.labelled_counter("ari_leftovers_removed", "Bridges and channels with this worker's "
                         "prefix that no live call owned, removed by a reconciliation.", "kind",
                         counters.get("leftovers_removed", {}))
    out.labelled_counter("waiting_callers", "Callers found in the app with no conversation, "
                         "by what was done.", "action", counters.get("waiting_callers", {}))
    if janitor is not None:
        for key, text in (("retries", "ARI deletions asked again after a 5xx or no answer."),
                          ("gave_up", "ARI deletions that still failed after every attempt.")):
            out.labelled_counter(f"ari_cleanup_{key}", text, "kind", janitor.counters[key])


class WorkerCollector(Collector):
    """A worker's metrics, read from its counters and objects at each scrape (web_stats(): the
    dashboard server's own figures, or None)."""

    def __init__(self, worker: Any,
                 web_stats: Optional[Callable[[], Mapping[str, int]]] = None) -> None:
        self.worker = worker
        self.web_stats = web_stats

    def collect(self) -> Iterator[Metric]:
        return worker_families(self.worker, self.web_stats() if self.web_stats else None).collect()


def registry_for(worker: Any,
                 web_stats: Optional[Callable[[], Mapping[str, int]]] = None) -> CollectorRegistry:
    """A registry of the worker's own (not prometheus_client's process-wide default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker, web_stats))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """A scrape of registry in the text format 0.0.4 (CONTENT_TYPE)."""
    return generate_latest(registry)


def render(worker: Any, web: Optional[Mapping[str, int]] = None) -> str:
    """The worker's metrics in the Prometheus text format (web: the dashboard's own figures)."""
    return worker_families(worker, web).text()


def worker_families(worker: Any, web: Optional[Mapping[str, int]] = None) -> Families:
    """The families of one scrape of a worker."""
    out = Families()
    counters = worker.counters
    calls = list(worker.calls.values())
    out.gauge("calls_active", "Calls this worker carries now.", len(calls))
    out.counter("calls", "Calls started by this worker.", counters["calls_total"])
    out.counter("calls_ended", "Calls ended, for any reason.", counters["calls_ended"])
    out.counter("calls_failed", "Calls ended by a failure (model, setup, internal error).",
                counters["calls_failed"])
    out.gauge("ari_connected", "1 while the ARI events WebSocket is connected.",
              bool(worker.events.connected))
    out.gauge("accepting_calls", "1 while the worker takes new calls.", bool(worker.accepting))
    out.counter("ari_events", "ARI events received.", counters["ari_events"])
    out.counter("ari_reconnects", "Reconnections of the ARI events WebSocket.",
                counters["ari_reconnects"])
    asterisk_agreement(out, counters, getattr(worker, "janitor", None))

    histograms = getattr(worker, "histograms", {})
    if "turn_latency_seconds" in histograms:
        out.histogram("turn_latency_seconds", "From the caller's end of speech to the first "
                      "frame of the agent's reply sent as RTP.",
                      histograms["turn_latency_seconds"])
    if "barge_in_reaction_seconds" in histograms:
        out.histogram("barge_in_reaction_seconds", "From speech_started (the caller "
                      "interrupting) to the last RTP frame of the agent sent after it.",
                      histograms["barge_in_reaction_seconds"])
    if "caller_audio_latency_seconds" in histograms:
        out.histogram("caller_audio_latency_seconds", "From the arrival of the oldest caller "
                      "RTP packet in an input_audio_buffer.append to that append written to the "
                      "model's WebSocket (append batching included).",
                      histograms["caller_audio_latency_seconds"])
    if "model_audio_latency_seconds" in histograms:
        out.histogram("model_audio_latency_seconds", "From a model audio delta's arrival, "
                      "when nothing was playing, to its first RTP frame sent to the caller.",
                      histograms["model_audio_latency_seconds"])

    totals = dict(getattr(worker, "audio_totals", {}))
    for call in calls:                       # the live calls' share so far
        stats = call.media.stats()
        for key in AUDIO_TOTALS:
            totals[key] = totals.get(key, 0) + int(stats.get(key, 0))
    out.counter("rtp_received_packets", "RTP packets from callers accepted by the jitter "
                "buffers.", totals.get("rtp_in", 0))
    out.counter("rtp_sent_packets", "RTP packets sent to callers.", totals.get("rtp_out", 0))
    out.counter("rtp_lost_packets", "Caller RTP packets never received (sequence gaps).",
                totals.get("lost", 0))
    out.counter("rtp_late_packets", "Caller RTP packets that arrived after their playout.",
                totals.get("late", 0))
    out.counter("rtp_duplicate_packets", "Duplicate caller RTP packets.",
                totals.get("duplicate", 0))
    out.counter("rtp_malformed_packets", "Malformed caller RTP packets.",
                totals.get("malformed", 0))
    media = worker.media
    out.counter("rtp_datagrams", "Datagrams received on the worker's RTP socket.",
                media.received)
    out.counter("rtp_stranger_datagrams", "Datagrams from addresses no call owns (dropped).",
                media.from_strangers)
    out.counter("rtp_send_errors", "RTP datagrams the socket failed to send.",
                media.send_errors)
    overflows = getattr(media, "overflows", None)
    if overflows is not None:
        out.counter("rtp_socket_overflows", "Datagrams the kernel dropped because the worker's "
                    "RTP socket receive buffer was full (the worker did not read in time).",
                    overflows)

    pauses = getattr(worker, "gc_pauses", None)
    if pauses is not None:
        out.histogram("gc_pause_seconds", "Garbage collections of the worker's process: each "
                      "one stops every call (the pacer included) while it runs.",
                      pauses.histogram)
        out.counter("gc_full_collections", "Full (oldest generation) garbage collections.",
                    pauses.full_collections)

    pacer = worker.pacer
    out.gauge("pacer_streams", "Calls registered in the pacer.", len(pacer))
    out.counter("pacer_late_ticks", "Pacer slots run more than 1 ms after their deadline.",
                pacer.late_ticks)
    out.counter("pacer_tick_errors", "Stream ticks that raised (the stream was removed).",
                pacer.tick_errors)
    out.counter("pacer_skipped_slots", "Pacer slots given up because it was over 200 ms "
                "behind (overload): frame times with nothing sent.",
                getattr(pacer, "skipped_slots", 0))
    lateness = getattr(pacer, "lateness", None)
    if lateness is not None:
        out.histogram("pacer_lateness_seconds", "Lateness of each pacer slot (1 ms) against "
                      "its absolute deadline: the pacing error of outgoing RTP.", lateness)

    out.labelled_counter("model_errors", "Error events from the Realtime model, by code.",
                         "code", counters.get("model_errors", {}))
    out.labelled_counter("tool_calls", "Tool calls run for the model, by result.", "result",
                         counters.get("tool_calls", {}), outer_label="tool")
    watchdog = {"retry": 0, "hold": 0, "giveup": 0}
    watchdog.update(counters.get("watchdog", {}))
    out.labelled_counter("watchdog", "Watchdog actions when the model gave the caller no "
                         "answer: retry (asked again), hold (the hold sound played), giveup "
                         "(the apology, then the call's ending).", "action", watchdog)
    out.counter("model_bad_events", "Model events of an unexpected shape (ignored, the call "
                "goes on).", counters.get("model_bad_events", 0))
    breaker = getattr(worker, "model_breaker", None)
    if breaker is not None:
        out.gauge("model_breaker_open", "1 while the worker's circuit breaker keeps calls from "
                  "opening Realtime sockets (open, or half-open waiting for its probe).",
                  breaker.state != "closed")
        out.counter("model_breaker_opened", "Times the worker's circuit breaker opened.",
                    breaker.opened_total)
        out.counter("model_connect_failures", "Failed Realtime attempts: a socket that could "
                    "not be opened or died before it did useful work.", breaker.failures_total)
    out.labelled_counter("fallback_transcriptions", "Turns sent to the fallback "
                         "transcriber, by provider and result.", "result",
                         counters.get("fallback_transcriptions", {}), outer_label="provider")
    history = getattr(worker, "history", None)     # relay.history.service.History
    if history is not None:
        history_figures(out, history.stats())
    if web is not None:
        dashboard_figures(out, web)
    return out


def history_figures(out: Families, stats: Mapping[str, Any]) -> None:
    """The history writer's figures (HistoryWriter.stats(); docs/HISTORY.md)."""
    out.gauge("history_queued", "Call records waiting for the store (queue and memory "
              "backlog).", stats.get("queued", 0))
    out.counter("history_written", "Call records written to the store.",
                stats.get("written", 0))
    out.counter("history_spooled", "Call records written to the spool file while the store "
                "could not take them.", stats.get("spooled", 0))
    out.counter("history_replayed", "Call records replayed from the spool into the store.",
                stats.get("replayed", 0))
    out.counter("history_write_failures", "Store writes (or openings) that failed.",
                stats.get("write_failures", 0))
    out.counter("history_spool_errors", "Spool writes that failed (disk full, permissions): "
                "the records waited in memory.", stats.get("spool_errors", 0))
    out.counter("history_dropped", "Call records lost: neither the store, the spool nor the "
                "memory backlog could take them.", stats.get("dropped", 0))
    out.gauge("history_last_error_timestamp_seconds", "When the store or the spool last "
              "failed (epoch seconds; 0: never).", stats.get("last_error_at", 0.0))


def dashboard_figures(out: Families, web: Mapping[str, int]) -> None:
    """The dashboard server's own figures (a worker's, or the fleet's for its browsers)."""
    out.gauge("dashboard_clients", "Dashboard WebSocket clients connected.",
              web.get("clients", 0))
    out.counter("dashboard_clients_dropped", "Dashboard clients dropped for not keeping "
                "up with the events.", web.get("dropped", 0))
    out.counter("dashboard_messages", "Messages queued for dashboard clients.",
                web.get("messages", 0))
