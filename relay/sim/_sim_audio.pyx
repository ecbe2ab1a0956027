# cython: language_level=3
"""The simulated model's hot path in C: a client's append message to the audio it appends.

Owns: recognising the one message a client sends 25 to 50 times a second per call,
`{"type":"input_audio_buffer.append","audio":"<base64>"}` (or with ", " separators: the two
shapes relay.sim.model.validation.fast_append_audio accepts), by its bytes without a JSON parse,
and decoding its base64 strictly (binascii.a2b_base64(strict_mode=True) semantics). Anything
else - other keys, an event_id, escapes, whitespace, base64 that is not strict - is left to
the general path (UTF-8 decode, JSON parse, validation, errors) unchanged. (The frames are split
and unmasked by relay/sim/_ws_reader.pyx.)
A strictly valid base64 string is ASCII with no quote or backslash, so nothing can hide in it.
Also the server VAD's per-frame work: the level of a 20 ms frame (u-law, A-law or PCM16, in
dBov exactly as relay._g711 computes it) and the VAD state machine (FrameVad), fed a whole
append's frames in one call. relay.sim.model.vad owns the settings and the behaviour. And the
input buffer's appending (InputBufferCore: the audio added, its frames fed to the VAD, the
buffer trimmed); relay.sim.model.input_buffer owns the rest of the buffer.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport log10, sqrt
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from relay import _g711

cdef bytes _PREFIX_COMPACT = b'{"type":"input_audio_buffer.append","audio":"'
cdef bytes _PREFIX_SPACED = b'{"type": "input_audio_buffer.append", "audio": "'
cdef bytes _SUFFIX = b'"}'

# 0..63 for the base64 alphabet, 64 for '=', 255 for everything else
cdef uint8_t _B64[256]


cdef void _init_table():
    cdef int i
    cdef bytes alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    cdef const char *a = PyBytes_AS_STRING(alphabet)
    for i in range(256):
        _B64[i] = 255
    for i in range(64):
        _B64[<uint8_t>a[i]] = i
    _B64[<uint8_t>b'='] = 64


_init_table()


cdef object _b64decode_strict(const uint8_t *src, Py_ssize_t n):
    """The bytes of strict base64 src[:n]; None when it is not strict base64.

    Strict: only the alphabet, length a multiple of 4, '=' only as the last one or two
    characters of the last quantum. The discarded low bits of the last quantum are not checked
    (binascii does not check them either).
    """
    cdef Py_ssize_t pad = 0, out_len, i, o = 0
    cdef uint8_t a, b, c, d
    cdef object out
    cdef uint8_t *dst
    if n % 4:
        return None
    if n == 0:
        return b""
    if src[n - 1] == b'=':
        pad = 2 if src[n - 2] == b'=' else 1
    out_len = n // 4 * 3 - pad
    out = PyBytes_FromStringAndSize(NULL, out_len)
    dst = <uint8_t *>PyBytes_AS_STRING(out)
    for i in range(0, n - 4, 4):
        a = _B64[src[i]]
        b = _B64[src[i + 1]]
        c = _B64[src[i + 2]]
        d = _B64[src[i + 3]]
        if (a | b | c | d) & 0xC0:      # '=' (64) or not in the alphabet (255)
            return None
        dst[o] = (a << 2) | (b >> 4)
        dst[o + 1] = ((b & 0x0F) << 4) | (c >> 2)
        dst[o + 2] = ((c & 0x03) << 6) | d
        o += 3
    i = n - 4
    a = _B64[src[i]]
    b = _B64[src[i + 1]]
    c = _B64[src[i + 2]]
    d = _B64[src[i + 3]]
    if (a | b) & 0xC0:
        return None
    dst[o] = (a << 2) | (b >> 4)
    if pad == 2:
        return out if c == 64 else None         # "xx=="
    if c & 0xC0:
        return None
    dst[o + 1] = ((b & 0x0F) << 4) | (c >> 2)
    if pad == 1:
        return out                              # "xxx=" (d is the '=')
    if d & 0xC0:
        return None
    dst[o + 2] = ((c & 0x03) << 6) | d
    return out


def b64decode_strict(data):
    """The bytes of strict base64 `data` (bytes or ASCII str); None when it is not strict."""
    if isinstance(data, str):
        try:
            data = (<str>data).encode("ascii")
        except UnicodeEncodeError:
            return None
    cdef bytes raw = bytes(data)
    return _b64decode_strict(<const uint8_t *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


cdef object _append_audio(const uint8_t *text, Py_ssize_t n):
    cdef Py_ssize_t start
    if n < 2 or text[n - 2] != b'"' or text[n - 1] != b'}':
        return None
    if n >= PyBytes_GET_SIZE(_PREFIX_COMPACT) + 2 and memcmp(
            text, PyBytes_AS_STRING(_PREFIX_COMPACT), PyBytes_GET_SIZE(_PREFIX_COMPACT)) == 0:
        start = PyBytes_GET_SIZE(_PREFIX_COMPACT)
    elif n >= PyBytes_GET_SIZE(_PREFIX_SPACED) + 2 and memcmp(
            text, PyBytes_AS_STRING(_PREFIX_SPACED), PyBytes_GET_SIZE(_PREFIX_SPACED)) == 0:
        start = PyBytes_GET_SIZE(_PREFIX_SPACED)
    else:
        return None
    return _b64decode_strict(text + start, n - 2 - start)


def append_audio(text):
    """The audio of an unmasked append message in the compact shape (bytes); else None."""
    cdef bytes raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return _append_audio(<const uint8_t *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


# ---- Energy VAD over the input buffer ---------------------------------------------------------

cdef enum:
    _FRAME_MS = 20
    _NONE = 0
    _STARTED = 1
    _STOPPED = 2

ULAW, ALAW, PCM16 = 0, 1, 2     # the `kind` of FrameVad.scan: how a frame's bytes are samples

cdef uint32_t _ULAW_SQ[256]
cdef uint32_t _ALAW_SQ[256]
cdef int64_t _UNSET = -(1 << 62)


cdef inline int _ld16(const uint8_t *p) noexcept nogil:
    """One little-endian PCM16 sample at any alignment."""
    return <int16_t>(<uint16_t>p[0] | (<uint16_t>p[1] << 8))


cdef void _init_squares():
    cdef bytes codes = bytes(range(256))
    cdef bytes ulaw = _g711.ulaw_decode(codes)      # PCM16 little-endian, as the model decodes
    cdef bytes alaw = _g711.alaw_decode(codes)
    cdef int i, v
    for i in range(256):
        v = _ld16(<const uint8_t *>PyBytes_AS_STRING(ulaw) + 2 * i)
        _ULAW_SQ[i] = <uint32_t>(v * v)
        v = _ld16(<const uint8_t *>PyBytes_AS_STRING(alaw) + 2 * i)
        _ALAW_SQ[i] = <uint32_t>(v * v)


_init_squares()


cdef double _level(const uint8_t *p, Py_ssize_t n, int kind) noexcept nogil:
    """dBov of one frame, exactly as relay._g711's ulaw_dbov / pcm_dbov compute it."""
    cdef uint64_t acc = 0
    cdef Py_ssize_t i, count
    cdef int x
    cdef double rms, db
    if kind == 2:
        count = n >> 1
        for i in range(count):
            x = _ld16(p + 2 * i)
            acc += <uint64_t>(<uint32_t>(x * x))
    else:
        count = n
        if kind == 0:
            for i in range(n):
                acc += _ULAW_SQ[p[i]]
        else:
            for i in range(n):
                acc += _ALAW_SQ[p[i]]
    if count <= 0:
        return -127.0
    rms = sqrt(<double>acc / <double>count)
    if rms <= 0.0:
        return -127.0
    db = 20.0 * log10(rms / 32768.0)
    return db if db > -127.0 else -127.0


