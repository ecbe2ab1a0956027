"""Fallback transcription, sans-IO parts: the turn buffer, the WAV container, the providers'
request builders and response parsers, and the stt settings."""

from __future__ import annotations

import base64
import json
import struct
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlsplit

import pytest

from relay._g711 import alaw_encode, ulaw_decode, ulaw_encode
from relay.config import ConfigError, load_settings
from relay.stt.providers import (
    ProviderConfig,
    SttError,
    google_parse,
    google_request,
    openai_parse,
    openai_request,
    pcm16_wav,
    redact,
)
from relay.stt.turns import TurnBuffer

# --- the turn buffer --------------------------------------------------------------------------


def ramp(start: int, n: int) -> bytes:
    """n bytes whose values say their position (mod 251), to check exact cuts."""
    return bytes((start + i) % 251 for i in range(n))


def feed(buffer: TurnBuffer, total: int, chunk: int = 320) -> None:
    pos = buffer.position
    while pos < total:
        n = min(chunk, total - pos)
        buffer.feed(ramp(pos, n))
        pos += n


def test_a_turn_is_the_audio_from_audio_start_ms_to_audio_end_ms():
    turns = TurnBuffer(max_turn_s=10, max_pending=4)
    feed(turns, 8 * 1000)                      # 1 s of audio before speech is detected
    turns.started("item_1", 600)               # the model says: speech from 600 ms on
    feed(turns, 8 * 2500)
    turns.stopped("item_1", 2000)              # ... to 2000 ms
    feed(turns, 8 * 2600)
    turn = turns.committed("item_1")
    assert turn is not None and turn.closed and turn.committed
    assert turn.start == 8 * 600
    assert bytes(turn.audio) == ramp(8 * 600, 8 * 1400)
    assert turn.duration_ms == 1400
    assert turns.take("item_1") is turn and len(turns) == 0


def test_the_model_clock_restarts_with_a_new_socket():
    turns = TurnBuffer()
    feed(turns, 8 * 5000)
    turns.set_origin()                         # a new model socket: its 0 ms is here
    feed(turns, 8 * 5800)
    turns.started("item_2", 300)
    turns.stopped("item_2", 700)
    turn = turns.take("item_2")
    assert turn.start == 8 * 5300 and bytes(turn.audio) == ramp(8 * 5300, 8 * 400)


def test_a_start_older_than_the_ring_starts_at_the_ring():
    turns = TurnBuffer(preroll_s=0.5)
    feed(turns, 8 * 4000)
    turns.started("item_1", 0)                 # far before what is still buffered
    turn = turns.pending["item_1"]
    assert turn.start >= 8 * 4000 - 8 * 1100 and turn.start < 8 * 4000
    assert bytes(turn.audio) == ramp(turn.start, 8 * 4000 - turn.start)


def test_a_stop_beyond_what_was_received_closes_when_the_audio_arrives():
    turns = TurnBuffer()
    feed(turns, 8 * 1000)
    turns.started("item_1", 500)
    turns.stopped("item_1", 1200)
    turn = turns.pending["item_1"]
    assert not turn.closed
    feed(turns, 8 * 1500)
    assert turn.closed and bytes(turn.audio) == ramp(8 * 500, 8 * 700)


def test_a_long_turn_keeps_its_first_max_turn_s():
    turns = TurnBuffer(max_turn_s=1.0)
    feed(turns, 800)
    turns.started("item_1", 100)
    feed(turns, 8 * 5000)
    turns.stopped("item_1", 5000)
    turn = turns.take("item_1")
    assert turn.truncated and len(turn.audio) == 8000
    assert bytes(turn.audio) == ramp(800, 8000)


def test_at_most_max_pending_turns_wait_the_oldest_is_dropped():
    turns = TurnBuffer(max_pending=2)
    dropped = []
    for n in range(4):
        feed(turns, 8 * 1000 * (n + 1))
        old = turns.started(f"item_{n}", 1000 * n + 100)
        if old is not None:
            dropped.append(old.item_id)
        turns.stopped(f"item_{n}", 1000 * n + 900)
        turns.committed(f"item_{n}")
    assert dropped == ["item_0", "item_1"] and turns.dropped == 2
    assert list(turns.pending) == ["item_2", "item_3"]
    assert turns.discard("item_2") and not turns.discard("item_2")
    assert turns.buffered_bytes <= 8 * 800 + turns._preroll * 2 + 4096


def test_a_new_start_closes_a_turn_that_never_stopped_and_commit_closes_an_open_one():
    turns = TurnBuffer()
    feed(turns, 8 * 1000)
    turns.started("item_1", 200)
    feed(turns, 8 * 1500)
    turns.started("item_2", 1400)
    first = turns.pending["item_1"]
    assert first.closed and len(first.audio) == 8 * 1300
    feed(turns, 8 * 1700)
    second = turns.committed("item_2")         # a commit without speech_stopped
    assert second.closed and len(second.audio) == 8 * 300
    feed(turns, 8 * 1800)
    assert len(second.audio) == 8 * 300
    assert turns.committed("unknown") is None
    turns.stopped("unknown", 5)                # harmless


