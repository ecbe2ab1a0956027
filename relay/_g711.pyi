"""G.711 codecs, resampling between 8, 16 and 24 kHz, and frame energy (Cython: relay/_g711.pyx).

PCM is always signed 16-bit little-endian mono ("PCM16"). Every function takes any bytes-like
object (bytes, bytearray, memoryview) of any length; the *_into variants write into a
caller-owned writable buffer and return the number of bytes written (ValueError when it is too
small), so the hot path allocates nothing.
"""

from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

def ulaw_decode(data: Buffer) -> bytes:
    """u-law bytes -> PCM16 (twice as many bytes), bit-exact ITU-T G.711."""

def ulaw_encode(pcm: Buffer) -> bytes:
    """PCM16 -> u-law (half as many bytes). ValueError on an odd length."""

def alaw_decode(data: Buffer) -> bytes:
    """A-law bytes -> PCM16, bit-exact ITU-T G.711."""

def alaw_encode(pcm: Buffer) -> bytes:
    """PCM16 -> A-law. ValueError on an odd length."""

def ulaw_decode_into(data: Buffer, out: Union[bytearray, memoryview]) -> int: ...
def ulaw_encode_into(pcm: Buffer, out: Union[bytearray, memoryview]) -> int: ...
def alaw_decode_into(data: Buffer, out: Union[bytearray, memoryview]) -> int: ...
def alaw_encode_into(pcm: Buffer, out: Union[bytearray, memoryview]) -> int: ...

def ulaw_to_alaw(data: Buffer) -> bytes:
    """Transcode u-law to A-law (via the exact PCM value)."""

def alaw_to_ulaw(data: Buffer) -> bytes:
    """Transcode A-law to u-law (via the exact PCM value)."""

class Resampler:
    """Streaming polyphase FIR resampler between 8000, 16000 and 24000 Hz.

    Keeps its filter history between calls, so consecutive frames join without clicks.
    Downsampling filters below the new Nyquist (>= 40 dB stop-band rejection); upsampling
    removes the images. Any input length is accepted (even a single sample).
    """

    in_rate: int
    out_rate: int

    def __init__(self, in_rate: int, out_rate: int) -> None:
        """ValueError unless both rates are in {8000, 16000, 24000}."""

    def process(self, pcm: Buffer) -> bytes:
        """Resample PCM16 at in_rate into PCM16 at out_rate."""

    def process_into(self, pcm: Buffer, out: Union[bytearray, memoryview]) -> int:
        """Like process(), writing into out; returns bytes written."""

    def max_output_bytes(self, input_bytes: int) -> int:
        """An upper bound on what process() returns for input_bytes of input."""

    def reset(self) -> None:
        """Forget the filter history (start of a new stream)."""

    # Addition: the filter's group delay in output samples (0.0 for equal rates).
    @property
    def delay(self) -> float: ...

def pcm_rms(pcm: Buffer) -> float:
    """RMS of PCM16 samples (0.0 for empty input)."""

def pcm_dbov(pcm: Buffer) -> float:
    """Level in dBov (0 dBov = full-scale square wave); -127.0 for silence or empty input."""

def ulaw_rms(data: Buffer) -> float:
    """RMS of the PCM16 values the u-law bytes decode to, without allocating."""

def ulaw_dbov(data: Buffer) -> float:
    """Level in dBov of u-law audio; -127.0 for digital silence or empty input."""


# --- Additions to the contract (everything above is unchanged) --------------------------------
# - Resampler(r, r) with equal rates is accepted and copies the audio unchanged (delay 0).
# - Resampler.delay, alaw_rms/alaw_dbov, SUPPORTED_RATES, design_filter, simd_level below.
# - Rates may be any integer type (numpy ints too); bools and non-integers raise ValueError.
# - Input and out buffers must not overlap. A non-contiguous or read-only out buffer raises
#   TypeError or BufferError (as Python's own buffer protocol reports it).

SUPPORTED_RATES: tuple[int, ...]  # (8000, 16000, 24000)

def alaw_rms(data: Buffer) -> float:
    """RMS of the PCM16 values the A-law bytes decode to, without allocating."""

def alaw_dbov(data: Buffer) -> float:
    """Level in dBov of A-law audio; -127.0 for empty input (A-law has no zero code)."""

def design_filter(
    in_rate: int, out_rate: int
) -> tuple[int, int, int, list[int], tuple[int, int]]:
    """The Resampler's filter for a rate pair, for analysis and tests:
    (up, down, taps_per_phase, Q14 coefficients (`up` phases, oldest tap first),
    (phase, tap) of the branch that is a pure delay or (-1, 0))."""

def simd_level() -> str:
    """Which kernels are in use: "avx2", "sse2" (x86-64 without AVX2) or "portable"."""

def _set_simd_level(name: str) -> str:
    """Tests only: use a lower kernel level ("portable", "sse2"); returns the previous one."""
