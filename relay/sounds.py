"""Sound files relay streams to callers itself (greetings), as line-codec bytes.

Owns: reading a WAV file (PCM16 mono at 8, 16 or 24 kHz, or G.711 u-law/A-law at 8 kHz) and
converting it to the call's line codec. relay plays such sounds through its own playout queue
rather than through Asterisk, because a playback on the caller's channel pauses the caller's
media (no barge-in) and one on the bridge reaches the model (it would hear its own prompt).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from relay._g711 import Resampler, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

WAVE_PCM, WAVE_ALAW, WAVE_ULAW = 1, 6, 7


class SoundError(ValueError):
    """A sound file cannot be used; the message says which and why."""


def _chunks(data: bytes, path: Path):
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SoundError(f"{path}: not a WAV file")
    offset = 12
    while offset + 8 <= len(data):
        name, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        yield name, data[offset + 8: offset + 8 + size]
        offset += 8 + size + (size & 1)


@lru_cache(maxsize=32)
def load_sound(path: str, line_format: str = "ulaw") -> bytes:
    """The sound at path as 8 kHz line-codec bytes ('ulaw' or 'alaw')."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SoundError(f"{file}: {exc.strerror}") from None
    fmt = audio = None
    for name, body in _chunks(data, file):
        if name == b"fmt " and len(body) >= 16:
            fmt = struct.unpack_from("<HHIIHH", body)
        elif name == b"data":
            audio = body
    if fmt is None or audio is None:
        raise SoundError(f"{file}: WAV without fmt or data chunk")
    codec, channels, rate, _, _, bits = fmt
    if channels != 1:
        raise SoundError(f"{file}: must be mono, has {channels} channels")
    if codec in (WAVE_ULAW, WAVE_ALAW) and rate == 8000 and bits == 8:
        pcm = ulaw_decode(audio) if codec == WAVE_ULAW else alaw_decode(audio)
    elif codec == WAVE_PCM and bits == 16 and rate in (8000, 16000, 24000):
        pcm = audio[: len(audio) - len(audio) % 2]
        if rate != 8000:
            pcm = Resampler(rate, 8000).process(pcm)
    else:
        raise SoundError(f"{file}: unsupported WAV (codec {codec}, {bits} bit, {rate} Hz); "
                         "use PCM16 mono at 8/16/24 kHz or G.711 at 8 kHz")
    return ulaw_encode(pcm) if line_format == "ulaw" else alaw_encode(pcm)
