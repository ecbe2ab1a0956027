"""The input audio buffer of one simulated session.

Owns: the audio appended since the last commit or clear (in the session's input format), its
position in audio time, cutting it into 20 ms frames for the VAD (the appending, the frame
levels and the VAD in C: InputBufferCore, relay/sim/_sim_audio.pyx), and handing out the audio
of a committed turn. Bounded: while nobody speaks only the prefix padding is kept; a turn longer
than `max_ms` loses its oldest audio. No events, no I/O.
"""

from __future__ import annotations

from typing import Optional

from relay.sim._sim_audio import ALAW, PCM16, ULAW, InputBufferCore
from relay.sim.model.audio import AudioFormat

MAX_BUFFER_MS = 120_000
_KINDS = {"audio/pcmu": ULAW, "audio/pcma": ALAW, "audio/pcm": PCM16}   # samples of a frame


class InputAudioBuffer(InputBufferCore):
    """Appended audio in absolute byte positions since the session began. `append(data, vad)`
    (and the trimming, `_drop_before`) is InputBufferCore's, in C: it adds audio and, with a
    VAD, returns the turn edges it found, [(STARTED, audio_start_ms) | (STOPPED, audio_end_ms),
    ...], audio_start_ms being the first voiced frame minus the prefix padding (not before the
    buffer), audio_end_ms the end of the frame that completed the silence; None without a VAD or
    edge."""

    __slots__ = ()

    def __init__(self, fmt: AudioFormat, max_ms: int = MAX_BUFFER_MS, start_ms: int = 0) -> None:
        self.fmt = fmt
        self.max_bytes = max_ms * fmt.bytes_per_ms
        self._buf = bytearray()
        self._frame_bytes = fmt.frame_bytes     # the format's, looked up once
        self._bytes_per_ms = fmt.bytes_per_ms
        self._kind = _KINDS.get(fmt.name, -1)
        self._start = self._total = self._frame_pos = start_ms * fmt.bytes_per_ms

    @property
    def received_ms(self) -> int:
        """Audio time: milliseconds of audio received since the session began."""
        return self._total // self.fmt.bytes_per_ms

    @property
    def start_ms(self) -> int:
        """Audio time of the oldest audio still buffered."""
        return self._start // self.fmt.bytes_per_ms

    @property
    def buffered_ms(self) -> int:
        return len(self._buf) // self.fmt.bytes_per_ms

    def take(self, start_ms: Optional[int] = None, end_ms: Optional[int] = None) -> bytes:
        """The audio between start_ms and end_ms (default: everything), then forget up to end_ms."""
        bpm = self.fmt.bytes_per_ms
        start = self._start if start_ms is None else max(self._start, start_ms * bpm)
        end = self._total if end_ms is None else min(self._total, end_ms * bpm)
        data = bytes(self._buf[start - self._start:max(start, end) - self._start])
        self._drop_before(max(start, end))
        return data

    def clear(self) -> None:
        """Forget everything buffered (the next frame starts at the next byte received)."""
        self._buf.clear()
        self._start = self._frame_pos = self._total
