"""Many calls through one worker: in sequence and at once, with nothing left behind."""

from __future__ import annotations

import pytest
from stack import Stack

HI = "Hi, just checking."
SCRIPT = {"phrasebook": [HI], "default": "Okay.", "greeting": "Hello.", "chunk_interval_ms": 2}


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path, model_script=SCRIPT)
    yield s
    s.stop()       # asserts: no channel, bridge, call, route, pacer slot or greenlet left


def test_200_calls_in_sequence_each_hear_the_agent_and_leave_nothing_behind(stack):
    # against the simulated PBX's realistic timing (its default): no caller lost at setup
    stack.worker.settings.tree["agent"]["active"] = "greeter"
    script = {"steps": [{"wait_agent_start": {"after_ms": 60, "timeout_ms": 10000}},
                        {"hangup": True}]}
    for _ in range(200):
        call_id = stack.call(script)
        [result] = stack.wait_calls([call_id], 15)
        assert result["state"] == "ended", result
        assert result["agent"]["voiced_packets"] > 0, result
    assert stack.worker.counters["setup_failures"] == {}
    assert stack.worker.counters["calls_total"] == 200
    assert stack.worker.counters["calls_ended"] == 200
    assert stack.worker.counters["calls_failed"] == 0
    assert len(stack.model.sessions) >= 1
    stack.assert_no_leftovers()


def test_100_calls_at_once_each_hold_a_conversation(stack):
    # The agent greets first, so each caller speaks once its audio path is up (a caller who
    # speaks before the bridge exists is not heard, on a real Asterisk too).
    stack.worker.settings.tree["agent"]["active"] = "greeter"
    script = {"steps": [{"after_agent": HI, "silence_ms": 300},
                        {"wait_agent_done": {"silence_ms": 500, "timeout_ms": 30000}}]}
    ids = stack.pbx.start_calls(script, count=100, app="relay-test", rate=200)
    results = stack.wait_calls(ids, 120)
    assert all(r["state"] == "ended" for r in results)
    summaries = list(stack.worker.finished)
    assert len(summaries) == 100
    expected = [("assistant", "Hello."), ("caller", HI), ("assistant", "Okay.")]
    complete = [s for s in summaries if s["transcript"] == expected]
    assert len(complete) == 100, [s["transcript"] for s in summaries if s not in complete][:3]
    assert sum(s["audio"]["lost"] for s in summaries) == 0
    assert stack.worker.counters["setup_failures"] == {}
    stack.assert_no_leftovers()


def test_callers_hanging_up_during_setup_leave_nothing_behind(stack):
    # Hang-ups land at every point of relay's setup: before the answer, during the bridge or
    # externalMedia requests, while the model session opens.
    ids = [stack.call({"steps": [{"pause_ms": n * 4}, {"hangup": True}]}) for n in range(30)]
    results = stack.wait_calls(ids, 30)
    assert all(r["state"] == "ended" for r in results)
    assert stack.worker.counters["calls_failed"] == 0
    stack.assert_no_leftovers()
