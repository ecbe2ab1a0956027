"""Stub for relay/sim/_sim_rtp.pyx: the simulated PBX's per-packet work in C."""

from array import array
from collections import deque
from typing import Any, Callable, Optional, Sequence

AGENT_HANGOVER_S: float
MAX_TURNS_KEPT: int
VOICE_DBOV: float
FRAME_TICKS: int
FRAME_SAMPLES: int

class CaptureCore:
    times: array
    hdr: array
    tss: array
    payload: bytearray
    max_packets: int
    keep_audio: bool
    dropped: int
    malformed: int
    foreign_count: int
    def __init__(self, max_packets: int = 90_000, keep_audio: bool = True) -> None: ...
    def __len__(self) -> int: ...
    def add(self, now: float, pt: int, marker: bool, seq: int, ts: int, ssrc: int,
            payload: Any, foreign: bool) -> None: ...

class AgentActivity:
    voiced_packets: int
    on_onset: Optional[Callable[[], None]]
    turns: deque[tuple[float, float]]
    barge_ins: deque[tuple[float, float]]
    turn_end_at: Optional[float]
    barge_in_at: Optional[float]
    def __init__(self, on_onset: Optional[Callable[[], None]] = None) -> None: ...
    @property
    def speaking_since(self) -> Optional[float]: ...
    @property
    def last_voice_at(self) -> Optional[float]: ...
    @property
    def last_packet_at(self) -> Optional[float]: ...
    def caller_speaks(self, start: float, end: float) -> None: ...
    def update(self, now: float, voiced: bool) -> None: ...
    def speaking(self, now: float) -> bool: ...

class SourceCore:
    audio: Optional[bytes]
    start_tick: int
    loop: bool
    muted: bool
    length: int
    label: str
    def frame(self, tick: int) -> Optional[bytes]: ...

class EndpointCore:
    capture: Any
    activity: Optional[AgentActivity]
    inbound: Any
    packed_remote: Optional[bytes]
    received: int
    t0: float
    payload_type: int
    single: Optional[SourceCore]
    sources: tuple
    softmix: bool
    override: Optional[SourceCore]
    ssrc: int
    seq: int
    ts: int
    last_tick: int
    packets_sent: int
    octets_sent: int
    markers_sent: int
    short_sent: int
    send_errors: int
    fd: int
    @property
    def first_sent_at(self) -> Optional[float]: ...
    @property
    def last_sent_at(self) -> Optional[float]: ...
    def on_datagram(self, data: bytes, name: bytes, now: float) -> None: ...
    def source_of(self, name: bytes) -> tuple: ...
    def take(self, now: float, data: Any, foreign: bool, source: Optional[tuple]) -> None: ...
    def next_packet(self, tick: int) -> Optional[bytes]: ...
    def sent(self, n: int, now: float) -> None: ...

def frames_at(sources: tuple, tick: int) -> list[bytes]: ...

def send_slot(sockets: Any, endpoints: Sequence[EndpointCore], tick: int,
              now: float) -> list: ...
