"""What things sound like and where they sit in time: media URIs, audio sources, mixing.

Owns: turning a playback's media URI into u-law audio at 8 kHz of a plausible duration,
deterministically (speech-like audio from relay.sim.speech, or a pure tone), and whether it
loops (tones play until stopped). Prompt files end with a partial 20 ms frame, as real ones do
(the real `hello-world` is 11212 samples: 70 frames and 12 samples), which is what makes
Asterisk send a short RTP payload at the end of a prompt. `Source` places audio on the pacer's
millisecond grid (what a channel says, a playback); `mix_ulaw` mixes frames as softmix does.
No I/O.
"""

from __future__ import annotations

import math
from functools import lru_cache

from relay.sim._sim_rtp import SourceCore, frames_at
from relay.sim.speech import duration_ms_for, utterance_ulaw

SAMPLE_RATE = 8000
PROMPT_TAIL_SAMPLES = 12
# Lengths of a few real Asterisk core sounds, in samples.
KNOWN_SOUNDS: dict[str, int] = {
    "hello-world": 11212,
    "beep": 2012,
    "demo-congrats": 52012,
    "vm-goodbye": 6412,
    "pls-hold-while-try": 16012,
    "tt-monkeys": 62412,
}
_TONES = {"ring": 440.0, "dial": 350.0, "busy": 480.0, "congestion": 480.0, "beep": 1000.0}
SCHEMES = ("sound", "tone", "digits", "number", "characters")


class UnknownMedia(ValueError):
    """A media URI whose scheme or content the simulated PBX cannot play."""


