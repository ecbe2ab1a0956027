"""The RTP side of one call: the caller's audio in, the model's audio out.

Owns, for one call: the receive jitter buffer and the batching of caller frames into
input_audio_buffer.append (with silence filled in while Asterisk sends nothing, so the model's
voice detection can end the turn); the playout queue and the RTP send stream paced by the
worker's pacer (marker and timestamps per talkspurt); conversion between the telephone codec and
the model's format when they differ; and the call's audio statistics. No ARI, no JSON.
CallMedia is compiled (relay/_media.pyx), with the constants its C code uses.
"""

from relay._g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from relay._media import (
    FRAME_S,
    LINE_FORMATS,
    MAX_FILL_S,
    MAX_PAYLOAD,
    SAMPLE_RATE,
    CallMedia,
)

__all__ = ["FRAME_S", "LINE_FORMATS", "MAX_FILL_S", "MAX_PAYLOAD", "SAMPLE_RATE", "CallMedia",
           "decode_line", "encode_line"]


def decode_line(audio: bytes, line_format: str) -> bytes:
    """Line codec bytes -> PCM16 8 kHz (for recordings and the fallback transcriber)."""
    return ulaw_decode(audio) if line_format == "ulaw" else alaw_decode(audio)


def encode_line(pcm: bytes, line_format: str) -> bytes:
    return ulaw_encode(pcm) if line_format == "ulaw" else alaw_encode(pcm)
