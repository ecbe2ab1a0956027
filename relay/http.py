"""Pooled HTTP sessions for relay's outgoing REST calls (ARI, webhook tools, fallback STT).

Owns: how such a session is built: one `requests.Session` whose connection pool holds up to
`pool_size` connections per host, for `hosts` hosts, with no automatic retries (every caller
decides itself what a failure means). Timeouts are given per request by the callers.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter


def pooled_session(pool_size: int, hosts: int = 4) -> requests.Session:
    """A session keeping up to pool_size connections to each of up to `hosts` hosts."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=hosts, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
