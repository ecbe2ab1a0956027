"""Stub for relay/sim/_sim_audio.pyx: the simulated model's append path and VAD in C."""

from typing import Any, Optional, Union

ULAW: int
ALAW: int
PCM16: int

def b64decode_strict(data: Union[bytes, str]) -> Optional[bytes]: ...
def append_audio(text: Union[bytes, str]) -> Optional[bytes]: ...
def frame_level(data: bytes, kind: int) -> float: ...

class FrameVad:
    threshold_dbov: float
    prefix_padding_ms: int
    silence_ms: int
    min_speech_ms: int
    speaking: bool
    def __init__(self, threshold_dbov: float, prefix_padding_ms: int, silence_ms: int,
                 min_speech_ms: int) -> None: ...
    @property
    def run_start_ms(self) -> Optional[int]: ...
    @property
    def silence_start_ms(self) -> Optional[int]: ...
    def reset(self) -> None: ...
    def feed(self, dbov: float, frame_end_ms: int) -> int: ...
    def scan(self, buf: bytearray, offset: int, position: int, frames: int, frame_bytes: int,
             bytes_per_ms: int, kind: int) -> tuple[int, int]: ...

class InputBufferCore:
    fmt: Any
    max_bytes: int
    _buf: bytearray
    _start: int
    _total: int
    _frame_pos: int
    _frame_bytes: int
    _bytes_per_ms: int
    _kind: int
    def append(self, data: bytes, vad: Optional[FrameVad]) -> Optional[list[tuple[int, int]]]: ...
    def _drop_before(self, position: int) -> None: ...
