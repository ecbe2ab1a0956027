"""PCM16 WAV containers: the canonical 44-byte RIFF header and a whole file in memory.

Owns only the byte layout (RIFF/WAVE, a PCM `fmt ` chunk, a `data` chunk); used by the fallback
transcriber (a mono turn) and by call recordings (stereo, header rewritten at the end).
"""

from __future__ import annotations

import struct

HEADER_BYTES = 44


def wav_header(data_bytes: int, channels: int = 1, rate: int = 8000, bits: int = 16) -> bytes:
    """The 44-byte header of a PCM WAV file whose data chunk holds data_bytes."""
    if data_bytes < 0 or data_bytes > 0xFFFFFFFF - 36:
        raise ValueError(f"WAV data size out of range: {data_bytes}")
    block_align = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block_align,
                                    block_align, bits)
            + b"data" + struct.pack("<I", data_bytes))


def pcm16_wav(pcm: bytes, channels: int = 1, rate: int = 8000) -> bytes:
    """A complete WAV file of PCM16 little-endian samples."""
    if len(pcm) % (2 * channels):
        raise ValueError("PCM16 data must hold whole sample frames")
    return wav_header(len(pcm), channels, rate) + pcm
