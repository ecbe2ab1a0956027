"""Audio formats of a Realtime session, as the simulated model hears and speaks them.

Owns: what a GA format object (`{"type": "audio/pcmu"}`, `audio/pcma`, `audio/pcm` at 24 kHz)
means in bytes per millisecond and per 20 ms frame, the level of one frame (dBov), the
conversion of received audio to 8 kHz u-law/PCM for recognition, and the model's own speech
(relay.sim.speech, voice "assistant") encoded in the output format. No session state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from relay import _g711
from relay.sim import speech

FRAME_MS = 20


@dataclass(frozen=True)
class AudioFormat:
    """One GA audio format: its name, byte rate and frame level function."""

    name: str
    bytes_per_ms: int
    frame_dbov: Callable[[bytes], float]

    @property
    def frame_bytes(self) -> int:
        return self.bytes_per_ms * FRAME_MS

    def as_object(self) -> dict:
        """The GA format object, e.g. {"type": "audio/pcm", "rate": 24000}."""
        if self.name == "audio/pcm":
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": self.name}

    def ms(self, nbytes: int) -> int:
        return nbytes // self.bytes_per_ms

    def to_pcm8k(self, data: bytes) -> bytes:
        """Received audio as PCM16 at 8 kHz."""
        if self.name == "audio/pcmu":
            return _g711.ulaw_decode(data)
        if self.name == "audio/pcma":
            return _g711.alaw_decode(data)
        return _g711.Resampler(24000, 8000).process(data[: len(data) & ~1])

    def to_ulaw8k(self, data: bytes) -> bytes:
        """Received audio as 8 kHz u-law (bit-exact for audio/pcmu)."""
        if self.name == "audio/pcmu":
            return bytes(data)
        if self.name == "audio/pcma":
            return _g711.alaw_to_ulaw(data)
        return _g711.ulaw_encode(self.to_pcm8k(data))


def _alaw_dbov(frame: bytes) -> float:
    return _g711.pcm_dbov(_g711.alaw_decode(frame))


PCMU = AudioFormat("audio/pcmu", 8, _g711.ulaw_dbov)
PCMA = AudioFormat("audio/pcma", 8, _alaw_dbov)
PCM24 = AudioFormat("audio/pcm", 48, _g711.pcm_dbov)
FORMATS = {f.name: f for f in (PCMU, PCMA, PCM24)}


def audio_format(obj: dict) -> AudioFormat:
    """The AudioFormat of a (validated) GA format object."""
    return FORMATS[obj.get("type") or "audio/pcm"]


@lru_cache(maxsize=256)
def speech_audio(text: str, format_name: str) -> bytes:
    """What the model says for `text`, in the output format (cached: many calls, few texts)."""
    pcm = speech.utterance_pcm(text, voice="assistant")
    if format_name == "audio/pcmu":
        return _g711.ulaw_encode(pcm)
    if format_name == "audio/pcma":
        return _g711.alaw_encode(pcm)
    return _g711.Resampler(8000, 24000).process(pcm)
