"""Where a Realtime socket goes and how it presents the key: OpenAI or a GA-compatible endpoint.

Owns: the socket's URL (the configured one with `model=` added to its query, keeping what the
query holds, e.g. Azure's `api-version`) and the upgrade's authentication header (`bearer`:
`Authorization: Bearer KEY`, OpenAI's; `api-key`: `api-key: KEY`, Azure OpenAI's). Used by the
calls' sessions, by `relay check` and by the settings' validation. No I/O, no relay imports.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

AUTH_MODES = ("bearer", "api-key")


def realtime_url(url: str, model: str) -> str:
    """The socket's URL: `url` with `model=MODEL` added to its query, whatever else the query
    holds (Azure's `api-version`...) and whatever the path (OpenAI's /v1/realtime, Azure's
    /openai/v1/realtime). On Azure the model is the deployment's name. A URL that names a
    different model already is refused (ValueError): which one would win is not obvious."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "model"]
    if named and any(value != model for value in named):
        raise ValueError(f"names model {named[0]!r} but openai.model (REALTIME_MODEL) is "
                         f"{model!r}: remove model= from the URL and set the model (on Azure, "
                         "the deployment name) in openai.model")
    if not named:
        query.append(("model", model))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query),
                       parts.fragment))


def auth_headers(auth: str, api_key: str) -> list[str]:
    """How the key goes on the upgrade request: `Authorization: Bearer KEY` (OpenAI, the
    default) or `api-key: KEY` (Azure OpenAI's key authentication); see openai.auth."""
    if auth == "api-key":
        return [f"api-key: {api_key}"]
    if auth != "bearer":
        raise ValueError(f"unknown auth {auth!r} (bearer or api-key)")
    return [f"Authorization: Bearer {api_key}"]