@lru_cache(maxsize=256)
def prompt_ulaw(name: str) -> bytes:
    """A `sound:` prompt: speech-like audio for the prompt's name, ending in a partial frame."""
    if not name or ".." in name:
        raise UnknownMedia(f"bad sound name {name!r}")
    samples = KNOWN_SOUNDS.get(name)
    words = name.replace("-", " ").replace("_", " ").replace("/", " ")
    if samples is None:
        samples = duration_ms_for(words) * SAMPLE_RATE // 1000 + PROMPT_TAIL_SAMPLES
    whole_ms = -(-samples * 1000 // SAMPLE_RATE // 20) * 20 + 20
    audio = utterance_ulaw(words, "prompt", whole_ms)
    return audio[:samples]


@lru_cache(maxsize=32)
def tone_ulaw(hz: float, seconds: int = 1) -> bytes:
    """One second of a pure tone at -18 dBov (loops without a click at whole seconds)."""
    from relay._g711 import ulaw_encode

    amp = 32768.0 * 10 ** (-18.0 / 20.0) * math.sqrt(2.0)
    n = SAMPLE_RATE * seconds
    pcm = bytearray(2 * n)
    for i in range(n):
        v = int(amp * math.sin(2.0 * math.pi * hz * i / SAMPLE_RATE))
        pcm[2 * i] = v & 0xFF
        pcm[2 * i + 1] = (v >> 8) & 0xFF
    return ulaw_encode(bytes(pcm))


def media_audio(uri: str) -> tuple[bytes, bool]:
    """(u-law audio, loops) for a media URI; UnknownMedia when it cannot be played."""
    scheme, _, rest = uri.partition(":")
    if not rest:
        raise UnknownMedia(f"media URI without a scheme: {uri!r}")
    if scheme == "sound":
        return prompt_ulaw(rest), False
    if scheme == "tone":
        name = rest.split(";", 1)[0]
        try:
            hz = float(name.split("+", 1)[0].split("/", 1)[0])
        except ValueError:
            if name not in _TONES:
                raise UnknownMedia(f"unknown tone {name!r}") from None
            hz = _TONES[name]
        if not 20.0 <= hz <= 3900.0:
            raise UnknownMedia(f"tone frequency out of range: {hz}")
        return tone_ulaw(round(hz)), True
    if scheme in ("digits", "number", "characters"):
        text = " ".join(rest) if scheme != "number" else rest
        return utterance_ulaw(text, "prompt"), False
    raise UnknownMedia(f"unsupported media scheme {scheme!r}")


FRAME_BYTES = 160          # 20 ms of u-law at 8 kHz
FRAME_TICKS = 20           # the pacer's grid is 1 ms; one frame is 20 ticks
SILENCE = b"\xff" * FRAME_BYTES


class Source(SourceCore):
    """Audio positioned on the pacer's millisecond grid: what a channel says, or a playback.

    `frame(tick)` is the 20 ms of audio starting at that tick (shorter at the end of a non-looping
    audio, None when nothing is playing): SourceCore's, in C (relay/sim/_sim_rtp.pyx). `muted`
    makes a channel's voice not reach its bridge (a channel playback in progress, or
    addChannel?mute=true). Subclasses below: what the relay sends into an externalMedia channel
    (InboundSource) and a channel running Echo() (EchoSource).
    """

    __slots__ = ()

    def __init__(self, label: str = "") -> None:
        self.audio: bytes | None = None
        self.start_tick = 0
        self.loop = False
        self.muted = False
        self.length = 0
        self.label = label

    def play(self, audio: bytes, start_tick: int, loop: bool = False) -> None:
        self.audio = audio if audio else None
        self.length = len(audio)
        self.start_tick = start_tick
        self.loop = loop and bool(audio)

    def stop(self) -> None:
        self.audio = None
        self.length = 0


ECHO_DELAY_TICKS = FRAME_TICKS   # Echo() writes back what it read: one frame later
INBOUND_KEEP = 64                # frames an InboundSource keeps (1.28 s)
INBOUND_AHEAD = 5                # a burst queues this many frames ahead; more are dropped


class InboundSource(Source):
    """What an externalMedia channel says into its bridge: the RTP the relay sends to it, put
    on the pacer's grid by the media layer (`push(tick, ulaw)` as each packet arrives).

    A frame lands in the 20 ms slot it arrived in, or after the last one queued when that slot
    is taken (a burst queues, up to INBOUND_AHEAD frames ahead of its arrival; more are dropped
    as by a full jitter buffer). A frame whose slot was already read (it arrived at the end of
    its slot and was handled after the reader's tick) lands in the next slot not yet read: as
    in Asterisk, where a frame read late is bridged late, never lost. `frame(tick)` is the
    frame of the slot `tick` falls in: every reader at the same tick gets the same frame,
    nothing is consumed. The last INBOUND_KEEP slots are kept.
    """

    __slots__ = ("dropped", "last_slot", "read_slot", "ring")

    def __init__(self, label: str = "") -> None:
        super().__init__(label)
        self.ring: list[tuple[int, bytes] | None] = [None] * INBOUND_KEEP
        self.last_slot = -1
        self.read_slot = -1
        self.dropped = 0

    def push(self, tick: int, payload: bytes) -> None:
        arrived = tick // FRAME_TICKS
        slot = max(arrived, self.last_slot + 1, self.read_slot + 1)
        if slot - arrived > INBOUND_AHEAD:
            self.dropped += 1
            return
        self.last_slot = slot
        self.ring[slot % INBOUND_KEEP] = (slot, payload)

    def frame(self, tick: int) -> bytes | None:
        slot = tick // FRAME_TICKS
        if slot > self.read_slot:
            self.read_slot = slot
        entry = self.ring[slot % INBOUND_KEEP]
        return entry[1] if entry is not None and entry[0] == slot else None

    def stop(self) -> None:
        self.ring = [None] * INBOUND_KEEP
        self.last_slot = self.read_slot = -1


class EchoSource(Source):
    """What a channel running Echo() says into its bridge: what it hears from the bridge (the
    sources in `heard`, set by the model whenever the bridge changes), ECHO_DELAY_TICKS later.
    Nothing heard, nothing said (no RTP in a two-party bridge). `replaced` is the channel's
    own voice, back when Echo() ends. Two echoing channels in one bridge do not feed each other
    endlessly: a source being read returns nothing to itself.
    """

    __slots__ = ("busy", "heard", "replaced")

    def __init__(self, label: str = "", replaced: Source | None = None) -> None:
        super().__init__(label)
        self.heard: tuple[Source, ...] = ()
        self.replaced = replaced
        self.busy = False

    def frame(self, tick: int) -> bytes | None:
        if self.busy:
            return None
        self.busy = True
        try:
            frames = frames_at(self.heard, tick - ECHO_DELAY_TICKS)
        finally:
            self.busy = False
        if not frames:
            return None
        return frames[0] if len(frames) == 1 else mix_ulaw(frames)

    def stop(self) -> None:
        self.heard = ()


def _load_audioop():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


_audioop = _load_audioop()


def _add_pcm(a: bytes, b: bytes) -> bytes:
    if _audioop is not None:
        return _audioop.add(a, b, 2)
    from array import array

    x, y = array("h"), array("h")
    x.frombytes(a)
    y.frombytes(b)
    return array("h", (max(-32768, min(32767, p + q)) for p, q in zip(x, y))).tobytes()


def mix_ulaw(frames: list[bytes]) -> bytes:
    """Mix u-law frames (any may be short) into one full 160-byte frame, as softmix does."""
    if not frames:
        return SILENCE
    if len(frames) == 1:
        f = frames[0]
        return f if len(f) == FRAME_BYTES else f + SILENCE[len(f):]
    from relay._g711 import ulaw_decode, ulaw_encode

    acc = None
    for f in frames:
        if len(f) != FRAME_BYTES:
            f = f + SILENCE[len(f):]
        pcm = ulaw_decode(f)
        acc = pcm if acc is None else _add_pcm(acc, pcm)
    return ulaw_encode(acc)
