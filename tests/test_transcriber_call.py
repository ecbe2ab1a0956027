"""Fallback transcription end to end: relay between the simulated PBX and the simulated model
(whose input transcription fails, or never comes), with a local fake OpenAI transcriptions
server as the fallback provider."""

from __future__ import annotations

import logging
import struct

import pytest
from stack import wait_for
from test_transcriber_http import FakeStt, form

from relay._g711 import ulaw_dbov, ulaw_decode
from relay.sim.model.vad import STARTED, STOPPED, Vad
from relay.sim.speech import utterance_ulaw

HELLO = "Hello, I would like to check the status of my order."
SCRIPT = {
    "phrasebook": [HELLO],
    "rules": [{"keywords": ["status"], "say": "Sure. What is your order number?"}],
}
CALLER = {"steps": [{"pause_ms": 1000}, {"say": HELLO},
                    {"wait_agent_done": {"silence_ms": 600, "timeout_ms": 15000}}]}
PREFIX_MS, SILENCE_MS = 300, 400          # tests/agents/default.json's server_vad


def recognise(request: dict) -> tuple[int, dict, float]:
    """The fake OpenAI transcriptions endpoint: finds which phrase the WAV holds."""
    _, wav = form(request)["file"]
    if ulaw_decode(utterance_ulaw(HELLO)) in wav[44:]:
        return 200, {"text": HELLO}, 0
    return 200, {"text": ""}, 0


@pytest.fixture
def provider():
    server = FakeStt(recognise)
    yield server
    server.stop()


def stt_settings(server: FakeStt, **extra) -> dict:
    settings = {"stt.asyncSttEnabled": True, "stt.asyncSttProvider": "openai",
                "stt.openai_base_url": server.base_url, "stt.api_key": "sk-stt-test",
                "stt.timeout_s": 5.0}
    settings.update(extra)
    return settings


def vad_turn_ms(text: str) -> tuple[int, int]:
    """Where the simulated model's VAD (tests/agents/default.json's settings) puts the turn of
    `text` said after silence: (audio_start_ms, audio_end_ms) relative to the utterance's start
    (the start includes the prefix padding, the end the silence that ended the turn)."""
    audio = utterance_ulaw(text) + b"\xff" * 8000
    vad = Vad(0.5, PREFIX_MS, SILENCE_MS)
    start = end = None
    for n in range(len(audio) // 160):
        edge = vad.feed(ulaw_dbov(audio[160 * n:160 * (n + 1)]), 20 * (n + 1))
        if edge == STARTED:
            start = vad.run_start_ms - PREFIX_MS
        elif edge == STOPPED:
            end = 20 * (n + 1)
            break
    assert start is not None and end is not None
    return start, end


def check_turn_audio(request: dict) -> None:
    """The provider got that turn: the caller's utterance bit-exact, from audio_start_ms to
    audio_end_ms (the prefix padding before it, the VAD's silence after it)."""
    fields = form(request)
    assert fields["model"] == (None, b"gpt-4o-mini-transcribe")
    _, wav = fields["file"]
    channels, rate, bits = struct.unpack("<HIxxxxxxH", wav[22:36])
    assert (wav[:4], wav[8:12], channels, rate, bits) == (b"RIFF", b"WAVE", 1, 8000, 16)
    (data_len,) = struct.unpack("<I", wav[40:44])
    assert data_len == len(wav) - 44
    utterance = ulaw_decode(utterance_ulaw(HELLO))
    at = wav[44:].find(utterance)
    assert at >= 0 and at % 2 == 0                   # all of it, sample-aligned
    start_ms, end_ms = vad_turn_ms(HELLO)
    # within a few frames: the model's 20 ms frames need not line up with the utterance's
    assert abs(at / 16 - -start_ms) <= 3 * 20, (at / 16, start_ms)
    assert abs(data_len / 16 - (end_ms - start_ms)) <= 3 * 20, (data_len / 16, start_ms, end_ms)


def test_a_failed_input_transcription_is_replaced_by_the_fallback(stack, provider):
    s = stack(model_script=dict(SCRIPT, transcription={"mode": "fail"}),
              settings=stt_settings(provider))
    call_id = s.call(CALLER)
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.transcript.entries({"caller"}), 20, "the fallback's text")
    s.wait_calls([call_id], 30)
    [request] = provider.requests
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["headers"]["Authorization"] == "Bearer sk-stt-test"
    check_turn_audio(request)
    [caller] = relay_call.transcript.entries({"caller"})
    assert caller["text"] == HELLO and caller["source"] == "fallback"
    assert caller["provider"] == "openai" and caller["reason"] == "failed"
    assert caller["latency_ms"] >= 0
    session = s.model.sessions[0]
    assert caller["item_id"] in session.heard            # tied to the model's item
    failed = [e for e in relay_call.transcript.entries({"event"})
              if e["text"].startswith("transcription failed")]
    assert [e["item_id"] for e in failed] == [caller["item_id"]]
    assert s.worker.counters["fallback_transcriptions"]["openai"] == \
        {"ok": 1, "failed": 0, "skipped": 0}
    assert ("assistant", "Sure. What is your order number?") in s.finished(call_id)["transcript"]


def test_a_missing_input_transcription_falls_back_after_a_while(stack, provider):
    s = stack(model_script=dict(SCRIPT, transcription={"mode": "omit"}),
              settings=stt_settings(provider, **{"stt.fallback_after_s": 0.3}))
    call_id = s.call(CALLER)
    relay_call = s.relay_call(call_id)
    wait_for(lambda: relay_call.transcript.entries({"caller"}), 20, "the fallback's text")
    s.wait_calls([call_id], 30)
    [request] = provider.requests
    check_turn_audio(request)
    [caller] = relay_call.transcript.entries({"caller"})
    assert caller["text"] == HELLO and caller["source"] == "fallback"
    assert caller["reason"] == "missing"
    assert relay_call.stt.turns.pending == {}


def test_a_model_transcription_in_time_sends_nothing(stack, provider):
    s = stack(model_script=SCRIPT, settings=stt_settings(provider, **{
        "stt.fallback_after_s": 0.5}))
    call_id = s.call(CALLER)
    relay_call = s.relay_call(call_id)
    s.wait_calls([call_id], 30)
    assert provider.requests == []
    [caller] = relay_call.transcript.entries({"caller"})
    assert caller["text"] == HELLO and "source" not in caller
    assert relay_call.stt.turns.pending == {}


def test_a_failing_provider_leaves_the_call_and_its_transcript_alone(stack, caplog):
    server = FakeStt(lambda r: (500, {"error": {"message": "The server had an error",
                                                "type": "server_error"}}, 0))
    try:
        s = stack(model_script=dict(SCRIPT, transcription={"mode": "fail"}),
                  settings=stt_settings(server))
        caplog.set_level(logging.WARNING, logger="relay.stt")
        call_id = s.call(CALLER)
        relay_call = s.relay_call(call_id)
        wait_for(lambda: s.worker.counters["fallback_transcriptions"]["openai"]["failed"], 20,
                 "the provider's failure")
        [result] = s.wait_calls([call_id], 30)
    finally:
        server.stop()
    assert relay_call.end_reason == "caller hung up"
    assert relay_call.transcript.entries({"caller"}) == []
    assert ("assistant", "Sure. What is your order number?") in relay_call.transcript.turns()
    [warning] = [r for r in caplog.records if r.name.startswith("relay.stt")]
    assert warning.getMessage().endswith("HTTP 500: The server had an error")
