"""Speech-like audio for the simulators, deterministic from the text it stands for.

Owns: turning a sentence into a few seconds of audio that behaves like speech for everything
relay and the simulated model measure (syllable rhythm, voiced pitch, formants, pauses between
words, a realistic level), and recognising such audio again by its exact bytes.

It is not a text-to-speech engine: the words cannot be understood. But the same text always gives
the same bytes, so the simulated model can "transcribe" a caller's turn by finding which known
phrase's audio it received (G.711 passes through relay bit-exact). Pure Python, cached per text.
"""

from __future__ import annotations

import math
import random
import zlib
from functools import lru_cache
from typing import Iterable, Optional

SAMPLE_RATE = 8000
MS_PER_CHARACTER = 60          # speaking rate: about 12 characters a second
MIN_DURATION_MS = 400
MAX_DURATION_MS = 12000
TARGET_DBOV = -18.0            # speech level on a phone line
FINGERPRINT_BYTES = 80         # how much of an utterance's start identifies it (10 ms of u-law)

# (F1, F2, F3) in Hz of a few vowels; a syllable picks one.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
           (300, 870, 2240), (660, 1720, 2410), (490, 1350, 1690))
_VOICE_PITCH_HZ = {"caller": 118.0, "assistant": 205.0}


def duration_ms_for(text: str) -> int:
    """How long the utterance of `text` lasts, in whole 20 ms frames."""
    ms = min(MAX_DURATION_MS, max(MIN_DURATION_MS, MS_PER_CHARACTER * len(text.strip())))
    return ms - ms % 20


def _resonator(f_hz: float, bandwidth_hz: float, rate: int) -> tuple[float, float, float]:
    """Coefficients (gain, a1, a2) of a two-pole formant resonator."""
    r = math.exp(-math.pi * bandwidth_hz / rate)
    a1 = 2.0 * r * math.cos(2.0 * math.pi * f_hz / rate)
    a2 = -r * r
    return 1.0 - r, a1, a2


def _syllable_plan(text: str, total: int, rnd: random.Random) -> list[tuple[int, int, int]]:
    """(start, length, vowel index) of each voiced syllable, in samples, with word gaps."""
    words = text.split() or ["..."]
    letters = sum(len(w) for w in words)
    gap = int(0.06 * SAMPLE_RATE)
    usable = max(total - gap * (len(words) + 1), total // 2)
    plan, cursor = [], gap
    for word in words:
        word_len = max(int(usable * len(word) / max(letters, 1)), int(0.12 * SAMPLE_RATE))
        syllables = max(1, round(len(word) / 3))
        per = word_len // syllables
        for _ in range(syllables):
            if cursor + per > total - gap // 2:
                break
            plan.append((cursor, per, rnd.randrange(len(_VOWELS))))
            cursor += per
        cursor += gap
    return plan


@lru_cache(maxsize=512)
def utterance_pcm(text: str, voice: str = "caller", duration_ms: Optional[int] = None) -> bytes:
    """PCM16 little-endian at 8 kHz: speech-like audio standing for `text`."""
    total = SAMPLE_RATE * (duration_ms or duration_ms_for(text)) // 1000
    rnd = random.Random(zlib.crc32(f"{voice}:{text}".encode()))
    base_pitch = _VOICE_PITCH_HZ.get(voice, 150.0) * (0.9 + 0.2 * rnd.random())
    samples = [0.0] * total
    for start, length, vowel in _syllable_plan(text, total, rnd):
        formants = [_resonator(f * (0.95 + 0.1 * rnd.random()), 60 + 40 * i, SAMPLE_RATE)
                    for i, f in enumerate(_VOWELS[vowel])]
        states = [[0.0, 0.0] for _ in formants]
        pitch = base_pitch * (0.85 + 0.3 * rnd.random())
        period = SAMPLE_RATE / pitch
        next_pulse = 0.0
        attack = max(1, length // 5)
        for n in range(length):
            # Glottal excitation: one pulse per pitch period, a little breath noise.
            x = rnd.uniform(-0.02, 0.02)
            if n >= next_pulse:
                x += 1.0
                next_pulse += period * (1.0 + 0.01 * rnd.uniform(-1, 1))
            y = 0.0
            for (gain, a1, a2), state in zip(formants, states):
                out = gain * x + a1 * state[0] + a2 * state[1]
                state[1], state[0] = state[0], out
                y += out
            envelope = min(1.0, n / attack, (length - n) / attack)
            samples[start + n] = y * envelope
    return _normalise(samples, TARGET_DBOV)


def _normalise(samples: list[float], target_dbov: float) -> bytes:
    voiced = [s for s in samples if s]
    rms = math.sqrt(sum(s * s for s in voiced) / len(voiced)) if voiced else 0.0
    scale = (32768.0 * 10 ** (target_dbov / 20.0) / rms) if rms else 0.0
    out = bytearray(2 * len(samples))
    for i, s in enumerate(samples):
        v = int(round(s * scale))
        v = 32767 if v > 32767 else (-32768 if v < -32768 else v)
        out[2 * i] = v & 0xFF
        out[2 * i + 1] = (v >> 8) & 0xFF
    return bytes(out)


@lru_cache(maxsize=512)
def utterance_ulaw(text: str, voice: str = "caller", duration_ms: Optional[int] = None) -> bytes:
    """The same utterance as G.711 u-law at 8 kHz (one byte per sample)."""
    from relay._g711 import ulaw_encode

    return ulaw_encode(utterance_pcm(text, voice, duration_ms))


def fingerprint(ulaw: bytes) -> bytes:
    """The bytes that identify an utterance: a stretch from its first voiced syllable."""
    offset = int(0.1 * SAMPLE_RATE)  # past the leading word gap and the attack
    return ulaw[offset:offset + FINGERPRINT_BYTES]


def identify(received_ulaw: bytes, phrases: Iterable[str], voice: str = "caller") -> Optional[str]:
    """Which of `phrases` the received u-law audio contains, or None."""
    for text in phrases:
        if fingerprint(utterance_ulaw(text, voice)) in received_ulaw:
            return text
    return None
