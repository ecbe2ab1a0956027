# cython: language_level=3
"""The model's audio, read straight from the WebSocket message: response.output_audio.delta.

Owns the fast path of the one Realtime event that carries most of a call's bytes (the model's
voice, a few times a second per speaking call): `audio_delta(message)` reads a flat JSON object
(string keys; string, integer, true/false/null values; no escapes) and, when it is an audio delta
with an item id, returns its response id, item id and the decoded audio in one pass, base64
decoded from the message's own bytes. Anything else — another event, a nested value, an escape,
base64 that is not canonical — returns None and takes the general path (ujson, then
relay/realtime_session.py), which judges it exactly as before: this path only ever accepts what
that one would accept, with the same result. Given the event types the session handles, it
also recognises an event of any other type (which the general path would parse only to drop:
the model's transcript deltas, as many as its audio deltas) and returns IGNORED, when the
message is a flat object in ASCII, which the general path would accept too.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t
from libc.string cimport memcmp

cdef bytes _TYPE = b"type"
cdef bytes _DELTA_TYPE = b"response.output_audio.delta"
cdef bytes _RESPONSE_ID = b"response_id"
cdef bytes _ITEM_ID = b"item_id"
cdef bytes _DELTA = b"delta"

cdef signed char _VALUE[256]

IGNORED = "ignored"     # audio_delta's answer for a valid event of a type not handled


cdef void _init_table() noexcept:
    cdef int i
    cdef bytes alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for i in range(256):
        _VALUE[i] = -1
    for i in range(64):
        _VALUE[<uint8_t>alphabet[i]] = i


_init_table()


cdef inline Py_ssize_t _skip_space(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 10 or p[i] == 13):
        i += 1
    return i


cdef inline Py_ssize_t _string_end(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """i: just after an opening quote. The index of the closing quote, or -1 when the string
    has an escape, a control character or no end (the general path decides)."""
    while i < n:
        if p[i] == 34:          # "
            return i
        if p[i] == 92 or p[i] < 32:     # backslash, control
            return -1
        i += 1
    return -1


cdef inline Py_ssize_t _integer_end(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """i: at a JSON integer (-?(0|[1-9][0-9]*)). Just after it, or -1 when it is not one."""
    if p[i] == 45:
        i += 1
    if i >= n or p[i] < 48 or p[i] > 57:
        return -1
    if p[i] == 48:
        return i + 1
    while i < n and p[i] >= 48 and p[i] <= 57:
        i += 1
    return i


cdef inline bint _is(const uint8_t* p, Py_ssize_t start, Py_ssize_t end, bytes word) noexcept:
    cdef Py_ssize_t size = len(word)
    return end - start == size and memcmp(p + start, PyBytes_AS_STRING(word), size) == 0


cdef object _text(const uint8_t* p, Py_ssize_t start, Py_ssize_t end):
    """A JSON string's text (no escapes in it), or None when it is not valid UTF-8."""
    try:
        return PyBytes_FromStringAndSize(<const char*>p + start, end - start).decode("utf-8")
    except UnicodeDecodeError:
        return None


cdef object _b64decode(const uint8_t* p, Py_ssize_t n):
    """Canonical padded base64 (what the general path's b64decode gives the same bytes for);
    None for anything else."""
    cdef Py_ssize_t groups, out_size, i, o, pad = 0
    cdef int a, b, c, d
    if n % 4:
        return None
    if n and p[n - 1] == 61:
        pad = 2 if p[n - 2] == 61 else 1
    out_size = n // 4 * 3 - pad
    out = PyBytes_FromStringAndSize(NULL, out_size)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    groups = n // 4 - (1 if pad else 0)
    o = 0
    for i in range(groups):
        a = _VALUE[p[4 * i]]
        b = _VALUE[p[4 * i + 1]]
        c = _VALUE[p[4 * i + 2]]
        d = _VALUE[p[4 * i + 3]]
        if (a | b | c | d) < 0:
            return None
        w[o] = <uint8_t>((a << 2) | (b >> 4))
        w[o + 1] = <uint8_t>(((b & 15) << 4) | (c >> 2))
        w[o + 2] = <uint8_t>(((c & 3) << 6) | d)
        o += 3
    if pad:
        i = groups
        a = _VALUE[p[4 * i]]
        b = _VALUE[p[4 * i + 1]]
        if (a | b) < 0:
            return None
        w[o] = <uint8_t>((a << 2) | (b >> 4))
        if pad == 1:
            c = _VALUE[p[4 * i + 2]]
            if c < 0 or c & 3:      # bits past the end must be zero (canonical)
                return None
            w[o + 1] = <uint8_t>(((b & 15) << 4) | (c >> 2))
        elif b & 15:
            return None
    return out


