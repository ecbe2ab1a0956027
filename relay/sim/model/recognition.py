"""What the simulated model "heard" in a committed turn: which phrasebook phrase, if any.

Owns: recognising a caller phrase in received audio. u-law arrives bit-exact through relay, so
for audio/pcmu the exact fingerprint of relay.sim.speech.identify() decides. For audio/pcma and
24 kHz PCM the bytes were transcoded on the way, so the turn's level envelope (dBov per 20 ms)
is compared with each phrase's envelope instead (strict tolerance, best match wins).
No session state, no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

from relay import _g711
from relay.sim import speech
from relay.sim.model.audio import PCMU, AudioFormat

FRAME_BYTES_8K = 320  # 20 ms of PCM16 at 8 kHz
FLOOR_DBOV = -60.0
MAX_OFFSET_FRAMES = 60  # where the phrase may start in the turn (prefix padding, lead-in)
MAX_MEAN_DIFF_DB = 4.0


def recognise(audio: bytes, fmt: AudioFormat, phrases: Sequence[str]) -> Optional[str]:
    """The phrase of `phrases` that `audio` (in `fmt`) contains, or None."""
    if not phrases or not audio:
        return None
    found = speech.identify(fmt.to_ulaw8k(audio), phrases)
    if found is not None or fmt is PCMU:
        return found
    return _by_envelope(envelope(fmt.to_pcm8k(audio)), phrases)


def envelope(pcm8k: bytes) -> tuple[float, ...]:
    """Level of each 20 ms frame of 8 kHz PCM16, floored at -60 dBov."""
    return tuple(max(FLOOR_DBOV, _g711.pcm_dbov(pcm8k[i:i + FRAME_BYTES_8K]))
                 for i in range(0, len(pcm8k) - FRAME_BYTES_8K + 1, FRAME_BYTES_8K))


@lru_cache(maxsize=512)
def _reference(text: str) -> tuple[float, ...]:
    return envelope(speech.utterance_pcm(text))


def _distance(received: tuple[float, ...], ref: tuple[float, ...]) -> float:
    """Mean absolute level difference at the best alignment of ref inside received."""
    best = float("inf")
    span = len(ref)
    last = min(MAX_OFFSET_FRAMES, len(received) - span)
    for offset in range(0, last + 1):
        total = 0.0
        for a, b in zip(received[offset:offset + span], ref):
            total += abs(a - b)
            if total >= best * span:
                break
        best = min(best, total / span)
    return best


def _by_envelope(received: tuple[float, ...], phrases: Sequence[str]) -> Optional[str]:
    best_text, best = None, MAX_MEAN_DIFF_DB
    for text in phrases:
        ref = _reference(text)
        if not ref or len(ref) > len(received):
            continue
        score = _distance(received, ref)
        if score < best:
            best_text, best = text, score
    return best_text
