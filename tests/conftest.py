"""Test-wide setup: gevent monkey patching first, so sockets in tests cooperate with greenlets."""

from gevent import monkey

monkey.patch_all()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from pg_fixtures import pg_server, pg_url  # noqa: E402,F401  (PostgreSQL for the history store)

REFERENCE = Path(__file__).resolve().parent / "reference"     # see reference/README.md


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/reference: the ARI Swagger files, a real event trace and a real RTP capture of
    Asterisk 22 (kept in the repository: a fresh clone tests itself, nothing skipped)."""
    assert REFERENCE.is_dir(), f"reference data missing at {REFERENCE}"
    return REFERENCE


@pytest.fixture
def stack(tmp_path):
    """A factory of tests/stack.Stack (simulated PBX + simulated model + relay), each one
    stopped, with its leak checks, when the test ends."""
    from stack import Stack

    stacks = []

    def make(**kwargs):
        s = Stack(tmp_path, **kwargs)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()
