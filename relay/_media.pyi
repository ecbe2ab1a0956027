"""The per-call media path as extension types (Cython: relay/_media.pyx), re-exported by
relay/playout.py and relay/call_media.py."""

from typing import Callable, Optional

from relay._rtp import JitterBuffer, RtpSender

SAMPLE_RATE: int        # 8000
FRAME_S: float          # 0.020
FRAME_BYTES: int        # 160: 20 ms of G.711 at 8 kHz
BYTES_PER_MS: int       # 8
MAX_FILL_S: float       # at most this much silence is added in one go
MAX_PAYLOAD: int        # 320: larger RTP payloads are refused
# agent audio format -> (externalMedia format, RTP payload type, silence byte)
LINE_FORMATS: dict[str, tuple[str, int, int]]

class ItemProgress:
    """How much audio of one assistant item came from the model and how much was sent."""

    item_id: str
    received: int
    sent: int
    finished: bool      # the model said output_audio.done for it
    dropped: bool       # flushed by a barge-in: further audio is ignored

    def __init__(self, item_id: str, received: int = 0, sent: int = 0, finished: bool = False,
                 dropped: bool = False) -> None: ...
    @property
    def fully_played(self) -> bool: ...
    def heard_ms(self) -> int:
        """Milliseconds of this item the caller heard (a partial frame counts for what was sent),
        never beyond what was received."""

class PlayoutQueue:
    """Frames of model audio for one caller, bounded by max_bytes."""

    max_bytes: int
    frame_bytes: int
    queued_bytes: int                     # read-only, like the three below
    items: dict[str, ItemProgress]        # the last max_items items
    overflow_bytes: int
    last_item: Optional[ItemProgress]     # the item of the last frame sent

    def __init__(self, max_bytes: int = 120 * 8000, frame_bytes: int = FRAME_BYTES,
                 max_items: int = 64) -> None: ...
    def __bool__(self) -> bool: ...
    def item(self, item_id: str) -> ItemProgress: ...
    def add(self, item_id: str, audio: bytes) -> int:
        """Queue audio of an item; returns the bytes accepted (the rest is counted as overflow)."""
    def finish(self, item_id: str) -> None:
        """The model sent all of this item's audio: its last partial frame may now go."""
    def next_frame(self) -> Optional[bytes]:
        """The next frame to send (a short one only at the end of a finished item), or None."""
    def flush(self) -> Optional[ItemProgress]:
        """Barge-in: drop everything queued, refuse the rest of the items concerned, and return
        the item the caller was hearing (None when nothing was being played)."""
    def drop_item(self, item_id: str) -> None:
        """Ignore any further audio of this item (its response was cancelled)."""

class SendQueue:
    """RTP datagrams waiting for the socket's next batched send (CallMedia puts its frames
    here in C; the first datagram of a batch calls schedule(), once)."""

    def __init__(self, schedule: Callable[[], None]) -> None: ...
    def __len__(self) -> int: ...
    def put(self, packet: bytes, address: bytes) -> None: ...
    def take(self) -> list[tuple[bytes, bytes]]:
        """Every datagram queued, in order; the queue is empty afterwards."""

class CallMedia:
    """Audio of one call. on_rtp() is fed by the worker's socket, tick() by the pacer.

    The call's per-tick logic runs only on its events: on_played for each frame sent while
    play_events is set, on_drained once when drained_wanted and nothing is queued, on_idle_tick
    once at the first tick that sends nothing while idle_tick_wanted, on_housekeeping(now)
    every housekeeping_s."""

    line_format: str        # read-only, like every attribute but on_input, enabled, _last_rtp_at
    model_format: str
    jitter: JitterBuffer
    sender: RtpSender
    playout: PlayoutQueue
    # each chunk of caller audio handed to the model, in the line codec, silence fill
    # included (recording, fallback transcription); set by the call only when needed
    on_input: Optional[Callable[[bytes], None]]
    enabled: bool
    frames_out: int
    talkspurts: int
    silence_filled_bytes: int
    last_frame_out_at: float
    jitter_samples: float   # RFC 3550 interarrival jitter of caller packets
    _last_rtp_at: float
    _first_timestamp: int   # the RTP timestamp of a frame sent by the first tick
    play_events: bool
    on_drained: Optional[Callable[[], None]]
    drained_wanted: bool
    on_idle_tick: Optional[Callable[[], None]]
    idle_tick_wanted: bool
    on_housekeeping: Optional[Callable[[float], None]]
    on_tick_failed: Optional[Callable[[BaseException], None]]   # the pacer dropped the stream
    housekeeping_s: float

    def __init__(self, *, model_format: str, send_rtp: Callable[[bytes], None],
                 send_to_model: Callable[[bytes, Optional[float]], None], jitter_depth: int = 3,
                 append_frames: int = 2, playout_max_s: float = 120.0,
                 on_played: Optional[Callable[[bytes], None]] = None,
                 on_heard: Optional[Callable[[bytes], None]] = None,
                 on_model_audio_latency: Optional[Callable[[float], None]] = None,
                 jitter_adaptive: bool = False, jitter_max_depth: int = 8) -> None:
        """jitter_adaptive: the jitter buffer's depth starts at one frame and follows the
        measured lateness of caller packets up to jitter_max_depth frames (JitterBuffer);
        otherwise it stays jitter_depth. The silence fill waits (depth + 1) frames without a
        packet, the current depth; an adaptive call also sends caller audio short of a full
        append once the next packet is a quarter frame overdue (a talkspurt's end)."""
    @property
    def ticks(self) -> int:
        """Pacer ticks so far: the frame sent by the current tick has index ticks - 1."""
    @property
    def started_at(self) -> Optional[float]: ...
    def start(self, now: float) -> None: ...
    def attach_sink(self, queue: Optional[SendQueue], address: Optional[bytes]) -> None:
        """Send frames by putting them on the socket's send queue instead of send_rtp."""
    def on_rtp(self, data: bytes, now: float) -> None: ...
    def add_model_audio(self, item_id: str, audio: bytes,
                        arrived: Optional[float] = None) -> int:
        """Queue a delta from the model (converted to the line codec when needed). arrived
        (time.monotonic() of its event) starts the model-audio latency clock when the playout
        was idle: the time to its first RTP frame is relay's own delay, not queued speech."""
    def tick(self, now: float) -> None:
        """One 20 ms frame time: send the next frame, if any; keep the input flowing; then the
        call's events that are due."""
    def detach(self) -> None:
        """Once the call has ended: every callback forgotten (each holds the call), disabled
        for good."""
    def flush_playout(self) -> Optional[ItemProgress]:
        """Barge-in: nothing more is sent from what was queued; returns the item cut short."""
    def stats(self) -> dict:
        """The call's audio figures: the jitter buffer's counters, jitter_ms (RFC 3550),
        jitter_depth / jitter_depth_ms (its current depth, frames / ms) and jitter_depth_max /
        jitter_depth_max_ms (the deepest it went), frames sent, silence filled, playout."""
