"""Fallback transcription when a call ends: the caller turns still without text (committed,
being spoken, or whose request was in flight) go to the provider after the telephony is
released, bounded by stt.end_of_call_wait_s and a stopping worker's deadline; the transcript
file and the ended call's view hold their text. First CallFallback.finish against a local fake
provider, then the whole path: simulated PBX and model (whose transcription never comes), relay,
and a fake OpenAI transcriptions server."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Optional

import gevent
import gevent.event
import pytest
from stack import wait_for
from test_transcriber_call import HELLO, SCRIPT, check_turn_audio, stt_settings
from test_transcriber_http import FakeStt, Spawner, drive_turns, form, transcriber

from relay._g711 import ulaw_decode
from relay.sim.speech import utterance_ulaw
from relay.stt import CallFallback
from relay.transcript import Transcript
from relay.web import views

FALLBACK_TEXT = "Hello from the fallback."
GENEROUS_S = 20.0       # "it did finish": far below any wait that was cut short, far above need


class Gate:
    """A provider that answers only once the test opens the gate (no race with a clock)."""

    def __init__(self, answer: dict) -> None:
        self.answer = answer
        self.opened = gevent.event.Event()

    def __call__(self, request: dict):
        self.opened.wait(60)
        return 200, self.answer, 0


@pytest.fixture
def gate():
    gates: list[Gate] = []

    def make(answer: Optional[dict] = None) -> Gate:
        gates.append(Gate(answer or {"text": "too late"}))
        return gates[-1]

    yield make
    for opened in gates:
        opened.opened.set()


@pytest.fixture
def fake():
    servers: list[FakeStt] = []

    def make(respond) -> FakeStt:
        servers.append(FakeStt(respond))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def call_fallback(server: FakeStt, **settings) -> tuple[CallFallback, Transcript, Spawner]:
    """A call's fallback whose own deadline (fallback_after_s) never comes during the test."""
    settings = {"fallback_after_s": 30.0, **settings}
    service = transcriber(server, **settings)
    transcript = Transcript("call-end")
    spawn = Spawner()
    return CallFallback(service, call_id="call-end", line_format="ulaw", transcript=transcript,
                        spawn=spawn), transcript, spawn


def committed_turn(fallback: CallFallback, item_id: str) -> None:
    """A caller turn the model committed (1400 ms) and has not transcribed yet."""
    fallback.on_input(utterance_ulaw(HELLO), 1)
    ms = fallback.turns.position // 8
    fallback.speech_started(item_id, ms - 1500)
    fallback.speech_stopped(item_id, ms - 100)
    fallback.committed(item_id)


def all_dead(spawn: Spawner) -> bool:
    return all(greenlet.dead for greenlet in spawn.greenlets)


# --- CallFallback.finish ------------------------------------------------------------------------


def test_finish_sends_the_waiting_turns_and_the_one_being_spoken(fake):
    server = fake(lambda r: (200, {"text": FALLBACK_TEXT}, 0))
    fallback, transcript, spawn = call_fallback(server)
    try:
        committed_turn(fallback, "item_0")
        fallback.on_input(utterance_ulaw(HELLO), 1)
        ms = fallback.turns.position // 8
        fallback.speech_started("item_1", ms - 1000)       # the caller hangs up mid-sentence
        fallback.finish()
        fallback.finish()                                   # idempotent
    finally:
        fallback.service.close()
    assert len(server.requests) == 2 and all_dead(spawn)
    by_item = {e["item_id"]: e for e in transcript.entries({"caller"})}
    assert set(by_item) == {"item_0", "item_1"}
    for entry in by_item.values():
        assert entry["text"] == FALLBACK_TEXT and entry["source"] == "fallback"
        assert entry["reason"] == "call_ended" and entry["at_call_end"] is True
    assert by_item["item_0"]["audio_ms"] == 1400 and "unfinished" not in by_item["item_0"]
    assert by_item["item_1"]["audio_ms"] == 1000 and by_item["item_1"]["unfinished"] is True
    assert fallback.at_call_end == 2 and len(fallback.turns) == 0
    assert fallback.service.counters["openai"] == {"ok": 2, "failed": 0, "skipped": 0}