def test_take_all_empties_the_buffer_and_closes_the_turn_being_spoken():
    turns = TurnBuffer()
    feed(turns, 8 * 1000)
    turns.started("item_1", 100)
    turns.stopped("item_1", 600)
    turns.committed("item_1")                  # waiting for its transcription
    feed(turns, 8 * 1200)
    turns.started("item_2", 1000)              # stopped, not yet committed
    turns.stopped("item_2", 1100)
    feed(turns, 8 * 1500)
    turns.started("item_3", 1300)              # the caller is still speaking
    feed(turns, 8 * 1800)
    taken = turns.take_all()
    assert [t.item_id for t in taken] == ["item_1", "item_2", "item_3"]
    assert [t.unfinished for t in taken] == [False, False, True]
    assert all(t.closed for t in taken) and len(turns) == 0
    assert bytes(taken[2].audio) == ramp(8 * 1300, 8 * 500)   # its audio so far
    feed(turns, 8 * 2000)
    assert len(taken[2].audio) == 8 * 500 and turns.take_all() == []


def test_the_ring_stays_bounded_without_turns():
    turns = TurnBuffer(preroll_s=1.0)
    feed(turns, 8 * 60_000)
    assert turns.buffered_bytes <= 2 * 8000 + 4096 + 320
    assert turns.position == 8 * 60_000


# --- WAV ------------------------------------------------------------------------------------------


def canonical_header(data_bytes: int, channels: int, rate: int) -> bytes:
    """The 44-byte PCM16 header relay wrote by hand before it used `wave`: the same bytes."""
    align = 2 * channels
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1,
                       channels, rate, rate * align, align, 16, b"data", data_bytes)


@pytest.mark.parametrize("channels, rate", [(1, 8000), (2, 8000), (1, 16000)])
def test_the_wav_is_canonical_pcm(channels, rate):
    pcm = bytes(range(256)) * 12 + bytes(2 * channels * 4)
    wav = pcm16_wav(pcm, channels=channels, rate=rate)
    assert wav == canonical_header(len(pcm), channels, rate) + pcm
    assert pcm16_wav(b"") == canonical_header(0, 1, 8000)
    with pytest.raises(ValueError):
        pcm16_wav(b"\x00\x00\x00", channels=1)


# --- providers: requests ------------------------------------------------------------------------

ULAW = ulaw_encode(struct.pack("<8h", 0, 1000, -1000, 8000, -8000, 32000, -32000, 5))


