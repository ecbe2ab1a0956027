"""Fallback transcription over HTTP, against local fake providers (gevent pywsgi on 127.0.0.1):
the exact request each provider receives, and what 400, 401, 429, 500 and a timeout do (logged
once per call, counted, the transcript unaffected, nothing raised into the call)."""

from __future__ import annotations

import json
import logging
import struct
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Callable, Optional
from urllib.parse import parse_qs

import gevent
import pytest
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from relay._g711 import ulaw_decode
from relay.config import load_settings
from relay.sim.speech import utterance_ulaw
from relay.stt import CallFallback, FallbackTranscriber, SttError
from relay.transcript import Transcript

Reply = tuple[int, object, float]         # status, body (dict -> JSON, bytes as is), delay (s)


class FakeStt:
    """A local HTTP server that records every request and answers with `respond(request)`."""

    def __init__(self, respond: Callable[[dict], Reply]) -> None:
        self.respond = respond
        self.requests: list[dict] = []
        # A pool, so that stop() also ends the handlers of keep-alive connections.
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None,
                                 spawn=Pool(64))
        self.server.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read()
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        request = {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                   "query": parse_qs(environ.get("QUERY_STRING", "")), "headers": headers,
                   "body": body}
        self.requests.append(request)
        status, payload, delay = self.respond(request)
        if delay:
            gevent.sleep(delay)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"),
                                       ("Content-Length", str(len(data)))])
        return [data]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def form(request: dict) -> dict[str, tuple[Optional[str], bytes]]:
    head = b"Content-Type: " + request["headers"]["Content-Type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + request["body"])
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True)) for part in message.iter_parts()}


def wav_fields(wav: bytes) -> dict:
    (riff, size, wave_, fmt, fmt_size, tag, channels, rate, byte_rate, align, bits, data,
     n) = struct.unpack("<4sI4s4sIHHIIHH4sI", wav[:44])
    return {"riff": riff, "size": size, "wave": wave_, "fmt": fmt, "fmt_size": fmt_size,
            "tag": tag, "channels": channels, "rate": rate, "byte_rate": byte_rate,
            "align": align, "bits": bits, "data": data, "data_len": n}


@pytest.fixture
def fake():
    servers: list[FakeStt] = []

    def make(respond: Callable[[dict], Reply]) -> FakeStt:
        server = FakeStt(respond)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def transcriber(server: FakeStt, **settings) -> FallbackTranscriber:
    provider = settings.pop("provider", "openai")
    overrides = {"stt.asyncSttEnabled": True, "stt.asyncSttProvider": provider,
                 "stt.openai_base_url": server.base_url, "stt.google_base_url": server.base_url,
                 "stt.timeout_s": 2.0, "stt.fallback_after_s": 0.2}
    overrides.update({f"stt.{k}": v for k, v in settings.items()})
    tree = load_settings(env={}, overrides={"openai.api_key": "sk-main", **overrides}).tree
    return FallbackTranscriber(tree["stt"], openai_api_key=tree["openai"]["api_key"])


HELLO = "Hello, I would like to check the status of my order."


# --- the exact requests ---------------------------------------------------------------------------


