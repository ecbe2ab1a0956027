"""relay/sim/_sim_audio.pyx, the simulated model's compiled hot path, against the Python it
replaced: strict base64, the append recognised by its bytes, frame levels, the VAD and
the input buffer's framing, on random inputs (seeded) as well as chosen edge cases."""

from __future__ import annotations

import base64
import binascii
import random
from typing import Optional

import pytest

from relay import _g711
from relay.sim import _sim_audio
from relay.sim.model.audio import PCM24, PCMA, PCMU
from relay.sim.model.input_buffer import InputAudioBuffer
from relay.sim.model.vad import FRAME_MS, NONE, STARTED, STOPPED, Vad, threshold_dbov
from relay.sim.model.validation import fast_append_audio

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
COMPACT = '{"type":"input_audio_buffer.append","audio":"'
SPACED = '{"type": "input_audio_buffer.append", "audio": "'


def _strict(data) -> Optional[bytes]:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _near_base64(rng: random.Random) -> bytes:
    """Valid base64, or valid base64 with one character changed, cut or added."""
    s = base64.b64encode(rng.randbytes(rng.randrange(12)))
    roll = rng.random()
    if roll < 0.3 and s:
        i = rng.randrange(len(s))
        s = s[:i] + bytes([rng.choice(ALPHABET + b' \n"\\-_\x00\xff')]) + s[i + 1:]
    elif roll < 0.5 and s:
        s = s[:rng.randrange(len(s))]                      # truncated
    elif roll < 0.6:
        s += bytes([rng.choice(ALPHABET)])
    elif roll < 0.8:
        s = bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(13)))
    return s


def test_strict_base64_agrees_with_binascii_on_random_inputs():
    rng = random.Random(15)
    declined = 0
    for _ in range(30_000):
        s = _near_base64(rng)
        got, ref = _sim_audio.b64decode_strict(s), _strict(s)
        if got is not None:
            assert got == ref, s                # what C accepts, binascii decodes the same
        elif ref is not None:
            declined += 1                       # C declines a rare shape: Python decides
            assert s.endswith(b"="), s          # only surplus padding after full quanta
    for _ in range(3_000):                      # everything relay sends is accepted
        audio = rng.randbytes(rng.randrange(400))
        assert _sim_audio.b64decode_strict(base64.b64encode(audio)) == audio
    assert declined < 30_000 // 10


@pytest.mark.parametrize("text", ["", "QQ==", "QUI=", "QUJD", "Q", "QQ=", "QQ=A", "Q===",
                                  "====", "QUJD====", "QU JD", "QUJD\n", "QUJ\u00e9", "-_-_"])
def test_strict_base64_edge_cases(text):
    got = _sim_audio.b64decode_strict(text)
    assert got is None or got == _strict(text.encode("utf-8"))
    if text in ("", "QQ==", "QUI=", "QUJD"):
        assert got == base64.b64decode(text)


def _random_message(rng: random.Random) -> str:
    audio = _near_base64(rng).decode("latin-1")
    shape = rng.random()
    if shape < 0.4:
        return COMPACT + audio + '"}'
    if shape < 0.55:
        return SPACED + audio + '"}'
    if shape < 0.65:
        return COMPACT + audio + '","event_id":"e1"}'
    if shape < 0.75:
        return COMPACT + audio                                   # cut short
    if shape < 0.85:
        return COMPACT + audio + '"} '
    text = COMPACT + audio + '"}'
    i = rng.randrange(len(text))
    return text[:i] + rng.choice('"\\{} x') + text[i + 1:]      # broken JSON


def test_append_recognised_exactly_when_the_python_fast_path_does_on_random_messages():
    rng = random.Random(16)
    recognised = 0
    for _ in range(30_000):
        text = _random_message(rng)
        got = _sim_audio.append_audio(text)
        ref = fast_append_audio(text)
        if got is not None:
            recognised += 1
            assert got == ref, text
        else:   # declined: the session's own parsing decides, as before (fast path or not)
            assert ref is None or text.endswith('="}') or text == COMPACT + '}', text
    assert recognised > 5_000


