"""The one redactor: configured secrets and key-shaped text out of log records and transcripts."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from relay.redact import (
    MASK,
    PROCESS,
    RedactingFilter,
    Redactor,
    install_log_redaction,
    register,
    secrets_of,
)
from relay.transcript import Transcript

KEY = "sk-proj-" + "a1B2c3D4" * 6


def test_configured_secrets_and_key_shaped_text_are_masked():
    redactor = Redactor(["hunter22", 'pa"ss\\w0rd'])
    assert redactor.scrub("password hunter22 here") == f"password {MASK} here"
    assert redactor.scrub(json.dumps({"p": 'pa"ss\\w0rd'})) == json.dumps({"p": MASK})
    assert redactor.scrub(f"Incorrect API key provided: {KEY}.") == \
        f"Incorrect API key provided: {MASK}."
    assert redactor.scrub("Authorization: Bearer abcdef123456789") == \
        f"Authorization: Bearer {MASK}"
    # short things that merely look like it are left alone
    assert redactor.scrub("ask-me sk-short Bearer x") == "ask-me sk-short Bearer x"
    assert redactor.scrub_bytes(f"key={KEY}&p=hunter22".encode()) == \
        f"key={MASK}&p={MASK}".encode()
    value = {"text": "hunter22", "fields": [KEY, 3, None], "hunter22": ("x", "hunter22")}
    assert redactor.scrub_value(value) == {"text": MASK, "fields": [MASK, 3, None],
                                           MASK: ("x", MASK)}


def test_secrets_can_be_added_and_short_ones_are_ignored():
    redactor = Redactor([])
    redactor.add(["", "abc", "longer-secret"])
    assert len(redactor) == 1
    assert redactor.scrub("abc longer-secret") == f"abc {MASK}"


def test_the_secrets_of_a_configuration_include_webhook_headers():
    webhook = SimpleNamespace(headers={"X-Key": "k3y-from-env", "Authorization": "Bearer t0ken42"})
    agent = SimpleNamespace(tool_specs=(SimpleNamespace(webhook=webhook),
                                        SimpleNamespace(webhook=None)))
    tree = {"ari": {"password": "ari-pw"}, "openai": {"api_key": "sk-x"},
            "stt": {"api_key": "", "google_api_key": "g-key", "google_bearer_token": ""},
            "web": {"token": "dash-token"},
            "history": {"database_url": "postgresql://relay:db%2Fpw@db.example/relay"}}
    settings = SimpleNamespace(agents={"a": agent},
                               get=lambda d: tree[d.split(".")[0]][d.split(".")[1]])
    found = secrets_of(settings)
    for secret in ("ari-pw", "sk-x", "g-key", "dash-token", "k3y-from-env",
                   "Bearer t0ken42", "t0ken42",
                   "postgresql://relay:db%2Fpw@db.example/relay", "db/pw"):
        assert secret in found


def record(msg, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("relay.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_log_filter_scrubs_arguments_exceptions_and_stacks():
    f = RedactingFilter(Redactor(["s3cret-pw"]))
    r = record("model error %s: %s", "server_error", f"bad key {KEY} and s3cret-pw")
    assert f.filter(r) is True
    assert r.getMessage() == f"model error server_error: bad key {MASK} and {MASK}"
    try:
        raise RuntimeError("connect failed with s3cret-pw")
    except RuntimeError:
        import sys
        r = record("failed", exc_info=sys.exc_info())
    r.stack_info = "Stack (most recent call last): s3cret-pw"
    f.filter(r)
    text = logging.Formatter().format(r)
    assert "s3cret-pw" not in text and "connect failed with ***" in text
    clean = record("nothing %s", "here")
    f.filter(clean)
    assert clean.args == ("here",)            # records without a secret are left as they were


def test_install_covers_every_handler_once(caplog):
    logger = logging.getLogger("relay.test.install")
    handler = logging.Handler()
    logger.addHandler(handler)
    try:
        assert install_log_redaction(logger) == 1
        install_log_redaction(logger)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)
    register(["pr0cess-wide-s3cret"])
    install_log_redaction()                  # the root's handlers: caplog's among them
    logging.getLogger("relay.test").warning("quoting %s", "pr0cess-wide-s3cret")
    assert "pr0cess-wide-s3cret" not in caplog.text and "quoting ***" in caplog.text


def test_transcript_entries_are_scrubbed_as_they_are_added(tmp_path):
    register(["tr4nscript-s3cret"])
    published = []
    transcript = Transcript("c1", on_entry=published.append)
    transcript.add("event", "model error x: tr4nscript-s3cret", detail={"key": KEY})
    transcript.add("assistant", "hello", item_id="i1")
    transcript.mark("i1", note=f"quoted {KEY}")
    path = transcript.write(tmp_path)
    text = path.read_text()
    assert "tr4nscript-s3cret" not in text and KEY not in text and MASK in text
    assert "tr4nscript-s3cret" not in json.dumps(published)
    assert PROCESS.scrub("tr4nscript-s3cret") == MASK


@pytest.mark.parametrize("text", ["", "plain words", "sk-", "Bearer"])
def test_text_without_secrets_is_unchanged(text):
    assert Redactor(["s3cret-pw"]).scrub(text) == text
