"""relay/gc_pauses.py: every collection of the process timed, the full ones counted, and the
hook gone once removed."""

from __future__ import annotations

import gc

from prometheus_client.exposition import generate_latest
from stack import Stack

from relay.gc_pauses import GcPauses
from relay.metrics import registry_for


def test_collections_are_timed_and_the_full_ones_counted():
    pauses = GcPauses()
    pauses.install()
    pauses.install()                       # once only
    try:
        gc.collect(0)
        gc.collect(1)
        gc.collect()                       # a full one
        assert pauses.histogram.count >= 3 and pauses.histogram.sum > 0
        assert pauses.full_collections >= 1 and pauses.longest_full_s > 0
        assert gc.callbacks.count(pauses._on_collection) == 1
    finally:
        pauses.remove()
    seen, full = pauses.histogram.count, pauses.full_collections
    gc.collect()
    assert (pauses.histogram.count, pauses.full_collections) == (seen, full)
    pauses.remove()                        # twice: nothing to remove, no error


def test_a_worker_shows_them_in_its_metrics_and_removes_its_hook_when_stopped(tmp_path):
    stack = Stack(tmp_path)
    hook = stack.worker.gc_pauses._on_collection
    try:
        assert hook in gc.callbacks
        gc.collect()
        text = generate_latest(registry_for(stack.worker)).decode()
        assert "relay_gc_pause_seconds_count" in text
        full = [line for line in text.splitlines()
                if line.startswith("relay_gc_full_collections_total ")]
        assert full and float(full[0].split()[1]) >= 1
    finally:
        stack.stop()
    assert hook not in gc.callbacks