def test_a_request_in_flight_when_the_call_ends_is_sent_again(fake, gate):
    first = gate()
    server = fake(lambda r: first(r) if len(server.requests) == 1 else (
        200, {"text": FALLBACK_TEXT}, 0))
    fallback, transcript, spawn = call_fallback(server)
    try:
        drive_turns(fallback, 1)                # the model failed item_0: sent at once
        wait_for(lambda: server.requests, 10, "the first request")
        fallback.finish()                       # cuts it off, sends the turn again
    finally:
        fallback.service.close()
    assert len(server.requests) == 2 and all_dead(spawn)
    assert form(server.requests[0])["file"] == form(server.requests[1])["file"]
    [caller] = transcript.entries({"caller"})
    assert caller["item_id"] == "item_0" and caller["text"] == FALLBACK_TEXT
    assert caller["reason"] == "failed" and caller["at_call_end"] is True
    assert fallback.service.counters["openai"] == {"ok": 1, "failed": 1, "skipped": 0}


def test_finish_with_no_wait_sends_nothing(fake):
    server = fake(lambda r: (200, {"text": FALLBACK_TEXT}, 0))
    fallback, transcript, spawn = call_fallback(server, end_of_call_wait_s=0)
    try:
        committed_turn(fallback, "item_0")
        fallback.finish()
    finally:
        fallback.service.close()
    assert server.requests == [] and transcript.entries() == []
    assert all_dead(spawn) and len(fallback.turns) == 0


def test_a_provider_slower_than_the_wait_is_cut_short_counted_and_logged(fake, gate, caplog):
    server = fake(gate())
    fallback, transcript, spawn = call_fallback(server, end_of_call_wait_s=0.3)
    caplog.set_level(logging.WARNING, logger="relay.stt")
    started = time.monotonic()
    try:
        committed_turn(fallback, "item_0")
        fallback.finish()
    finally:
        fallback.service.close()
    assert time.monotonic() - started < GENEROUS_S
    assert len(server.requests) == 1 and all_dead(spawn)
    assert transcript.entries() == []
    assert fallback.failed == 1
    assert fallback.service.counters["openai"] == {"ok": 0, "failed": 1, "skipped": 0}
    [warning] = [r for r in caplog.records if r.name.startswith("relay.stt")]
    assert "call-end" in warning.getMessage() and "end_of_call_wait_s" in warning.getMessage()


def test_a_deadline_brought_forward_cuts_the_wait_short(fake, gate):
    deadline = [math.inf]
    waiting = gate()

    def respond(request):
        deadline[0] = 0.0           # the worker stops while the provider thinks
        return waiting(request)

    server = fake(respond)
    fallback, transcript, spawn = call_fallback(server, end_of_call_wait_s=60)
    started = time.monotonic()
    try:
        committed_turn(fallback, "item_0")
        fallback.finish(deadline=lambda: deadline[0])
    finally:
        fallback.service.close()
    assert time.monotonic() - started < GENEROUS_S
    assert len(server.requests) == 1 and all_dead(spawn) and transcript.entries() == []
    assert fallback.service.counters["openai"]["failed"] == 1


# --- the whole path -------------------------------------------------------------------------------

OMITTED = dict(SCRIPT, transcription={"mode": "omit"})
LATE = {"stt.fallback_after_s": 30.0}      # only the end of the call sends a turn
HANG_UP_AFTER_THE_TURN = {"steps": [{"pause_ms": 1000}, {"say": HELLO}, {"pause_ms": 1500}]}
HANG_UP_MID_SENTENCE = {"steps": [{"pause_ms": 1000}, {"say": HELLO}]}


def recognise_start(request: dict):
    """The fake provider: HELLO when the WAV holds at least its first second."""
    _, wav = form(request)["file"]
    if ulaw_decode(utterance_ulaw(HELLO)[:8000]) in wav[44:]:
        return 200, {"text": HELLO}, 0
    return 200, {"text": ""}, 0