def test_openai_receives_a_multipart_request_with_a_pcm16_wav(fake):
    server = fake(lambda r: (200, {"text": "Hello there.", "usage": {"type": "duration"}}, 0))
    service = transcriber(server, model="gpt-4o-transcribe", language="en", prompt="Acme")
    audio = utterance_ulaw(HELLO)
    try:
        assert service.transcribe(audio, "ulaw") == "Hello there."
    finally:
        service.close()
    [request] = server.requests
    assert request["method"] == "POST" and request["path"] == "/v1/audio/transcriptions"
    assert request["headers"]["Authorization"] == "Bearer sk-main"   # openai.api_key by default
    assert request["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = form(request)
    assert fields["model"] == (None, b"gpt-4o-transcribe")
    assert fields["language"] == (None, b"en") and fields["prompt"] == (None, b"Acme")
    filename, wav = fields["file"]
    assert filename.endswith(".wav")
    header = wav_fields(wav)
    assert (header["riff"], header["wave"], header["fmt"], header["data"]) == \
        (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (header["tag"], header["channels"], header["rate"], header["bits"]) == (1, 1, 8000, 16)
    assert (header["byte_rate"], header["align"]) == (16000, 2)
    assert header["data_len"] == 2 * len(audio) == len(wav) - 44
    assert header["size"] == len(wav) - 8
    assert wav[44:] == ulaw_decode(audio)
    assert service.counters == {"openai": {"ok": 1, "failed": 0, "skipped": 0}}


def test_openai_uses_its_own_stt_key_when_set(fake):
    server = fake(lambda r: (200, {"text": "ok"}, 0))
    service = transcriber(server, api_key="sk-stt-only")
    try:
        service.transcribe(b"\xff" * 800, "ulaw")
    finally:
        service.close()
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-stt-only"


@pytest.mark.parametrize("key_in", ["header", "query"])
def test_google_receives_json_with_mulaw_and_the_key_where_configured(fake, key_in):
    answer = {"results": [{"alternatives": [{"transcript": "Hello", "confidence": 0.9}]},
                          {"alternatives": [{"transcript": "there."}]}], "requestId": "7"}
    server = fake(lambda r: (200, answer, 0))
    service = transcriber(server, provider="google", google_api_key="AIza-test",
                          google_key_in=key_in, language="en-GB")
    audio = utterance_ulaw(HELLO)
    try:
        assert service.transcribe(audio, "ulaw") == "Hello there."
    finally:
        service.close()
    [request] = server.requests
    assert request["method"] == "POST" and request["path"] == "/v1/speech:recognize"
    assert request["headers"]["Content-Type"].startswith("application/json")
    if key_in == "header":
        assert request["headers"]["X-Goog-Api-Key"] == "AIza-test" and request["query"] == {}
    else:
        assert request["query"] == {"key": ["AIza-test"]}
        assert "X-Goog-Api-Key" not in request["headers"]
    assert "Authorization" not in request["headers"]
    body = json.loads(request["body"])
    assert body["config"] == {"encoding": "MULAW", "sampleRateHertz": 8000,
                              "languageCode": "en-GB", "model": "phone_call",
                              "enableAutomaticPunctuation": True}
    import base64
    assert base64.b64decode(body["audio"]["content"]) == audio
    assert set(body) == {"config", "audio"} and set(body["audio"]) == {"content"}


def test_google_with_a_bearer_token(fake):
    server = fake(lambda r: (200, {}, 0))
    service = transcriber(server, provider="google", google_bearer_token="ya29.tok")
    try:
        assert service.transcribe(b"\xff" * 800, "ulaw") == ""     # no speech: no results
    finally:
        service.close()
    assert server.requests[0]["headers"]["Authorization"] == "Bearer ya29.tok"


# --- failures -----------------------------------------------------------------------------------

OPENAI_ERRORS = {
    400: {"error": {"message": "Audio file is too short.", "type": "invalid_request_error",
                    "param": "file", "code": "audio_too_short"}},
    401: {"error": {"message": "Incorrect API key provided: sk-main.", "type":
                    "invalid_request_error", "param": None, "code": "invalid_api_key"}},
    429: {"error": {"message": "Rate limit reached for requests", "type": "requests",
                    "param": None, "code": "rate_limit_exceeded"}},
    500: {"error": {"message": "The server had an error while processing your request.",
                    "type": "server_error", "param": None, "code": None}},
}


def drive_turns(fallback: CallFallback, count: int) -> None:
    """`count` caller turns, each reported by the model as failed to transcribe."""
    for n in range(count):
        fallback.on_input(utterance_ulaw(HELLO), 1)
        ms = fallback.turns.position // 8
        fallback.speech_started(f"item_{n}", ms - 1500)
        fallback.speech_stopped(f"item_{n}", ms - 100)
        fallback.committed(f"item_{n}")
        fallback.model_failed(f"item_{n}")


class Spawner:
    """Call.spawn's stand-in: greenlets whose exceptions the test would see."""

    def __init__(self) -> None:
        self.greenlets: list[gevent.Greenlet] = []

    def __call__(self, fn, *args) -> gevent.Greenlet:
        greenlet = gevent.spawn(fn, *args)
        self.greenlets.append(greenlet)
        return greenlet

    def join(self, timeout: float = 10.0) -> None:
        gevent.joinall(self.greenlets, timeout=timeout, raise_error=True)
        assert all(g.dead for g in self.greenlets)


@pytest.mark.parametrize("status", sorted(OPENAI_ERRORS))
def test_an_error_answer_is_logged_once_counted_and_leaves_the_transcript(fake, caplog, status):
    server = fake(lambda r: (status, OPENAI_ERRORS[status], 0))
    service = transcriber(server, fallback_after_s=0.0)
    transcript = Transcript("call-1")
    spawn = Spawner()
    fallback = CallFallback(service, call_id="call-1", line_format="ulaw",
                            transcript=transcript, spawn=spawn)
    caplog.set_level(logging.WARNING, logger="relay.stt")
    try:
        drive_turns(fallback, 3)
        spawn.join()
    finally:
        service.close()
    assert len(server.requests) == 3
    assert service.counters["openai"] == {"ok": 0, "failed": 3, "skipped": 0}
    assert fallback.failed == 3 and fallback.ok == 0
    assert transcript.entries() == []
    warnings = [r for r in caplog.records if r.name.startswith("relay.stt")]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "call-1" in message and f"HTTP {status}" in message
    assert OPENAI_ERRORS[status]["error"]["message"].replace("sk-main", "***") in message
    assert "sk-main." not in message          # a credential is never logged


def test_a_provider_that_does_not_answer_in_time(fake, caplog):
    server = fake(lambda r: (200, {"text": "too late"}, 3.0))
    service = transcriber(server, timeout_s=0.3)
    transcript = Transcript("call-2")
    spawn = Spawner()
    fallback = CallFallback(service, call_id="call-2", line_format="ulaw",
                            transcript=transcript, spawn=spawn)
    caplog.set_level(logging.WARNING, logger="relay.stt")
    started = time.monotonic()
    try:
        drive_turns(fallback, 2)
        assert time.monotonic() - started < 1.0       # nothing waited for the provider
        spawn.join(timeout=10)
    finally:
        service.close()
    assert service.counters["openai"]["failed"] == 2
    assert transcript.entries() == []
    [warning] = [r for r in caplog.records if r.name.startswith("relay.stt")]
    assert "no answer within 0.3 s" in warning.getMessage()


def test_an_unreachable_provider_is_a_failure_with_the_key_redacted(caplog):
    tree = load_settings(env={}, overrides={
        "stt.asyncSttEnabled": True, "stt.asyncSttProvider": "google",
        "stt.google_api_key": "AIza-hidden", "stt.google_key_in": "query",
        "stt.google_base_url": "http://127.0.0.1:9", "stt.timeout_s": 1.0}).tree
    service = FallbackTranscriber(tree["stt"])
    try:
        with pytest.raises(SttError) as err:
            service.transcribe(b"\xff" * 800, "ulaw")
    finally:
        service.close()
    assert "AIza-hidden" not in str(err.value)
    assert service.counters["google"]["failed"] == 1


def test_the_fallback_text_enters_the_transcript_marked_and_duplicates_are_not_silent(fake):
    server = fake(lambda r: (200, {"text": "Hello from the fallback."}, 0))
    service = transcriber(server, fallback_after_s=0.05)
    transcript = Transcript("call-3")
    spawn = Spawner()
    fallback = CallFallback(service, call_id="call-3", line_format="ulaw",
                            transcript=transcript, spawn=spawn)
    try:
        drive_turns(fallback, 1)                        # item_0: failed -> fallback
        spawn.join()
        # the model's transcript of item_0 arrives late: not a second caller turn
        assert fallback.model_transcript("item_0", "Hello from the model.") is False
        # item_1: the model's transcript arrives in time: no request at all
        fallback.on_input(utterance_ulaw(HELLO), 1)
        ms = fallback.turns.position // 8
        fallback.speech_started("item_1", ms - 1000)
        fallback.speech_stopped("item_1", ms - 100)
        fallback.committed("item_1")
        assert fallback.model_transcript("item_1", "In time.") is True
        spawn.join()
    finally:
        service.close()
    assert len(server.requests) == 1
    [caller] = transcript.entries({"caller"})
    assert caller["text"] == "Hello from the fallback."
    assert caller["source"] == "fallback" and caller["provider"] == "openai"
    assert caller["item_id"] == "item_0" and caller["reason"] == "failed"
    assert caller["latency_ms"] >= 0 and caller["audio_ms"] == 1400
    [late] = transcript.entries({"event"})
    assert late["item_id"] == "item_0" and late["model_text"] == "Hello from the model."
    assert fallback.late_model == 1 and len(fallback.turns) == 0


def test_an_answer_after_the_models_own_transcript_is_discarded(fake):
    server = fake(lambda r: (200, {"text": "slow fallback"}, 0.3))
    service = transcriber(server, fallback_after_s=0.0)
    transcript = Transcript("call-4")
    spawn = Spawner()
    fallback = CallFallback(service, call_id="call-4", line_format="ulaw",
                            transcript=transcript, spawn=spawn)
    try:
        drive_turns(fallback, 1)
        gevent.sleep(0.05)
        assert fallback.model_transcript("item_0", "the model's") is True
        spawn.join()
    finally:
        service.close()
    assert fallback.discarded == 1 and transcript.entries() == []


def test_concurrency_is_bounded_per_worker(fake):
    in_flight = []
    peak = []

    def slow(request):
        in_flight.append(1)
        peak.append(len(in_flight))
        gevent.sleep(0.1)
        in_flight.pop()
        return 200, {"text": "ok"}, 0

    server = fake(slow)
    service = transcriber(server, max_concurrent=2)
    try:
        greenlets = [gevent.spawn(service.transcribe, b"\xff" * 800, "ulaw") for _ in range(5)]
        gevent.joinall(greenlets, timeout=10, raise_error=True)
        busy = [gevent.spawn(service.transcribe, b"\xff" * 800, "ulaw") for _ in range(12)]
        gevent.joinall(busy, timeout=10)
    finally:
        service.close()
    assert max(peak) <= 2
    skipped = [g for g in busy if isinstance(g.exception, SttError)]
    assert len(skipped) == 12 - 2 - service.max_waiting
    assert service.counters["openai"]["skipped"] == len(skipped)


def test_the_realtime_key_goes_as_openai_auth_says_an_own_key_as_bearer(fake):
    # Azure OpenAI: openai.auth api-key, and no stt.api_key: the Realtime key, as api-key
    server = fake(lambda r: (200, {"text": "ok"}, 0))
    tree = load_settings(env={}, overrides={
        "openai.api_key": "azure-key", "openai.auth": "api-key",
        "stt.asyncSttEnabled": True, "stt.asyncSttProvider": "openai",
        "stt.openai_base_url": server.base_url, "stt.timeout_s": 2.0}).tree
    for own, expected in (("", {"Api-Key": "azure-key"}),
                          ("sk-stt-only", {"Authorization": "Bearer sk-stt-only"})):
        service = FallbackTranscriber(dict(tree["stt"], api_key=own),
                                      openai_api_key=tree["openai"]["api_key"],
                                      openai_auth=tree["openai"]["auth"])
        try:
            assert service.transcribe(b"\xff" * 800, "ulaw") == "ok"
        finally:
            service.close()
        headers = server.requests[-1]["headers"]
        sent = {k: headers[k] for k in ("Api-Key", "Authorization") if k in headers}
        assert sent == expected
