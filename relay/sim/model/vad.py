"""Server voice activity detection of the simulated model: frame levels in, turn edges out.

Owns: the decision, frame by frame (20 ms), that the caller started or stopped speaking, from
the frame's level in dBov and the session's turn_detection settings. Time is audio time
(milliseconds of audio received), never the wall clock, so results are deterministic.
No buffers, no I/O.
"""

from __future__ import annotations

from typing import Optional

FRAME_MS = 20
NONE, STARTED, STOPPED = 0, 1, 2
MIN_SPEECH_MS = 40  # a voiced run this long is speech (shorter: a click)
# semantic_vad has no silence setting: its eagerness stands for one.
EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "high": 250, "auto": 500}


def threshold_dbov(threshold: float) -> float:
    """turn_detection.threshold (0..1) as a level: 0.0 -> -60 dBov, 0.5 -> -35, 1.0 -> -10."""
    return -60.0 + 50.0 * threshold


class Vad:
    """Energy VAD with a minimum speech run and a silence hang-over."""

    __slots__ = ("threshold_dbov", "prefix_padding_ms", "silence_ms", "min_speech_ms",
                 "speaking", "run_start_ms", "silence_start_ms")

    def __init__(self, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500, min_speech_ms: int = MIN_SPEECH_MS) -> None:
        self.threshold_dbov = threshold_dbov(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_ms = max(FRAME_MS, silence_duration_ms)
        self.min_speech_ms = max(FRAME_MS, min_speech_ms)
        self.speaking = False
        self.run_start_ms: Optional[int] = None   # first voiced frame of the current run
        self.silence_start_ms: Optional[int] = None

    @classmethod
    def from_turn_detection(cls, td: dict, min_speech_ms: int = MIN_SPEECH_MS) -> "Vad":
        """A VAD for an effective (defaults filled) server_vad or semantic_vad object."""
        if td.get("type") == "semantic_vad":
            silence = EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 500)
            return cls(0.5, 300, silence, min_speech_ms)
        return cls(td.get("threshold", 0.5), td.get("prefix_padding_ms", 300),
                   td.get("silence_duration_ms", 500), min_speech_ms)

    def reset(self) -> None:
        self.speaking = False
        self.run_start_ms = None
        self.silence_start_ms = None

    def feed(self, dbov: float, frame_end_ms: int) -> int:
        """One frame's level; STARTED, STOPPED or NONE."""
        voiced = dbov >= self.threshold_dbov
        if not self.speaking:
            if not voiced:
                self.run_start_ms = None
                return NONE
            if self.run_start_ms is None:
                self.run_start_ms = frame_end_ms - FRAME_MS
            if frame_end_ms - self.run_start_ms >= self.min_speech_ms:
                self.speaking = True
                self.silence_start_ms = None
                return STARTED
            return NONE
        if voiced:
            self.silence_start_ms = None
            return NONE
        if self.silence_start_ms is None:
            self.silence_start_ms = frame_end_ms - FRAME_MS
        if frame_end_ms - self.silence_start_ms >= self.silence_ms:
            self.speaking = False
            self.run_start_ms = None
            return STOPPED
        return NONE