cdef bint _ascii(const uint8_t* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] >= 128:
            return False
    return True


def audio_delta(message, handled=None):
    """(response_id, item_id, audio) of a response.output_audio.delta message (bytes); IGNORED
    for a message of a type not in `handled` (a set of bytes; None: never); None when it is
    neither, or not one this path reads (the general path then handles it)."""
    cdef const uint8_t[::1] view = message
    cdef Py_ssize_t n = view.shape[0]
    if n < 2:
        return None
    cdef const uint8_t* p = &view[0]
    cdef Py_ssize_t i = _skip_space(p, 0, n)
    cdef Py_ssize_t key_start, key_end, value_start, value_end
    cdef bint is_delta = False, is_ignored = False, type_seen = False
    cdef Py_ssize_t delta_start = -1, delta_end = -1
    response_id = ""
    item_id = None
    if i >= n or p[i] != 123:       # {
        return None
    i = _skip_space(p, i + 1, n)
    if i < n and p[i] == 125:
        return None
    while True:
        if i >= n or p[i] != 34:
            return None
        key_start = i + 1
        key_end = _string_end(p, key_start, n)
        if key_end < 0:
            return None
        i = _skip_space(p, key_end + 1, n)
        if i >= n or p[i] != 58:     # :
            return None
        i = _skip_space(p, i + 1, n)
        if i >= n:
            return None
        if p[i] == 34:
            value_start = i + 1
            value_end = _string_end(p, value_start, n)
            if value_end < 0:
                return None
            i = value_end + 1
            if _is(p, key_start, key_end, _TYPE):
                if type_seen:
                    return None         # a repeated key: the general path decides
                type_seen = True
                if _is(p, value_start, value_end, _DELTA_TYPE):
                    is_delta = True
                elif handled is None or PyBytes_FromStringAndSize(
                        <const char*>p + value_start, value_end - value_start) in handled:
                    return None
                else:
                    is_ignored = True
            elif _is(p, key_start, key_end, _DELTA):
                delta_start, delta_end = value_start, value_end
            elif _is(p, key_start, key_end, _ITEM_ID):
                item_id = _text(p, value_start, value_end)
                if item_id is None:
                    return None
            elif _is(p, key_start, key_end, _RESPONSE_ID):
                response_id = _text(p, value_start, value_end)
                if response_id is None:
                    return None
        elif (p[i] >= 48 and p[i] <= 57) or p[i] == 45:      # an integer
            if (_is(p, key_start, key_end, _TYPE) or _is(p, key_start, key_end, _DELTA)
                    or _is(p, key_start, key_end, _ITEM_ID)
                    or _is(p, key_start, key_end, _RESPONSE_ID)):
                return None
            i = _integer_end(p, i, n)
            if i < 0:
                return None
        else:
            return None          # an object, an array, a float, true/false/null: general path
        i = _skip_space(p, i, n)
        if i >= n:
            return None
        if p[i] == 44:           # ,
            i = _skip_space(p, i + 1, n)
            continue
        if p[i] == 125:          # }
            break
        return None
    if _skip_space(p, i + 1, n) != n:
        return None
    if is_ignored:
        return IGNORED if _ascii(p, n) else None
    if not is_delta or not item_id or delta_start < 0:
        return None
    audio = _b64decode(p + delta_start, delta_end - delta_start)
    if audio is None:
        return None
    return response_id, item_id, audio
