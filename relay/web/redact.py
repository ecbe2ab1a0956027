"""Redaction: the last line of defence that keeps secrets out of everything the dashboard sends.

Owns: replacing each configured secret (the model's API key, the ARI password, the dashboard's
own token), in its raw and its JSON-escaped form, by "***" in a response body or a WebSocket
message. The views never put a secret in on purpose; this catches what they did not foresee
(e.g. a model error message quoting a key). Secrets shorter than MIN_LENGTH are not scrubbed
(replacing a one-letter password everywhere would wreck every text); they are still never sent.
"""

from __future__ import annotations

from typing import Iterable

import ujson

MIN_LENGTH = 4
MASK = "***"


class Redactor:
    """scrub(text) -> text without any of the secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH:
                forms.add(secret)
                forms.add(ujson.dumps(secret, ensure_ascii=False,
                                      escape_forward_slashes=False)[1:-1])
                forms.add(ujson.dumps(secret)[1:-1])
        # longest first, so a secret containing another is replaced whole
        self._forms = sorted(forms, key=len, reverse=True)
        self._bytes = [(f.encode("utf-8"), MASK.encode()) for f in self._forms]

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for form, mask in self._bytes:
            if form in data:
                data = data.replace(form, mask)
        return data