def test_frame_levels_equal_the_g711_levels_on_random_frames():
    rng = random.Random(18)
    for _ in range(2_000):
        n = rng.randrange(0, 1000)
        loud = rng.choice([0, 1, 8, 128])
        pcm = b"".join(rng.randrange(-loud, loud + 1).to_bytes(2, "little", signed=True)
                       for _ in range(n // 2)) + rng.randbytes(n % 2)     # odd length too
        law = rng.randbytes(n) if rng.random() < 0.5 else _g711.ulaw_encode(pcm[:n & ~1])
        assert _sim_audio.frame_level(pcm, _sim_audio.PCM16) == _g711.pcm_dbov(pcm[:n & ~1])
        assert _sim_audio.frame_level(law, _sim_audio.ULAW) == _g711.ulaw_dbov(law)
        assert _sim_audio.frame_level(law, _sim_audio.ALAW) == \
            _g711.pcm_dbov(_g711.alaw_decode(law))
    with pytest.raises(ValueError):
        _sim_audio.frame_level(b"\xff", 3)


class ReferenceVad:
    """The Python VAD the compiled one replaced (relay/sim/model/vad.py before issue #15)."""

    def __init__(self, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500,
                 min_speech_ms=40):
        self.threshold_dbov = threshold_dbov(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_ms = max(FRAME_MS, silence_duration_ms)
        self.min_speech_ms = max(FRAME_MS, min_speech_ms)
        self.speaking = False
        self.run_start_ms = None
        self.silence_start_ms = None

    def feed(self, dbov, frame_end_ms):
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


def _random_settings(rng: random.Random) -> tuple:
    return (rng.choice([0.0, 0.3, 0.5, 1.0]), rng.choice([0, 20, 300]),
            rng.choice([0, 20, 100, 500]), rng.choice([0, 20, 40, 100]))


def test_vad_state_machine_equals_the_python_one_on_random_levels():
    rng = random.Random(19)
    for _ in range(300):
        settings = _random_settings(rng)
        new, old = Vad(*settings), ReferenceVad(*settings)
        end = 0
        for _ in range(200):
            end += rng.choice([20, 20, 20, 40, 7])
            level = rng.choice([-127.0, -60.0, -35.0, -34.9, -20.0, -10.0, 0.0])
            assert new.feed(level, end) == old.feed(level, end)
            assert (new.speaking, new.run_start_ms, new.silence_start_ms) == \
                (old.speaking, old.run_start_ms, old.silence_start_ms)
            if rng.random() < 0.01:
                new.reset()
                old.__init__(*settings)


def _reference_append(buffer: InputAudioBuffer, data: bytes, vad: ReferenceVad):
    """InputAudioBuffer.append's framing before issue #15 (Python levels and VAD), on the
    private state of `buffer`, for comparison."""
    buf = buffer._buf
    buf += data
    buffer._total += len(data)
    edges = None
    fb, bpm, dbov = buffer.fmt.frame_bytes, buffer.fmt.bytes_per_ms, buffer.fmt.frame_dbov
    pos = buffer._frame_pos
    with memoryview(buf) as view:
        while pos + fb <= buffer._total:
            offset = pos - buffer._start
            pos += fb
            edge = vad.feed(dbov(view[offset:offset + fb]), pos // bpm)
            if edge != NONE:
                edges = edges or []
                edges.append((edge, max(buffer._start // bpm,
                                        vad.run_start_ms - vad.prefix_padding_ms)
                              if edge == STARTED else pos // bpm))
    buffer._frame_pos = pos
    if edges is not None:
        return edges
    if not vad.speaking:
        keep_from = pos - (vad.prefix_padding_ms + vad.min_speech_ms) * bpm
        if keep_from - buffer._start > max(4096, len(buf) // 2):
            buffer._drop_before(keep_from)
    elif len(buf) > buffer.max_bytes:
        buffer._drop_before(buffer._total - buffer.max_bytes)
    return edges


@pytest.mark.parametrize("fmt", [PCMU, PCMA, PCM24], ids=lambda f: f.name)
def test_input_buffer_turn_edges_equal_the_python_framing_on_random_appends(fmt):
    rng = random.Random(20)
    edges = 0
    for _ in range(20):
        settings = _random_settings(rng)
        new_buf, old_buf = InputAudioBuffer(fmt, max_ms=3000), InputAudioBuffer(fmt, max_ms=3000)
        new_vad, old_vad = Vad(*settings), ReferenceVad(*settings)
        for _ in range(150):
            n = rng.choice([fmt.frame_bytes, fmt.frame_bytes * 2, rng.randrange(1, 3000)])
            if fmt is PCM24:
                loud = rng.choice([0, 30, 3000])
                data = b"".join(rng.randrange(-loud, loud + 1).to_bytes(2, "little", signed=True)
                                for _ in range(n // 2)) + rng.randbytes(n % 2)  # odd: PCM split
            else:
                data = rng.choice([b"\xff" * n, rng.randbytes(n)])
            got = new_buf.append(data, new_vad)
            assert got == _reference_append(old_buf, data, old_vad)
            edges += len(got or ())
            assert (new_buf._start, new_buf._total, new_buf._frame_pos, bytes(new_buf._buf)) \
                == (old_buf._start, old_buf._total, old_buf._frame_pos, bytes(old_buf._buf))
            if rng.random() < 0.05:
                new_buf.clear()
                old_buf.clear()
    assert edges > 50                           # turns were found, not only silence


def test_scan_refuses_frames_outside_the_buffer_and_bad_kinds():
    vad = Vad()
    with pytest.raises(ValueError):
        vad.scan(bytearray(100), 0, 0, 1, 160, 8, _sim_audio.ULAW)
    with pytest.raises(ValueError):
        vad.scan(bytearray(320), 0, 0, 1, 160, 8, 7)
    with pytest.raises(ValueError):
        vad.scan(bytearray(320), 0, 0, 1, 0, 8, _sim_audio.ULAW)
    assert vad.scan(bytearray(b"\xff" * 320), 0, 0, 2, 160, 8, _sim_audio.ULAW) == (2, NONE)
    loud = bytearray(480)                       # u-law 0x00: full scale
    assert vad.scan(loud, 0, 0, 3, 160, 8, _sim_audio.ULAW) == (2, STARTED)   # stops at it
    assert vad.run_start_ms == 0


def test_huge_vad_settings_act_as_never():
    vad = Vad(0.5, 10 ** 30, 10 ** 30, 10 ** 30)
    assert all(vad.feed(0.0, 20 * (i + 1)) == NONE for i in range(100))
