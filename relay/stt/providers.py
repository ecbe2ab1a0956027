"""The fallback speech-to-text providers: the exact HTTP request each one gets, and its answer.

Owns, per provider, a pure request builder (turn audio in, a `requests.PreparedRequest` out:
nothing is sent here) and a response parser (status and body in, the text out, or `SttError`
carrying the provider's own error message):

- OpenAI `POST {base}/v1/audio/transcriptions`, `Authorization: Bearer KEY` (or `api-key: KEY`,
  Azure OpenAI, when `auth` is "api-key": see FallbackTranscriber), multipart/form-data
  with `file` (a PCM16 8 kHz mono WAV), `model`, optional `language` and `prompt`; answer
  `{"text": ...}`, errors `{"error": {"message", "type", "code"}}`.
- Google Speech-to-Text V1 `POST {base}/v1/speech:recognize` with JSON `config` (MULAW or
  LINEAR16, 8000 Hz, languageCode, model phone_call, automatic punctuation) and base64
  `audio.content`; the API key as `?key=` or `X-Goog-Api-Key`, or an OAuth bearer token; answer
  `{"results": [{"alternatives": [{"transcript": ...}]}]}` (no `results`: no speech), errors
  `{"error": {"code", "message", "status"}}`.

Credentials are only put into requests; error messages never contain them (see `redact`).
"""

from __future__ import annotations

import base64
import io
import json
import wave
from dataclasses import dataclass
from typing import Any, Callable, Optional

import requests

from relay._g711 import alaw_decode, ulaw_decode

OPENAI_DEFAULT_MODEL = "gpt-4o-mini-transcribe"
GOOGLE_DEFAULT_MODEL = "phone_call"
GOOGLE_DEFAULT_LANGUAGE = "en-US"
MAX_MESSAGE = 300