def frame_level(data, int kind):
    """dBov of one frame of `kind` (ULAW, ALAW, PCM16: an odd last byte is ignored)."""
    cdef bytes raw = bytes(data)
    if kind not in (0, 1, 2):
        raise ValueError("kind must be ULAW, ALAW or PCM16")
    return _level(<const uint8_t *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), kind)


cdef class FrameVad:
    """Energy VAD state: a voiced run of min_speech_ms starts speech, silence_ms of silence
    stops it (relay.sim.model.vad owns the settings and documents the behaviour)."""

    cdef public double threshold_dbov
    cdef public long long prefix_padding_ms
    cdef public long long silence_ms
    cdef public long long min_speech_ms
    cdef public bint speaking
    cdef int64_t _run_start
    cdef int64_t _silence_start

    def __init__(self, double threshold_dbov, long long prefix_padding_ms, long long silence_ms,
                 long long min_speech_ms):
        self.threshold_dbov = threshold_dbov
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self.speaking = False
        self._run_start = _UNSET
        self._silence_start = _UNSET

    @property
    def run_start_ms(self):
        """Start of the current voiced run (audio ms), None when there is none."""
        return None if self._run_start == _UNSET else self._run_start

    @property
    def silence_start_ms(self):
        return None if self._silence_start == _UNSET else self._silence_start

    def reset(self):
        self.speaking = False
        self._run_start = _UNSET
        self._silence_start = _UNSET

    cdef int _feed(self, double dbov, int64_t frame_end_ms) noexcept:
        cdef bint voiced = dbov >= self.threshold_dbov
        if not self.speaking:
            if not voiced:
                self._run_start = _UNSET
                return _NONE
            if self._run_start == _UNSET:
                self._run_start = frame_end_ms - _FRAME_MS
            if frame_end_ms - self._run_start >= self.min_speech_ms:
                self.speaking = True
                self._silence_start = _UNSET
                return _STARTED
            return _NONE
        if voiced:
            self._silence_start = _UNSET
            return _NONE
        if self._silence_start == _UNSET:
            self._silence_start = frame_end_ms - _FRAME_MS
        if frame_end_ms - self._silence_start >= self.silence_ms:
            self.speaking = False
            self._run_start = _UNSET
            return _STOPPED
        return _NONE

    def feed(self, double dbov, long long frame_end_ms):
        """One frame's level; STARTED, STOPPED or NONE (relay.sim.model.vad)."""
        return self._feed(dbov, frame_end_ms)

    def scan(self, bytearray buf, Py_ssize_t offset, Py_ssize_t position, Py_ssize_t frames,
             Py_ssize_t frame_bytes, Py_ssize_t bytes_per_ms, int kind):
        """Feed up to `frames` frames of `frame_bytes` from buf[offset:]; stop after the first
        that gives an edge. `position` is the absolute byte position of buf[offset] (a frame
        ends at audio ms (position + k * frame_bytes) // bytes_per_ms). -> (frames fed, edge)."""
        cdef Py_ssize_t fed = 0
        cdef int edge
        if frames < 0 or frame_bytes <= 0 or bytes_per_ms <= 0 or offset < 0 or kind < 0 \
                or kind > 2:
            raise ValueError("bad frame geometry")
        if offset + frames * frame_bytes > PyByteArray_GET_SIZE(buf):
            raise ValueError("the frames lie outside the buffer")
        edge = self._scan(<const uint8_t *>PyByteArray_AS_STRING(buf) + offset, position, frames,
                          frame_bytes, bytes_per_ms, kind, &fed)
        return fed, edge

    cdef int _scan(self, const uint8_t *p, Py_ssize_t position, Py_ssize_t frames,
                   Py_ssize_t frame_bytes, Py_ssize_t bytes_per_ms, int kind,
                   Py_ssize_t *fed) noexcept:
        cdef Py_ssize_t k
        cdef int edge
        for k in range(frames):
            position += frame_bytes
            edge = self._feed(_level(p + k * frame_bytes, frame_bytes, kind),
                              position // bytes_per_ms)
            if edge != _NONE:
                fed[0] = k + 1
                return edge
        fed[0] = frames
        return _NONE


cdef class InputBufferCore:
    """The appending half of relay.sim.model.input_buffer.InputAudioBuffer (which documents the
    buffer and owns the rest): audio in absolute byte positions since the session began, the
    frames cut for the VAD as they complete, the buffer trimmed while nobody speaks."""

    cdef public object fmt
    cdef public long long max_bytes
    cdef public bytearray _buf
    cdef public long long _start          # absolute position of _buf[0]
    cdef public long long _total          # bytes received since the session began
    cdef public long long _frame_pos      # where the next frame for the VAD begins
    cdef public Py_ssize_t _frame_bytes
    cdef public Py_ssize_t _bytes_per_ms
    cdef public int _kind                 # ULAW, ALAW, PCM16; -1: a format the VAD cannot read

    cpdef object append(self, data, FrameVad vad):
        """Add audio; with a VAD, the turn edges it found (InputAudioBuffer.append)."""
        cdef bytes chunk = data if type(data) is bytes else bytes(data)
        cdef bytearray buf = self._buf
        cdef Py_ssize_t n = PyBytes_GET_SIZE(chunk), size = PyByteArray_GET_SIZE(buf)
        cdef Py_ssize_t fb = self._frame_bytes, bpm = self._bytes_per_ms, fed = 0
        cdef long long pos, keep_from, start_ms
        cdef int edge
        PyByteArray_Resize(buf, size + n)
        memcpy(PyByteArray_AS_STRING(buf) + size, PyBytes_AS_STRING(chunk), n)
        self._total += n
        if vad is None:
            if PyByteArray_GET_SIZE(buf) > self.max_bytes:
                self._drop_before(self._total - self.max_bytes)
            return None
        edges = None
        pos = self._frame_pos
        while pos + fb <= self._total:
            if fb <= 0 or bpm <= 0 or self._kind < 0 or self._kind > 2:
                raise ValueError("bad frame geometry")
            edge = vad._scan(<const uint8_t *>PyByteArray_AS_STRING(buf) + (pos - self._start),
                             pos, (self._total - pos) // fb, fb, bpm, self._kind, &fed)
            pos += fed * fb
            if edge != _NONE:
                if edges is None:
                    edges = []
                if edge == _STARTED:
                    start_ms = vad._run_start - vad.prefix_padding_ms
                    if start_ms < self._start // bpm:
                        start_ms = self._start // bpm
                    edges.append((edge, start_ms))
                else:
                    edges.append((edge, pos // bpm))
        self._frame_pos = pos
        if edges is not None:
            return edges  # the session takes the turn's audio before anything is trimmed
        if not vad.speaking:
            keep_from = pos - (vad.prefix_padding_ms + vad.min_speech_ms) * bpm
            if keep_from - self._start > max(4096, PyByteArray_GET_SIZE(buf) // 2):
                self._drop_before(keep_from)
        elif PyByteArray_GET_SIZE(buf) > self.max_bytes:
            self._drop_before(self._total - self.max_bytes)
        return None

    cpdef _drop_before(self, long long position):
        """Forget the audio before absolute `position` (kept within what is buffered)."""
        cdef bytearray buf = self._buf
        cdef Py_ssize_t cut
        if position < self._start:
            position = self._start
        if position > self._total:
            position = self._total
        cut = <Py_ssize_t>(position - self._start)
        if cut:
            del buf[:cut]       # bytearray moves its start, no copy (as Python's del did)
        self._start = position
        if self._frame_pos < position:
            self._frame_pos = position
