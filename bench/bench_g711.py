"""relay._g711 per 20 ms frame, against Python's audioop (or numpy when audioop is gone).

Every row times one call per frame, made the same way on both sides: a functools.partial for
the codecs; a small closure for the resamplers (audioop.ratecv has to carry its state). Each
row is measured in several passes spread over the whole run, relay and reference moments apart,
and keeps the best of each: a burst of interference on the shared machine then spoils a pass,
not a row.

Frames: 160 u-law/A-law bytes (every code equally likely) or the 320 PCM16 bytes they decode
to, at 8 kHz; 320 or 960 PCM16 bytes of two tones at 8 or 24 kHz for the resamplers. audioop's
encoders are faster on quiet audio (its segment search is shorter); relay's cost does not depend
on the signal.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable

import numpy as np

from bench.harness import Row, time_per_call_ns
from relay import _g711 as g

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
except ImportError:  # Python 3.13+: audioop was removed
    audioop = None

PASSES = 6  # measure every row this many times, spread over the run (noise comes in bursts)
TARGET_RUN_NS = 10_000_000  # each timed run lasts about 10 ms
NO_AUDIOOP = " (no audioop)"


def _calls_for(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    for _ in range(200):
        fn()
    per_call = max((time.perf_counter_ns() - start) / 200, 1.0)
    return max(200, int(TARGET_RUN_NS / per_call))


class _Pair:
    """One row to measure: relay's callable and the reference's, best times so far."""

    def __init__(self, name, ours, nbytes, ref_name, ref, target=None, frames=1) -> None:
        self.name, self.ours, self.nbytes, self.frames = name, ours, nbytes, frames
        self.ref_name, self.ref, self.target = ref_name, ref, target
        self.n_ours, self.n_ref = _calls_for(ours), _calls_for(ref)
        self.best_ours = self.best_ref = float("inf")

    def measure(self) -> None:
        self.best_ref = min(self.best_ref, time_per_call_ns(self.ref, self.n_ref, repeat=3))
        self.best_ours = min(self.best_ours, time_per_call_ns(self.ours, self.n_ours, repeat=3))

    def row(self) -> Row:
        return Row(self.name, self.best_ours / self.frames, self.nbytes, self.ref_name,
                   self.best_ref / self.frames, self.target)


def _warm_up(seconds: float = 0.3) -> None:
    """Bring the CPU out of its idle state before the first measurement."""
    frame = bytes(320)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        g.ulaw_encode(frame)


# --- references -----------------------------------------------------------------------------

_ALL_PCM = np.arange(65536, dtype=np.uint16).view("<i2").tobytes()
_TABLES = {
    "ulaw_decode": np.frombuffer(g.ulaw_decode(bytes(range(256))), dtype="<i2"),
    "alaw_decode": np.frombuffer(g.alaw_decode(bytes(range(256))), dtype="<i2"),
    "ulaw_encode": np.frombuffer(g.ulaw_encode(_ALL_PCM), dtype=np.uint8),
    "alaw_encode": np.frombuffer(g.alaw_encode(_ALL_PCM), dtype=np.uint8),
}


def _numpy_lookup(table: np.ndarray, dtype: str, data: bytes) -> bytes:
    """G.711 the numpy way: one table lookup for the whole frame."""
    return table[np.frombuffer(data, dtype=dtype)].tobytes()


class NumpyPolyphase:
    """The same filter as relay's Resampler done the numpy way: np.convolve of (history +
    frame) with each polyphase branch (float64; exact, so the output is bit-identical)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.up, self.down, taps, coefficients, _ = g.design_filter(in_rate, out_rate)
        branches = np.asarray(coefficients, dtype=np.float64).reshape(self.up, taps) / (1 << 14)
        self.kernels = [branch[::-1].copy() for branch in branches]  # newest tap first
        self.history = np.zeros(taps - 1)
        self.offset = 0  # first output position in the next frame (decimation)

    def process(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2")
        buf = np.concatenate((self.history, x))
        if self.down == 1:
            y = np.empty((len(x), self.up))
            for phase, kernel in enumerate(self.kernels):
                y[:, phase] = np.convolve(buf, kernel, "valid")
            y = y.reshape(-1)
        else:
            y = np.convolve(buf, self.kernels[0], "valid")[self.offset :: self.down]
            self.offset = (self.offset - len(x)) % self.down
        self.history = buf[len(x) :]
        y = np.floor(y + 0.5)
        return np.minimum(np.maximum(y, -32768), 32767).astype("<i2").tobytes()


# --- rows ---------------------------------------------------------------------------------------


def _codec_pairs() -> list[_Pair]:
    codes = np.random.default_rng(20).integers(0, 256, size=160, dtype=np.uint8).tobytes()
    pcm = g.ulaw_decode(codes)  # 320 bytes
    out = bytearray(640)
    P = functools.partial
    inputs = {"ulaw_decode": codes, "alaw_decode": codes, "ulaw_encode": pcm, "alaw_encode": pcm}
    audioop_names = {
        "ulaw_decode": "ulaw2lin",
        "alaw_decode": "alaw2lin",
        "ulaw_encode": "lin2ulaw",
        "alaw_encode": "lin2alaw",
    }
    refs = {}
    for key, data in inputs.items():
        if audioop is not None:
            name = audioop_names[key]
            refs[key] = (f"audioop.{name}", P(getattr(audioop, name), data, 2))
        else:
            dtype = np.uint8 if key.endswith("decode") else "<u2"
            refs[key] = ("numpy table" + NO_AUDIOOP, P(_numpy_lookup, _TABLES[key], dtype, data))
    # (function, its reference, target: at least this many times faster)
    cases = [
        ("ulaw_decode", "ulaw_decode", 1.0),
        ("ulaw_decode_into", "ulaw_decode", 1.0),
        # One 20 ms frame per call: the ~40 ns of a Python call dominate both sides, so the
        # per-frame rows are reported; the 10x target is judged on 1 s buffers below, where
        # each side's cost is its encoding work.
        ("ulaw_encode", "ulaw_encode", None),
        ("ulaw_encode_into", "ulaw_encode", None),
        ("alaw_decode", "alaw_decode", 1.0),
        ("alaw_decode_into", "alaw_decode", 1.0),
        ("alaw_encode", "alaw_encode", 1.0),
        ("alaw_encode_into", "alaw_encode", 1.0),
    ]
    pairs = []
    for name, key, target in cases:
        fn = getattr(g, name)
        ours = P(fn, inputs[key], out) if name.endswith("_into") else P(fn, inputs[key])
        ref_name, ref = refs[key]
        pairs.append(_Pair(f"g711 {name}", ours, len(inputs[key]), ref_name, ref, target))
    second = b"".join(g.ulaw_decode(np.random.default_rng(n).integers(0, 256, 160, np.uint8)
                                    .tobytes()) for n in range(50))      # 1 s of speech-level PCM
    if audioop is not None:
        ref_name, ref = "audioop.lin2ulaw", P(audioop.lin2ulaw, second, 2)
    else:
        ref_name = "numpy table" + NO_AUDIOOP
        ref = P(_numpy_lookup, _TABLES["ulaw_encode"], "<u2", second)
    pairs.append(_Pair("g711 ulaw_encode (1 s buffers)", P(g.ulaw_encode, second), 320,
                       ref_name, ref, 10.0, frames=50))
    return pairs


def _resampler_pairs(in_rate: int, out_rate: int) -> list[_Pair]:
    t = np.arange(in_rate // 50) / in_rate
    signal = 8000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 2900 * t)
    frame = np.round(signal).astype("<i2").tobytes()
    label = f"Resampler {in_rate // 1000}->{out_rate // 1000}k"

    resampler = g.Resampler(in_rate, out_rate)
    out = bytearray(resampler.max_output_bytes(len(frame)))
    process, process_into = resampler.process, resampler.process_into

    def ours() -> None:
        process(frame)

    def ours_into() -> None:
        process_into(frame, out)

    numpy_resampler = NumpyPolyphase(in_rate, out_rate)
    numpy_process = numpy_resampler.process
    check = g.Resampler(in_rate, out_rate)
    for _ in range(3):  # the numpy reference does the very same job, bit for bit
        assert numpy_process(frame) == check.process(frame)

    def numpy_ref() -> None:
        numpy_process(frame)

    pairs = []
    if audioop is not None:
        state = None
        ratecv = audioop.ratecv

        def audioop_ref() -> None:
            nonlocal state
            _, state = ratecv(frame, 2, 1, in_rate, out_rate, state)

        ref_name = "audioop.ratecv (stateful)"
        for name, fn in ((f"{label} process", ours), (f"{label} process_into", ours_into)):
            pairs.append(_Pair(name, fn, len(frame), ref_name, audioop_ref, 2.0))
    if audioop is not None:
        pairs.append(_Pair(f"{label} process", ours, len(frame), "numpy convolve", numpy_ref))
    else:
        name = "numpy convolve" + NO_AUDIOOP
        pairs.append(_Pair(f"{label} process", ours, len(frame), name, numpy_ref, 2.0))
    return pairs


def run() -> list[Row]:
    """All rows: codecs per 20 ms frame, then 8->24 kHz and 24->8 kHz resampling."""
    _warm_up()
    pairs = _codec_pairs() + _resampler_pairs(8000, 24000) + _resampler_pairs(24000, 8000)
    for _ in range(PASSES):
        for pair in pairs:
            pair.measure()
    return [pair.row() for pair in pairs]
