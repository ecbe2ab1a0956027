"""relay._g711.Resampler: exactness, frequency response, continuity across frames, errors.

The exact reference is the textbook definition of rational resampling, computed with numpy in
integers: zero-stuff by `up`, convolve with the prototype filter, keep every `down`-th sample,
round half up and saturate. The module's polyphase kernels (portable and SIMD) must produce
the very same samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay import _g711 as g

RATES = (8000, 16000, 24000)
DIRECTIONS = [(a, b) for a in RATES for b in RATES if a != b]


def _levels() -> list[str]:
    order = ["portable", "sse2", "avx2"]
    return order[: order.index(g.simd_level()) + 1]


@pytest.fixture(params=_levels())
def level(request):
    previous = g._set_simd_level(request.param)
    yield request.param
    g._set_simd_level(previous)


def pcm(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


def tone(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 12000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return pcm(np.round(amplitude * np.sin(2 * np.pi * freq * t)))


def reference(in_rate: int, out_rate: int, x: np.ndarray) -> np.ndarray:
    up, down, taps, coefficients, _ = g.design_filter(in_rate, out_rate)
    phases = np.asarray(coefficients, dtype=np.int64).reshape(up, taps)[:, ::-1]  # newest first
    proto = phases.T.reshape(-1)  # proto[p + up * i] = phase p, tap i
    stuffed = np.zeros(len(x) * up, dtype=np.int64)
    stuffed[::up] = x
    acc = np.convolve(stuffed, proto)[: len(stuffed)][::down]
    return np.clip((acc + (1 << 13)) >> 14, -32768, 32767)


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(max(np.sqrt(np.mean(np.square(x.astype(float)))), 1e-9))


# --- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        (7999, 8000),
        (8000, 44100),
        (0, 8000),
        (8000, -16000),
        ("8000", 16000),
        (8000.0, 16000),
        (True, 8000),
    ],
)
def test_unsupported_rates(bad):
    with pytest.raises(ValueError, match="unsupported sample rate"):
        g.Resampler(*bad)


def test_attributes_and_equal_rates_copy():
    r = g.Resampler(8000, 24000)
    assert (r.in_rate, r.out_rate) == (8000, 24000)
    assert "8000" in repr(r)
    same = g.Resampler(16000, 16000)
    data = pcm(np.arange(-500, 500) * 30)
    assert same.process(data[: 7 * 2]) + same.process(data[14:]) == data
    assert same.delay == 0.0


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_filter_design_is_sane(in_rate, out_rate):
    up, down, taps, coefficients, copy = g.design_filter(in_rate, out_rate)
    assert up * in_rate == down * out_rate and taps % 8 == 0
    branches = np.asarray(coefficients).reshape(up, taps)
    assert (branches.sum(axis=1) == 1 << 14).all()  # unity DC gain on every branch
    assert (np.abs(branches).sum(axis=1) < 1 << 16).all()  # the int32 accumulator cannot overflow
    if in_rate < out_rate:
        assert copy[0] >= 0  # cut-off at the input's Nyquist: one branch is a pure delay


# --- exactness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_equals_the_textbook_definition(level, in_rate, out_rate):
    rng = np.random.default_rng(in_rate + out_rate)
    x = rng.integers(-32768, 32768, size=3001)
    square = np.sin(2 * np.pi * 300 * np.arange(1200) / in_rate) >= 0
    x[100:1300] = np.where(square, 32767, -32768)  # full-scale square: overshoot saturates
    r = g.Resampler(in_rate, out_rate)
    got = samples(r.process(pcm(x)))
    want = reference(in_rate, out_rate, x)
    assert len(got) == len(want) == -(-len(x) * out_rate // in_rate)
    np.testing.assert_array_equal(got, want)
    assert got.max() == 32767 and got.min() == -32768


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_silence_and_constants_stay_exact(in_rate, out_rate):
    r = g.Resampler(in_rate, out_rate)
    for _ in range(3):
        out = r.process(bytes(2000))
        assert out == bytes(len(out))
    steady = samples(r.process(pcm(np.full(2000, -1234))))[200:]
    assert (steady == -1234).all()


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_impulse_peaks_at_the_stated_delay(in_rate, out_rate):
    r = g.Resampler(in_rate, out_rate)
    x = np.zeros(400, dtype=np.int64)
    x[0] = 20000
    y = samples(r.process(pcm(x)))
    assert abs(int(np.argmax(np.abs(y))) - r.delay) <= 0.5


# --- frequency response --------------------------------------------------------------------------


def _gain_db(in_rate: int, out_rate: int, freq: float) -> float:
    r = g.Resampler(in_rate, out_rate)
    x = tone(freq, in_rate)
    y = samples(r.process(x))
    settle = int(4 * r.delay) + 10  # past the filter's transient
    return level_db(y[settle:]) - level_db(samples(x)[settle:])


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
@pytest.mark.parametrize("freq", [300, 1000, 3000, 3400])
def test_pass_band_within_1_db(in_rate, out_rate, freq):
    assert abs(_gain_db(in_rate, out_rate, freq)) < 1.0


@pytest.mark.parametrize(
    "in_rate, out_rate, freq",
    [
        (24000, 8000, 5000),
        (24000, 8000, 7000),
        (24000, 8000, 11000),
        (16000, 8000, 5000),
        (16000, 8000, 7500),
        (24000, 16000, 9000),
        (24000, 16000, 11000),
    ],
)
def test_stop_band_rejects_at_least_40_db(in_rate, out_rate, freq):
    assert _gain_db(in_rate, out_rate, freq) < -40.0


@pytest.mark.parametrize(
    "in_rate, out_rate, freq, images",
    [
        (8000, 24000, 1000, [7000, 9000]),
        (8000, 24000, 3000, [5000, 11000]),
        (8000, 16000, 1000, [7000]),
        (16000, 24000, 3000, [5000, 11000]),  # 13 and 19 kHz, folded at 12 kHz
    ],
)
def test_upsampling_removes_the_images(in_rate, out_rate, freq, images):
    r = g.Resampler(in_rate, out_rate)
    y = samples(r.process(tone(freq, in_rate, seconds=1.0)))[out_rate // 10 :][: out_rate // 2]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    bins = np.fft.rfftfreq(len(y), 1 / out_rate)

    def peak(f: float) -> float:
        near = np.abs(bins - f) < 30
        return 20 * np.log10(spectrum[near].max())

    for image in images:
        assert peak(image) - peak(freq) < -40.0, image


# --- streaming ---------------------------------------------------------------------------------


def _chunked(r: g.Resampler, data: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(data):
        n = 2 * sizes[k % len(sizes)]
        out.append(r.process(data[i : i + n]))
        i += n
        k += 1
    return b"".join(out)


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
@pytest.mark.parametrize("sizes", [[20], [1], [7], [33], [1, 7, 33, 2, 3000]], ids=str)
def test_chunks_join_exactly(level, in_rate, out_rate, sizes):
    x = np.random.default_rng(3).integers(-20000, 20000, size=in_rate // 4)  # 250 ms
    data = pcm(x)
    whole = g.Resampler(in_rate, out_rate).process(data)
    if sizes == [20]:
        sizes = [in_rate // 50]  # 20 ms frames
    assert _chunked(g.Resampler(in_rate, out_rate), data, sizes) == whole


@settings(max_examples=40, deadline=None)
@example(direction=(8000, 16000), sizes=[0], raw=b"\x00\x00")    # empty pieces only
@given(
    st.sampled_from(DIRECTIONS),
    st.lists(st.integers(0, 700), min_size=1, max_size=12),
    st.binary(min_size=0, max_size=3000),
)
def test_any_chunking_gives_the_same_stream(direction, sizes, raw):
    data = raw[: len(raw) & ~1]
    whole = g.Resampler(*direction).process(data)
    r = g.Resampler(*direction)
    out, i = [], 0
    for n in sizes * (len(data) // 2 + 1):
        if i >= len(data):
            break
        piece = data[i : i + 2 * n]
        bound = r.max_output_bytes(len(piece))
        chunk = r.process(piece)
        assert len(chunk) <= bound
        out.append(chunk)
        i += 2 * n
    out.append(r.process(data[i:]))     # what sizes of only zeros never reached
    assert b"".join(out) == whole


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_single_samples_and_empty_input(in_rate, out_rate):
    r = g.Resampler(in_rate, out_rate)
    assert r.process(b"") == b""
    produced = sum(len(r.process(b"\x10\x00")) for _ in range(30))
    assert produced == 2 * -(-30 * out_rate // in_rate)


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_process_into_matches_process(in_rate, out_rate):
    data = tone(440, in_rate, seconds=0.1)
    a, b = g.Resampler(in_rate, out_rate), g.Resampler(in_rate, out_rate)
    buf = bytearray(b.max_output_bytes(2 * 77) + 5)
    out = []
    for i in range(0, len(data), 2 * 77):
        piece = data[i : i + 2 * 77]
        n = b.process_into(memoryview(piece), buf)
        out.append(bytes(buf[:n]))
    assert b"".join(out) == a.process(data)


def test_process_into_too_small_leaves_the_state_alone():
    data = tone(440, 8000, seconds=0.1)
    a, b = g.Resampler(8000, 24000), g.Resampler(8000, 24000)
    first = a.process(data[:320])
    with pytest.raises(ValueError, match="too small"):
        b.process_into(data[:320], bytearray(len(first) - 1))
    assert b.process(data[:320]) == first
    assert b.process(data[320:]) == a.process(data[320:])


def test_reset_forgets_the_history():
    data = tone(1000, 16000, seconds=0.05)
    r = g.Resampler(16000, 8000)
    first = r.process(data)
    assert r.process(data) != first  # the history changes the start
    r.reset()
    assert r.process(data) == first


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_errors(in_rate, out_rate):
    r = g.Resampler(in_rate, out_rate)
    with pytest.raises(ValueError, match="even number of bytes"):
        r.process(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="even number of bytes"):
        r.process_into(b"\x00", bytearray(100))
    with pytest.raises((TypeError, BufferError)):
        r.process_into(b"\x00\x00", b"readonly")
    with pytest.raises(TypeError):
        r.process("text")
    assert r.max_output_bytes(0) == 0 and r.max_output_bytes(-5) == 0
    assert r.max_output_bytes(2 * 480) >= 2 * 480 * out_rate // in_rate
