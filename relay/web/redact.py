"""Redaction for the dashboard: the last line of defence that keeps secrets out of everything
it sends (response bodies, WebSocket messages).

The implementation is relay's one redactor (relay/redact.py), also applied to every log record
and every transcript entry; this module names it for relay.web. The views never put a secret in
on purpose; this catches what they did not foresee (e.g. a model error message quoting a key).
"""

from relay.redact import MASK, MIN_LENGTH, Redactor

__all__ = ["MASK", "MIN_LENGTH", "Redactor"]
