"""A finished call is freed by reference counting: no reference cycle of relay's objects is left
for the garbage collector, whose full passes stop every call of the worker while they walk its
objects (relay/call.py Call._let_go)."""

from __future__ import annotations

import contextlib
import gc
import weakref
from typing import Callable, Iterator

import gevent
import pytest
from stack import Stack, wait_for
from test_transcriber_call import recognise, stt_settings
from test_transcriber_http import FakeStt

SCRIPT = {"phrasebook": ["Hi, just checking."], "default": "Okay.", "greeting": "Hello.",
          "chunk_interval_ms": 2}
CALLER = {"steps": [{"wait_agent_start": {"after_ms": 60, "timeout_ms": 10000}},
                    {"say": "Hi, just checking."},
                    {"wait_agent_start": {"after_ms": 60, "timeout_ms": 10000}},
                    {"hangup": True}]}


def _relays_own(objects: list) -> list[str]:
    """relay's objects among those found (the simulators' are not the worker's)."""
    names = []
    for o in objects:
        module = type(o).__module__ or ""
        if module.startswith("relay.") and not module.startswith("relay.sim"):
            names.append(f"{module}.{type(o).__qualname__}")
        elif type(o).__name__ == "method" and (
                type(o.__self__).__module__ or "").startswith("relay.") and not (
                type(o.__self__).__module__ or "").startswith("relay.sim"):
            names.append(f"bound method {o.__func__.__qualname__}")
    return sorted(set(names))


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path, model_script=SCRIPT)
    s.worker.settings.tree["agent"]["active"] = "greeter"
    yield s
    s.stop()


def _talk(stack: Stack, calls: int) -> list[str]:
    ids = [stack.call(CALLER) for _ in range(calls)]
    for result in stack.wait_calls(ids, 30):
        assert result["state"] == "ended", result
    return ids


@contextlib.contextmanager
def cycles_kept() -> Iterator[Callable[[], list[str]]]:
    """Within: every collection keeps what it finds in gc.garbage (DEBUG_SAVEALL). Yields
    found(): after the calls' last greenlets have finished, one collection, and relay's own
    objects among what it found: those only a collector would have freed."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def found() -> list[str]:
        gevent.sleep(0.2)
        gc.collect()
        return _relays_own(gc.garbage)

    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_finished_call_leaves_no_reference_cycle(stack):
    _talk(stack, 1)                        # warm up: what the first call creates for good
    with cycles_kept() as found:
        _talk(stack, 3)
        calls = list(stack.seen_calls.values())[1:]
        assert len(calls) == 3 and all(c.state == "ended" for c in calls)
        assert all(c.tools.completed + c.tools.failed == 0 for c in calls)
        # what the calls did is still readable while someone holds them
        assert all(c.watch.call.id == c.id and c.session.connections >= 1 for c in calls)
        refs = [weakref.ref(c) for c in calls]
        del calls
        stack.seen_calls.clear()
        # Freed by reference counting: the collector found none of them in a cycle.
        assert found() == []
        assert all(r() is None for r in refs)


def test_a_call_ended_by_a_failure_leaves_no_reference_cycle_either(stack):
    _talk(stack, 1)
    stack.model.stop()                     # the model goes away: the calls end by failure
    with cycles_kept() as found:
        ids = [stack.call({"steps": [{"pause_ms": 3000}, {"hangup": True}]}) for _ in range(2)]
        wait_for(lambda: len(stack.seen_calls) == 3 and all(
            c.state == "ended" for c in stack.seen_calls.values()), 30, "the calls to end")
        stack.pbx.wait_calls(ids, 30)
        stack.seen_calls.clear()
        assert found() == []


def test_with_recording_and_fallback_transcription_no_cycle_either(tmp_path):
    provider = FakeStt(recognise)
    stack = Stack(tmp_path, model_script=SCRIPT,
                  settings={**stt_settings(provider), "call.record": True})
    stack.worker.settings.tree["agent"]["active"] = "greeter"
    try:
        _talk(stack, 1)
        with cycles_kept() as found:
            _talk(stack, 2)
            calls = list(stack.seen_calls.values())[1:]
            assert all(c.stt is not None and c.recorder is not None for c in calls)
            assert all(c.recording_path for c in calls)
            del calls
            stack.seen_calls.clear()
            assert found() == []
    finally:
        stack.stop()
        provider.stop()
