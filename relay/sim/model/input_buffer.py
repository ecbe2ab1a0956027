"""The input audio buffer of one simulated session.

Owns: the audio appended since the last commit or clear (in the session's input format), its
position in audio time, cutting it into 20 ms frames for the VAD (levels and VAD in C:
Vad.scan), and handing out the audio of a committed turn. Bounded: while nobody speaks only the
prefix padding is kept; a turn longer than `max_ms` loses its oldest audio. No events, no I/O.
"""

from __future__ import annotations

from typing import Optional

from relay.sim._sim_audio import ALAW, PCM16, ULAW
from relay.sim.model.audio import AudioFormat
from relay.sim.model.vad import NONE, STARTED, Vad

MAX_BUFFER_MS = 120_000
_KINDS = {"audio/pcmu": ULAW, "audio/pcma": ALAW, "audio/pcm": PCM16}   # samples of a frame


class InputAudioBuffer:
    """Appended audio in absolute byte positions since the session began."""

    __slots__ = ("fmt", "max_bytes", "_buf", "_start", "_total", "_frame_pos", "_frame_bytes",
                 "_bytes_per_ms", "_kind")

    def __init__(self, fmt: AudioFormat, max_ms: int = MAX_BUFFER_MS, start_ms: int = 0) -> None:
        self.fmt = fmt
        self.max_bytes = max_ms * fmt.bytes_per_ms
        self._buf = bytearray()
        self._frame_bytes = fmt.frame_bytes     # the format's, looked up once
        self._bytes_per_ms = fmt.bytes_per_ms
        self._kind = _KINDS.get(fmt.name)
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

    def append(self, data: bytes, vad: Optional[Vad]) -> Optional[list[tuple[int, int]]]:
        """Add audio; with a VAD, the turn edges it found.

        [(STARTED, audio_start_ms) | (STOPPED, audio_end_ms), ...]: audio_start_ms is the first
        voiced frame minus the prefix padding (not before the buffer), audio_end_ms the end of
        the frame that completed the silence.
        """
        buf = self._buf
        buf += data
        self._total += len(data)
        if vad is None:
            if len(buf) > self.max_bytes:
                self._drop_before(self._total - self.max_bytes)
            return None
        edges = None
        fb = self._frame_bytes
        bpm = self._bytes_per_ms
        kind = self._kind
        pos = self._frame_pos
        while pos + fb <= self._total:
            fed, edge = vad.scan(buf, pos - self._start, pos, (self._total - pos) // fb, fb, bpm,
                                 kind)
            pos += fed * fb
            if edge != NONE:
                if edges is None:
                    edges = []
                if edge == STARTED:
                    assert vad.run_start_ms is not None
                    edges.append((edge, max(self._start // bpm,
                                            vad.run_start_ms - vad.prefix_padding_ms)))
                else:
                    edges.append((edge, pos // bpm))
        self._frame_pos = pos
        if edges is not None:
            return edges  # the session takes the turn's audio before anything is trimmed
        if not vad.speaking:
            keep_from = pos - (vad.prefix_padding_ms + vad.min_speech_ms) * bpm
            if keep_from - self._start > max(4096, len(buf) // 2):
                self._drop_before(keep_from)
        elif len(buf) > self.max_bytes:
            self._drop_before(self._total - self.max_bytes)
        return edges

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

    def _drop_before(self, position: int) -> None:
        position = min(max(position, self._start), self._total)
        del self._buf[:position - self._start]
        self._start = position
        if self._frame_pos < position:
            self._frame_pos = position

