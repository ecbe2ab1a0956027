"""The error a tool call ends with, as the model sees it.

Owns: ToolError and the JSON shape of a failed tool call's output,
`{"error": {"code": ..., "message": ..., ...details}}`. No I/O.
"""

from __future__ import annotations

from typing import Any

import ujson

# The codes a tool call can fail with (the model reads them; tests and dashboards match them).
UNKNOWN_TOOL = "unknown_tool"
INVALID_JSON = "invalid_json"
INVALID_ARGUMENTS = "invalid_arguments"
TOOL_FAILED = "tool_failed"
TIMEOUT = "timeout"
HTTP_ERROR = "http_error"
CONNECTION_ERROR = "connection_error"
NOT_AVAILABLE = "not_available"


class ToolError(Exception):
    """A tool call failed; `output()` is the function_call_output the model gets."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **self.details}

    def output(self) -> str:
        return ujson.dumps({"error": self.as_dict()}, ensure_ascii=False)
