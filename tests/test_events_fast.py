"""relay/_events.pyx: the audio delta read in C gives what the general path (ujson, then the
session's checks and base64) gives, and declines everything else."""

import base64
import binascii
import json

import pytest
import ujson
from hypothesis import given
from hypothesis import strategies as st

from relay._events import IGNORED, audio_delta

DELTA = "response.output_audio.delta"


def general(message: bytes):
    """What the general path makes of a message: (response_id, item_id, audio), or None when
    it is not an audio delta it would play (wrong type, bad shape, bad base64)."""
    try:
        event = ujson.loads(message)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") != DELTA:
        return None
    item_id, delta = event.get("item_id"), event.get("delta")
    if not isinstance(item_id, str) or not item_id or not isinstance(delta, str):
        return None
    response_id = event.get("response_id")
    try:
        audio = base64.b64decode(delta)
    except (binascii.Error, ValueError):
        return None
    return (response_id if isinstance(response_id, str) else "", item_id, audio)


def event(audio: bytes, **fields) -> dict:
    out = {"type": DELTA, "event_id": "event_1", "response_id": "resp_1", "item_id": "item_1",
           "output_index": 0, "content_index": 0,
           "delta": base64.b64encode(audio).decode("ascii")}
    out.update(fields)
    return out


@given(st.binary(max_size=4000), st.sampled_from(["compact", "spaced", "indented"]))
def test_an_audio_delta_is_read_as_the_general_path_reads_it(audio, style):
    e = event(audio)
    text = {"compact": json.dumps(e, separators=(",", ":")), "spaced": json.dumps(e),
            "indented": json.dumps(e, indent=2)}[style]
    assert audio_delta(text.encode()) == general(text.encode()) == ("resp_1", "item_1", audio)


keys = st.sampled_from(["type", "item_id", "response_id", "delta", "event_id", "output_index",
                        "x"])
values = st.one_of(st.sampled_from([DELTA, "item_9", "", "QUJD", "QUI=", "QQ==", "QR==",
                                    "QUJ=", "Q===", "QUJD\\n", "a\\u00e9", "é", 7, -3, 0, 1.5,
                                    None, True, [1], {"a": 1}]),
                   st.text(max_size=12))


@given(st.lists(st.tuples(keys, values), max_size=8), st.booleans())
def test_any_other_message_is_declined_or_read_identically(pairs, start_as_delta):
    """Random flat and not-so-flat objects: the fast path either declines (None) or agrees."""
    if start_as_delta:
        pairs = [("type", DELTA), ("item_id", "item_1")] + pairs
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs)
    message = ("{" + body + "}").encode()
    fast = audio_delta(message)
    assert fast is None or fast == general(message)


@pytest.mark.parametrize("message", [
    b"", b"{", b"{}", b"[]", b'"x"', b"null", b"{" + b'"type":"' + DELTA.encode() + b'"',
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD"} trailing',
    b'{"type":"response.output_audio.delta","item_id":"","delta":"QUJD"}',
    b'{"type":"response.output_audio.delta","delta":"QUJD"}',
    b'{"type":"response.output_audio.delta","item_id":"i"}',
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJ"}',       # length
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD\\/"}',   # escape
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QR=="}',      # not canonical
    b'{"type":"response.output_audio.delta","item_id":"\xff","delta":"QUJD"}',   # not UTF-8
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD","n":-}',
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD","n":01}',
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD","n":1e3}',
    b'{"type":"response.output_audio.delta","item_id":"i","delta":"QUJD","o":{}}',
    b'{"type":"response.done","item_id":"i","delta":"QUJD"}',
])
def test_what_the_fast_path_declines(message):
    assert audio_delta(message) is None


def test_the_fast_path_needs_bytes():
    assert audio_delta(bytearray(b'{"type":"response.output_audio.delta","item_id":"i",'
                                 b'"delta":"QUJD"}')) == ("", "i", b"ABC")
    with pytest.raises(TypeError):
        audio_delta('{"type":"response.output_audio.delta"}')


HANDLED = frozenset([b"response.done", DELTA.encode(), b"error"])
ignored_types = st.sampled_from(["response.output_audio_transcript.delta", "rate_limits.updated",
                                 "response.done", "error", "", "x"])


def general_ignores(message: bytes) -> bool:
    """The general path parses it and drops it: a JSON object whose type is a string it does
    not handle."""
    try:
        event = ujson.loads(message)
    except ValueError:
        return False
    return isinstance(event, dict) and isinstance(event.get("type"), str) and \
        event["type"].encode() not in HANDLED


@given(ignored_types, st.lists(st.tuples(keys, values), max_size=8))
def test_an_event_not_handled_is_dropped_only_when_the_general_path_would_drop_it(kind, pairs):
    """Random objects of handled and unhandled types: IGNORED only for what the general path
    would parse and drop; audio deltas still read; everything else declined."""
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in [("type", kind)] + pairs)
    message = ("{" + body + "}").encode()
    fast = audio_delta(message, HANDLED)
    if fast is IGNORED:
        assert general_ignores(message)
    else:
        assert fast is None or fast == general(message)


@pytest.mark.parametrize("message, expected", [
    (b'{"type":"response.output_audio_transcript.delta","event_id":"e","response_id":"r",'
     b'"item_id":"i","output_index":0,"content_index":0,"delta":"Hello "}', IGNORED),
    (b'{ "type" : "conversation.item.done" , "n" : -3 }', IGNORED),
    (b'{"type":"response.done","response":{}}', None),                  # handled
    (b'{"type":"response.done","x":1}', None),                          # handled, flat
    (b'{"type":"x","delta":"\xc3\xa9"}', None),                        # not ASCII
    (b'{"type":"x","delta":"\\u00e9"}', None),                          # an escape
    (b'{"type":"x","n":1.5}', None),                                    # a float
    (b'{"type":"x","type":"y"}', None),                                 # type twice
    (b'{"type":"x"', None),                                             # cut short
    (b'{"kind":"x"}', None),                                            # no type
])
def test_events_the_session_does_not_handle(message, expected):
    assert audio_delta(message, HANDLED) is expected
    assert audio_delta(message) is None             # without the handled set: never IGNORED
