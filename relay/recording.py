"""Call recordings: one stereo WAV per call (caller left, assistant right), from relayed audio.

Owns, for one call: two append-only temporary files of line-codec audio (one byte a sample),
one per channel, each placed on the call's media clock; and, when the call ends, the final
PCM16 8 kHz stereo WAV built from them in blocks, then the temporary files removed.

- Left (caller): the caller's audio exactly as relay handed it to the model, silence fill
  included, byte after byte (position n = the n-th byte handed to the model).
- Right (assistant): each frame relay sent to the caller at its pacer tick index (tick k starts
  at sample 160 k), silence where nothing was sent; so a barge-in cut is recorded exactly as the
  caller heard it.

The WAV is written by the standard library's `wave` into `<name>.wav.part`, its header final
(the frame count is known before the first frame) and patched by `wave` on close whatever
happens, then renamed: `<name>.wav` only ever appears whole and valid; a failure leaves no WAV
(its `.part` removed, or, if the process dies, left for retention to sweep).

Memory is bounded by `chunk_bytes` per channel (written to disk as it fills). A write error
disables the recording (logged once), never the call. No ARI, no sockets.
"""

from __future__ import annotations

import logging
import os
import time
import wave
from pathlib import Path
from typing import Callable, Optional

from relay import cooperate
from relay._g711 import alaw_decode, ulaw_decode

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_BYTES = 160
CHUNK_BYTES = 8000              # one second per channel kept in memory at most
BLOCK_SAMPLES = 64_000          # samples per channel interleaved at a time when closing
HEADER_BYTES = 44                # of the PCM WAV `wave` writes
MAX_SAMPLES = (0xFFFFFFFF - HEADER_BYTES) // 4      # a WAV's sizes are 32-bit
SILENCE = {"ulaw": 0xFF, "alaw": 0xD5}


def recording_stem(call_id: str, started_at: float) -> str:
    """<UTC date-time of the call's start>_<call id>, like the transcripts."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started_at))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id)[:80]
    return f"{stamp}_{safe}"


class _Channel:
    """One channel's samples (line codec), appended to a temporary file in chunks."""

    __slots__ = ("path", "buffer", "total", "silence", "_file")

    def __init__(self, path: Path, silence: int) -> None:
        self.path = path
        self.buffer = bytearray()
        self.total = 0                  # samples placed so far (buffered and written)
        self.silence = silence
        self._file = None

    def put(self, position: int, audio: bytes) -> bool:
        """Place audio at sample `position` (silence before it; an overlap is cut off).
        True when the buffer should be written out. OSError from a long silence's writes."""
        gap = position - self.total
        while gap > 0:                  # a long silence goes out in chunks, not all in memory
            step = min(gap, CHUNK_BYTES)
            self.buffer += bytes((self.silence,)) * step
            self.total += step
            gap -= step
            if gap > 0:
                self.write()
        if gap < 0:
            audio = audio[-gap:]
        self.buffer += audio
        self.total += len(audio)
        return len(self.buffer) >= CHUNK_BYTES

    def write(self) -> None:
        if not self.buffer:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
        self._file.write(self.buffer)
        self.buffer.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Close and delete the temporary file (quietly: this runs on error paths)."""
        try:
            self.close()
        except OSError:
            self._file = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc)


class CallRecorder:
    """The stereo recording of one call (see the module docstring)."""

    def __init__(self, directory: Path | str, call_id: str, line_format: str = "ulaw",
                 started_at: Optional[float] = None,
                 pause: Callable[[], None] = cooperate.pause) -> None:
        self.directory = Path(directory)
        self.call_id = call_id
        self.line_format = line_format
        self.stem = recording_stem(call_id, time.time() if started_at is None else started_at)
        self.path = self.directory / f"{self.stem}.wav"
        silence = SILENCE.get(line_format, 0xFF)
        self._decode = ulaw_decode if line_format == "ulaw" else alaw_decode
        self.left = _Channel(self.directory / f"{self.stem}.caller.part", silence)
        self.right = _Channel(self.directory / f"{self.stem}.assistant.part", silence)
        self._pause = pause
        self.enabled = True
        self.closed = False
        self.error = ""

    # the call's audio (packet path: cheap appends, a disk write once a second)
    def caller(self, audio: bytes) -> None:
        """Caller audio as handed to the model (line codec), in order."""
        if self.enabled:
            self._put(self.left, self.left.total, audio)

    def assistant(self, tick: int, frame: bytes) -> None:
        """A frame sent to the caller at pacer tick `tick` (0 = the first tick)."""
        if self.enabled:
            self._put(self.right, tick * FRAME_BYTES, frame)

    def _put(self, channel: _Channel, position: int, audio: bytes) -> None:
        try:
            if channel.put(position, audio):
                channel.write()
        except OSError as exc:
            self._fail(f"cannot write {channel.path}: {exc}")

    def _fail(self, error: str) -> None:
        log.warning("call %s: recording stopped: %s", self.call_id, error)
        self.enabled = False
        self.error = error
        self.left.remove()
        self.right.remove()

    # the end
    def close(self) -> Optional[Path]:
        """Write the WAV (idempotent); its path, or None when nothing was recorded or writing
        failed. The temporary files are gone afterwards on every path."""
        if self.closed:
            return self.path if self.path.exists() else None
        self.closed = True
        if not self.enabled:
            return None
        self.enabled = False
        samples = min(max(self.left.total, self.right.total), MAX_SAMPLES)
        if samples == 0:
            return None
        partial = self.path.with_name(self.path.name + ".part")
        try:
            self.left.write()
            self.right.write()
            self.left.close()
            self.right.close()
            self._interleave(partial, samples)
            os.replace(partial, self.path)
        except OSError as exc:
            self._fail(f"cannot write {self.path}: {exc}")
            partial.unlink(missing_ok=True)
            return None
        except BaseException:           # a bug, or the greenlet killed: no half a recording
            partial.unlink(missing_ok=True)
            raise
        finally:
            self.left.remove()
            self.right.remove()
        return self.path

    def _interleave(self, target: Path, samples: int) -> None:
        silence_block = bytes((self.left.silence,)) * BLOCK_SAMPLES
        decode = self._decode
        with wave.open(str(target), "wb") as out, _open_or_empty(self.left.path) as left, \
                _open_or_empty(self.right.path) as right:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.setnframes(samples)         # the header is final from the start
            done = 0
            while done < samples:
                n = min(BLOCK_SAMPLES, samples - done)
                lblock = left.read(n)
                rblock = right.read(n)
                lpcm = decode(lblock + silence_block[:n - len(lblock)])
                rpcm = decode(rblock + silence_block[:n - len(rblock)])
                frame = bytearray(4 * n)
                frame[0::4] = lpcm[0::2]
                frame[1::4] = lpcm[1::2]
                frame[2::4] = rpcm[0::2]
                frame[3::4] = rpcm[1::2]
                out.writeframesraw(frame)
                done += n
                self._pause()


class _Empty:
    def read(self, n: int) -> bytes:
        return b""

    def __enter__(self) -> "_Empty":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _open_or_empty(path: Path):
    """The channel's temporary file, or an empty source when nothing was written to it."""
    return open(path, "rb") if path.exists() else _Empty()
