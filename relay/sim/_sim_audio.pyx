# cython: language_level=3
"""The simulated model's hot path in C: a client's masked text frame to the audio it appends.

Owns: unmasking a client WebSocket payload (RFC 6455 section 5.3), recognising the one message
a client sends 25 to 50 times a second per call,
`{"type":"input_audio_buffer.append","audio":"<base64>"}` (or with ", " separators: the two
shapes relay.sim.model.validation.fast_append_audio accepts), by its bytes without a JSON parse,
and decoding its base64 strictly (binascii.a2b_base64(strict_mode=True) semantics). Anything
else - other keys, an event_id, escapes, whitespace, base64 that is not strict - is handed back
unmasked for the general path (UTF-8 decode, JSON parse, validation, errors) unchanged.
A strictly valid base64 string is ASCII with no quote or backslash, so nothing can hide in it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.string cimport memcmp

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


def unmask(data, Py_ssize_t offset, Py_ssize_t length, bytes mask):
    """data[offset:offset + length] XORed with the 4-byte mask (a client frame's payload)."""
    cdef bytes raw = data if type(data) is bytes else bytes(data)
    if len(mask) != 4:
        raise ValueError("a WebSocket mask is 4 bytes")
    if offset < 0 or length < 0 or offset + length > PyBytes_GET_SIZE(raw):
        raise ValueError("the payload lies outside the data")
    out = PyBytes_FromStringAndSize(NULL, length)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *src = <const uint8_t *>PyBytes_AS_STRING(raw) + offset
    cdef const uint8_t *key = <const uint8_t *>PyBytes_AS_STRING(mask)
    cdef Py_ssize_t i
    for i in range(length):
        dst[i] = src[i] ^ key[i & 3]
    return out


def masked_text(data, Py_ssize_t offset, Py_ssize_t length, bytes mask):
    """A client text frame's masked payload data[offset:offset + length] -> (audio, None) when
    it is an append in the compact shape with strict base64, else (None, unmasked payload)."""
    payload = unmask(data, offset, length, mask)
    audio = _append_audio(<const uint8_t *>PyBytes_AS_STRING(payload), length)
    if audio is not None:
        return audio, None
    return None, payload