def written(relay_call) -> list[dict]:
    with open(relay_call.transcript_path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def fallback_entries(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["kind"] == "caller" and e.get("source") == "fallback"]


@pytest.mark.parametrize("caller, unfinished", [(HANG_UP_AFTER_THE_TURN, False),
                                                (HANG_UP_MID_SENTENCE, True)],
                         ids=["after-the-turn", "mid-sentence"])
def test_the_last_words_of_a_caller_who_hangs_up_reach_the_transcript(stack, fake, caller,
                                                                      unfinished):
    provider = fake(recognise_start)
    s = stack(model_script=OMITTED, settings=stt_settings(provider, **LATE))
    call_id = s.call(caller)
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert relay_call.end_reason == "caller hung up"
    [request] = provider.requests
    [entry] = fallback_entries(relay_call.transcript.entries())
    assert entry["text"] == HELLO and entry["at_call_end"] is True
    assert entry["reason"] == "call_ended" and entry.get("unfinished", False) is unfinished
    if not unfinished:
        check_turn_audio(request)           # the turn as the model's VAD cut it
        assert entry["item_id"] in s.model.sessions[0].heard      # the item it committed
    # the file: written after the end-of-call transcription, which comes before the end
    lines = written(relay_call)
    assert fallback_entries(lines) == [entry]
    assert lines[-1]["text"] == "call ended: caller hung up"
    # the ended call's view (/api/calls/{id}) and the worker's summary
    view = views.finished_detail(s.finished(call_id))
    assert {"kind": "caller", "text": HELLO, "call_id": relay_call.id} in view["transcript"]
    assert s.worker.counters["fallback_transcriptions"]["openai"] == \
        {"ok": 1, "failed": 0, "skipped": 0}


def test_a_provider_failing_at_the_end_leaves_the_transcript_as_it_was(stack, fake, caplog):
    provider = fake(lambda r: (500, {"error": {"message": "The server had an error",
                                               "type": "server_error"}}, 0))
    s = stack(model_script=OMITTED, settings=stt_settings(provider, **LATE))
    caplog.set_level(logging.WARNING, logger="relay.stt")
    call_id = s.call(HANG_UP_AFTER_THE_TURN)
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert relay_call.end_reason == "caller hung up" and relay_call.state == "ended"
    assert len(provider.requests) == 1
    assert relay_call.transcript.entries({"caller"}) == []
    assert written(relay_call)[-1]["text"] == "call ended: caller hung up"
    assert s.worker.counters["fallback_transcriptions"]["openai"] == \
        {"ok": 0, "failed": 1, "skipped": 0}
    [warning] = [r for r in caplog.records if r.name.startswith("relay.stt")]
    assert warning.getMessage().endswith("HTTP 500: The server had an error")


def test_a_provider_slower_than_the_wait_does_not_hold_the_transcript(stack, fake, gate):
    provider = fake(gate({"text": HELLO}))
    s = stack(model_script=OMITTED, settings=stt_settings(
        provider, **LATE, **{"stt.end_of_call_wait_s": 0.5}))
    call_id = s.call(HANG_UP_AFTER_THE_TURN)
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)             # ended while the provider still thinks
    assert len(provider.requests) == 1
    assert relay_call.transcript.entries({"caller"}) == []
    assert written(relay_call)[-1]["text"] == "call ended: caller hung up"
    assert s.worker.counters["fallback_transcriptions"]["openai"] == \
        {"ok": 0, "failed": 1, "skipped": 0}


def test_no_end_of_call_wait_sends_nothing_at_the_end(stack, fake):
    provider = fake(recognise_start)
    s = stack(model_script=OMITTED, settings=stt_settings(
        provider, **LATE, **{"stt.end_of_call_wait_s": 0}))
    call_id = s.call(HANG_UP_AFTER_THE_TURN)
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert provider.requests == []
    assert relay_call.transcript.entries({"caller"}) == []
    assert written(relay_call)[-1]["text"] == "call ended: caller hung up"


def test_a_stopping_worker_cuts_the_end_of_call_wait_short(stack, fake, gate):
    provider = fake(gate({"text": HELLO}))
    s = stack(model_script=OMITTED, settings=stt_settings(
        provider, **LATE, **{"stt.end_of_call_wait_s": 60}))
    call_id = s.call({"steps": [{"pause_ms": 1000}, {"say": HELLO}, {"pause_ms": 60000}]})
    relay_call = s.relay_call(call_id)
    wait_for(lambda: any(turn.committed for turn in relay_call.stt.turns.pending.values()),
             20, "the caller's turn to be committed")
    started = time.monotonic()
    assert s.worker.drain(0.1, 3.0) == 1
    assert time.monotonic() - started < GENEROUS_S
    assert s.worker.calls == {}                 # ended, transcript written, within the stop
    assert relay_call.end_reason == "relay shutting down"
    assert len(provider.requests) == 1
    assert written(relay_call)[-1]["text"] == "call ended: relay shutting down"
    assert s.worker.counters["fallback_transcriptions"]["openai"]["failed"] == 1
