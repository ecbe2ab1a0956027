"""Server voice activity detection of the simulated model: frame levels in, turn edges out.

Owns: the decision, frame by frame (20 ms), that the caller started or stopped speaking, from
the frame's level in dBov and the session's turn_detection settings. Time is audio time
(milliseconds of audio received), never the wall clock, so results are deterministic.
No buffers, no I/O (the C state machine is relay.sim._sim_audio.FrameVad).
"""

from __future__ import annotations

from relay.sim._sim_audio import FrameVad

FRAME_MS = 20
NONE, STARTED, STOPPED = 0, 1, 2
MIN_SPEECH_MS = 40  # a voiced run this long is speech (shorter: a click)
# semantic_vad has no silence setting: its eagerness stands for one.
EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "high": 250, "auto": 500}
MAX_SETTING_MS = 1 << 53    # longer than any audio: a larger setting (valid JSON) acts the same


def threshold_dbov(threshold: float) -> float:
    """turn_detection.threshold (0..1) as a level: 0.0 -> -60 dBov, 0.5 -> -35, 1.0 -> -10."""
    return -60.0 + 50.0 * threshold


class Vad(FrameVad):
    """Energy VAD with a minimum speech run and a silence hang-over.

    The state machine and the frame levels run in C (relay.sim._sim_audio.FrameVad: `feed`
    one level, or `scan` frames of the input buffer); per frame (audio ms at its end):
    not speaking, a voiced frame starts or extends a run, a run of min_speech_ms is STARTED;
    speaking, an unvoiced frame starts or extends a silence, a silence of silence_ms is STOPPED.
    `run_start_ms` and `silence_start_ms` are None when there is no run or silence.
    """

    __slots__ = ()

    def __init__(self, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500, min_speech_ms: int = MIN_SPEECH_MS) -> None:
        super().__init__(threshold_dbov(threshold), min(prefix_padding_ms, MAX_SETTING_MS),
                         min(max(FRAME_MS, silence_duration_ms), MAX_SETTING_MS),
                         min(max(FRAME_MS, min_speech_ms), MAX_SETTING_MS))

    @classmethod
    def from_turn_detection(cls, td: dict, min_speech_ms: int = MIN_SPEECH_MS) -> "Vad":
        """A VAD for an effective (defaults filled) server_vad or semantic_vad object."""
        if td.get("type") == "semantic_vad":
            silence = EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 500)
            return cls(0.5, 300, silence, min_speech_ms)
        return cls(td.get("threshold", 0.5), td.get("prefix_padding_ms", 300),
                   td.get("silence_duration_ms", 500), min_speech_ms)