def multipart(request) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, content) of a multipart/form-data request."""
    head = b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    assert message.is_multipart()
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True)) for part in message.iter_parts()}


def test_openai_request_is_multipart_with_a_pcm16_wav():
    config = ProviderConfig(base_url="http://stt.local/", model="whisper-1", language="en",
                            prompt="Acme orders", api_key="sk-secret")
    request = openai_request(ULAW, "ulaw", config)
    assert request.method == "POST" and request.url == "http://stt.local/v1/audio/transcriptions"
    assert request.headers["Authorization"] == "Bearer sk-secret"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    parts = multipart(request)
    assert set(parts) == {"model", "language", "prompt", "file", "response_format"}
    assert parts["model"] == (None, b"whisper-1")
    assert parts["language"] == (None, b"en") and parts["prompt"] == (None, b"Acme orders")
    filename, wav = parts["file"]
    assert filename == "turn.wav"
    assert wav[:44] == canonical_header(16, channels=1, rate=8000)
    assert wav[44:] == ulaw_decode(ULAW)


def test_openai_request_defaults_and_a_base_url_ending_in_v1():
    request = openai_request(alaw_encode(b"\x10\x00" * 4), "alaw",
                             ProviderConfig(base_url="https://api.openai.com/v1", api_key="k"))
    assert request.url == "https://api.openai.com/v1/audio/transcriptions"
    parts = multipart(request)
    assert parts["model"] == (None, b"gpt-4o-mini-transcribe")
    assert "language" not in parts and "prompt" not in parts
    assert len(parts["file"][1]) == 44 + 8


def test_google_request_json_and_key_placement():
    config = ProviderConfig(base_url="http://g.local", api_key="AIza-secret", language="en-GB")
    request = google_request(ULAW, "ulaw", config)
    assert request.url == "http://g.local/v1/speech:recognize"
    assert request.headers["X-Goog-Api-Key"] == "AIza-secret"
    assert "Authorization" not in request.headers and "key=" not in request.url
    body = json.loads(request.body)
    assert body == {"config": {"encoding": "MULAW", "sampleRateHertz": 8000,
                               "languageCode": "en-GB", "model": "phone_call",
                               "enableAutomaticPunctuation": True},
                    "audio": {"content": base64.b64encode(ULAW).decode()}}
    query = google_request(ULAW, "ulaw", ProviderConfig(base_url="http://g.local",
                                                        api_key="AIza-q", key_in="query"))
    assert parse_qs(urlsplit(query.url).query) == {"key": ["AIza-q"]}
    assert "X-Goog-Api-Key" not in query.headers
    bearer = google_request(ULAW, "ulaw", ProviderConfig(base_url="http://g.local",
                                                         bearer_token="ya29.token"))
    assert bearer.headers["Authorization"] == "Bearer ya29.token"
    assert json.loads(bearer.body)["config"]["languageCode"] == "en-US"


def test_google_request_sends_a_law_as_linear16():
    alaw = alaw_encode(b"\x10\x00\xf0\xff" * 4)
    body = json.loads(google_request(alaw, "alaw", ProviderConfig(base_url="http://g",
                                                                  api_key="k")).body)
    assert body["config"]["encoding"] == "LINEAR16"
    assert len(base64.b64decode(body["audio"]["content"])) == 2 * len(alaw)


# --- providers: answers -------------------------------------------------------------------------


def test_openai_answers():
    assert openai_parse(200, b'{"text": " Hello there. ", "usage": {}}') == "Hello there."
    with pytest.raises(SttError) as err:
        openai_parse(401, json.dumps({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}).encode())
    assert err.value.status == 401
    assert str(err.value) == "HTTP 401: Incorrect API key provided (invalid_api_key)"
    with pytest.raises(SttError, match="unexpected answer"):
        openai_parse(200, b'{"nothing": 1}')
    with pytest.raises(SttError, match="HTTP 502: Bad gateway"):
        openai_parse(502, b"Bad gateway")


def test_google_answers_join_every_results_first_alternative():
    body = {"results": [
        {"alternatives": [{"transcript": "Hello I would like", "confidence": 0.9},
                          {"transcript": "Yellow I would bike"}], "resultEndTime": "1.5s"},
        {"alternatives": [{"transcript": " to check my order.", "confidence": 0.8}]},
        {"alternatives": []}],
        "totalBilledTime": "2s", "requestId": "1"}
    assert google_parse(200, json.dumps(body).encode()) == \
        "Hello I would like to check my order."
    assert google_parse(200, b'{"totalBilledTime": "1s"}') == ""     # no speech found
    with pytest.raises(SttError) as err:
        google_parse(429, json.dumps({"error": {"code": 429, "message": "Quota exceeded",
                                                "status": "RESOURCE_EXHAUSTED"}}).encode())
    assert str(err.value) == "HTTP 429: Quota exceeded (RESOURCE_EXHAUSTED)"


def test_redact_hides_secrets():
    assert redact("GET /x?key=AIza-1 failed (AIza-1)", ("AIza-1", "")) == \
        "GET /x?key=*** failed (***)"


# --- settings -----------------------------------------------------------------------------------


def test_stt_settings_from_the_environment_with_the_original_names():
    settings = load_settings(env={"ASYNC_STT_ENABLED": "true", "ASYNC_STT_PROVIDER": "google",
                                  "GOOGLE_STT_API_KEY": "AIza-env", "ASYNC_STT_TIMEOUT_S": "4",
                                  "ASYNC_STT_FALLBACK_AFTER_S": "2.5", "RECORD_CALLS": "1",
                                  "ASYNC_STT_END_OF_CALL_WAIT_S": "0",
                                  "RETENTION_DAYS": "30"})
    stt = settings.tree["stt"]
    assert stt["asyncSttEnabled"] is True and stt["asyncSttProvider"] == "google"
    assert stt["google_api_key"] == "AIza-env" and stt["timeout_s"] == 4.0
    assert stt["fallback_after_s"] == 2.5 and stt["end_of_call_wait_s"] == 0.0
    assert settings.tree["call"]["record"] is True and settings.tree["call"]["retention_days"] == 30
    assert settings.redacted()["stt"]["google_api_key"] == "***"


def test_stt_settings_are_checked():
    with pytest.raises(ConfigError, match="asyncSttProvider"):
        load_settings(env={"ASYNC_STT_PROVIDER": "azure"})
    with pytest.raises(ConfigError, match="google_api_key"):
        load_settings(env={"ASYNC_STT_ENABLED": "1", "ASYNC_STT_PROVIDER": "google"})
    with pytest.raises(ConfigError, match="stt.api_key"):
        load_settings(env={"ASYNC_STT_ENABLED": "1"})
    with pytest.raises(ConfigError, match="asyncSttEnabled"):
        load_settings(env={"ASYNC_STT_ENABLED": "maybe"})
    with pytest.raises(ConfigError, match="google_key_in"):
        load_settings(env={"GOOGLE_STT_KEY_IN": "body"})
    with pytest.raises(ConfigError, match="timeout_s"):
        load_settings(overrides={"stt.timeout_s": 0}, env={})
    for wait in ("-1", "61"):
        with pytest.raises(ConfigError, match="end_of_call_wait_s"):
            load_settings(env={"ASYNC_STT_END_OF_CALL_WAIT_S": wait})
    assert load_settings(env={}).tree["stt"]["end_of_call_wait_s"] == 5.0
    assert load_settings(env={"ASYNC_STT_ENABLED": "1", "OPENAI_API_KEY": "sk-1"}).tree["stt"][
        "asyncSttEnabled"]
