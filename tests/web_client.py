"""A requests client for the dashboard servers' tests that keeps every body and header it
received, so a test can look through all of them afterwards (no secret may leak into any)."""

from __future__ import annotations

import json

import requests


class RecordingClient:
    """`client(method, path, **kwargs)`, `.get()`, `.post_json()`; `.bodies` holds what came."""

    def __init__(self, base: str, token: str = "", timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.bodies: list[bytes] = []

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = dict(self.headers)
        headers.update(kwargs.pop("headers", {}))
        response = requests.request(method, self.base + path, headers=headers,
                                    timeout=self.timeout, allow_redirects=False, **kwargs)
        self.bodies.append(response.content)
        self.bodies.append(repr(sorted(response.headers.items())).encode())
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self("GET", path, **kwargs)

    def post_json(self, path: str, data) -> requests.Response:
        return self("POST", path, data=json.dumps(data),
                    headers={"Content-Type": "application/json"})