class SttError(Exception):
    """A transcription that did not work: the provider's message (or what went wrong), and the
    HTTP status when there was one (None: timeout, connection failure, bad answer)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status}: {self.message}"


@dataclass(frozen=True)
class ProviderConfig:
    """What a provider needs from the settings (the `stt` section), credentials resolved."""

    base_url: str
    model: str = ""
    language: str = ""
    prompt: str = ""
    api_key: str = ""             # OpenAI key, or Google API key
    bearer_token: str = ""        # Google OAuth access token (used when there is no API key)
    key_in: str = "header"        # Google API key placement: "header" or "query"
    auth: str = "bearer"          # OpenAI key header: "bearer" or "api-key" (Azure OpenAI)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_key, self.bearer_token) if s)


def pcm16(audio: bytes, line_format: str) -> bytes:
    """Line codec bytes (u-law or A-law at 8 kHz) -> PCM16 little-endian."""
    return ulaw_decode(audio) if line_format == "ulaw" else alaw_decode(audio)


def pcm16_wav(pcm: bytes, channels: int = 1, rate: int = 8000) -> bytes:
    """A whole WAV file (the standard library's `wave`: the canonical 44-byte PCM header) of
    PCM16 little-endian samples."""
    if len(pcm) % (2 * channels):
        raise ValueError("PCM16 data must hold whole sample frames")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.setnframes(len(pcm) // (2 * channels))
        wav.writeframesraw(pcm)
    return out.getvalue()


# OpenAI
def openai_request(audio: bytes, line_format: str,
                   config: ProviderConfig) -> requests.PreparedRequest:
    """POST {base}/v1/audio/transcriptions with the turn as a PCM16 8 kHz mono WAV."""
    fields: list[tuple[str, Any]] = [
        ("model", (None, config.model or OPENAI_DEFAULT_MODEL)),
        ("response_format", (None, "json")),
    ]
    if config.language:
        fields.append(("language", (None, config.language)))
    if config.prompt:
        fields.append(("prompt", (None, config.prompt)))
    fields.append(("file", ("turn.wav", pcm16_wav(pcm16(audio, line_format)), "audio/wav")))
    return requests.Request(
        "POST", _join(config.base_url, "/v1/audio/transcriptions"),
        headers={**openai_auth_header(config.auth, config.api_key),
                 "Accept": "application/json"},
        files=fields).prepare()


def openai_auth_header(auth: str, api_key: str) -> dict[str, str]:
    """`Authorization: Bearer KEY` (OpenAI) or `api-key: KEY` (Azure OpenAI), as openai.auth."""
    if auth == "api-key":
        return {"api-key": api_key}
    if auth != "bearer":
        raise ValueError(f"unknown auth {auth!r} (bearer or api-key)")
    return {"Authorization": f"Bearer {api_key}"}


def openai_parse(status: int, body: bytes) -> str:
    """The text of a transcription answer; SttError with OpenAI's message otherwise."""
    data = _json(body)
    if status != 200:
        raise SttError(_error_message(data, body), status)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise SttError(f"unexpected answer: {_snippet(body)}", status)
    return data["text"].strip()


# Google Speech-to-Text V1
def google_request(audio: bytes, line_format: str,
                   config: ProviderConfig) -> requests.PreparedRequest:
    """POST {base}/v1/speech:recognize: u-law as MULAW, anything else as LINEAR16."""
    if line_format == "ulaw":
        encoding, content = "MULAW", audio
    else:
        encoding, content = "LINEAR16", pcm16(audio, line_format)
    body = {
        "config": {
            "encoding": encoding,
            "sampleRateHertz": 8000,
            "languageCode": config.language or GOOGLE_DEFAULT_LANGUAGE,
            "model": config.model or GOOGLE_DEFAULT_MODEL,
            "enableAutomaticPunctuation": True,
        },
        "audio": {"content": base64.b64encode(content).decode("ascii")},
    }
    headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
    params = {}
    if config.api_key:
        if config.key_in == "query":
            params["key"] = config.api_key
        else:
            headers["X-Goog-Api-Key"] = config.api_key
    elif config.bearer_token:
        headers["Authorization"] = f"Bearer {config.bearer_token}"
    return requests.Request(
        "POST", _join(config.base_url, "/v1/speech:recognize"), headers=headers, params=params,
        data=json.dumps(body, separators=(",", ":")).encode()).prepare()


def google_parse(status: int, body: bytes) -> str:
    """The transcripts of every result's first alternative, joined; "" when no speech."""
    data = _json(body)
    if status != 200:
        raise SttError(_error_message(data, body), status)
    if not isinstance(data, dict):
        raise SttError(f"unexpected answer: {_snippet(body)}", status)
    texts = []
    for result in data.get("results") or []:
        alternatives = result.get("alternatives") if isinstance(result, dict) else None
        if alternatives and isinstance(alternatives[0], dict):
            text = str(alternatives[0].get("transcript", "")).strip()
            if text:
                texts.append(text)
    return " ".join(texts)


@dataclass(frozen=True)
class Provider:
    """A provider's name, request builder and response parser."""

    name: str
    build: Callable[[bytes, str, ProviderConfig], requests.PreparedRequest]
    parse: Callable[[int, bytes], str]


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", openai_request, openai_parse),
    "google": Provider("google", google_request, google_parse),
}


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """text with every secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# helpers
def _join(base: str, path: str) -> str:
    base = base.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + path


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_message(data: Any, body: bytes) -> str:
    """The provider's own message: {"error": {"message": ...}} for both OpenAI and Google."""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
            code = error.get("code") if isinstance(error.get("code"), str) else error.get("status")
            return (f"{message} ({code})" if code else message)[:MAX_MESSAGE]
        if isinstance(error, str):
            return error[:MAX_MESSAGE]
    return _snippet(body) or "no error message"


def _snippet(body: bytes) -> str:
    return body[:MAX_MESSAGE].decode("utf-8", "replace").strip()
