"""The RTP side of one call: the caller's audio in, the model's audio out.

Owns, for one call: the receive jitter buffer and the batching of caller frames into
input_audio_buffer.append (with silence filled in while Asterisk sends nothing, so the model's
voice detection can end the turn); the playout queue and the RTP send stream paced by the
worker's pacer (marker and timestamps per talkspurt); conversion between the telephone codec and
the model's format when they differ; and the call's audio statistics. No ARI, no JSON.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

from relay._g711 import Resampler, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from relay._rtp import PUSH_DUPLICATE, JitterBuffer, RtpSender
from relay.playout import FRAME_BYTES, PlayoutQueue

SAMPLE_RATE = 8000
FRAME_S = 0.020
MAX_FILL_S = 1.0          # at most this much silence is added in one go
MAX_PAYLOAD = 320         # 40 ms of G.711: larger RTP payloads are refused (memory per call)
_RTP_TIMESTAMP = struct.Struct("!I")      # at offset 4 of an RTP header

# agent audio format -> (externalMedia format, RTP payload type, silence byte)
LINE_FORMATS = {
    "audio/pcmu": ("ulaw", 0, 0xFF),
    "audio/pcma": ("alaw", 8, 0xD5),
    "audio/pcm": ("ulaw", 0, 0xFF),      # the relay converts to/from 24 kHz PCM16
}


class CallMedia:
    """Audio of one call. on_rtp() is fed by the worker's socket, tick() by the pacer."""

    def __init__(self, *, model_format: str, send_rtp: Callable[[bytes], None],
                 send_to_model: Callable[[bytes, Optional[float]], None], jitter_depth: int = 3,
                 append_frames: int = 2, playout_max_s: float = 120.0,
                 on_played: Optional[Callable[[bytes], None]] = None,
                 on_heard: Optional[Callable[[bytes], None]] = None,
                 on_model_audio_latency: Optional[Callable[[float], None]] = None) -> None:
        self.line_format, payload_type, self._silence_byte = LINE_FORMATS[model_format]
        self.model_format = model_format
        self._send_rtp = send_rtp
        self._send_to_model = send_to_model
        self._on_played = on_played           # each frame sent to the caller (recordings)
        self._on_heard = on_heard             # each caller frame (recordings, fallback STT)
        # seconds from a model delta's arrival (into an idle playout) to its first RTP frame
        self._on_model_audio_latency = on_model_audio_latency
        # each chunk of caller audio handed to the model, in the line codec, silence fill
        # included (recording, fallback transcription); set by the call only when needed
        self.on_input: Optional[Callable[[bytes], None]] = None
        self.jitter = JitterBuffer(capacity=32, depth=jitter_depth, max_payload=MAX_PAYLOAD)
        self.sender = RtpSender(payload_type=payload_type)
        self.playout = PlayoutQueue(max_bytes=int(playout_max_s * SAMPLE_RATE))
        self._append_bytes = append_frames * FRAME_BYTES
        self._pending = bytearray()
        self._pending_since: Optional[float] = None   # arrival of its oldest caller packet
        self._first_delta_at: Optional[float] = None  # a delta waiting for its first frame
        self._pcm = model_format == "audio/pcm"
        self._up = Resampler(8000, 24000) if self._pcm else None
        self._down = Resampler(24000, 8000) if self._pcm else None
        self._pcm_rest = b""
        self.started_at: Optional[float] = None
        self._input_bytes = 0                  # caller audio handed to the model, silence included
        self._last_rtp_at = 0.0
        self._fill_slack = (jitter_depth + 1) * FRAME_S
        self._fill_due = 0.0      # before this, _keep_input_flowing has nothing to do
        self._ticks = 0
        self._talking = False
        self._first_timestamp = self.sender.timestamp
        self.enabled = True
        # statistics
        self.frames_out = 0
        self.talkspurts = 0
        self.silence_filled_bytes = 0
        self.last_frame_out_at = 0.0
        self.tick_lateness_max = 0.0
        self.jitter_samples = 0.0             # RFC 3550 interarrival jitter of caller packets
        self._transit: Optional[float] = None

    @property
    def ticks(self) -> int:
        """Pacer ticks so far: the frame sent by the current tick has index ticks - 1."""
        return self._ticks

    def start(self, now: float) -> None:
        self.started_at = now
        self._last_rtp_at = now
        self._fill_due = now

    # caller -> model
    def on_rtp(self, data: bytes, now: float) -> None:
        if not self.enabled or self.jitter.push(data) >= PUSH_DUPLICATE:
            return
        self._last_rtp_at = now
        self._measure_jitter(data, now)
        if self._pending_since is None:
            self._pending_since = now
        self._drain(force=False)

    def _measure_jitter(self, data: bytes, now: float) -> None:
        """RFC 3550 section 6.4.1: J += (|D| - J) / 16, in samples (a stream restart's
        timestamp jump of a second or more is not jitter)."""
        transit = now * SAMPLE_RATE - _RTP_TIMESTAMP.unpack_from(data, 4)[0]
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < SAMPLE_RATE:
                self.jitter_samples += (d - self.jitter_samples) / 16.0
        self._transit = transit

    def _drain(self, force: bool) -> None:
        jitter, pending = self.jitter, self._pending
        while True:
            payload = jitter.pop(force)
            if payload is None:
                break
            gap = jitter.last_gap_samples
            if gap > 0:
                self._fill_silence(min(gap, int(MAX_FILL_S * SAMPLE_RATE)))
            pending += payload
            if self._on_heard is not None:
                self._on_heard(payload)
        if len(pending) >= self._append_bytes:
            self._flush_input()

    def _fill_silence(self, samples: int) -> None:
        self._pending += bytes((self._silence_byte,)) * samples
        self.silence_filled_bytes += samples

    def _flush_input(self) -> None:
        if not self._pending:
            return
        audio = bytes(self._pending)
        self._pending.clear()
        stamp, self._pending_since = self._pending_since, None
        self._input_bytes += len(audio)
        if self.on_input is not None:
            self.on_input(audio)
        if self._pcm:
            decoded = ulaw_decode(audio)
            audio = self._up.process(decoded)  # type: ignore[union-attr]
        self._send_to_model(audio, stamp)

    def _keep_input_flowing(self, now: float) -> None:
        """While the caller is silent Asterisk may send nothing: keep the model's input clock
        running with silence, a jitter-buffer depth behind real time."""
        if now < self._fill_due or self.started_at is None:
            return
        slack = self._fill_slack
        if now - self._last_rtp_at < slack:
            self._fill_due = self._last_rtp_at + slack
            return
        self._drain(force=True)
        due = int((now - self.started_at - slack) * SAMPLE_RATE)
        missing = due - self._input_bytes - len(self._pending)
        if missing >= self._append_bytes:
            self._fill_silence(min(missing, int(MAX_FILL_S * SAMPLE_RATE)))
            self._flush_input()
        # nothing more to do until one more append's worth of audio is missing
        self._fill_due = self.started_at + slack + (
            self._input_bytes + len(self._pending) + self._append_bytes) / SAMPLE_RATE

    # model -> caller
    def add_model_audio(self, item_id: str, audio: bytes,
                        arrived: Optional[float] = None) -> int:
        """Queue a delta from the model (converted to the line codec when needed). arrived
        (time.monotonic() of its event) starts the model-audio latency clock when the playout
        was idle: the time to its first RTP frame is relay's own delay, not queued speech."""
        if arrived is not None and not self._talking and not self.playout.queued_bytes:
            self._first_delta_at = arrived
        if self._pcm:
            audio = self._pcm_rest + audio
            cut = len(audio) - len(audio) % 2
            self._pcm_rest = audio[cut:]
            audio = ulaw_encode(self._down.process(audio[:cut]))  # type: ignore[union-attr]
        return self.playout.add(item_id, audio)

    def tick(self, now: float) -> None:
        """One 20 ms frame time: send the next frame, if any; keep the input flowing."""
        self._ticks += 1
        playout = self.playout
        frame = playout.next_frame() if playout.queued_bytes and self.enabled else None
        if frame is not None:
            if not self._talking:
                self._talking = True
                self.talkspurts += 1
                due_ts = (self._first_timestamp + (self._ticks - 1) * FRAME_BYTES) & 0xFFFFFFFF
                behind = (due_ts - self.sender.timestamp) & 0xFFFFFFFF
                self.sender.start_talkspurt(behind if behind < 0x80000000 else 0)
            self._send_rtp(self.sender.build(frame))
            self.frames_out += 1
            self.last_frame_out_at = now
            if self._first_delta_at is not None:
                if self._on_model_audio_latency is not None:
                    self._on_model_audio_latency(now - self._first_delta_at)
                self._first_delta_at = None
            if self._on_played is not None:
                self._on_played(frame)
        else:
            self._talking = False
        self._keep_input_flowing(now)

    def flush_playout(self):
        """Barge-in: nothing more is sent from what was queued; returns the item cut short."""
        self._talking = False
        self._first_delta_at = None
        return self.playout.flush()

    def stats(self) -> dict:
        jb = self.jitter
        return {
            "rtp_in": jb.received, "lost": jb.lost, "late": jb.late, "duplicate": jb.duplicate,
            "reordered": jb.reordered, "malformed": jb.malformed,
            "rtp_out": self.frames_out, "talkspurts": self.talkspurts,
            "silence_filled_ms": self.silence_filled_bytes // 8,
            "playout_overflow_bytes": self.playout.overflow_bytes,
            "queued_ms": self.playout.queued_bytes // 8,
            "jitter_ms": round(self.jitter_samples / (SAMPLE_RATE / 1000), 2),
        }


def decode_line(audio: bytes, line_format: str) -> bytes:
    """Line codec bytes -> PCM16 8 kHz (for recordings and the fallback transcriber)."""
    return ulaw_decode(audio) if line_format == "ulaw" else alaw_decode(audio)


def encode_line(pcm: bytes, line_format: str) -> bytes:
    return ulaw_encode(pcm) if line_format == "ulaw" else alaw_encode(pcm)
