"""The dashboard's parts without sockets: histograms and the Prometheus text, redaction, and the
event hub's rule that a client who does not keep up is dropped without ever blocking."""

from __future__ import annotations

import math
from types import SimpleNamespace

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import Families, Histogram, exposition, registry_for
from relay.web.redact import Redactor
from relay.web.ws import EventHub, WsClient


def test_a_histogram_counts_each_value_in_the_first_bucket_that_holds_it():
    histogram = Histogram([0.1, 0.5, 1.0])
    for value in (0.05, 0.1, 0.3, 0.5, 0.7, 2.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 1, 1]
    assert histogram.cumulative() == [(0.1, 2), (0.5, 4), (1.0, 5), (math.inf, 6)]
    assert histogram.count == 6 and math.isclose(histogram.sum, 3.65)
    assert histogram.quantile(0.5) == 0.5 and histogram.quantile(1.0) == math.inf
    assert Histogram([1.0]).quantile(0.5) is None
    assert histogram.snapshot()["p99"] is None         # beyond the last bound: unknown


def test_the_exposition_has_help_type_escaped_labels_and_cumulative_buckets():
    out = Families()
    out.counter("calls", "Calls started.", 3)
    out.labelled_counter("model_errors", 'Errors "by" code.', "code",
                         {'a"b\\c\nd': 1, "rate_limit": 2})
    out.labelled_counter("fallback_transcriptions", "By provider.", "result",
                         {"openai": {"ok": 4}}, outer_label="provider")
    out.labelled_counter("tool_calls", "None yet.", "result", {})
    histogram = Histogram([0.5])
    histogram.observe(0.25)
    out.histogram("turn_latency_seconds", "Latency.", histogram)
    text = out.text()
    lines = text.splitlines()
    assert lines[:3] == ["# HELP relay_calls_total Calls started.",
                         "# TYPE relay_calls_total counter", "relay_calls_total 3.0"]
    assert 'relay_model_errors_total{code="a\\"b\\\\c\\nd"} 1.0' in lines
    assert 'relay_fallback_transcriptions_total{provider="openai",result="ok"} 4.0' in lines
    assert "# TYPE relay_tool_calls_total counter" in lines
    assert 'relay_turn_latency_seconds_bucket{le="0.5"} 1.0' in lines
    assert 'relay_turn_latency_seconds_bucket{le="+Inf"} 1.0' in lines
    assert "relay_turn_latency_seconds_sum 0.25" in lines
    assert "relay_turn_latency_seconds_count 1.0" in lines
    assert text.endswith("\n")
    # prometheus_client's parser reads it back, label values unescaped
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["relay_calls"].type == "counter"
    assert {s.labels["code"]: s.value for s in families["relay_model_errors"].samples} == {
        'a"b\\c\nd': 1.0, "rate_limit": 2.0}
    assert families["relay_tool_calls"].samples == []
    assert families["relay_turn_latency_seconds"].type == "histogram"


class FakePacer(list):
    late_ticks = tick_errors = 0


def test_a_workers_registry_is_its_own_and_reads_the_counters_at_each_scrape():
    def worker(calls_total):
        counters = {"calls_total": calls_total, "calls_ended": 0, "calls_failed": 0,
                    "ari_events": 0, "ari_reconnects": 0}
        return SimpleNamespace(
            counters=counters, calls={}, events=SimpleNamespace(connected=True), accepting=True,
            media=SimpleNamespace(received=0, from_strangers=0, send_errors=0),
            pacer=FakePacer(), janitor=None)
    one, two = worker(1), worker(2)
    registries = [registry_for(w) for w in (one, two)]
    scrape = [exposition(r).decode() for r in registries]
    assert "relay_calls_total 1.0" in scrape[0] and "relay_calls_total 2.0" in scrape[1]
    one.counters["calls_total"] = 5                 # a hot path's plain update
    assert "relay_calls_total 5.0" in exposition(registries[0]).decode()
    assert "relay_calls_total" not in generate_latest(REGISTRY).decode()    # not the default


def test_the_redactor_removes_raw_and_json_escaped_secrets():
    redactor = Redactor(["sk-abc/123", 'pa"ss\\word', "", "abc"])   # "abc": too short to scrub
    assert redactor.scrub("key sk-abc/123 and sk-abc\\/123") == "key *** and ***"
    assert redactor.scrub('{"p": "pa\\"ss\\\\word"}') == '{"p": "***"}'
    assert redactor.scrub_bytes(b"x pa\"ss\\word y") == b"x *** y"
    assert redactor.scrub("abc") == "abc"


class StuckSocket:
    """A WebSocket whose peer never reads: a send would block forever."""

    def __init__(self) -> None:
        self.aborted = False
        self.closed = False

    def abort(self) -> None:
        self.aborted = True


def test_a_client_who_does_not_keep_up_is_dropped_and_the_observer_never_waits():
    worker = SimpleNamespace(calls={}, subscribe=lambda f: None, unsubscribe=lambda f: None)
    hub = EventHub(worker, queue_max=8, stats_interval_s=1.0, max_clients=5)
    stuck = WsClient(StuckSocket(), queue_max=8)       # nobody drains its queue
    reading = WsClient(StuckSocket(), queue_max=1000)
    hub.clients += [stuck, reading]
    for n in range(500):     # a blocking put would hang here: nobody drains the stuck queue
        hub._on_event({"type": "transcript", "entry": {"call_id": "c", "text": str(n)}})
    assert stuck.dropped and stuck.ws.aborted and "keep up" in stuck.drop_reason
    assert hub.clients == [reading] and hub.dropped == 1
    assert reading.queue.qsize() == 500 and not reading.dropped
    assert stuck.queue.qsize() == 8                     # bounded: nothing more was kept
