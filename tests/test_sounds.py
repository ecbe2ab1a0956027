"""Greeting sounds relay streams itself: WAV formats accepted, clear errors otherwise."""

import math
import struct
import wave

import pytest

from relay._g711 import ulaw_decode, ulaw_encode
from relay.sounds import SoundError, load_sound


def write_wav(path, rate, samples, width=2, channels=1):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(samples)


def tone(rate, seconds, hz=440.0, amplitude=8000):
    n = int(rate * seconds)
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / rate))
                                   for i in range(n)))


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_pcm16_wav_becomes_one_second_of_ulaw(tmp_path, rate):
    path = tmp_path / f"t{rate}.wav"
    write_wav(path, rate, tone(rate, 1.0))
    audio = load_sound(str(path), "ulaw")
    assert abs(len(audio) - 8000) <= 16
    pcm = ulaw_decode(audio)
    peak = max(abs(v) for v in struct.unpack(f"<{len(pcm) // 2}h", pcm)[100:-100])
    assert 7000 < peak < 9000


def test_an_8k_pcm_wav_is_encoded_exactly(tmp_path):
    samples = tone(8000, 0.1)
    path = tmp_path / "exact.wav"
    write_wav(path, 8000, samples)
    assert load_sound(str(path), "ulaw") == ulaw_encode(samples)


def test_unusable_files_say_why(tmp_path):
    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, 8000, b"\x00\x00" * 200, channels=2)
    with pytest.raises(SoundError, match="mono"):
        load_sound(str(stereo))
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    with pytest.raises(SoundError, match="not a WAV"):
        load_sound(str(text))
    with pytest.raises(SoundError, match="missing.wav"):
        load_sound(str(tmp_path / "missing.wav"))
    odd = tmp_path / "44k.wav"
    write_wav(odd, 44100, b"\x00\x00" * 100)
    with pytest.raises(SoundError, match="unsupported"):
        load_sound(str(odd))
