"""Who may open a session: the checks the service makes on a WebSocket upgrade.

Owns: the API key (`Authorization: Bearer KEY`, OpenAI's form; or `api-key: KEY`, Azure
OpenAI's, when the server is told `auth="api-key"`), the retired beta protocol (`OpenAI-Beta:
realtime=v1`) and the model named in `?model=`, and what the service does about each (the
upgrade succeeds, then an `error` event and a close code with reason). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

from relay.sim.model.events import DEFAULT_MODEL, error_object

# The GA model names the SDK knows, minus the retired previews (FACTS.md).
KNOWN_MODELS = frozenset((
    "gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini", "gpt-realtime-2025-08-28", "gpt-realtime-mini",
    "gpt-realtime-mini-2025-10-06", "gpt-realtime-mini-2025-12-15",
))


@dataclass(frozen=True)
class Rejection:
    """The connection is refused after the upgrade: send `error`, then close."""

    error: dict
    close_code: int
    close_reason: str


def _mask(key: str) -> str:
    return f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"


AUTH_MODES = ("bearer", "api-key")


def presented_key(headers: Mapping[str, str], auth: str = "bearer") -> str:
    """The key a client sent in the form the server expects ("" when absent)."""
    if auth == "api-key":
        return headers.get("api-key", "").strip()
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def check_connection(headers: Mapping[str, str], query: Mapping[str, str], api_key: str,
                     models: Optional[frozenset] = KNOWN_MODELS,
                     auth: str = "bearer") -> Union[str, Rejection]:
    """The model of an accepted connection, or the Rejection. `headers` keys are lower-case.
    `auth`: the form the key must come in, "bearer" (OpenAI) or "api-key" (Azure OpenAI)."""
    if auth == "api-key":
        key = presented_key(headers, auth)
        if not key:
            other = (" (an 'Authorization: Bearer' header was sent: this endpoint takes the "
                     "key in the 'api-key' header)" if headers.get("authorization") else "")
            return Rejection(error_object("invalid_api_key", "Access denied due to missing "
                                          "subscription key. Make sure to include the key in "
                                          f"the 'api-key' header{other}."),
                             3000, "invalid_request_error.invalid_api_key")
        if key != api_key:
            return Rejection(error_object("invalid_api_key", "Access denied due to invalid "
                                          "subscription key or wrong API endpoint."),
                             3000, "invalid_request_error.invalid_api_key")
        return _check_rest(headers, query, models)
    auth_header = headers.get("authorization", "")
    scheme, _, key = auth_header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        other = (" (an 'api-key' header was sent: this endpoint takes the key as "
                 "'Authorization: Bearer KEY')" if headers.get("api-key") else "")
        return Rejection(error_object("invalid_api_key", "You didn't provide an API key. You "
                                      "need to provide your API key in an Authorization header "
                                      "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                                      + other),
                         3000, "invalid_request_error.invalid_api_key")
    if key.strip() != api_key:
        return Rejection(error_object("invalid_api_key", f"Incorrect API key provided: "
                                      f"{_mask(key.strip())}. You can find your API key at "
                                      "https://platform.openai.com/account/api-keys."),
                         3000, "invalid_request_error.invalid_api_key")
    return _check_rest(headers, query, models)


def _check_rest(headers: Mapping[str, str], query: Mapping[str, str],
                models: Optional[frozenset]) -> Union[str, Rejection]:
    if "realtime=v1" in headers.get("openai-beta", "").replace(" ", ""):
        return Rejection(error_object("beta_api_shape_disabled", "The Realtime API beta shape "
                                      "is no longer available; use the GA interface without "
                                      "the 'OpenAI-Beta: realtime=v1' header."),
                         4000, "invalid_request_error.beta_api_shape_disabled")
    model = query.get("model") or DEFAULT_MODEL
    if models is not None and model not in models:
        return Rejection(error_object("model_not_found", f"The model '{model}' does not exist "
                                      "or you do not have access to it.", "model"),
                         3000, "invalid_request_error.model_not_found")
    return model
